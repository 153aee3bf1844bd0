#!/usr/bin/env bash
# Figures of the best units of hexagon-search screen members (issue 8, section 4). Run directories do not outlive a
# machine, so each named member is trained again from its recorded config (docs/results/hexagon-search/MEMBER/
# config.yaml, 6,000 steps, deterministic on one kind of CPU) into runs/hexagon-figures/MEMBER and analysed with the
# pre-registered settings. The new metrics are compared with the recorded ones, and the record itself is never
# overwritten:
# - reproduced exactly: the rate maps sorted by G60 go next to the record as analysis/rate_maps_g60.png (unless the
#   record has that figure already);
# - not exactly (float32 training rounds differently on another kind of CPU, and the runs diverge): the figure goes
#   there as analysis/rate_maps_g60.retrain.png with the retrained run's own metrics (analysis/retrain-metrics.json,
#   its CPU in retrain-run.json), so that it is never taken for the recorded run's.
#   scripts/hexagon_figures.sh H1-seed0 H8-seed0 ...       # two of these side by side use both cores
set -uo pipefail
. "$(dirname "$0")/hexagon_common.sh"
R=$REPO/docs/results/hexagon-search
F=$REPO/runs/hexagon-figures
mkdir -p "$F"
for M in "$@"; do
  [ -f "$R/$M/config.yaml" ] || { echo "$M: no record in $R/$M" >&2; continue; }
  if [ ! -f "$F/$M/metrics.json" ]; then
    rm -rf "${F:?}/$M"
    OMP_NUM_THREADS=1 "$PY" -m spatial train --config "$R/$M/config.yaml" --out "$F/$M" --quiet > "$F/$M.log" 2>&1 \
      || { echo "$M FAILED train"; continue; }
  fi
  kind=$(grep -E "^  kind:" "$F/$M/config.yaml" | head -1 | awk '{print $2}')
  if [ ! -f "$F/$M/analysis/metrics.json" ]; then
    OMP_NUM_THREADS=1 "$PY" -m spatial analyse "$F/$M" $(analysis_args "$kind" "$M") >> "$F/$M.log" 2>&1 \
      || { echo "$M FAILED analyse"; continue; }
  fi
  "$PY" - "$R/$M" "$F/$M" "$M" <<'PY'
import json, shutil, sys
from pathlib import Path
record, retrain, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
old, new = (json.loads((p / "analysis" / "metrics.json").read_text())["mean_over_worlds"] for p in (record, retrain))
keys = ("frac_grid_of_active", "frac_square_of_active", "frac_band_of_active", "g60_median")
diff = max(abs(old[k] - new[k]) for k in keys)
exact = diff < 1e-12
figure = record / "analysis" / ("rate_maps_g60.png" if exact else "rate_maps_g60.retrain.png")
if exact and figure.exists():
    where = f"the record's own figure kept ({figure.name})"
else:
    shutil.copyfile(retrain / "analysis" / "rate_maps_g60.png", figure)
    where = f"figure {figure.name}"
    if not exact:
        shutil.copyfile(retrain / "analysis" / "metrics.json", record / "analysis" / "retrain-metrics.json")
        shutil.copyfile(retrain / "run.json", record / "analysis" / "retrain-run.json")
print(f"{name}: {'reproduced exactly' if exact else f'NOT reproduced (max difference {diff:.3g})'}; {where}; "
      + ", ".join(f"{k} {old[k]:.4f} -> {new[k]:.4f}" for k in keys))
PY
done
