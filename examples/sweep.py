"""A sweep: several configs x seeds trained as one population of models, with a summary table.

    python examples/sweep.py OUT_DIR            # the same as: temt-spatial sweep OUT_DIR/sweep.yaml --out OUT_DIR/sweep

The sweep file names the base config (`base:` overrides here; `base_config:` a YAML file), a `grid:` of dotted
keys (Cartesian product) and `seeds:`. Members that share shapes train together in one population; each gets a
run directory (members/NAME/) like a `temt-spatial train` run, and summary.md tabulates their evaluations.
Two energy weights x two seeds on tiny worlds, 30 steps: the plumbing, not a result.
"""
import sys
from pathlib import Path

from spatial.sweep import run_sweep

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "sweep.yaml").write_text("""
base:
  model: {pos_dim: 16}
  walks: {sizes: [4, 5], walk_length: [30, 60]}
  train: {steps: 30, batch_size: 8, chunk_length: 20, log_every: 10, checkpoint_every: 30}
  eval: {every: 30, n_worlds: 4, steps: 100}
grid:
  model.w_reg_e: [0.01, 0.1]
seeds: [0, 1]
""")
rows = run_sweep(out / "sweep.yaml", out / "sweep", progress=False)
print(f"{len(rows)} summary rows; table in {out / 'sweep' / 'summary.md'}")
print((out / "sweep" / "summary.md").read_text())
