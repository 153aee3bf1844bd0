#!/usr/bin/env bash
# Figures of the best units of hexagon-search screen members (issue 8, section 4). Run directories do not outlive a
# machine, so each named member is trained again from its recorded config (docs/results/hexagon-search/MEMBER/
# config.yaml, 6,000 steps, deterministic) into runs/hexagon-figures/MEMBER and analysed with the pre-registered
# settings; its rate maps sorted by G60 are copied next to the record, and the new metrics are compared with the
# recorded ones (a reproduction check: the record itself is never overwritten).
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
  cp "$F/$M/analysis/rate_maps_g60.png" "$R/$M/analysis/"
  "$PY" - "$R/$M/analysis/metrics.json" "$F/$M/analysis/metrics.json" "$M" <<'PY'
import json, sys
old, new = (json.load(open(p))["mean_over_worlds"] for p in sys.argv[1:3])
keys = ("frac_grid_of_active", "frac_square_of_active", "frac_band_of_active", "g60_median")
diff = max(abs(old[k] - new[k]) for k in keys)
print(f"{sys.argv[3]}: reproduced {'exactly' if diff == 0 else f'with max difference {diff:.3g}'} "
      + ", ".join(f"{k} {old[k]:.4f} -> {new[k]:.4f}" for k in keys))
PY
done
