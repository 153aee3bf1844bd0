"""Training throughput of TEM-t: the fast path against a plain eager loop, in the same run.

    python benchmarks/core_speed.py                  # CPU, prints JSON
    python benchmarks/core_speed.py --device cuda --batch-sizes 16 256 1024

Reference config (issue 2): batch 16, chunks of 75 steps, e = 128, n_x = 45, memory up to 1,000: every batch slot
walks a world for 1,000 steps and then resets, the slots out of phase, so the store holds 0..1,000 memories (about
500 on average). De-duplication is off so the store really grows to 1,000 (the worst case: a trained model that
de-duplicates holds far fewer). Throughput = walk-steps per second = batch x chunk / seconds per training step,
forward + backward + Adam, after warm-up.

    fast   parallel path: fused recurrence (custom autograd.Function) + one masked attention per chunk
    plain  TEMt's sequential path: step by step, per step one transition, an attention read over the memories so
           far and an append (the straightforward implementation; since commit b922d40 its transition is one
           (B, E) x (E, A*E) matmul instead of a gathered bmm, which makes this baseline slightly faster, so the
           speed-ups measured since are conservative)
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from temt_core.cpu_memory import keep_freed_memory
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET, RecurrentPositions


def minor_faults() -> int:
    """Minor page faults of this process so far (fresh pages from the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def add_malloc_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--malloc", choices=["keep", "default"], default=default,
                   help="keep: glibc keeps freed buffers (temt_core.cpu_memory); default: glibc's own behaviour "
                        "(buffers above 32 MB a fresh mmap each time). One process per setting")


def apply_malloc(args) -> str:
    """The --malloc setting applied to this process; returns what holds ('keep' or 'default')."""
    return "keep" if args.malloc == "keep" and keep_freed_memory() else "default"


def synthetic_stream(batch: int, chunk: int, n_chunks: int, walk: int, n_actions: int, n_x: int, seed: int = 0):
    """Random actions and stimuli; slot b resets every `walk` steps, offset by b * walk / batch."""
    g = torch.Generator().manual_seed(seed)
    T = chunk * n_chunks
    actions = torch.randint(0, n_actions, (batch, T), generator=g)
    x = torch.randint(0, n_x, (batch, T), generator=g)
    phase = (torch.arange(batch) * walk) // batch
    t = torch.arange(T)
    actions[((t[None, :] + phase[:, None]) % walk) == 0] = RESET
    actions[:, 0] = RESET
    return [(x[:, i:i + chunk], actions[:, i:i + chunk]) for i in range(0, T, chunk)]


def time_training(model: TEMt, chunks, sequential: bool, method: str | None, warmup: int, device) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = None
    # run through the warm-up chunks first (fills the memory to its steady state), then time the rest
    times = []
    for i, (x, a) in enumerate(chunks):
        x, a = x.to(device), a.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(x, a, state, sequential=sequential, method=method)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        state = out.state
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    B, T = chunks[0][0].shape
    sec = statistics.median(times)      # median: robust to the other process on a shared 2-core machine
    return {"sec_per_step": sec, "steps_per_s": 1 / sec, "walk_steps_per_s": B * T / sec,
            "walk_steps_per_s_mean": B * T * len(times) / sum(times),
            "mean_memories": float(state.memory.valid.sum(1).float().mean())}


def recurrence_only(device, B=16, T=75, E=128, A=5, repeats=20) -> dict:
    out = {}
    for activation, bound in (("relu", 1.0), ("linear", None)):
        m = RecurrentPositions(A, E, activation=activation, bound=bound, stay_action=0, init_std=0.3).to(device)
        a = torch.randint(0, A, (B, T), device=device)
        methods = ["loop", "fused"] + (["scan"] if device.type == "cuda" and bound is None else [])
        for method in methods:
            f = lambda: m(a, method=method).square().sum().backward()
            for _ in range(3):
                f()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                f()
            if device.type == "cuda":
                torch.cuda.synchronize()
            out[f"{activation}/{method}_ms"] = (time.perf_counter() - t0) / repeats * 1e3
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    p.add_argument("--chunks", type=int, default=40, help="timed chunks for the fast path (after warm-up)")
    p.add_argument("--plain-chunks", type=int, default=10, help="timed chunks for the plain loop")
    p.add_argument("--warmup", type=int, default=14, help="chunks to fill the memory before timing")
    p.add_argument("--plain-batch", type=int, default=16, help="batch size at which the plain loop is timed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TEMtConfig(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=None, transition_init_std=0.3)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "threads": args.threads, "torch": torch.__version__, "config": "batch x 75 steps, e=128, n_x=45, "
              "memory 0..1000 per slot (walks of 1000, out of phase), dedup off", "runs": {}}
    torch.manual_seed(0)
    for B in sorted(set(args.batch_sizes) | {args.plain_batch}):
        model = TEMt(cfg).to(device)
        fast = time_training(model, synthetic_stream(B, 75, args.warmup + args.chunks, 1000, 5, 45),
                             sequential=False, method=None, warmup=args.warmup, device=device)
        result["runs"][f"fast/batch{B}"] = fast
        if B == args.plain_batch:
            model = TEMt(cfg).to(device)
            plain = time_training(model, synthetic_stream(B, 75, args.warmup + args.plain_chunks, 1000, 5, 45),
                                  sequential=True, method="loop", warmup=args.warmup, device=device)
            result["runs"][f"plain/batch{B}"] = plain
            result[f"speedup_fast_over_plain_batch{B}"] = fast["walk_steps_per_s"] / plain["walk_steps_per_s"]
    result["recurrence_fwd_bwd_batch16"] = recurrence_only(device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
