"""Translation-invariance check of a position code (spec 5.7 L0).

Question: does the similarity between the codes of two nodes depend only on
their displacement? Grid and band codes (periodic, phase-shifted copies) do;
wall-anchored ramps and corner codes do not.

Definition
----------
positions e_i (n_nodes, E) of one world, node coordinates c_i (n_nodes, 2).

1. Centre each unit over nodes (e_i - mean_i e_i; ``center=True``): removes the
   common offset that makes every pair of a non-negative code similar and hides
   how similarity depends on position.
2. For every unordered node pair i < j: similarity s_ij (default cosine of the
   centred vectors; ``"pearson"`` (correlation across units) or ``"dot"``),
   displacement d_ij = c_j - c_i rounded to ``decimals`` and sign-canonicalised
   (d and -d are one group since s is symmetric).
3. Keep pairs with |d| <= ``max_displacement`` (default n/2, n = the world's
   side, :func:`spatial.analysis.autocorr.point_map_size`) in groups of at
   least ``min_pairs`` = max(4, ceil(0.2 N)) pairs. Local displacements ask
   whether the neighbourhood structure is the same everywhere; far pairs sit at
   opposite walls, where even a ramp's similarity is a function of
   displacement (opposite ends anticorrelated), which would inflate the score;
   tiny groups have no within-group variance.
4. score = 1 - SS_within / SS_total, the correlation ratio eta^2: the share of
   the variance of s explained by displacement alone (1: s depends only on
   displacement). adjusted = 1 - (SS_within / (P - G)) / (SS_total / (P - 1))
   (epsilon^2, ~0 for codes unrelated to position; P pairs, G groups).

On 12 x 12 synthetic populations (40 units): hexagonal grid codes with random
phases score 0.74-0.88, rectified bands ~0.78, linear ramps ~0.30, corner
cones ~0.46, iid random codes ~0.01. Grid codes stay below 1 because a finite
set of phases is not exactly translation invariant. Nodes with any NaN
component are excluded. Apply it in every world and report each.
"""
from __future__ import annotations

import numpy as np

from .autocorr import point_map_size

__all__ = ["translation_invariance"]


def translation_invariance(positions, coords, similarity="cosine", center=True,
                           max_displacement=None, min_pairs=None, decimals=6):
    """Translation-invariance score of a code (see module doc).

    Returns dict: score (eta^2), adjusted (epsilon^2), n_pairs, n_groups,
    displacements (G, 2), group_means (G,).
    """
    e = np.asarray(positions, dtype=float)
    c = np.asarray(coords, dtype=float)
    if e.shape[0] != c.shape[0]:
        raise ValueError("positions and coords need one row per node")
    ok = np.isfinite(e).all(axis=1)
    e, c = e[ok], c[ok]
    N = e.shape[0]
    if center:
        e = e - e.mean(axis=0, keepdims=True)
    if max_displacement is None:
        max_displacement = point_map_size(c) / 2.0
    if similarity == "cosine":
        nrm = np.linalg.norm(e, axis=1, keepdims=True)
        z = e / np.where(nrm > 0, nrm, 1.0)
        S = z @ z.T
    elif similarity == "pearson":
        z = e - e.mean(axis=1, keepdims=True)
        nrm = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(nrm > 0, nrm, 1.0)
        S = z @ z.T
    elif similarity == "dot":
        S = e @ e.T
    else:
        raise ValueError("similarity must be 'cosine', 'pearson' or 'dot'")
    i, j = np.triu_indices(N, k=1)
    s = S[i, j]
    d = np.round(c[j] - c[i], decimals) + 0.0
    flip = (d[:, 0] < 0) | ((d[:, 0] == 0) & (d[:, 1] < 0))
    d[flip] *= -1
    d += 0.0
    disp, g, counts = np.unique(d, axis=0, return_inverse=True, return_counts=True)
    g = g.ravel()
    mp = max(4, int(np.ceil(0.2 * N))) if min_pairs is None else int(min_pairs)
    keepg = (counts >= mp) & (np.hypot(disp[:, 0], disp[:, 1]) <= max_displacement + 1e-9)
    keep = keepg[g]
    s, g = s[keep], g[keep]
    P = s.size
    G = int(keepg.sum())
    if P < 3 or G < 2:
        return dict(score=np.nan, adjusted=np.nan, n_pairs=P, n_groups=G,
                    displacements=disp[keepg], group_means=np.full(G, np.nan))
    sums = np.bincount(g, weights=s, minlength=disp.shape[0])
    cnt = np.bincount(g, minlength=disp.shape[0])
    means = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    ss_within = float(((s - means[g]) ** 2).sum())
    ss_total = float(((s - s.mean()) ** 2).sum())
    if ss_total <= 0:
        return dict(score=np.nan, adjusted=np.nan, n_pairs=P, n_groups=G,
                    displacements=disp[keepg], group_means=means[keepg])
    score = 1.0 - ss_within / ss_total
    adjusted = 1.0 - (ss_within / max(P - G, 1)) / (ss_total / (P - 1))
    return dict(score=score, adjusted=adjusted, n_pairs=P, n_groups=G,
                displacements=disp[keepg], group_means=means[keepg])
