"""The fused landmark loop of this tree against the same file at an earlier commit, in one process, steps interleaved.

    python benchmarks/landmark_ab.py --base 738a0ee                     # stimulus query, prints JSON
    python benchmarks/landmark_ab.py --base 738a0ee --query product --chunks 6

Three arms train side by side on copies of one stream (the reference config of benchmarks/landmark_speed.py:
batch 16, chunks of 75, e = 128, n_x = 45, memory 0..1,000 per slot, de-duplication off unless --dedup):

    parallel   TEM-t without landmark correction (this tree), the yardstick of the 0.5x target
    base       landmark correction with temt_core/landmark_loop.py as it was at --base (git show), everything
               else from this tree: the A/B isolates that one file
    new        landmark correction with this tree's temt_core/landmark_loop.py

The timing is landmark_speed.py's --interleaved loop (time_interleaved: warm-up, then the arms in an order that
rotates every step, so a burst of load from elsewhere falls on all of them); medians of CPU time per step (less
disturbed by other processes than wall time) and of wall time are both reported.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import types
from pathlib import Path

import torch

import temt_core
import temt_core.model as model_module
from core_speed import add_malloc_option, apply_malloc
from landmark_speed import temt_step, time_interleaved
from temt_core import landmark_loop as new_loop
from temt_core.model import TEMt, TEMtConfig

REPO = Path(__file__).resolve().parents[1]


def load_base(commit: str) -> types.ModuleType:
    """temt_core/landmark_loop.py at `commit` as the module temt_core._landmark_loop_base (its relative imports
    resolve against this tree's temt_core)."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:temt_core/landmark_loop.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as err:
        sys.exit(f"--base {commit}: git show failed: {err.stderr.strip()}")
    module = types.ModuleType("temt_core._landmark_loop_base")
    module.__package__ = "temt_core"
    module.__file__ = f"{commit}:temt_core/landmark_loop.py"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _use(loop: types.ModuleType) -> None:
    """Make TEMt._landmark_fused call `loop` (it looks both names up in temt_core.model at call time)."""
    model_module.landmark_loop, model_module.store_keys = loop.landmark_loop, loop.store_keys


def _with_loop(step, loop: types.ModuleType):
    """A training step (landmark_speed.temt_step) that runs with `loop` as the landmark loop."""
    def run(x, a, state, train):
        _use(loop)
        return step(x, a, state, train)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare with (any git revision)")
    p.add_argument("--query", choices=["stimulus", "product"], default="stimulus")
    p.add_argument("--dedup", type=float, default=None, help="de-duplication threshold (default off)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=14, help="chunks that fill the memory before timing")
    p.add_argument("--chunks", type=int, default=12, help="timed steps per arm")
    add_malloc_option(p, default="keep")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    malloc = apply_malloc(args)
    base_loop = load_base(args.base)
    common = dict(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=args.dedup, transition_init_std=0.3)
    arms = {"parallel": ({}, new_loop), "base": (dict(landmark=args.query), base_loop),
            "new": (dict(landmark=args.query), new_loop)}
    steps = {}
    for name, (kw, loop) in arms.items():
        torch.manual_seed(0)
        steps[name] = _with_loop(temt_step(TEMt(TEMtConfig(**common, **kw))), loop)
    runs = time_interleaved(steps, 16, args.warmup, args.chunks, torch.device("cpu"))
    _use(new_loop)
    med = {name: r["cpu_sec_per_step"] for name, r in runs.items()}
    print(json.dumps({
        "device": platform.processor() or "cpu", "threads": args.threads, "torch": torch.__version__,
        "malloc": malloc, "base": args.base, "query": args.query, "dedup": args.dedup, "timed_steps": args.chunks,
        "cpu_sec_per_step": med, "wall_sec_per_step": {n: r["sec_per_step"] for n, r in runs.items()},
        "runs": runs,
        "ratios": {"new_over_base": med["base"] / med["new"],
                   "base_landmark_over_parallel": med["parallel"] / med["base"],
                   "new_landmark_over_parallel": med["parallel"] / med["new"]},
        "temt_core": str(Path(temt_core.__file__).parent)}, indent=1))


if __name__ == "__main__":
    main()
