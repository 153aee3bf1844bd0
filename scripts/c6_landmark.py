"""C6 with landmark correction: the pre-registered verdict and the per-seed table (docs/results/c6-landmark.md).

    python scripts/c6_landmark.py [docs/results/c6-landmark]       # prints markdown

Reads the records scripts/c6_landmark.sh copies (ARM-seedS/{config.yaml,run.json,metrics.jsonl}); an arm is judged
only when all of its seeds 0, 1, 2 have finished 20,000 steps. The criterion is spatial.compare.criterion_step's
(accuracy on all steps >= 0.9 x the node agent's, first evaluation at or above it), on the whole 1,500-step walks
for the verdict, and on the first 200 and 500 steps beside it. Verdict per arm (fixed before the runs): holds if
every seed reaches the criterion within 20,000 steps, fails if none does, mixed otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spatial.compare import criterion_step, load_run  # noqa: E402

SEEDS = (0, 1, 2)
STEPS = 20_000
ARMS = ("relu-stimulus", "linear-stimulus", "relu-product", "linear-product")
EXPLORATORY = ("relu-stimulus-noxcorr", "relu-stimulus-noenergy", "relu-stimulus-nog")  # amendments X1-X3: per-seed table only


def verdict(steps_to_criterion: list[int | None]) -> str:
    """The pre-registered verdict from each seed's step at criterion (None: never within the run)."""
    hit = sum(s is not None and s <= STEPS for s in steps_to_criterion)
    if hit == len(steps_to_criterion):
        return "holds"
    return "fails" if hit == 0 else f"mixed ({hit} of {len(steps_to_criterion)} seeds)"


def _fmt_steps(steps: list[int | None]) -> str:
    reached = [s for s in steps if s is not None]
    cells = ", ".join(f"{s:,}" if s is not None else f"> {STEPS:,}" for s in steps)
    if not reached:
        return cells
    mean = statistics.fmean(reached)
    return f"{cells} (mean {mean:,.0f} over {len(reached)}; range {min(reached):,}-{max(reached):,})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default="docs/results/c6-landmark")
    folder = Path(p.parse_args(argv).folder)
    runs = defaultdict(dict)
    for d in sorted(folder.glob("*-seed*")):
        arm, seed = d.name.rsplit("-seed", 1)
        if arm in ARMS + EXPLORATORY and int(seed) in SEEDS:
            runs[arm][int(seed)] = load_run(d)
    print("| arm | seeds finished | steps to criterion, whole 1,500-step walk | first 200 steps | first 500 steps | "
          "verdict |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        done = {s: c for s, c in runs.get(arm, {}).items() if c.final and c.final["step"] >= STEPS}
        if len(done) < len(SEEDS):
            print(f"| {arm} | {len(done)} of {len(SEEDS)} | | | | not judged |")
            continue
        by_len = {L: [criterion_step(done[s], L)[0] for s in SEEDS] for L in (None, 200, 500)}
        print(f"| {arm} | 3 of 3 | {_fmt_steps(by_len[None])} | {_fmt_steps(by_len[200])} | "
              f"{_fmt_steps(by_len[500])} | **{verdict(by_len[None])}** |")
    print("\nPer seed, at the last evaluation (20,000 steps):\n")
    keys = [("acc", "acc"), ("node_agent", "node"), ("edge_agent", "edge"), ("acc_zero_shot", "zero-shot"),
            ("acc_cov_lt90", "acc, coverage < 90%"), ("acc_cov_ge90", "acc, coverage >= 90%"),
            ("drift_cos_lag_lt25", "drift cos, lag < 25"), ("drift_cos_lag_ge400", "drift cos, lag >= 400"),
            ("transition_inverse_err", "inverse error (W_N W_S vs I)"), ("side_lobe_ratio", "side lobes"),
            ("landmark_gate_mean", "gate"), ("e_frac_at_zero", "e at 0"), ("e_frac_at_bound", "e at clamp")]
    print("| run | " + " | ".join(label for _, label in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for arm in ARMS + EXPLORATORY:
        for s, c in sorted(runs.get(arm, {}).items()):
            f = c.final or {}
            cells = [f"{f[k]:.3f}" if isinstance(f.get(k), (int, float)) else "n/a" for k, _ in keys]
            print(f"| {arm}-seed{s} ({f.get('step', 0):,} steps) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
