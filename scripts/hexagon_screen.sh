#!/usr/bin/env bash
# The hexagon search's screen (docs/results/hexagon-search.md): train every pre-registered arm (2 seeds, 6,000
# steps) as one sweep, analyse every member with the pre-registered settings, and tabulate.
#   scripts/hexagon_screen.sh [OUT]        default OUT = runs/hexagon-screen; re-running resumes and skips done work
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-runs/hexagon-screen}
SWEEP=configs/spatial/sweeps/hexagon-screen.yaml
if [ -f "$OUT/plan.json" ]; then
    "$PY" -m spatial sweep "$SWEEP" --out "$OUT" --resume
else
    "$PY" -m spatial sweep "$SWEEP" --out "$OUT"
fi
"$PY" - "$OUT" <<'PY'
"""Analyse each member (sizes and steps as pre-registered), then write OUT/screen.md."""
import json, subprocess, sys
from pathlib import Path

from spatial.train import load_run_config

out = Path(sys.argv[1])
rows = []
for member in sorted((out / "members").iterdir()):
    walks = load_run_config(member).walks
    # pre-registered analysis sizes: hex radius 10 (331 nodes); square 11 (TEM's widths) or 21 (arm Q0)
    if walks.kind == "hex":
        size, nodes = 10, 331
    else:
        size = 21 if max(walks.sizes) > 11 else 11
        nodes = size * size
    analysis = member / "analysis" / "metrics.json"
    if not analysis.is_file():
        subprocess.run([sys.executable, "-m", "spatial", "analyse", str(member), f"sizes=[{size},{size}]",
                        f"steps={50 * nodes}"], check=True)
    mean = json.loads(analysis.read_text())["mean_over_worlds"]
    final = json.loads((member / "metrics.json").read_text())
    rows.append((member.name, mean["frac_grid_of_active"], mean["frac_square_of_active"], mean["frac_band_of_active"],
                 final.get("acc_zero_shot_L500", float("nan")), final.get("acc_revisit_L500", float("nan"))))
lines = ["| member | hex grid | square grid | band | zero-shot L500 | revisit L500 |", "|---|---|---|---|---|---|"]
lines += [f"| {n} | {h:.3f} | {s:.3f} | {b:.3f} | {z:.3f} | {r:.3f} |" for n, h, s, b, z, r in rows]
(out / "screen.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
