"""The grouped prediction read (temt_core/grouped_read.py) against the full read, inside whole training steps.

    python benchmarks/grouped_read_ab.py                  # CPU, one thread, prints JSON
    python benchmarks/grouped_read_ab.py --members 8      # and a population of 8, both ways
    python benchmarks/grouped_read_ab.py --spatial 200    # and two spatial Trainers (default config), 200 steps

Reference config (as core_speed.py): batch 16, chunks of 75, e = 128, n_x = 45, walks of 1,000 out of phase (the
store holds 0..1,000 memories per slot, about half its columns padding), de-duplication off. Arms, interleaved step
by step in one process with the order rotating (landmark_speed.time_interleaved): the parallel path and landmark
correction (stimulus query), each with `attention.grouped` off and on, on copies of one stream from the same
weights. Ratios of CPU time per step; `landmark_over_parallel` is the issue's landmark ratio with each read.
--spatial N: two `temt-spatial train` Trainers of the default config (real walks, de-duplication 0.95), the same
seed, one read each, stepped alternately N steps; medians per window of 50 steps, with the store's width and mean
number of memories (real training's store: shorter, and padded too).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from core_speed import synthetic_stream
from landmark_speed import temt_step, time_interleaved
from temt_core.cpu_memory import keep_freed_memory
from temt_core.model import TEMt, TEMtConfig
from temt_core.population import PopulationAdam, TEMtPopulation

BASE = dict(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=None, transition_init_std=0.3)


def population_ab(P: int, warmup: int, n: int) -> dict:
    """CPU seconds per step of a population of P with the full and the grouped read, interleaved."""
    streams = [synthetic_stream(16, 75, warmup + n, 1000, 5, 45, seed=p) for p in range(P)]
    arms = {}
    for grouped in (False, True):
        torch.manual_seed(0)
        pop = TEMtPopulation([TEMt(TEMtConfig(**BASE)) for _ in range(P)])
        pop.grouped = grouped
        arms["grouped" if grouped else "full"] = [pop, PopulationAdam(pop.parameters()), None]
    cpu = {name: [] for name in arms}
    for i in range(warmup + n):
        x = torch.stack([s[i][0] for s in streams])
        a = torch.stack([s[i][1] for s in streams])
        for name, arm in (arms.items() if i % 2 else reversed(arms.items())):
            pop, opt, state = arm
            c0 = time.process_time()
            out = pop(x, a, state)
            opt.zero_grad()
            out.loss.backward()
            opt.clip_grad_norm_([2.0] * P)
            opt.step([1e-4] * P)
            arm[2] = out.state
            if i >= warmup:
                cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"members": P, "cpu_sec_per_step": med, "grouped_speedup": med["full"] / med["grouped"]}


def spatial_ab(steps: int) -> list[dict]:
    """CPU seconds per step of the default spatial Trainer with the full and the grouped read, alternating."""
    import tempfile

    from spatial.config import SpatialConfig
    from spatial.train import Trainer
    from temt_core.config import load_config
    cfg = load_config(SpatialConfig, None, [f"train.steps={steps}", "train.log_every=100000",
                                            "eval.every=100000", "train.checkpoint_every=100000"])
    trainers, cpu = {}, {"full": [], "grouped": []}
    for name in cpu:
        trainers[name] = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", progress=False)
        trainers[name].model.attention.grouped = name == "grouped"
    windows = []
    for i in range(steps):
        for name in (cpu if i % 2 else reversed(list(cpu))):
            t = trainers[name]
            c0 = time.process_time()
            t.train_step(t.walks.next_chunk(cfg.train.chunk_length))
            cpu[name].append(time.process_time() - c0)
        if (i + 1) % 50 == 0:
            mem = trainers["grouped"].state.memory
            med = {k: statistics.median(v[-50:]) for k, v in cpu.items()}
            windows.append({"steps": [i - 48, i + 1], "store_width": mem.size,
                            "mean_memories": float(mem.valid.sum(1).float().mean()), "cpu_sec_per_step": med,
                            "grouped_speedup": med["full"] / med["grouped"]})
    for t in trainers.values():
        t.rundir.close()
    return windows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=14)
    p.add_argument("--steps", type=int, default=16, help="timed steps per arm")
    p.add_argument("--members", type=int, default=0, help="also a population of this many (0: none)")
    p.add_argument("--spatial", type=int, default=0, help="also two spatial Trainers for this many steps (0: none)")
    args = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    steps = {}
    for landmark in (None, "stimulus"):
        for grouped in (False, True):
            torch.manual_seed(0)
            model = TEMt(TEMtConfig(**BASE, landmark=landmark))
            model.attention.grouped = grouped
            steps[f"{landmark or 'parallel'}/{'grouped' if grouped else 'full'}"] = temt_step(model)
    runs = time_interleaved(steps, 16, args.warmup, args.steps, torch.device("cpu"))
    cpu = {k: v["cpu_sec_per_step"] for k, v in runs.items()}
    result = {"device": platform.processor() or "cpu", "threads": 1, "torch": torch.__version__,
              "config": "batch 16 x 75 steps, e=128, n_x=45, memory 0..1000 per slot, dedup off", "runs": runs,
              "grouped_speedup": {"parallel": cpu["parallel/full"] / cpu["parallel/grouped"],
                                  "landmark_stimulus": cpu["stimulus/full"] / cpu["stimulus/grouped"]},
              "landmark_over_parallel": {"full": cpu["parallel/full"] / cpu["stimulus/full"],
                                         "grouped": cpu["parallel/grouped"] / cpu["stimulus/grouped"]}}
    if args.members:
        result["population"] = population_ab(args.members, args.warmup, max(4, args.steps // 2))
    if args.spatial:
        result["spatial"] = spatial_ab(args.spatial)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
