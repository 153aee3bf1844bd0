"""The explicit prediction read with the stored memories' padding cut away, slot group by slot group.

The store is a padded (B, M) layout (memory.py): each slot's memories sit somewhere in its row, the rest is padding
that every query still scores. With slots that start new worlds at different times, the padding is large: at the
reference config (walks of 1,000 out of phase) only about half of the stored columns are valid
(docs/results/engine-2026-12-04.md). A query's scores on columns its slot does not hold are blocked and their
softmax weights exactly zero, so the read may skip columns no slot of a group holds:

    sort the slots by how many memories they hold; cut them into `groups` groups of consecutive slots;
    for group g (slots idx_g): the columns any of its slots holds, as a few runs (gaps of up to `max_gap` columns
        are read rather than split on); p(x)[idx_g] = the explicit read of q[idx_g] over (those runs of the stored
        memories, the chunk's memories)

After a re-pack a slot holds a prefix of its row and, after each append, the newest columns, so grouping by count
gathers slots whose prefixes end near one another; after a new world a slot holds only the newest columns.
The same keys, the same weights, the same sums up to the order of additions over the skipped zeros: equal to the
full read in float64 (tests/core/test_grouped_read.py). One host read per call (which columns each slot holds), so
capturable steps keep the full read. Used when it saves at least `min_saving` of the stored columns' work.
"""
from __future__ import annotations

from typing import Sequence

import torch

GROUPS = 4              # slot groups per read: each adds about ten small ops; 4 cut most of the padding
MAX_GAP = 32            # columns of padding read rather than split into another key group (each costs a few ops)
MIN_SAVING = 0.1        # below this share of the stored columns' work saved, the plain read is as fast


def runs(columns: torch.Tensor, max_gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """(M,) bool -> [(a, b), ...]: the runs of True columns, runs closer than max_gap merged."""
    d = torch.diff(columns.to(torch.int8), prepend=columns.new_zeros(1, dtype=torch.int8),
                   append=columns.new_zeros(1, dtype=torch.int8))
    starts, ends = (d == 1).nonzero().flatten().tolist(), (d == -1).nonzero().flatten().tolist()
    merged: list[list[int]] = []
    for a, b in zip(starts, ends):
        if merged and a - merged[-1][1] <= max_gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def plan_groups(valid: torch.Tensor, groups: int = GROUPS, max_gap: int = MAX_GAP) -> list[tuple[list[int], list]]:
    """valid (B, M) bool on the host -> [(slots, column runs), ...]: slots sorted by their number of memories, cut
    into `groups` groups of (nearly) equal size, each with the runs of columns any of its slots holds."""
    B = valid.shape[0]
    order = torch.argsort(valid.sum(1), stable=True).tolist()
    size = -(-B // max(1, min(groups, B)))
    return [(idx, runs(valid[idx].any(0), max_gap)) for idx in (order[i:i + size] for i in range(0, B, size))]


def saving(plan, B: int, M: int) -> float:
    """Share of the stored columns' (slot x column) work the plan skips."""
    if B * M == 0:
        return 0.0
    return 1.0 - sum(len(idx) * sum(b - a for a, b in cols) for idx, cols in plan) / (B * M)


def grouped_read(q_tilde: torch.Tensor, n: torch.Tensor, keys: Sequence, n_x: int, read,
                 groups: int = GROUPS, min_saving: float = MIN_SAVING, max_gap: int = MAX_GAP) -> torch.Tensor | None:
    """p(x) (B, T, n_x) read by q_tilde (B, T, E) from `keys` (attention.Keys, the stored memories first, with a
    (B, 1, M) mask) through `read(q, n, keys) -> p(x)`, one call per slot group over the stored memories' columns
    that its slots hold; None when grouping would not save `min_saving` (the caller then reads everything)."""
    stored = keys[0]
    B, M = stored.z.shape[0], stored.z.shape[1]
    if stored.mask.dim() != 3 or stored.mask.shape[1] != 1 or B < 2 or M == 0:
        return None
    if q_tilde.device.type != "cpu":    # a GPU is bound by launches, and the plan's host read would wait on it
        return None
    plan = plan_groups(stored.mask[:, 0].cpu(), groups, max_gap)               # the one host read
    if saving(plan, B, M) < min_saving:
        return None
    parts, order = [], []
    for idx, cols in plan:
        rows = torch.tensor(idx, device=q_tilde.device)
        pick = lambda t: None if t is None else t.index_select(0, rows)
        group_keys = [type(stored)(pick(stored.z[:, a:b]), pick(stored.x[:, a:b]), pick(stored.mask[:, :, a:b]),
                                   pick(stored.rows)) for a, b in cols]
        group_keys += [type(k)(pick(k.z), pick(k.x), pick(k.mask), pick(k.rows)) for k in keys[1:]]
        parts.append(read(q_tilde.index_select(0, rows), n.index_select(0, rows), group_keys))
        order.append(rows)
    order = torch.cat(order)
    p_x = torch.cat(parts)                                                     # (B, T, n_x) in group order
    return p_x.new_zeros(B, *p_x.shape[1:]).index_copy(0, order, p_x)
