"""Remapping between two worlds (spec 5.6).

All correlations are Pearson correlations over entries valid (finite) in both
vectors (NaN never zero-filled); NaN when fewer than 3 such entries or a side is
constant.

* :func:`cell_correlations`: per unit, correlation of its map in world 1 with
  its map in world 2 (same node indexing, equal shapes).
* :func:`population_vector_correlation`: per node, correlation across units of
  the population vectors of the two worlds; returns (mean over nodes, per node).
* :func:`pair_structure`: C_w = unit-by-unit rate-map correlation matrix in
  world w (pairwise valid nodes); r = correlation of the upper triangles
  (k = 1) of C_1 and C_2. Null: unit identities permuted in world 2
  (C_2[p][:, p]), ``n_perm`` = 1000 by default. Grid cells keep their
  relationships (r high); memory neurons remap randomly (r ~ 0). The worlds
  need not have equal shapes.
* :func:`grid_at_place` (TEM, Cell 2020): for every (place cell, grid cell)
  pair, x = grid rate at the place cell's peak node in world 1, y = the same
  grid cell's rate at the place cell's peak node in world 2; r = Pearson r
  pooled over all pairs. Null: the place cells' world-2 peaks are permuted
  among place cells (5,000 permutations by default). Place cells whose peak is
  within ``border_frac`` (10 %) of the border in either world are dropped: a
  node's cell centre lies (d + 0.5) node units from the wall, d = its node
  distance to the outermost node, and it is dropped if d + 0.5 < 0.1 n (n =
  the world's side): the outermost ring on 8-19 node worlds. Place cells
  whose peak falls on a NaN of any grid map are dropped too.
"""
from __future__ import annotations

import numpy as np

from .nulls import null_summary
from .scoring import as_geometry

__all__ = ["pearson_rows", "cell_correlations", "population_vector_correlation",
           "correlation_matrix", "pair_structure", "grid_at_place"]


