"""Training throughput of P TEM-t models as one population against the same P models one after another.

    python benchmarks/population_speed.py                       # CPU, one thread, P = 8, prints JSON
    python benchmarks/population_speed.py --members 2 4 8 --device cuda
    python benchmarks/population_speed.py --members 4 --landmark stimulus     # members with landmark correction

Reference config (benchmarks/core_speed.py): batch 16, chunks of 75 steps, e = 128, n_x = 45, memory up to 1,000
per slot (walks of 1,000 steps, slots out of phase), de-duplication off. Each member has its own synthetic
stream (its own seed) and its own init (seed p), and members differ in w_reg_e and transition_init_std as
a sweep's would. A training step is forward + backward + gradient clip + Adam:
    population  TEMtPopulation + PopulationAdam: all P members in one step
    sequential  P TEMt models + torch.optim.Adam + clip_grad_norm_, stepped one after another
Both run through the same warm-up chunks (to fill the memory), then the timed chunks are interleaved: for each
chunk, one population step, then the P single-model steps. On a shared, loaded machine the load then falls on
both alike; the ratio of the medians is the number to read (ratio_cpu_time, from this process's CPU seconds, is
the one other processes disturb least). walk_steps_per_s counts every member's walk steps (P x batch x chunk per
population step).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_speed import add_malloc_option, apply_malloc, minor_faults, synthetic_stream  # noqa: E402

from temt_core.model import TEMt, TEMtConfig  # noqa: E402
from temt_core.population import PopulationAdam, TEMtPopulation  # noqa: E402


def member_configs(P: int, pos_dim: int, landmark: str | None = None) -> list[TEMtConfig]:
    return [TEMtConfig(n_actions=5, n_stimuli=45, pos_dim=pos_dim, dedup_threshold=None, landmark=landmark,
                       transition_init_std=0.3 + 0.05 * p, w_reg_e=0.01 * (1 + p % 2)) for p in range(P)]



def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(P: int, device, batch: int, chunk: int, warmup: int, timed: int, pos_dim: int, walk: int = 1000,
            lr: float = 1e-4, clip: float = 2.0, landmark: str | None = None) -> dict:
    configs = member_configs(P, pos_dim, landmark)
    streams = [synthetic_stream(batch, chunk, warmup + timed, walk, 5, 45, seed=p) for p in range(P)]
    singles = []
    for p, c in enumerate(configs):
        torch.manual_seed(p)
        singles.append(TEMt(c).to(device))
    pop = TEMtPopulation(singles).to(device)         # built from the same initial weights (copied)
    pop_opt = PopulationAdam(pop.parameters())
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in singles]
    lrs, clips = [lr] * P, [clip] * P
    pop_state, states = None, [None] * P
    pop_times, seq_times, pop_cpu, seq_cpu, pop_flt, seq_flt, last = [], [], [], [], [], [], [0.0] * P
    for i in range(warmup + timed):
        xs = [s[i][0].to(device) for s in streams]
        acts = [s[i][1].to(device) for s in streams]
        x, a = torch.stack(xs), torch.stack(acts)
        _sync(device)
        t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
        out = pop(x, a, pop_state)
        pop_opt.zero_grad()
        out.loss.backward()
        pop_opt.clip_grad_norm_(clips)
        pop_opt.step(lrs)
        pop_state = out.state
        _sync(device)
        t1, c1, f1 = time.perf_counter(), time.process_time(), minor_faults()
        for p, (m, opt) in enumerate(zip(singles, opts)):
            o = m(xs[p], acts[p], states[p])
            opt.zero_grad(set_to_none=True)
            o.loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
            opt.step()
            states[p] = o.state
            last[p] = o.loss.item()
        _sync(device)
        t2, c2, f2 = time.perf_counter(), time.process_time(), minor_faults()
        if i >= warmup:
            pop_times.append(t1 - t0)
            seq_times.append(t2 - t1)
            pop_cpu.append(c1 - c0)
            seq_cpu.append(c2 - c1)
            pop_flt.append(f1 - f0)
            seq_flt.append(f2 - f1)
    walk_steps = P * batch * chunk
    pop_sec, seq_sec = statistics.median(pop_times), statistics.median(seq_times)
    return {"members": P,
            "population": {"sec_per_step": pop_sec, "walk_steps_per_s": walk_steps / pop_sec,
                           "walk_steps_per_s_mean": walk_steps * len(pop_times) / sum(pop_times)},
            "sequential": {"sec_per_step": seq_sec, "walk_steps_per_s": walk_steps / seq_sec,
                           "walk_steps_per_s_mean": walk_steps * len(seq_times) / sum(seq_times)},
            "ratio_population_over_sequential": seq_sec / pop_sec,
            "ratio_of_means": sum(seq_times) / sum(pop_times),
            # CPU seconds of this process: what other processes on a shared machine do not inflate
            "cpu_sec_per_step": {"population": statistics.median(pop_cpu), "sequential": statistics.median(seq_cpu)},
            "ratio_cpu_time": statistics.median(seq_cpu) / statistics.median(pop_cpu),
            # minor page faults per step: fresh pages from the kernel (see --malloc)
            "minor_page_faults_per_step": {"population": statistics.median(pop_flt),
                                           "sequential": statistics.median(seq_flt)},
            "mean_memories": float(pop_state.memory.valid.sum(1).float().mean()),
            # a sanity check: the same models on the same data; float32 rounding (different summation orders)
            # drifts over the steps, so this is small, not zero (exact agreement in float64: tests/core)
            "last_loss_max_abs_diff": max(abs(out.losses[p].item() - last[p]) for p in range(P))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--members", type=int, nargs="+", default=[8])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--chunk", type=int, default=75)
    p.add_argument("--pos-dim", type=int, default=128)
    p.add_argument("--walk", type=int, default=1000, help="steps per world: the memory grows to this per slot")
    p.add_argument("--warmup", type=int, default=14, help="chunks to fill the memory before timing")
    p.add_argument("--timed", type=int, default=8, help="timed chunks")
    p.add_argument("--landmark", choices=["stimulus", "product"], help="members with landmark correction")
    add_malloc_option(p, default="keep")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    malloc = apply_malloc(args)
    device = torch.device(args.device)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "threads": args.threads, "torch": torch.__version__,
              "malloc": malloc,
              "config": f"batch {args.batch} x {args.chunk} steps, e={args.pos_dim}, n_x=45, memory 0..{args.walk} per "
                        f"slot (walks of {args.walk}, out of phase), dedup off; timed chunks interleaved; landmark "
                        f"{args.landmark}",
              "runs": {}}
    for P in args.members:
        result["runs"][f"P{P}"] = compare(P, device, args.batch, args.chunk, args.warmup, args.timed, args.pos_dim,
                                           args.walk, landmark=args.landmark)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
