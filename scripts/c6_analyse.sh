#!/usr/bin/env bash
# Hexagon search amendment A2 (docs/results/hexagon-search.md): analyse each finished C6 run (scripts/c6_landmark.sh)
# once at its last checkpoint with the search's square-world analysis, and copy the analysis into the run's record,
# docs/results/c6-landmark/ARM-seedS/analysis/ (scripts/hexagon_ladder.py reads it as arm L0, L1, ...).
#   scripts/c6_analyse.sh linear-stimulus-seed0 relu-stimulus-seed0 ...
set -uo pipefail
. "$(dirname "$0")/hexagon_common.sh"
D=$REPO/runs/c6-landmark
R=$REPO/docs/results/c6-landmark
cd "$REPO"
for M in "$@"; do
  if [ ! -f "$D/$M/metrics.json" ]; then
    echo "$M: not a finished run in $D (scripts/c6_landmark.sh $M first)" >&2
    continue
  fi
  if [ ! -f "$D/$M/analysis/metrics.json" ]; then
    OMP_NUM_THREADS=1 "$PY" -m spatial analyse "$D/$M" $(analysis_args square "$M") >> "$D/$M.log" 2>&1 \
      || { echo "$M FAILED analyse $(date +%T)" >> "$D/progress.txt"; continue; }
  fi
  mkdir -p "$R/$M/analysis"
  cp "$D/$M/analysis/metrics.json" "$D/$M/analysis/report.md" "$D/$M/analysis/rate_maps_g60.png" "$R/$M/analysis/"
  echo "$M analysed $(date +%T)" >> "$D/progress.txt"
done
