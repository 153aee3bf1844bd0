"""How best to train P models on a small CPU machine: one population or one model after another, one thread or
two, one process or two side by side; and the per-step overhead that bounds what stacking members can save.

    python benchmarks/population_arrangements.py                 # P = 8, the reference config, prints JSON
    python benchmarks/population_arrangements.py --members 4 --timed 6

Every arrangement runs `population_speed.py` (a population step and the same members' single-model steps,
interleaved in one process) as a subprocess, so each gets a fresh process with its own thread count and malloc
setting:

    1 process, 1 thread      population_speed.py --members P --threads 1
    1 process, T threads     population_speed.py --members P --threads T          (T = --threads, default 2)
    T processes, 1 thread    T copies of population_speed.py --members P/T --threads 1 at the same time
                             (what `accelerate launch --num_processes T -m spatial sweep` does: each rank trains
                             its share of the members as its own population); walk-steps/s summed over the copies
    overhead                 population_speed.py at e = 8, batch 1 (--overhead-*): the same ops on tiny tensors,
                             so a single-model step there is about its per-op cost (dispatch, autograd, Python)

Why the overhead arm: stacking P members into one population saves the per-op cost P - 1 times over and none of
the arithmetic, so at most a population can be (overhead + compute) / (overhead / P + compute) times as fast as
the same members one after another. With the overhead measured at e = 8 and the single-model step at the
reference config, `stacking_bound` is that ceiling (assuming the arithmetic per member stays the same; a
population's batched matmuls can be a little more efficient than P small ones, or less, when its tensors no longer
fit the caches).

Each arrangement is printed with its walk-steps/s for all P members (population and sequential) and its ratio.
On a shared machine run it when nothing else is running: the arrangements run one after another, so unlike the
ratios inside one arrangement, their absolute rates are only comparable on a quiet machine (`load_average`
before and after is recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _population_speed(members: int, threads: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(HERE / "population_speed.py"), "--members", str(members), "--threads", str(threads),
           *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"population_speed.py failed (exit {proc.returncode}): {proc.args}")
    (run,) = json.loads(out)["runs"].values()
    return run


def _arrangement(runs: list[dict]) -> dict:
    """Walk-steps/s of all members (summed over processes that ran at the same time)."""
    pop = sum(r["population"]["walk_steps_per_s"] for r in runs)
    seq = sum(r["sequential"]["walk_steps_per_s"] for r in runs)
    return {"population_walk_steps_per_s": round(pop), "sequential_walk_steps_per_s": round(seq),
            "population_over_sequential": round(pop / seq, 3),
            "ratio_cpu_time_per_process": [round(r["ratio_cpu_time"], 3) for r in runs],
            "sec_per_step": [{"population": r["population"]["sec_per_step"],
                              "sequential": r["sequential"]["sec_per_step"]} for r in runs]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="threads, and processes, of the parallel arrangements")
    p.add_argument("--warmup", type=int, default=30, help="chunks before timing: the memory reaches its steady "
                                                          "width (walks of 1,000) and the heap its peak")
    p.add_argument("--timed", type=int, default=12)
    p.add_argument("--overhead-pos-dim", type=int, default=8)
    p.add_argument("--overhead-batch", type=int, default=1)
    args = p.parse_args()
    P, T = args.members, args.threads
    if P % T:
        raise SystemExit(f"--members ({P}) must be a multiple of --threads ({T}): each process trains P/T members")
    timing = ["--warmup", str(args.warmup), "--timed", str(args.timed)]
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_before": os.getloadavg(), "members": P,
              "config": "population_speed.py's reference config (batch 16, chunks of 75, e = 128, memory 0..1,000)",
              "arrangements": {}}
    arr = result["arrangements"]
    arr["1 process, 1 thread"] = _arrangement([_result(_population_speed(P, 1, timing))])
    arr[f"1 process, {T} threads"] = _arrangement([_result(_population_speed(P, T, timing))])
    procs = [_population_speed(P // T, 1, timing) for _ in range(T)]          # side by side
    arr[f"{T} processes x 1 thread, {P // T} members each"] = _arrangement([_result(q) for q in procs])
    tiny = _result(_population_speed(P, 1, timing + ["--pos-dim", str(args.overhead_pos_dim),
                                                     "--batch", str(args.overhead_batch)]))
    overhead = tiny["cpu_sec_per_step"]["sequential"] / P                     # one model's step, almost no arithmetic
    single = arr["1 process, 1 thread"]["sec_per_step"][0]["sequential"] / P
    result["overhead"] = {"config": f"e = {args.overhead_pos_dim}, batch {args.overhead_batch}",
                          "single_step_sec": overhead, "population_over_sequential": round(tiny["ratio_cpu_time"], 3),
                          "reference_single_step_sec": single, "share_of_reference_step": round(overhead / single, 3),
                          "stacking_bound": round(single / (single - overhead * (P - 1) / P), 3)}
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
