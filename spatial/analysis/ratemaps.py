"""Rate maps (spec 5.1): mean activity per node, NaN where a node has no visit.

Definitions
-----------
For a walk of T steps with activity ``a[t, u]`` and visited node ``nodes[t]``:

* occupancy[n] = number of steps at node n (all visits).
* maps[u, n] = mean of a[t, u] over the *kept* visits to n. With
  ``second_half=True`` (TEM's convention: early visits are made before the
  network has inferred where it is) a node visited k times keeps its last
  ceil(k/2) visits, i.e. visits number floor(k/2)+1 ... k (1-indexed): k=1 keeps
  its single visit, k=2 the second, k=3 the second and third, k=4 the third and
  fourth. For odd k this is exactly "from the ceil(k/2)-th visit on"; for even k
  it is the strict second half.
* Unvisited nodes are NaN, never 0 (a 0 would be a real, low rate and would bias
  every correlation-based score).

Maps are built with one sparse (n_nodes x T) averaging matrix so that all units,
and the circularly shifted copies used by the shuffle null, cost one sparse
product each.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["rate_maps", "to_grid", "visit_weights", "averaging_matrix",
           "square_coords", "hex_coords"]


def visit_weights(nodes: np.ndarray, n_nodes: int, second_half: bool = True) -> np.ndarray:
    """0/1 weight per step: 1 if the step is a kept visit of its node (see module doc)."""
    nodes = np.asarray(nodes)
    if nodes.ndim != 1:
        raise ValueError("nodes must be 1-D (T,)")
    if nodes.size and (nodes.min() < 0 or nodes.max() >= n_nodes):
        raise ValueError("node index out of range")
    if not second_half:
        return np.ones(nodes.shape[0])
    T = nodes.shape[0]
    order = np.argsort(nodes, kind="stable")           # steps grouped by node, in time order
    counts = np.bincount(nodes, minlength=n_nodes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(T, dtype=np.int64)                  # 0-based visit number of each step
    rank[order] = np.arange(T) - np.repeat(starts, counts)
    k = counts[nodes]
    return (rank >= k // 2).astype(float)


def averaging_matrix(nodes: np.ndarray, n_nodes: int, second_half: bool = True,
                     shift: int = 0) -> sp.csr_matrix:
    """Sparse (n_nodes, T) matrix A with ``A @ activity`` = rate maps (nodes x units).

    ``shift`` s pairs the node of step t with the activity of step (t - s) mod T,
    i.e. the activity time series circularly shifted by s against the node
    sequence (the circular-shift null). Kept-visit weights depend on the node
    sequence only, so they are the same for every shift.
    """
    nodes = np.asarray(nodes)
    T = nodes.shape[0]
    w = visit_weights(nodes, n_nodes, second_half)
    kept = np.bincount(nodes, weights=w, minlength=n_nodes)
    with np.errstate(divide="ignore"):
        inv = np.where(kept > 0, 1.0 / np.maximum(kept, 1e-300), 0.0)
    cols = (np.arange(T) - shift) % T
    keep = w > 0
    return sp.csr_matrix((w[keep] * inv[nodes[keep]], (nodes[keep], cols[keep])),
                         shape=(n_nodes, T))


def rate_maps(activity: np.ndarray, nodes: np.ndarray, n_nodes: int,
              second_half: bool = True):
    """Rate maps of every unit.

    Parameters
    ----------
    activity : (T, U) or (T,) float
    nodes : (T,) int, node index at each step
    n_nodes : number of nodes of the world
    second_half : keep only the last ceil(k/2) of a node's k visits (TEM).

    Returns
    -------
    maps : (U, n_nodes) float, NaN at unvisited nodes ((n_nodes,) for 1-D input)
    occupancy : (n_nodes,) int, visit counts over all visits
    """
    activity = np.asarray(activity, dtype=float)
    squeeze = activity.ndim == 1
    if squeeze:
        activity = activity[:, None]
    nodes = np.asarray(nodes).astype(np.int64)
    if activity.shape[0] != nodes.shape[0]:
        raise ValueError("activity and nodes must have the same length T")
    A = averaging_matrix(nodes, n_nodes, second_half)
    maps = np.asarray(A @ activity).T.copy()
    occupancy = np.bincount(nodes, minlength=n_nodes)
    maps[:, occupancy == 0] = np.nan
    return (maps[0] if squeeze else maps), occupancy


def to_grid(maps: np.ndarray, coords: np.ndarray, shape=None) -> np.ndarray:
    """Lay node maps (U, N) or (N,) onto a 2-D array using integer (row, col) per node.

    ``shape`` defaults to (max row + 1, max col + 1) after shifting the
    coordinates to start at 0. Cells with no node are NaN.
    """
    maps = np.asarray(maps, dtype=float)
    squeeze = maps.ndim == 1
    if squeeze:
        maps = maps[None]
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != maps.shape[1]:
        raise ValueError("coords must be (N, 2) integer (row, col), N = maps.shape[-1]")
    rc = np.rint(coords).astype(np.int64)
    if not np.allclose(rc, coords):
        raise ValueError("to_grid needs integer coordinates (use autocorrelogram_points "
                         "for non-square worlds)")
    rc = rc - rc.min(axis=0)
    if shape is None:
        shape = tuple(rc.max(axis=0) + 1)
    out = np.full((maps.shape[0],) + tuple(shape), np.nan)
    out[:, rc[:, 0], rc[:, 1]] = maps
    return out[0] if squeeze else out


def square_coords(height: int, width: int | None = None) -> np.ndarray:
    """(row, col) of the nodes of a height x width square world, node id = row*width+col."""
    width = height if width is None else width
    r, c = np.divmod(np.arange(height * width), width)
    return np.stack([r, c], axis=1)


def hex_coords(radius: int) -> np.ndarray:
    """Cartesian (x, y) of the nodes of a hexagonal world of the given radius.

    Nodes are the axial coordinates (q, r) with max(|q|, |r|, |q + r|) <= radius,
    3R(R+1)+1 nodes (61, 91, 127 for R = 4, 5, 6), neighbour distance 1:
    x = q + r/2, y = r * sqrt(3)/2.
    """
    qs, rs = [], []
    for q in range(-radius, radius + 1):
        for r in range(-radius, radius + 1):
            if abs(q + r) <= radius:
                qs.append(q)
                rs.append(r)
    q = np.array(qs, dtype=float)
    r = np.array(rs, dtype=float)
    return np.stack([q + r / 2.0, r * np.sqrt(3) / 2.0], axis=1)
