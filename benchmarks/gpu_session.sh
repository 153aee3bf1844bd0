#!/usr/bin/env bash
# All of one session's GPU checks for temt_core, in one run (device time is scarce): equivalence of the CUDA paths,
# training throughput (fast vs plain loop, several batch sizes) and 10^5 streamed memories. Writes JSON to $OUT.
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh                     # every part (about 20 minutes at most)
#   OUT=/tmp/gpu PARTS="graph train" bash benchmarks/gpu_session.sh  # only these parts, in the script's order
# Parts: equivalence core long landmark population graph train. A session's device time is 15 minutes: pick.
set -u
want() { [[ " ${PARTS:-equivalence core long landmark population graph train} " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi -L | tee "$OUT/gpu.txt"
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
want equivalence && timeout 60 $PY - <<'PY' 2>&1 | tee "$OUT/equivalence.txt"
import torch
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET, RecurrentPositions
torch.manual_seed(0)
dev = torch.device("cuda")
# parallel (SDPA read, fused recurrence) vs sequential path, float32 on the GPU
m = TEMt(TEMtConfig(n_stimuli=7, pos_dim=32, dedup_threshold=0.9, transition_init_std=0.5)).to(dev)
x = torch.randint(0, 7, (4, 60), device=dev); a = torch.randint(0, 5, (4, 60), device=dev); a[:, 0] = RESET; a[1, 30] = RESET
st_p = st_s = None
for lo in (0, 25):
    hi = lo + 25 if lo == 0 else 60
    p = m(x[:, lo:hi], a[:, lo:hi], st_p); s = m(x[:, lo:hi], a[:, lo:hi], st_s, sequential=True)
    print("chunk", lo, "max |logits parallel(sdpa) - sequential|", float((p.logits - s.logits).abs().max()),
          "stored equal", bool(torch.equal(p.stored, s.stored)))
    st_p, st_s = p.state, s.state
r = RecurrentPositions(5, 64, activation="linear", bound=None, init_std=0.3).to(dev)
aa = torch.randint(0, 5, (8, 100), device=dev); aa[:, 0] = RESET
for meth in ("fused", "scan"):
    print(meth, "vs loop max abs", float((r(aa, method=meth) - r(aa, method="loop")).abs().max()))
PY
if want core; then
timeout 240 $PY benchmarks/core_speed.py --device cuda --threads 4 --batch-sizes 16 256 1024 4096 --chunks 20 \
    --plain-chunks 4 > "$OUT/core_speed_cuda.json" 2> "$OUT/core_speed_cuda.err"; echo "core_speed rc=$?"
cat "$OUT/core_speed_cuda.json"
fi
if want long; then
timeout 120 $PY benchmarks/long_memory.py --steps 100000 --batch 4 --device cuda > "$OUT/long_memory_cuda.json" \
    2> "$OUT/long_memory_cuda.err"; echo "long_memory rc=$?"
cat "$OUT/long_memory_cuda.json"
fi
# issue 7: landmark correction (fused loop vs parallel vs sequential) and populations of models
if want landmark; then
(cd benchmarks && timeout 150 $PY landmark_speed.py --device cuda --chunks 12 --slow-chunks 3) > "$OUT/landmark_speed_cuda.json" \
    2> "$OUT/landmark_speed_cuda.err"; echo "landmark_speed rc=$?"
cat "$OUT/landmark_speed_cuda.json"
fi
if want population; then
timeout 150 $PY benchmarks/population_speed.py --device cuda --members 8 32 > "$OUT/population_speed_cuda.json" \
    2> "$OUT/population_speed_cuda.err"; echo "population_speed rc=$?"
cat "$OUT/population_speed_cuda.json"
fi
# issue 7, part 3: the capturable step replayed as a CUDA graph (equality with eager steps, steps/s; target 5x 42/s),
# and a population of 32 replayed the same way (target: 32 members x 20k steps in 15 minutes)
if want graph; then
(cd benchmarks && timeout 240 $PY graph_step_speed.py --device cuda --threads 4 --members 32) > "$OUT/graph_step_speed_cuda.json" \
    2> "$OUT/graph_step_speed_cuda.err"; echo "graph_step_speed rc=$?"
cat "$OUT/graph_step_speed_cuda.json"
fi
# the trainer's CUDA-graph path end to end (train.graph=cuda): 1,000 steps of TEM-t with landmark correction, the
# same run eagerly beside it (train.graph=eager) for the loss comparison, and their steps/s in metrics.jsonl
want train && for g in cuda eager; do
  timeout 200 $PY -m spatial train --quiet --out "$OUT/train_graph_$g" model.capturable=true model.max_memories=1000 \
      model.landmark=stimulus train.graph=$g train.device=cuda train.steps=1000 train.log_every=100 eval.every=1000 \
      > "$OUT/train_graph_$g.log" 2>&1; echo "train graph=$g rc=$?"
  tail -2 "$OUT/train_graph_$g/metrics.jsonl"
done
