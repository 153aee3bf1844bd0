"""Training speed of TEM (temt_core/tem.py) against TEM-t (spatial's default config), in the same run.

    python benchmarks/tem_speed.py                      # CPU, one thread, chunks of 75, prints JSON
    python benchmarks/tem_speed.py --chunk 20 --timed 5 # TEM's own truncation length (the PyTorch port's n_rollout)
    python benchmarks/tem_speed.py --baseline none      # without the baseline arm

--baseline REV (default HEAD) adds a third arm, "tem_baseline": temt_core/tem.py as committed at REV (read with
`git show`), with the same initial weights as "tem", timed in the same run, so that a speed-up of the working tree
is measured against its starting point under the same load. Its losses are reported beside the new ones (the two
compute the same function; they differ by float rounding only). The fast memory products were measured against
--baseline 6870ce9 (the commit before them).

Both models train on the same chunks of the same walks (spatial.walks.WalkStream, TEM's square worlds, batch 16):
forward + backward + gradient-norm clip 2 + Adam, loss on revisits, state carried across chunks. Warm-up chunks first
run without gradients so that TEM-t's memory store reaches its steady size (walks of 500-1,600 steps) and both
models' states are those of a running training; then the timed steps alternate between the two models, so that
load from other work on a shared machine falls on both alike. Medians of wall and process CPU time per step.
TEM-t: TEMt(TEMtConfig()) = spatial's default model. TEM: TEM(TEMConfig()) = the port's sizes (g 120, p 400).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from spatial.walks import WalkConfig, WalkStream
from temt_core.model import TEMt, TEMtConfig
from temt_core.tem import TEM, TEMConfig


def chunks(n: int, batch: int, length: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    stream = WalkStream(WalkConfig(), batch, seed=seed)
    out = []
    for _ in range(n):
        c = stream.next_chunk(length)
        out.append(tuple(torch.from_numpy(c[k]) for k in ("x", "actions", "revisit")))
    return out


class Arm:
    """One model's training loop: step(chunk, train) -> seconds (wall, cpu)."""

    def __init__(self, name: str, model: torch.nn.Module, tem_step: int | None = None):
        self.name, self.model, self.tem_step = name, model, tem_step
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.state, self.wall, self.cpu, self.losses = None, [], [], []

    def __call__(self, x, a, revisit, train: bool) -> None:
        kw = {} if self.tem_step is None else {"step": self.tem_step}
        t0, c0 = time.perf_counter(), time.process_time()
        if not train:
            with torch.no_grad():
                self.state = self.model(x, a, self.state, loss_mask=revisit, **kw).state
            return
        out = self.model(x, a, self.state, loss_mask=revisit, **kw)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 2.0)
        self.opt.step()
        self.state = out.state
        self.losses.append(out.loss.item())
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)

    def summary(self, batch: int, length: int) -> dict:
        sec = statistics.median(self.wall)
        return {"sec_per_step": round(sec, 4), "walk_steps_per_s": round(batch * length / sec, 1),
                "cpu_sec_per_step": round(statistics.median(self.cpu), 4), "timed_steps": len(self.wall),
                "parameters": sum(p.numel() for p in self.model.parameters())}


def baseline_module(rev: str):
    """temt_core/tem.py as committed at `rev`, imported as temt_core._tem_baseline (its relative imports resolve
    to the working tree's temt_core, which the file's own revision also used for positions, config, validation)."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:temt_core/tem.py"], cwd=root, check=True, capture_output=True,
                            text=True).stdout
    name = "temt_core._tem_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "temt_core"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:temt_core/tem.py", "exec"), module.__dict__)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=75, help="steps per chunk (spatial's default 75; TEM's port 20)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=8, help="chunks without gradients first")
    ap.add_argument("--timed", type=int, default=3, help="timed training steps per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default="HEAD", help="git revision of temt_core/tem.py to time beside the working "
                    "tree ('none': no baseline arm)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arms = [Arm("temt", TEMt(TEMtConfig())), Arm("tem", TEM(TEMConfig()), tem_step=20_000)]
    if args.baseline != "none":
        old = baseline_module(args.baseline).TEM(TEMConfig())
        old.load_state_dict(arms[1].model.state_dict())
        arms.append(Arm("tem_baseline", old, tem_step=20_000))
    data = chunks(args.warmup + args.timed + 1, args.batch, args.chunk, args.seed)
    for i, chunk in enumerate(data):
        for arm in arms:
            arm(*chunk, train=i >= args.warmup)
            if i == args.warmup:             # the first training step of each arm is an untimed warm-up too
                arm.wall.clear()
                arm.cpu.clear()
    res = {arm.name: arm.summary(args.batch, args.chunk) for arm in arms}
    res["tem_over_temt_time"] = round(res["tem"]["sec_per_step"] / res["temt"]["sec_per_step"], 2)
    if args.baseline != "none":
        base, new = res["tem_baseline"], res["tem"]
        res["tem_speedup_over_baseline"] = {"wall": round(base["sec_per_step"] / new["sec_per_step"], 2),
                                            "cpu": round(base["cpu_sec_per_step"] / new["cpu_sec_per_step"], 2)}
        res["tem_loss_rel_diff_max"] = max(abs(a - b) / abs(b) for a, b in zip(arms[1].losses, arms[2].losses))
    res["config"] = {"baseline": args.baseline, "batch": args.batch, "chunk": args.chunk, "threads": args.threads,
                     "warmup_chunks": args.warmup,
                     "worlds": "TEM widths 8-11, walks of 500-1600 steps", "torch": torch.__version__,
                     "machine": platform.processor() or platform.machine()}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
