#!/usr/bin/env bash
# The language study (claim C10) in one command: trains every arm (baselines, the grammar model that predicts
# its own structure, the controls, the conditional diagnostics) for 3 seeds, scores the test split once per run
# (exact, joint and beam-marginal perplexities), and writes docs/results/language.md (unless --report says where).
#   scripts/language.sh --quick          small real version on a 2-core CPU (run time: README.md; UD EWT subset)
#   scripts/language.sh                  the GPU-sized default (configs/language/full.yaml; hours on one GPU)
#   scripts/language.sh --out DIR --report PATH --arms grammar,sinusoidal --seeds 0,1,2 [key=value ...]
# A re-run skips finished runs and resumes unfinished ones. Treebanks: ../shared/data (TEMT_DATA or
# data.root=PATH to override). `temt-language study` itself writes the report into its --out directory unless
# given --report; this script gives docs/results/language.md, the study's tracked record.
set -euo pipefail
cd "$(dirname "$0")/.."
report=(--report docs/results/language.md)
for arg in "$@"; do
    if [[ $arg == --report || $arg == --report=* ]]; then report=(); fi
done
exec "${PYTHON:-python}" -m language study "$@" ${report[@]+"${report[@]}"}
