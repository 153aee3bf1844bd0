"""Speed of the prediction read: TEMtAttention's explicit read against the fused one (temt_core/memory_read.py).

    python benchmarks/read_speed.py              # CPU, one thread, prints JSON

Reference sizes: batch 16, 1,000 stored memories (one world change in slot 0) plus a chunk of 75, e = 128,
n_x = 45; T = 75 queries (the parallel path) and 150 (landmark correction reads from e_pi and from e). Forward and
forward + backward, medians of interleaved repeats (both backends in the same run, so the ratio is comparable on
a shared machine).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from temt_core.attention import Keys, TEMtAttention


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, M, T, E, n_x = 16, 1000, 75, 128, 45
    att = TEMtAttention(E, n_x)
    result = {"benchmark": "read_speed", "threads": args.threads, "torch": torch.__version__,
              "config": f"batch {B}, {M} stored + {T} chunk memories, e={E}, n_x={n_x}", "runs": {}}
    for Tq in (T, 2 * T):
        z_m, x_m = torch.randn(B, M, E), torch.randint(0, n_x, (B, M))
        z_c, x_c = torch.randn(B, T, E, requires_grad=True), torch.randint(0, n_x, (B, T))
        chunk = torch.ones(T, T, dtype=torch.bool).tril(-1).expand(B, T, T).repeat(1, Tq // T, 1)
        rows = torch.ones(B, Tq, dtype=torch.bool)
        rows[0, Tq // 2:] = False
        keys = [Keys(z_m, x_m, torch.ones(B, 1, M, dtype=torch.bool), rows=rows), Keys(z_c, x_c, chunk)]
        z_q = (0.1 * torch.randn(B, Tq, E)).requires_grad_()
        times = {b: ([], []) for b in ("explicit", "fused")}
        for _ in range(args.repeats):
            for backend, (fwd, total) in times.items():
                t0 = time.process_time()
                logits, _ = att(z_q, keys, need_weights=False, backend=backend)
                t1 = time.process_time()
                logits.square().sum().backward()
                fwd.append(t1 - t0)
                total.append(time.process_time() - t0)
        med = {b: {"forward_ms": 1e3 * statistics.median(f), "train_ms": 1e3 * statistics.median(t)}
               for b, (f, t) in times.items()}
        med["fused_over_explicit_speed"] = med["explicit"]["train_ms"] / med["fused"]["train_ms"]
        result["runs"][f"queries_{Tq}"] = med
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
