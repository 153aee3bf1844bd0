"""Training speed of TEM-t with landmark correction against the parallel path and an honest eager baseline.

    python benchmarks/landmark_speed.py                 # CPU, one thread, prints JSON
    python benchmarks/landmark_speed.py --device cuda

Reference config (as benchmarks/core_speed.py): batch 16, chunks of 75 steps, e = 128, n_x = 45, memory 0..1,000
per slot (walks of 1,000, out of phase), de-duplication off. Every arm first fills its memory to the steady state
without gradients (warm-up), then times full training steps (forward + backward + Adam); medians, all arms in the
same run, so the ratios are comparable on a shared machine.

    parallel          TEM-t without landmark correction, the fast parallel path
    eager             benchmarks/eager_baseline.py: the straightforward implementation (target: parallel >= 10x it)
    landmark/QUERY    landmark correction, fused loop (temt_core/landmark_loop.py) (target: >= 0.5x parallel)
    landmark_seq      landmark correction, the step-by-step reference path (TEMt(sequential=True))

    python benchmarks/landmark_speed.py --interleaved   # parallel and the fused landmark arms, one step each in turn

--interleaved is the comparison to trust on a shared machine: the arms alternate step by step in one process, so a
burst of load from elsewhere falls on all of them (timing the arms one after another let one run print 0.37 and the
next 0.52 for the same code). The order rotates every step, and the ratios come from wall time ("ratios") and from
this process's CPU time ("cpu_ratios"): with two trainings on the two cores, wall-time ratios of one code swung from
0.38 to 0.55 between runs while the CPU-time ratios were 0.48-0.50 (docs/results/engine-2026-12-03c.md).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from core_speed import add_malloc_option, apply_malloc, minor_faults, synthetic_stream
from eager_baseline import EagerTEMt
from temt_core.model import TEMt, TEMtConfig


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()



def _timed_step(step, x, a, state, device):
    """One timed training step: (new state, wall seconds, CPU seconds of this process, minor page faults)."""
    _sync(device)
    t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
    state = step(x, a, state, True)
    _sync(device)
    return state, time.perf_counter() - t0, time.process_time() - c0, minor_faults() - f0


def _summary(times: list, cpu: list, walk_steps: int, faults: list) -> dict:
    sec = statistics.median(times)
    # CPU time of this process as well: on a shared machine it is less disturbed by other work than wall time
    return {"sec_per_step": sec, "steps_per_s": 1 / sec, "walk_steps_per_s": walk_steps / sec,
            "cpu_sec_per_step": statistics.median(cpu), "timed_steps": len(times),
            "minor_page_faults_per_step": statistics.median(faults)}


def time_arm(step, chunks, warmup: int, device) -> dict:
    """step(x, a, state, train: bool) -> state. Warm-up chunks fill the memory without gradients."""
    state, times, cpu, faults = None, [], [], []
    for i, (x, a) in enumerate(chunks):
        x, a = x.to(device), a.to(device)
        if i < warmup:
            with torch.no_grad():
                state = step(x, a, state, False)
            continue
        state, wall, c, f = _timed_step(step, x, a, state, device)
        times.append(wall)
        cpu.append(c)
        faults.append(f)
    return _summary(times, cpu, chunks[0][0].numel(), faults)


def temt_step(model, sequential=False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(x, a, state, train):
        out = model(x, a, state, sequential=sequential)
        if train:
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
        return out.state
    return step


def eager_step(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(x, a, state, train):
        loss, state = model(x, a, state)
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return state
    return step


def time_interleaved(arms: dict, batch: int, warmup: int, n: int, device) -> dict:
    """arms: name -> step function. Each arm gets its own copy of the same stream; after every arm's warm-up the
    timed steps go round the arms in turn."""
    streams = {name: synthetic_stream(batch, 75, warmup + n, 1000, 5, 45) for name in arms}
    states = {name: None for name in arms}
    with torch.no_grad():
        for name, step in arms.items():
            for x, a in streams[name][:warmup]:
                states[name] = step(x.to(device), a.to(device), states[name], False)
    wall, cpu, faults = ({name: [] for name in arms} for _ in range(3))
    order = list(arms)
    for i in range(warmup, warmup + n):
        order = order[1:] + order[:1]       # rotate: no arm always runs right after the same other one
        for name in order:
            step = arms[name]
            x, a = (v.to(device) for v in streams[name][i])
            states[name], w, c, f = _timed_step(step, x, a, states[name], device)
            wall[name].append(w)
            cpu[name].append(c)
            faults[name].append(f)
    return {name: _summary(wall[name], cpu[name], batch * 75, faults[name]) for name in arms}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=14, help="chunks that fill the memory before timing")
    p.add_argument("--chunks", type=int, default=12, help="timed chunks per fast arm")
    p.add_argument("--slow-chunks", type=int, default=4, help="timed chunks for the eager and sequential arms")
    p.add_argument("--interleaved", action="store_true",
                   help="only parallel and the fused landmark arms, alternating step by step (--chunks steps each)")
    add_malloc_option(p, default="keep")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    malloc = apply_malloc(args)
    device = torch.device(args.device)
    base = dict(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=None, transition_init_std=0.3)
    arms = {"parallel": (dict(), False), "landmark/stimulus": (dict(landmark="stimulus"), False),
            "landmark/product": (dict(landmark="product"), False),
            "landmark/product_dedup0.95": (dict(landmark="product", dedup_threshold=0.95), False),
            "landmark_seq/product": (dict(landmark="product"), True)}
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "threads": args.threads, "torch": torch.__version__,
              "malloc": malloc,
              "config": f"batch {args.batch} x 75 steps, e=128, n_x=45, memory 0..1000 per slot, dedup off "
                        "(except where named)", "runs": {}}
    if args.interleaved:
        steps = {}
        for name in ("parallel", "landmark/stimulus", "landmark/product"):
            torch.manual_seed(0)
            steps[name] = temt_step(TEMt(TEMtConfig(**{**base, **arms[name][0]})).to(device))
        result["runs"] = time_interleaved(steps, args.batch, args.warmup, args.chunks, device)
        result["mode"] = "interleaved"
        for key, ratio_name in (("sec_per_step", "ratios"), ("cpu_sec_per_step", "cpu_ratios")):
            # wall time, and CPU time of this process (less disturbed by other processes on a loaded machine)
            r = {k: 1 / v[key] for k, v in result["runs"].items()}
            result[ratio_name] = {"landmark_stimulus_over_parallel": r["landmark/stimulus"] / r["parallel"],
                                  "landmark_product_over_parallel": r["landmark/product"] / r["parallel"]}
        print(json.dumps(result, indent=1))
        return
    for name, (kw, sequential) in arms.items():
        torch.manual_seed(0)
        model = TEMt(TEMtConfig(**{**base, **kw})).to(device)
        n = args.slow_chunks if sequential else args.chunks
        result["runs"][name] = time_arm(temt_step(model, sequential),
                                        synthetic_stream(args.batch, 75, args.warmup + n, 1000, 5, 45),
                                        args.warmup, device)
    if device.type == "cpu":        # the baseline is written for the CPU (no device handling)
        torch.manual_seed(0)
        result["runs"]["eager"] = time_arm(eager_step(EagerTEMt()),
                                           synthetic_stream(args.batch, 75, args.warmup + args.slow_chunks, 1000,
                                                            5, 45), args.warmup, device)
    r = {k: 1 / v["cpu_sec_per_step"] for k, v in result["runs"].items()}     # ratios of CPU time per step
    result["ratios"] = {
        "parallel_over_eager": r["parallel"] / r["eager"] if "eager" in r else None,
        "landmark_stimulus_over_parallel": r["landmark/stimulus"] / r["parallel"],
        "landmark_product_over_parallel": r["landmark/product"] / r["parallel"],
        "landmark_product_fused_over_sequential": r["landmark/product"] / r["landmark_seq/product"],
        "landmark_product_fused_over_eager": r["landmark/product"] / r["eager"] if "eager" in r else None,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
