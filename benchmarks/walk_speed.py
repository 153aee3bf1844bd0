"""Walk generation throughput: batched random walks in TEM's square worlds (walk-steps generated per second).

    python benchmarks/walk_speed.py            # prints JSON; target (issue 3): >= 10^6 walk-steps/s on the 2-core CPU
"""
import json
import time

from spatial.walks import WalkConfig, WalkStream


def rate(policy: str, batch: int, chunk: int = 75, seconds: float = 2.0) -> float:
    stream = WalkStream(WalkConfig(policy=policy), batch, seed=0)
    stream.next_chunk(chunk)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stream.next_chunk(chunk)
        n += batch * chunk
    return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    out = {f"{policy}/batch{b}": round(rate(policy, b)) for policy in ("uniform", "repeat", "heading")
           for b in (16, 64, 256)}
    print(json.dumps({"walk_steps_per_s": out, "config": "TEM widths 8-11, walks of 500-1600 steps, chunks of 75"},
                     indent=1))
