"""The energy (activity) penalty on the positions e, in the forms the hexagon search compares.

    'sum'     TEM's L2 on g: sum over units of e^2, mean over batch and steps. Its scale grows with the number of
              units, so one weight does not mean the same for 64 and 256 units.
    'mean'    the mean of e^2 over units, batch and steps: 'sum' / E, the same pressure per unit at any width.
    'budget'  a per-unit activity budget (after Dorrell et al., ICLR 2023): each unit's mean e^2 over batch and
              steps above `budget` is penalised, below it is free, summed over units. It limits energy without
              pulling every unit to zero, which the audit found 'sum' does to ReLU codes along a walk.
"""
from __future__ import annotations

import torch

ENERGY_KINDS = ("sum", "mean", "budget")


def energy_penalty(e: torch.Tensor, kind: str = "sum", budget: float = 0.1) -> torch.Tensor:
    """e (..., B, T, E) -> the penalty (...): one number per leading index (per member of a population)."""
    sq = e.square()
    if kind == "sum":
        return sq.sum(-1).mean((-2, -1))
    if kind == "mean":
        return sq.mean((-3, -2, -1))
    if kind == "budget":
        return torch.relu(sq.mean((-3, -2)) - budget).sum(-1)
    raise ValueError(f"energy must be one of {ENERGY_KINDS}, got {kind!r}")
