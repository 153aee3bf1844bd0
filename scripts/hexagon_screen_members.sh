#!/usr/bin/env bash
# The hexagon screen member by member (docs/results/hexagon-search.md, "Results"): train (or resume) each named
# member from its resolved config runs/hexagon-screen-manual/MEMBER.yaml, analyse it with the pre-registered
# settings, and copy its record into docs/results/hexagon-search/MEMBER/. Two of these side by side use both cores.
#   scripts/hexagon_screen_members.sh H7-seed0 H8-seed0 ...
#   CODE=/path/to/a/worktree scripts/hexagon_screen_members.sh ...   # train with the code of another checkout
#                                                                     # (as the 2026-12-02 runs used f175f1b)
set -uo pipefail
. "$(dirname "$0")/hexagon_common.sh"
cd "$CODE"
R=$REPO/docs/results/hexagon-search
mkdir -p "$D"
for M in "$@"; do
  if [ ! -f "$D/$M.yaml" ]; then            # the member's resolved config, from the pre-registered sweep file
    "$PY" - "$REPO/configs/spatial/sweeps/hexagon-screen.yaml" "$M" "$D/$M.yaml" <<'PY' || exit 2
import sys
from spatial.sweep_file import load_sweep
from temt_core.config import save_config
members = {m.name: m for m in load_sweep(sys.argv[1])}
if sys.argv[2] not in members:
    sys.exit(f"unknown member {sys.argv[2]!r}; members: {', '.join(sorted(members))}")
save_config(members[sys.argv[2]].config, sys.argv[3])
PY
  fi
  if [ ! -f "$D/$M/metrics.json" ]; then
    if [ -f "$D/$M/LATEST" ]; then
      OMP_NUM_THREADS=1 "$PY" -m spatial train --resume "$D/$M" --quiet >> "$D/$M.log" 2>&1 \
        || { echo "$M FAILED train $(date +%T)" >> "$D/progress.txt"; continue; }
    else
      rm -rf "${D:?}/$M"       # stopped before its first checkpoint: nothing to keep (works with older code too)
      OMP_NUM_THREADS=1 "$PY" -m spatial train --config "$D/$M.yaml" --out "$D/$M" --quiet > "$D/$M.log" 2>&1 \
        || { echo "$M FAILED train $(date +%T)" >> "$D/progress.txt"; continue; }
    fi
  fi
  kind=$(grep -E "^  kind:" "$D/$M/config.yaml" | head -1 | awk '{print $2}')
  A=$(analysis_args "$kind" "$M")
  if [ ! -f "$D/$M/analysis/metrics.json" ]; then
    OMP_NUM_THREADS=1 "$PY" -m spatial analyse "$D/$M" $A >> "$D/$M.log" 2>&1 \
      || { echo "$M FAILED analyse $(date +%T)" >> "$D/progress.txt"; continue; }
  fi
  mkdir -p "$R/$M/analysis"
  cp "$D/$M/config.yaml" "$D/$M/metrics.json" "$D/$M/metrics.jsonl" "$D/$M/run.json" "$R/$M/"
  cp "$D/$M/analysis/metrics.json" "$D/$M/analysis/report.md" "$D/$M/analysis/rate_maps_g60.png" "$R/$M/analysis/"
  echo "$M done $(date +%T)" >> "$D/progress.txt"
done
