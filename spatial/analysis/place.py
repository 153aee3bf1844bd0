"""Place metrics for memory neurons (spec 5.5 and the paper's Fig. 11 metric).

Rates must be >= 0 (a ValueError otherwise: the measures are defined for
firing rates; shift or rectify the code explicitly before calling them).
NaN nodes (unvisited) are ignored.

* Skaggs spatial information, bits per spike:
  I = sum_i p_i (r_i / r) log2(r_i / r), p_i = occupancy_i / sum occupancy
  (uniform when occupancy is None), r = sum_i p_i r_i, 0 log 0 = 0. Negative
  terms are not clamped. One active node of N (uniform occupancy) gives
  log2 N; a uniform map gives 0. NaN if r = 0.
* Sparsity: (sum p r)^2 / sum p r^2; 1/N for one active node of N, 1 for a
  uniform map.
* Place fields: connected components of the nodes with rate > threshold x peak
  (threshold 0.2), connectivity from the world graph (``adjacency``) or, for
  a square raster, 4-connectivity (the moves of a 4-connected world).
  ``min_field_size`` defaults to 1 node: the usual 9-bin minimum comes from
  rodent maps of ~1,600 bins (9 bins = 0.6 % of the box), which scales to
  under one node on 8-20 node worlds (spec 5.5: "scale it").
* Place metric (paper Fig. 11): firing mass (sum of rates) in the largest
  field / mass in all fields; 1 for a single field, NaN with no field.
  "Largest" = largest mass.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import label
from scipy.sparse.csgraph import connected_components

__all__ = ["spatial_information", "sparsity", "place_fields", "place_metric"]


def _check_rates(m):
    m = np.asarray(m, dtype=float)
    if np.any(m[np.isfinite(m)] < 0):
        raise ValueError("place metrics need non-negative rates")
    return m


def _probs(maps, occupancy):
    """maps (U, N) -> (rates with NaN->0, p (U, N)) with p over valid nodes."""
    valid = np.isfinite(maps)
    if occupancy is None:
        occ = np.ones(maps.shape[-1])
    else:
        occ = np.asarray(occupancy, dtype=float).reshape(-1)
        if occ.shape[0] != maps.shape[-1]:
            raise ValueError("occupancy must have one entry per node")
    w = np.where(valid, occ[None, :], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = w / w.sum(axis=1, keepdims=True)
    return np.where(valid, maps, 0.0), p


def _batch(m, occupancy):
    """(flat (U, N), single?) following the batching convention of the module."""
    single = m.ndim == 1 or (occupancy is not None and np.shape(occupancy) == m.shape)
    flat = m.reshape(1, -1) if single else m.reshape(m.shape[0], -1)
    return flat, single


def spatial_information(rate_map, occupancy=None):
    """Skaggs information (bits/spike).

    Batching: a 1-D map, or any map whose shape equals ``occupancy``'s, is one
    map; otherwise the leading axis indexes units ((U, N) or (U, H, W)).
    Returns a float or (U,) array; NaN where the mean rate is 0.
    """
    m = _check_rates(rate_map)
    flat, single = _batch(m, occupancy)
    r, p = _probs(flat, occupancy)
    rbar = (p * r).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = r / rbar
        terms = np.where(q > 0, p * q * np.log2(np.where(q > 0, q, 1.0)), 0.0)
        info = terms.sum(axis=1)
    info = np.where(rbar[:, 0] > 0, info, np.nan)
    return float(info[0]) if single else info


def sparsity(rate_map, occupancy=None):
    """(sum p r)^2 / sum p r^2; batching as :func:`spatial_information`."""
    m = _check_rates(rate_map)
    flat, single = _batch(m, occupancy)
    r, p = _probs(flat, occupancy)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (p * r).sum(axis=1) ** 2 / (p * r * r).sum(axis=1)
    return float(s[0]) if single else s


def place_fields(rate_map, adjacency=None, shape=None, threshold=0.2, min_field_size=1):
    """Connected supra-threshold components of one map.

    rate_map: (N,) node map with ``adjacency`` (N, N) (dense or sparse, nonzero
    = edge), or an (H, W) raster (or (N,) with ``shape`` = (H, W)) using
    4-connectivity. Returns (labels, masses): labels has the map's shape with
    0 = no field and 1..k = fields sorted by decreasing mass; masses (k,) the
    sum of rates in each field.
    """
    m = _check_rates(rate_map)
    valid = np.isfinite(m)
    if not valid.any():
        return np.zeros(m.shape, dtype=int), np.zeros(0)
    peak = np.max(m[valid])
    above = valid & (m > threshold * peak) & (peak > 0)
    if adjacency is not None:
        flat = above.reshape(-1)
        A = sp.csr_matrix(adjacency)
        idx = np.nonzero(flat)[0]
        lab = np.zeros(flat.shape[0], dtype=int)
        if idx.size:
            sub = A[idx][:, idx]
            _, comp = connected_components(sub, directed=False)
            lab[idx] = comp + 1
        lab = lab.reshape(m.shape)
    else:
        grid = above if shape is None else above.reshape(shape)
        if grid.ndim != 2:
            raise ValueError("give adjacency for node maps, or an (H, W) map / shape")
        lab, _ = label(grid, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
        lab = lab.reshape(m.shape)
    k = lab.max()
    vals = np.where(valid, m, 0.0)
    masses = np.bincount(lab.ravel(), weights=vals.ravel(), minlength=k + 1)[1:]
    sizes = np.bincount(lab.ravel(), minlength=k + 1)[1:]
    keep = sizes >= min_field_size
    order = [i for i in np.argsort(-masses, kind="stable") if keep[i]]
    relabel = np.zeros(k + 1, dtype=int)
    for new, old in enumerate(order, start=1):
        relabel[old + 1] = new
    return relabel[lab], masses[order]


def place_metric(rate_map, adjacency=None, shape=None, threshold=0.2, min_field_size=1):
    """Mass in the largest field / mass in all fields (1 for a single field).

    ``rate_map`` may be a batch: (U, N) with adjacency/shape, or (U, H, W).
    Returns a float, or (U,) array.
    """
    m = _check_rates(rate_map)
    single = (m.ndim == 1) or (m.ndim == 2 and adjacency is None and shape is None)
    batch = [m] if single else list(m)
    out = []
    for mm in batch:
        _, masses = place_fields(mm, adjacency, shape, threshold, min_field_size)
        tot = masses.sum()
        out.append(masses[0] / tot if masses.size and tot > 0 else np.nan)
    return float(out[0]) if single else np.array(out)
