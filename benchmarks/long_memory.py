"""Long memories in bounded memory: stream one world of N steps (every step a new memory) through TEM-t.

    python benchmarks/long_memory.py --steps 10000            # CPU (issue 2: 10^4 memories)
    python benchmarks/long_memory.py --steps 100000 --device cuda

Prints JSON: seconds per chunk at the end (when the store is fullest) with and without training, the final store
size, and the peak resident memory. Memory per chunk is O(B T K): it grows with the store, never with T^2 of the
whole walk, because the walk is streamed in chunks with the state carried.
"""
import argparse
import json
import resource
import time

import torch

from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--chunk", type=int, default=75)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(dedup_threshold=None, transition_init_std=0.3)).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randint(0, 45, (args.batch, args.steps), device=device)
    a = torch.randint(0, 5, (args.batch, args.steps), device=device)
    a[:, 0] = RESET
    state, started = None, time.perf_counter()
    n_chunks = (args.steps + args.chunk - 1) // args.chunk
    last_infer = last_train = None
    for i, lo in enumerate(range(0, args.steps, args.chunk)):
        xs, as_ = x[:, lo:lo + args.chunk], a[:, lo:lo + args.chunk]
        t0 = time.perf_counter()
        if i < n_chunks - 3:
            with torch.no_grad():
                out = model(xs, as_, state)
            last_infer = time.perf_counter() - t0
        else:                               # the last chunks with training, at the largest store
            out = model(xs, as_, state)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            last_train = time.perf_counter() - t0
        state = out.state
    print(json.dumps({"steps": args.steps, "batch": args.batch, "chunk": args.chunk, "device": str(device),
                      "threads": args.threads, "final_memories_per_slot": int(state.memory.valid.sum(1).max()),
                      "sec_per_chunk_inference_at_end": last_infer, "sec_per_chunk_training_at_end": last_train,
                      "total_sec": time.perf_counter() - started,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=1))


if __name__ == "__main__":
    main()
