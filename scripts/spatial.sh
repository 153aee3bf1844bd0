#!/usr/bin/env bash
# The spatial reproduction in one command: trains the relu, linear and hex arms, analyses them (grid, band and
# place cells, remapping), measures memory scaling, and writes <out>/report.md.
#   scripts/spatial.sh --quick           small version for a 2-core CPU (run time: README.md); the README's main job
#   scripts/spatial.sh                   the full run (20k steps per arm)
#   scripts/spatial.sh --out DIR --jobs N [key=value ...]   (overrides apply to every arm, e.g. train.device=cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m spatial reproduce "$@"
