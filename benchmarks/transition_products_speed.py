"""One step's products with the transitions taken (temt_core/transition_products.py), wide against blocks, alone.

    python benchmarks/transition_products_speed.py          # CPU, one thread, prints JSON

For each case (members P, slots per member B, e = E, A = 5 actions drawn uniformly, one step), microseconds per
call of TransitionProducts in each mode on the same inputs (the blocks' R is that step's largest group). This is
what MIN_DIM and MAX_FILL in transition_products.py were set from; whole training steps: transition_products_ab.py.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from temt_core.transition_products import TransitionProducts

CASES = [(1, 16, 32), (1, 16, 64), (1, 16, 96), (1, 16, 120), (1, 16, 128), (1, 4, 128), (1, 16, 256), (8, 16, 32), (8, 16, 64), (8, 16, 128)]


def per_call_us(fn, n: int) -> float:
    for _ in range(max(10, n // 20)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def case(P: int, B: int, E: int, A: int, n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(P, A, E, E, generator=g) / E ** 0.5
    actions = torch.randint(0, A, (P * B, 1), generator=g)
    v = torch.randn(P * B, E, generator=g)
    out = torch.empty(P * B, E)
    row = {"members": P, "slots_per_member": B, "dim": E}
    results = {}
    for mode in ("wide", "blocks", "wide", "blocks"):          # twice each, alternating; the second is kept
        tp = TransitionProducts(actions, A, P, E, mode)
        weights = tp.weights(W if P > 1 else W[0])
        row[f"{mode}_us"] = per_call_us(lambda: tp(v, 0, weights, out=out), n)
        results[mode] = out.clone()
        if mode == "blocks":
            row["largest_group"] = tp.R[0]
    row["blocks_speedup"] = row["wide_us"] / row["blocks_us"]
    row["max_abs_diff"] = float((results["wide"] - results["blocks"]).abs().max())
    row["auto_picks"] = "blocks" if TransitionProducts(actions, A, P, E).blocks else "wide"
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"device": platform.processor() or "cpu", "threads": args.threads, "torch": torch.__version__,
                      "cases": [case(P, B, E, 5, args.calls) for P, B, E in CASES]}, indent=1))


if __name__ == "__main__":
    main()
