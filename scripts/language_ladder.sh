#!/usr/bin/env bash
# The language data-scale ladder (issue 10, part 4), exactly as pre-registered in docs/results/language-ladder.md:
# for each rung N, grammar / sinusoidal / rope, seeds 0-2, the quick config with train.steps scaled to N, scored
# with the all-actions beam grown until the bound moves by < 0.2% (K <= 400).
#   scripts/language_ladder.sh                 every rung, smallest first (a finished rung is skipped on re-run)
#   scripts/language_ladder.sh 750 1500        only these rungs
# Then: python scripts/language_ladder.py      (the pre-registered ratios and the trend over rungs)
set -euo pipefail
cd "$(dirname "$0")/.."
rungs=("$@")
if [[ ${#rungs[@]} -eq 0 ]]; then rungs=(750 1500 3000 6000 10190); fi
for n in "${rungs[@]}"; do
    case $n in
        750|1500|3000) steps=400 ;;
        6000) steps=800 ;;
        10190) steps=1400 ;;
        *) echo "language_ladder.sh: rung $n is not one of the pre-registered 750 1500 3000 6000 10190" >&2; exit 2 ;;
    esac
    mkdir -p docs/results/language-ladder
    echo "== rung N=$n (train.steps=$steps) $(date -u +%FT%TZ)"
    scripts/language.sh --quick --arms grammar,sinusoidal,rope --seeds 0,1,2 \
        --out "runs/language-ladder/N$n" --report "docs/results/language-ladder/N$n.md" \
        "data.train_limit=$n" "train.steps=$steps" eval.action_top=0 eval.beam_until=0.002 eval.beam_max=400
    # the study's results outlive the run directory (scripts/language_ladder.py reads these copies)
    cp "runs/language-ladder/N$n/results.json" "docs/results/language-ladder/N$n.json"
    echo "== rung N=$n done $(date -u +%FT%TZ)"
done
