"""Memory scaling (claim C7): accuracy and cost of a trained TEM-t against walk length and memory size.

    temt-spatial scaling runs/relu --out runs/relu/scaling lengths=[250,1000,4000] size=16

For each walk length L the trained model walks fresh worlds of `size` for L steps (no learning) and we record
accuracy on revisits and zero-shot steps in the last quarter of the walk (where the store is largest), the number
of memories held at the end, and the wall-clock time per step of the forward pass, once with the model's
de-duplication and once without it (every step a new memory: the store grows with L).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import accuracy_summary
from .rollout import run_rollout
from .worlds import config_world


@dataclass
class ScalingConfig:
    lengths: tuple[int, ...] = (250, 500, 1000, 2000, 4000)
    size: int = 16                       # world width (or hex radius): larger worlds hold more distinct memories
    n_worlds: int = 8
    seed: int = 4321

    def __post_init__(self):
        if not self.lengths or min(self.lengths) < 20:
            raise ValueError("scaling.lengths must be walk lengths >= 20")
        if self.n_worlds < 1:
            raise ValueError(f"scaling.n_worlds must be >= 1 (got {self.n_worlds})")
        if self.seed < 0:
            raise ValueError(f"scaling.seed must be >= 0 (got {self.seed})")


@torch.no_grad()
def memory_scaling(model, config, cfg: ScalingConfig) -> list[dict]:
    rows = []
    world = config_world(config.walks.kind, cfg.size, "scaling.size")
    original = model.config.dedup_threshold
    try:
        for dedup in (original, None):
            model.config.dedup_threshold = dedup
            for L in cfg.lengths:
                t0 = time.perf_counter()
                r = run_rollout(model, config.walks, cfg.n_worlds, L, cfg.seed, config.train.chunk_length,
                                worlds=[world])
                elapsed = time.perf_counter() - t0
                tail = np.zeros_like(r.revisit)
                tail[:, (3 * L) // 4:] = True
                acc = accuracy_summary(r.correct & tail, r.revisit & tail, r.new_edge & tail, r.edge_seen & tail,
                                       np.where(tail, r.actions, -1), r.n_stimuli)
                rows.append({"dedup": dedup is not None, "walk_length": L,
                             "memories_at_end": float(r.memories_at_end.mean()),
                             "acc_revisit_last_quarter": acc["acc_revisit"],
                             "acc_zero_shot_last_quarter": acc["acc_zero_shot"],
                             "ms_per_step": 1e3 * elapsed / L})
    finally:
        model.config.dedup_threshold = original
    return rows


def plot_scaling(rows: list[dict], fig=None, ax=None):
    """Accuracy (left) and ms per step (right) against walk length, with and without de-duplication."""
    from .plots import new_figure
    if ax is None:
        fig = fig or new_figure((8, 3))
        ax = fig.subplots(1, 2)
    for dedup, style in ((True, "o-"), (False, "s--")):
        sel = [r for r in rows if r["dedup"] == dedup]
        if not sel:
            continue
        L = [r["walk_length"] for r in sel]
        label = "de-duplicated" if dedup else "every step stored"
        ax[0].plot(L, [r["acc_revisit_last_quarter"] for r in sel], style, label=f"revisits, {label}")
        ax[0].plot(L, [r["acc_zero_shot_last_quarter"] for r in sel], style, alpha=0.5,
                   label=f"zero-shot, {label}")
        ax[1].plot(L, [r["ms_per_step"] for r in sel], style, label=label)
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("walk length (steps in one world)")
    ax[0].set_ylabel("accuracy, last quarter of the walk")
    ax[0].set_ylim(0, 1.05)
    ax[1].set_ylabel("ms per step (batch of worlds)")
    ax[0].legend(fontsize=6)
    ax[1].legend(fontsize=6)
    return ax[0].figure, ax
