#!/usr/bin/env bash
# C6 with landmark correction (docs/results/c6-landmark.md, pre-registered): train (or resume exactly) each named
# run ARM-seedS from configs/spatial/c6/ARM.yaml with train.seed=S, then copy its record into
# docs/results/c6-landmark/ARM-seedS/. Two of these side by side use both cores of the 2-core machine.
#   scripts/c6_landmark.sh relu-stimulus-seed0 relu-stimulus-seed1 ...
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
D=$REPO/runs/c6-landmark
R=$REPO/docs/results/c6-landmark
mkdir -p "$D"
cd "$REPO"
for M in "$@"; do
  ARM=${M%-seed*}
  SEED=${M##*-seed}
  CFG=configs/spatial/c6/$ARM.yaml
  if [ ! -f "$CFG" ] || ! [[ $SEED =~ ^[0-9]+$ ]] || [ "$ARM" = "$M" ]; then
    echo "$M: not ARM-seedS with configs/spatial/c6/ARM.yaml ($(ls configs/spatial/c6 | sed 's/.yaml//' | tr '\n' ' '))" >&2
    exit 2
  fi
  if [ ! -f "$D/$M/metrics.json" ]; then
    if [ -f "$D/$M/LATEST" ]; then
      OMP_NUM_THREADS=1 "$PY" -m spatial train --resume "$D/$M" --quiet >> "$D/$M.log" 2>&1 \
        || { echo "$M FAILED train $(date +%T)" >> "$D/progress.txt"; continue; }
    else
      rm -rf "${D:?}/$M"       # stopped before its first checkpoint: nothing to keep
      OMP_NUM_THREADS=1 "$PY" -m spatial train --config "$CFG" --out "$D/$M" "train.seed=$SEED" --quiet \
        > "$D/$M.log" 2>&1 || { echo "$M FAILED train $(date +%T)" >> "$D/progress.txt"; continue; }
    fi
  fi
  mkdir -p "$R/$M"
  cp "$D/$M/config.yaml" "$D/$M/metrics.json" "$D/$M/metrics.jsonl" "$D/$M/run.json" "$R/$M/"
  echo "$M done $(date +%T)" >> "$D/progress.txt"
done
