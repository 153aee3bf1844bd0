#!/usr/bin/env bash
# Stage 2 of the hexagon search (docs/results/hexagon-search.md, "Stages (fixed)"): each advanced member trains to
# 10,000 steps, is analysed (analysis-10k/), trains on to 20,000, is analysed again (analysis-20k/), and its record
# goes to docs/results/hexagon-search/stage2/MEMBER/. Seeds 0 and 1 resume their screen runs exactly; seed 2 is the
# seed-0 config with train.seed=2. Re-running resumes and skips done work. Two of these side by side use both cores.
#   CODE=/path/to/worktree-at-f175f1b scripts/hexagon_stage2.sh H1-seed0 H1-seed2 ...
set -uo pipefail
. "$(dirname "$0")/hexagon_common.sh"
cd "$CODE"
R=$REPO/docs/results/hexagon-search/stage2
note() { echo "$1 $(date +%T)" >> "$D/progress-stage2.txt"; }
step_of() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$1" 2>/dev/null || echo 0; }
for M in "$@"; do
  arm=${M%-seed*}; seed=${M##*-seed}
  if [ ! -f "$D/$M.yaml" ]; then            # seed 2: the seed-0 member with another seed
    "$PY" - "$D/$arm-seed0.yaml" "$seed" "$D/$M.yaml" <<'PY' || { note "$M FAILED config"; continue; }
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["train"]["seed"] = int(sys.argv[2])
yaml.safe_dump(cfg, open(sys.argv[3], "w"), sort_keys=False)
PY
  fi
  kind=$(grep -E "^  kind:" "$D/$M.yaml" | head -1 | awk '{print $2}')
  A=$(analysis_args "$kind" "$M")
  for target in 10000 20000; do
    tag=analysis-$((target / 1000))k
    [ -f "$D/$M/$tag/metrics.json" ] && continue
    if [ ! -f "$D/$M/LATEST" ]; then
      rm -rf "${D:?}/$M"
      OMP_NUM_THREADS=1 "$PY" -m spatial train --config "$D/$M.yaml" --out "$D/$M" --quiet train.steps=$target \
        >> "$D/$M.log" 2>&1 || { note "$M FAILED train $target"; continue 2; }
    elif [ "$(step_of "$D/$M/metrics.json")" != "$target" ]; then
      OMP_NUM_THREADS=1 "$PY" -m spatial train --resume "$D/$M" --quiet train.steps=$target \
        >> "$D/$M.log" 2>&1 || { note "$M FAILED train $target"; continue 2; }
    fi
    OMP_NUM_THREADS=1 "$PY" -m spatial analyse "$D/$M" $A --out "$D/$M/$tag" >> "$D/$M.log" 2>&1 \
      || { note "$M FAILED analyse $target"; continue 2; }
    mkdir -p "$R/$M/$tag"
    cp "$D/$M/config.yaml" "$D/$M/metrics.json" "$D/$M/metrics.jsonl" "$D/$M/run.json" "$R/$M/"
    cp "$D/$M/$tag/metrics.json" "$D/$M/$tag/report.md" "$R/$M/$tag/"
    note "$M $tag done"
  done
done
