"""Positive control for the hexagon search: a conformal-isometry loss on the walk's true displacements.

Xu et al. (ICLR 2025) grow hexagonal grid cells by asking that the code moves by an amount proportional to the
distance travelled, the same in every direction:

    L_iso = mean over step pairs (t - k, t) in one world, displaced (|dx| > 0), k in lags, of
            ( ||e_t - e_{t-k}|| - s * ||x_t - x_{t-k}|| )^2

with x the node coordinates (unit spacing in square and hexagonal worlds) and s a fixed scale. It inserts the
answer (true positions) into training, which TEM-t never sees, so it is a control: with it the pipeline must find
hexagonal cells, or a negative result of the search says nothing. Written here, not in temt_core, because only the
world knows coordinates.
"""
from __future__ import annotations

import numpy as np
import torch


def node_coordinates(worlds: list, world_index: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(B, T, 2) coordinates of the visited nodes; world_index, nodes (B, T) as a WalkStream chunk gives them."""
    table = np.zeros((len(worlds), max(w.n_nodes for w in worlds), 2))
    for i, w in enumerate(worlds):
        table[i, :w.n_nodes] = w.require_coords("the isometry loss")
    return table[world_index, nodes]


def isometry_loss(e: torch.Tensor, xy: torch.Tensor, world: torch.Tensor, lags=(1, 2, 3),
                  scale: float = 1.0) -> torch.Tensor:
    """e (B, T, E) positions, xy (B, T, 2) true coordinates, world (B, T) world count (pairs across a world change
    are left out). Returns the mean squared deviation from ||de|| = scale * ||dx|| (0 when no pair qualifies)."""
    total, count = e.new_zeros(()), 0
    for k in lags:
        if k >= e.shape[1]:
            continue
        dx = torch.linalg.vector_norm(xy[:, k:] - xy[:, :-k], dim=-1)                  # (B, T - k)
        keep = (world[:, k:] == world[:, :-k]) & (dx > 1e-9)
        if not bool(keep.any()):
            continue
        de = torch.linalg.vector_norm(e[:, k:] - e[:, :-k], dim=-1)
        total = total + ((de - scale * dx.to(e.dtype)) ** 2)[keep].sum()
        count += int(keep.sum())
    return total / max(count, 1)