def pearson_rows(a, b, min_valid=3):
    """Row-wise Pearson r of a, b (U, N) over entries finite in both."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    m = np.isfinite(a) & np.isfinite(b)
    n = m.sum(axis=1)
    a0 = np.where(m, a, 0.0)
    b0 = np.where(m, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = a0.sum(1, keepdims=True) / n[:, None]
        mb = b0.sum(1, keepdims=True) / n[:, None]
        da = np.where(m, a - ma, 0.0)
        db = np.where(m, b - mb, 0.0)
        va, vb = (da * da).sum(1), (db * db).sum(1)
        r = (da * db).sum(1) / np.sqrt(va * vb)
    scale = np.maximum(np.abs(a0).max(1), np.abs(b0).max(1)) ** 2 * np.maximum(n, 1)
    bad = (n < min_valid) | (va <= 1e-24 * scale) | (vb <= 1e-24 * scale)
    return np.where(bad, np.nan, np.clip(r, -1, 1))


def _flat(maps):
    m = np.asarray(maps, dtype=float)
    return m.reshape(m.shape[0], -1) if m.ndim > 2 else np.atleast_2d(m)


def cell_correlations(maps1, maps2):
    """Per-unit correlation (U,) of maps (U, N) or (U, H, W) across two worlds."""
    a, b = _flat(maps1), _flat(maps2)
    if a.shape != b.shape:
        raise ValueError("maps of both worlds must have equal shapes")
    return pearson_rows(a, b)


def population_vector_correlation(maps1, maps2):
    """(mean over nodes, per-node (N,)) correlation of population vectors across worlds."""
    a, b = _flat(maps1), _flat(maps2)
    if a.shape != b.shape:
        raise ValueError("maps of both worlds must have equal shapes")
    per = pearson_rows(a.T, b.T)
    return (float(np.nanmean(per)) if np.isfinite(per).any() else np.nan), per


def correlation_matrix(maps):
    """Unit-by-unit Pearson correlation (U, U) over pairwise-valid nodes."""
    m = _flat(maps)
    v = np.isfinite(m).astype(float)
    x = np.where(v > 0, m, 0.0)
    # centre and scale per unit for numerical stability (Pearson is invariant)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = x.sum(1, keepdims=True) / v.sum(1, keepdims=True)
        x = np.where(v > 0, x - mu, 0.0)
        sd = np.sqrt((x * x).sum(1, keepdims=True) / v.sum(1, keepdims=True))
        x = x / np.where(sd > 0, sd, 1.0)
    N = v @ v.T
    S1 = x @ v.T
    S2 = S1.T
    S11 = (x * x) @ v.T
    S22 = S11.T
    S12 = x @ x.T
    with np.errstate(invalid="ignore", divide="ignore"):
        v1 = N * S11 - S1 * S1
        v2 = N * S22 - S2 * S2
        C = (N * S12 - S1 * S2) / np.sqrt(np.maximum(v1, 0) * np.maximum(v2, 0))
        bad = (N < 3) | (v1 <= 1e-9 * N ** 2) | (v2 <= 1e-9 * N ** 2)
    return np.where(bad, np.nan, np.clip(C, -1, 1))


def _corr_vec(x, y):
    m = np.isfinite(x) & np.isfinite(y)
    if m.sum() < 3:
        return np.nan
    return float(pearson_rows(x[m][None], y[m][None])[0])


def pair_structure(maps1, maps2, n_perm=1000, rng=0):
    """Preserved pair structure between two worlds (see module doc).

    Returns dict: r, null (n_perm,), p95, pvalue, c1, c2 (upper triangles).
    """
    C1 = correlation_matrix(maps1)
    C2 = correlation_matrix(maps2)
    U = C1.shape[0]
    if C2.shape[0] != U:
        raise ValueError("both worlds need the same units")
    iu = np.triu_indices(U, k=1)
    c1, c2 = C1[iu], C2[iu]
    r = _corr_vec(c1, c2)
    rng = np.random.default_rng(rng)
    null = np.empty(n_perm)
    for i in range(n_perm):
        p = rng.permutation(U)
        null[i] = _corr_vec(c1, C2[p][:, p][iu])
    p95, pv = null_summary(np.array([r]), null[:, None])
    return dict(r=r, null=null, p95=float(p95[0]), pvalue=float(pv[0]), c1=c1, c2=c2)


def _pooled_r(X, Y):
    x, y = X.ravel(), Y.ravel()
    return float(pearson_rows(x[None], y[None])[0])


def grid_at_place(place1, place2, grid1, grid2, world, border_frac=0.1, n_perm=5000, rng=0):
    """gridAtPlace (see module doc).

    place1, place2: (P, N) place-cell node maps in worlds 1 and 2; grid1, grid2:
    (G, N) grid-cell node maps; world: node coordinates (N, 2) or a Geometry / World (both
    worlds share the node layout). Returns dict: r, null (n_perm,), p95, pvalue,
    x, y (G, P_kept) rates, kept (indices of the place cells used), peaks1, peaks2.
    """
    w = as_geometry(world)
    P1, P2 = _flat(place1), _flat(place2)
    G1, G2 = _flat(grid1), _flat(grid2)
    dist = w.border_distance()
    near = dist + 0.5 < border_frac * w.n

    def peaks(P):
        ok = np.isfinite(P).any(axis=1)
        pk = np.argmax(np.where(np.isfinite(P), P, -np.inf), axis=1)
        flat = np.nanmax(np.where(np.isfinite(P), P, -np.inf), axis=1) > \
            np.nanmin(np.where(np.isfinite(P), P, np.inf), axis=1)
        return pk, ok & flat

    pk1, ok1 = peaks(P1)
    pk2, ok2 = peaks(P2)
    keep = ok1 & ok2 & ~near[pk1] & ~near[pk2]
    keep &= np.isfinite(G1[:, pk1]).all(axis=0) & np.isfinite(G2[:, pk2]).all(axis=0)
    kept = np.nonzero(keep)[0]
    X = G1[:, pk1[kept]]
    Y = G2[:, pk2[kept]]
    out = dict(kept=kept, peaks1=pk1, peaks2=pk2, x=X, y=Y)
    if kept.size < 2 or X.size < 3:
        out.update(r=np.nan, null=np.full(n_perm, np.nan), p95=np.nan, pvalue=np.nan)
        return out
    r = _pooled_r(X, Y)
    # null: permute world-2 peaks among place cells; only the cross term changes
    n = X.size
    xm, ym = X.mean(), Y.mean()
    sx, sy = X.std(), Y.std()
    M = X.T @ Y                                        # (Pk, Pk)
    rng = np.random.default_rng(rng)
    Pk = kept.size
    null = np.empty(n_perm)
    for a in range(0, n_perm, 1000):
        b = min(1000, n_perm - a)
        perms = np.argsort(rng.random((b, Pk)), axis=1)
        cross = M[np.arange(Pk)[None, :], perms].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            null[a:a + b] = (cross / n - xm * ym) / (sx * sy)
    p95, pv = null_summary(np.array([r]), null[:, None])
    out.update(r=r, null=null, p95=float(p95[0]), pvalue=float(pv[0]))
    return out
