"""Grid scores (spec 5.3): the ring-max score of Banino et al. (2018), NaN-aware.

Definition
----------
Given an autocorrelogram S (a raster with its centre at the middle bin):

1. Rotate S by 30, 45, 60, 90, 120, 135, 150 degrees about its centre with
   bilinear interpolation. A rotated bin is NaN if any of the (up to 4) input
   bins with non-zero interpolation weight is NaN or outside the raster, so
   NaN is never interpolated into a number.
2. Rings: bins at distance d from the centre (in bins) with
   0.2 n < d <= r_out, r_out in linspace(0.4 n, 1.0 n, 10) (Banino's masks,
   ``circle_mask`` uses d <= radius). n is the side of the map: n = min(H, W)
   for an (H, W) map, i.e. (min SAC side + 1)/2; for point worlds
   :func:`spatial.analysis.autocorr.point_map_size`.
3. In each ring and for each angle a, c_a = Pearson correlation of S and its
   rotation over the ring bins valid (finite) in both (true Pearson with both
   means and variances; Banino's code uses the unrotated SAC's mean and variance
   for both, which differs slightly). At least ``min_bins`` (default 6) valid bins,
   else NaN.
4. G60 = (c60 + c120)/2 - (c30 + c90 + c150)/3 (``variant="mean"``) or
   min(c60, c120) - max(c30, c90, c150) (``variant="minmax"``);
   G90 = c90 - (c45 + c135)/2. Each is maximised over the rings separately
   (NaN rings ignored; all NaN -> NaN).

Speed: the rotations of a given raster shape are one precomputed sparse
operator (all 7 angles stacked), applied to every unit at once, and the ring
sums are one matrix product with a (bins x rings) 0/1 matrix; both are cached
per (shape, n).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from .autocorr import autocorrelogram

__all__ = ["grid_scores", "grid_scores_from_sac", "grid_score_details", "ANGLES",
           "ring_radii"]

ANGLES = (30, 45, 60, 90, 120, 135, 150)
_A = {a: i for i, a in enumerate(ANGLES)}
_CHUNK = 2048


def ring_radii(n: float, n_rings: int = 10):
    """(inner, outer) radii in SAC bins: inner 0.2 n, outer linspace(0.4 n, 1.0 n, 10)."""
    outer = np.linspace(0.4, 1.0, n_rings) * n
    return 0.2 * n, outer


@lru_cache(maxsize=32)
def _operators(shape, n):
    Hs, Ws = shape
    cy, cx = (Hs - 1) / 2.0, (Ws - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(Hs) - cy, np.arange(Ws) - cx, indexing="ij")
    rr = np.hypot(xx, yy).ravel()
    inner, outer = ring_radii(n)
    roi = np.nonzero((rr > inner) & (rr <= outer[-1] + 1e-9))[0]
    Q = ((rr[roi, None] > inner) & (rr[roi, None] <= outer[None, :] + 1e-9)).astype(float)
    x = xx.ravel()[roi]
    y = yy.ravel()[roi]
    R = roi.size
    L = Hs * Ws            # index L = "outside the raster" (always NaN)
    rows, cols, vals = [], [], []
    for k, a in enumerate(ANGLES):
        t = np.deg2rad(a)
        # value of the rotated SAC at p is S at R(-t) p
        xs = np.round(x * np.cos(t) + y * np.sin(t) + cx, 9)
        ys = np.round(-x * np.sin(t) + y * np.cos(t) + cy, 9)
        x0 = np.floor(xs).astype(np.int64)
        y0 = np.floor(ys).astype(np.int64)
        fx, fy = xs - x0, ys - y0
        for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                          (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = x0 + dx, y0 + dy
            inb = (xi >= 0) & (xi < Ws) & (yi >= 0) & (yi < Hs)
            idx = np.where(inb, yi * Ws + xi, L)
            keep = w > 1e-9
            rows.append(k * R + np.nonzero(keep)[0])
            cols.append(idx[keep])
            vals.append(w[keep])
    rows, cols, vals = map(np.concatenate, (rows, cols, vals))
    Wm = sp.csr_matrix((vals, (rows, cols)), shape=(len(ANGLES) * R, L + 1))
    Wm.sum_duplicates()
    Bm = Wm.copy()
    Bm.data[:] = 1.0
    return roi, Q, Wm, Bm


def grid_score_details(sac, n=None, min_bins=6):
    """Per-ring, per-angle correlations of a SAC (U, Hs, Ws) or (Hs, Ws).

    Returns an array (U, 7, 10): corr[u, angle index (ANGLES order), ring].
    """
    s = np.asarray(sac, dtype=float)
    squeeze = s.ndim == 2
    if squeeze:
        s = s[None]
    U, Hs, Ws = s.shape
    if n is None:
        n = (min(Hs, Ws) + 1) / 2.0
    roi, Q, Wm, Bm = _operators((Hs, Ws), float(n))
    R = roi.size
    out = np.full((U, len(ANGLES), Q.shape[1]), np.nan)
    for a0 in range(0, U, _CHUNK):
        sl = slice(a0, min(U, a0 + _CHUNK))
        flat = s[sl].reshape(-1, Hs * Ws)
        flat = np.concatenate([flat, np.full((flat.shape[0], 1), np.nan)], axis=1)
        valid = np.isfinite(flat)
        filled = np.where(valid, flat, 0.0)
        rot = np.asarray(Wm @ filled.T)                        # (7R, u)
        bad = np.asarray(Bm @ (~valid).T.astype(float)) > 0
        rot[bad] = np.nan
        rot = rot.T.reshape(-1, len(ANGLES), R)                # (u, 7, R)
        base = flat[:, roi][:, None, :]                        # (u, 1, R)
        m = np.isfinite(base) & np.isfinite(rot)
        xb = np.where(m, base, 0.0)
        yb = np.where(m, rot, 0.0)
        mf = m.astype(float)
        Nn = mf @ Q
        sx, sy = xb @ Q, yb @ Q
        sxx, syy, sxy = (xb * xb) @ Q, (yb * yb) @ Q, (xb * yb) @ Q
        with np.errstate(invalid="ignore", divide="ignore"):
            vx = Nn * sxx - sx * sx
            vy = Nn * syy - sy * sy
            r = (Nn * sxy - sx * sy) / np.sqrt(np.maximum(vx, 0) * np.maximum(vy, 0))
            N2 = np.maximum(Nn, 1) ** 2
            bad = (Nn < min_bins) | (vx <= 1e-12 * N2) | (vy <= 1e-12 * N2)
        out[sl] = np.where(bad, np.nan, r)
    return out[0] if squeeze else out


def _combine(c, variant):
    c30, c45, c60, c90, c120, c135, c150 = (c[..., _A[a], :] for a in ANGLES)
    if variant == "mean":
        g60 = (c60 + c120) / 2.0 - (c30 + c90 + c150) / 3.0
    elif variant == "minmax":
        g60 = np.minimum(c60, c120) - np.maximum(np.maximum(c30, c90), c150)
    else:
        raise ValueError("variant must be 'mean' or 'minmax'")
    g90 = c90 - (c45 + c135) / 2.0
    return g60, g90


def _ringmax(g):
    allnan = np.all(np.isnan(g), axis=-1)
    out = np.max(np.where(np.isnan(g), -np.inf, g), axis=-1)
    return np.where(allnan, np.nan, out)


def grid_scores_from_sac(sac, n=None, variant="mean", min_bins=6, return_rings=False):
    """(G60, G90) of a SAC or batch of SACs; see the module doc.

    ``n`` is the map side (default (min SAC side + 1)/2). With ``return_rings``
    also the index of the ring that gave each maximum (-1 if NaN).
    """
    c = grid_score_details(sac, n=n, min_bins=min_bins)
    g60r, g90r = _combine(c, variant)
    g60, g90 = _ringmax(g60r), _ringmax(g90r)
    if return_rings:
        def arg(g):
            a = np.argmax(np.where(np.isnan(g), -np.inf, g), axis=-1)
            return np.where(np.all(np.isnan(g), axis=-1), -1, a)
        return g60, g90, arg(g60r), arg(g90r)
    return g60, g90


def grid_scores(rate_map, variant="mean", min_pairs=None, min_pairs_frac=0.0, min_bins=6):
    """(G60, G90) of a rate map (H, W) or a batch (U, H, W) with NaN nodes.

    Computes the NaN-aware SAC (:func:`autocorrelogram`), then
    :func:`grid_scores_from_sac` with n = min(H, W). Scalars for a single map,
    arrays (U,) for a batch. NaN when not calculable (constant maps, too few
    valid lags).
    """
    m = np.asarray(rate_map, dtype=float)
    squeeze = m.ndim == 2
    if squeeze:
        m = m[None]
    n = float(min(m.shape[1:]))
    g60 = np.empty(m.shape[0])
    g90 = np.empty(m.shape[0])
    for a0 in range(0, m.shape[0], _CHUNK):
        sl = slice(a0, a0 + _CHUNK)
        sac = autocorrelogram(m[sl], min_pairs=min_pairs, min_pairs_frac=min_pairs_frac)
        g60[sl], g90[sl] = grid_scores_from_sac(sac, n=n, variant=variant, min_bins=min_bins)
    if squeeze:
        return float(g60[0]), float(g90[0])
    return g60, g90
