"""A/B of one switch of the fast paths inside whole training steps, arms interleaved in one process (the harness
behind grouped_read_ab.py and transition_products_ab.py).

Reference config (as core_speed.py): batch 16, chunks of 75, e = 128, n_x = 45, walks of 1,000 out of phase (the
store holds 0..1,000 memories per slot, about half its columns padding), de-duplication off. Arms, interleaved step
by step with the order rotating (landmark_speed.time_interleaved): the parallel path and landmark correction
(stimulus query), each with the switch off and on, on copies of one stream from the same weights. Ratios of CPU
time per step; `landmark_over_parallel` is the issue's landmark ratio with the switch each way.
--members P: also a population of P, both ways. --spatial N: two `temt-spatial train` Trainers of the default
config (real walks, de-duplication 0.95), the same seed, one each way, stepped alternately N steps; medians per
window of 50 steps, with the store's width and mean number of memories.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from core_speed import synthetic_stream
from landmark_speed import temt_step, time_interleaved
from temt_core.cpu_memory import keep_freed_memory
from temt_core.model import TEMt, TEMtConfig
from temt_core.population import PopulationAdam, TEMtPopulation

BASE = dict(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=None, transition_init_std=0.3)


class Switch:
    """What is compared: arm names (off, on) and how to set a TEMt and a TEMtPopulation to each."""

    def __init__(self, off: str, on: str, set_model: Callable[[TEMt, bool], None],
                 set_population: Callable[[TEMtPopulation, bool], None]):
        self.off, self.on, self.set_model, self.set_population = off, on, set_model, set_population

    def names(self):
        return ((self.off, False), (self.on, True))


def population_ab(switch: Switch, P: int, warmup: int, n: int) -> dict:
    """CPU seconds per step of a population of P with the switch off and on, interleaved."""
    streams = [synthetic_stream(16, 75, warmup + n, 1000, 5, 45, seed=p) for p in range(P)]
    arms = {}
    for name, on in switch.names():
        torch.manual_seed(0)
        pop = TEMtPopulation([TEMt(TEMtConfig(**BASE)) for _ in range(P)])
        switch.set_population(pop, on)
        arms[name] = [pop, PopulationAdam(pop.parameters()), None]
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
    return {"members": P, "cpu_sec_per_step": med, f"{switch.on}_speedup": med[switch.off] / med[switch.on]}


def spatial_ab(switch: Switch, steps: int) -> list[dict]:
    """CPU seconds per step of the default spatial Trainer with the switch off and on, alternating."""
    from spatial.config import SpatialConfig
    from spatial.train import Trainer
    from temt_core.config import load_config
    cfg = load_config(SpatialConfig, None, [f"train.steps={steps}", "train.log_every=100000",
                                            "eval.every=100000", "train.checkpoint_every=100000"])
    trainers, cpu = {}, {}
    for name, on in switch.names():
        trainers[name] = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", progress=False)
        switch.set_model(trainers[name].model, on)
        cpu[name] = []
    windows = []
    for i in range(steps):
        for name in (cpu if i % 2 else reversed(list(cpu))):
            t = trainers[name]
            c0 = time.process_time()
            t.train_step(t.walks.next_chunk(cfg.train.chunk_length))
            cpu[name].append(time.process_time() - c0)
        if (i + 1) % 50 == 0:
            mem = trainers[switch.on].state.memory
            med = {k: statistics.median(v[-50:]) for k, v in cpu.items()}
            windows.append({"steps": [i - 48, i + 1], "store_width": mem.size,
                            "mean_memories": float(mem.valid.sum(1).float().mean()), "cpu_sec_per_step": med,
                            f"{switch.on}_speedup": med[switch.off] / med[switch.on]})
    for t in trainers.values():
        t.rundir.close()
    return windows


def main(switch: Switch, description: str):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=14)
    p.add_argument("--steps", type=int, default=16, help="timed steps per arm")
    p.add_argument("--members", type=int, default=0, help="also a population of this many (0: none)")
    p.add_argument("--spatial", type=int, default=0, help="also two spatial Trainers for this many steps (0: none)")
    args = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    steps = {}
    for landmark in (None, "stimulus"):
        for name, on in switch.names():
            torch.manual_seed(0)
            model = TEMt(TEMtConfig(**BASE, landmark=landmark))
            switch.set_model(model, on)
            steps[f"{landmark or 'parallel'}/{name}"] = temt_step(model)
    runs = time_interleaved(steps, 16, args.warmup, args.steps, torch.device("cpu"))
    cpu = {k: v["cpu_sec_per_step"] for k, v in runs.items()}
    off, on = switch.off, switch.on
    result = {"device": platform.processor() or "cpu", "threads": 1, "torch": torch.__version__,
              "config": "batch 16 x 75 steps, e=128, n_x=45, memory 0..1000 per slot, dedup off", "runs": runs,
              f"{on}_speedup": {"parallel": cpu[f"parallel/{off}"] / cpu[f"parallel/{on}"],
                                "landmark_stimulus": cpu[f"stimulus/{off}"] / cpu[f"stimulus/{on}"]},
              "landmark_over_parallel": {off: cpu[f"parallel/{off}"] / cpu[f"stimulus/{off}"],
                                         on: cpu[f"parallel/{on}"] / cpu[f"stimulus/{on}"]}}
    if args.members:
        result["population"] = population_ab(switch, args.members, args.warmup, max(4, args.steps // 2))
    if args.spatial:
        result["spatial"] = spatial_ab(switch, args.spatial)
    print(json.dumps(result, indent=1))
