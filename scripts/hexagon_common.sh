# Shared by scripts/hexagon_screen_members.sh and scripts/hexagon_stage2.sh (sourced, not run): where the code,
# the Python, the runs and the records are, and the pre-registered analysis settings of a member.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CODE=${CODE:-$REPO}
PY=${PYTHON:-$REPO/.venv/bin/python}
D=$REPO/runs/hexagon-screen-manual

# analysis_args KIND MEMBER: hex radius 10 (331 nodes); square 11, or 21 for arm Q0 (steps = 50 x nodes)
analysis_args() {
  if [ "$1" = hex ]; then echo "sizes=[10,10] steps=16550"
  elif [[ $2 == Q0* ]]; then echo "sizes=[21,21] steps=22050"
  else echo "sizes=[11,11] steps=6050"; fi
}
