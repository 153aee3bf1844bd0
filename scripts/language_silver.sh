#!/usr/bin/env bash
# The language ladder's silver rung (docs/results/language-ladder.md, amendment L1), as pre-registered: the N = 3,000
# rung's sentences as raw text, parsed by a UD parser trained on the other English UD treebanks, then grammar /
# sinusoidal / rope, seeds 0-2, scored exactly as the gold rungs. Each step is skipped when its output exists.
#   scripts/language_silver.sh            (about 1.5 CPU-hours: parser 4,000 steps, then the study)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=runs/language-silver
py=${PYTHON:-python}
"$py" scripts/language_silver.py prepare "$dir"
if [[ ! -d $dir/parser/model-best ]]; then
    "$py" -m language parser --out "$dir/parser" --train "$dir/other-ud-train.conllu" --dev "$dir/other-ud-dev.conllu" \
        --steps 4000 --seed 0
fi
"$py" scripts/language_silver.py accuracy "$dir"
mkdir -p docs/results/language-ladder
scripts/language.sh --quick --arms grammar,sinusoidal,rope --seeds 0,1,2 --out "$dir/study" \
    --report docs/results/language-ladder/N3000-silver.md data.train_limit=3000 train.steps=400 eval.action_top=0 \
    eval.beam_until=0.002 eval.beam_max=400 data.corpus=raw "data.root=$dir/text" "data.parser=$dir/parser/model-best" \
    data.raw_format=tokens
cp "$dir/study/results.json" docs/results/language-ladder/N3000-silver.json
cp "$dir/parser_accuracy.json" docs/results/language-ladder/N3000-silver-parser.json
"$py" scripts/language_silver.py summary "$dir" | tee docs/results/language-ladder/N3000-silver-summary.txt
cp "$dir/summary.json" docs/results/language-ladder/N3000-silver-summary.json
