#!/usr/bin/env bash
# The spatial reproduction in one command.
#   scripts/spatial.sh --quick     small version for a 2-core CPU (minutes); the README's main job
#   scripts/spatial.sh             the full run (sized for one GPU)
# Options: --out DIR (default runs/spatial-quick or runs/spatial), --device cpu|cuda
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mode=full; out=""; device=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --out) out="$2"; shift ;;
    --device) device="$2"; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "spatial.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$mode" = quick ]; then
  out=${out:-runs/spatial-quick}
  extra=(); [ -n "$device" ] && extra+=("train.device=$device")
  if [ -f "$out/LATEST" ]; then
    $PY -m spatial train --resume "$out" "${extra[@]}"
  else
    $PY -m spatial train --config configs/spatial/quick.yaml --out "$out" "${extra[@]}"
  fi
else
  echo "spatial.sh: the full reproduction is not written yet (issue 3); run with --quick" >&2
  exit 2
fi
