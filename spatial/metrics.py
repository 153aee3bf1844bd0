"""Accuracy metrics of spec section 4, computed from a walk and a model's right/wrong record.

    zero-shot accuracy   on steps that arrive at an already-visited node through an edge (node, action) never
                         taken before in this world (link inference; stay moves excluded: staying is not a link)
    node agent           right on every revisit, at chance (1/n_x) on first visits: the upper bound
    edge agent           right only on edges it has taken before, chance otherwise: the lower bound
Accuracy against the fraction of nodes visited shows real inference: the model tracks the node agent.
First steps of a world (RESET) have nothing to predict from and are left out everywhere.
"""
from __future__ import annotations

import numpy as np


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def accuracy_summary(correct, revisit, new_edge, edge_seen, actions, n_stimuli: int, reset: int = -1) -> dict:
    """All arrays (B, T). Returns accuracies and the agents' accuracies on the same steps, with counts."""
    valid = actions != reset
    chance = 1.0 / n_stimuli
    node_agent = np.where(revisit, 1.0, chance)
    edge_agent = np.where(edge_seen, 1.0, chance)
    zero_shot = revisit & new_edge & valid
    return {
        "acc": _mean(correct, valid),
        "acc_revisit": _mean(correct, revisit & valid),
        "acc_zero_shot": _mean(correct, zero_shot),
        "acc_first_visit": _mean(correct, ~revisit & valid),
        "node_agent": _mean(node_agent, valid),
        "edge_agent": _mean(edge_agent, valid),
        "n_steps": int(valid.sum()),
        "n_revisit": int((revisit & valid).sum()),
        "n_zero_shot": int(zero_shot.sum()),
        "chance": chance,
    }


def coverage_before(n_visited, revisit, n_nodes) -> np.ndarray:
    """(B, T) fraction of the world's nodes visited *before* arriving at each step.

    n_visited (B, T) counts the current step's node if it is new, so the count before arriving is
    n_visited - ~revisit; n_nodes (B,) is each row's world size."""
    return (np.asarray(n_visited) - ~np.asarray(revisit)) / np.asarray(n_nodes)[:, None]


def accuracy_by_coverage(correct, revisit, edge_seen, actions, n_visited, n_nodes, n_stimuli: int,
                         bins: int = 10, reset: int = -1, new_edge=None) -> list[dict]:
    """Model / node-agent / edge-agent accuracy binned by the fraction of the world's nodes visited so far
    (coverage_before). With new_edge (B, T), each bin also gets the model's accuracy on its revisits and on its
    zero-shot steps (and their counts): whether late steps fail because they are revisits the code forgot."""
    valid = actions != reset
    frac = coverage_before(n_visited, revisit, n_nodes)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(frac, edges[1:-1]), 0, bins - 1)
    chance = 1.0 / n_stimuli
    zero_shot = None if new_edge is None else revisit & new_edge & valid
    rows = []
    for k in range(bins):
        m = valid & (which == k)
        row = {"coverage_lo": float(edges[k]), "coverage_hi": float(edges[k + 1]), "n": int(m.sum()),
               "model": _mean(correct, m),
               "node_agent": _mean(np.where(revisit, 1.0, chance), m),
               "edge_agent": _mean(np.where(edge_seen, 1.0, chance), m)}
        if zero_shot is not None:
            row.update(revisit=_mean(correct, m & revisit), zero_shot=_mean(correct, m & zero_shot),
                       n_revisit=int((m & revisit).sum()), n_zero_shot=int((m & zero_shot).sum()))
        rows.append(row)
    return rows
