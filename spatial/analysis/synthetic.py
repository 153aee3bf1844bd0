"""Synthetic maps and walks for validation, tests and benchmarks (spec 5.7 L10).

All map generators take node positions as (x, y) = (col, row) in node units:
either a square side ``n`` (positions of an n x n grid, returned as (n, n)
arrays) or ``coords`` (N, 2) for arbitrary worlds (returned as (N,) arrays).

* hex grid: rectified sum of 3 plane waves 60 degrees apart,
  max(0, sum_j cos(k_j . (x - phase))), |k| = 4 pi / (sqrt(3) spacing), so the
  distance between neighbouring fields is ``spacing``;
* square grid: the same with 2 waves 90 degrees apart, |k| = 2 pi / spacing;
* band: cos(k . (x - phase)), |k| = 2 pi / wavelength (``rectify=False`` by
  default: the "ideal band" of spec 5.4);
* bump: isotropic Gaussian of width ``sigma``;
* noise: iid standard normal per node.
"""
from __future__ import annotations

import numpy as np

__all__ = ["positions", "plane_wave_map", "hex_grid_map", "square_grid_map", "band_map",
           "bump_map", "noise_map", "ramp_map", "random_walk_square", "random_walk_graph",
           "square_adjacency"]


def positions(n=None, coords=None):
    """(x, y) arrays of node positions; for a square side n the arrays are (n, n)."""
    if coords is not None:
        c = np.asarray(coords, dtype=float)
        return c[:, 0], c[:, 1]
    yy, xx = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float), indexing="ij")
    return xx, yy


def plane_wave_map(n=None, coords=None, wavelength=4.0, angles_deg=(0.0,), phase=(0.0, 0.0),
                   rectify=True):
    x, y = positions(n, coords)
    k = 2 * np.pi / wavelength
    m = 0.0
    for a in angles_deg:
        t = np.deg2rad(a)
        m = m + np.cos(k * (np.cos(t) * (x - phase[0]) + np.sin(t) * (y - phase[1])))
    return np.maximum(m, 0.0) if rectify else m


def hex_grid_map(n=None, spacing=4.0, orientation=0.0, phase=(0.0, 0.0), coords=None,
                 rectify=True):
    """Rectified hexagonal grid; field-to-field distance ``spacing`` nodes."""
    wl = spacing * np.sqrt(3) / 2.0
    return plane_wave_map(n, coords, wl, (orientation, orientation + 60, orientation + 120),
                          phase, rectify)


def square_grid_map(n=None, spacing=4.0, orientation=0.0, phase=(0.0, 0.0), coords=None,
                    rectify=True):
    """Rectified square grid; field-to-field distance ``spacing`` nodes."""
    return plane_wave_map(n, coords, spacing, (orientation, orientation + 90), phase, rectify)


def band_map(n=None, wavelength=4.0, orientation=0.0, phase=(0.0, 0.0), coords=None,
             rectify=False):
    """A single plane wave (ideal band when not rectified)."""
    return plane_wave_map(n, coords, wavelength, (orientation,), phase, rectify)


def bump_map(n=None, centre=None, sigma=None, coords=None):
    """Single Gaussian bump (default: centre of the map, sigma = n/6)."""
    x, y = positions(n, coords)
    if centre is None:
        centre = ((x.max() + x.min()) / 2.0, (y.max() + y.min()) / 2.0)
    if sigma is None:
        sigma = (x.max() - x.min() + 1) / 6.0
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma ** 2))


def ramp_map(n=None, angle_deg=0.0, coords=None):
    """Linear wall-anchored ramp along ``angle_deg``, values in [0, 1]."""
    x, y = positions(n, coords)
    t = np.deg2rad(angle_deg)
    m = np.cos(t) * x + np.sin(t) * y
    return (m - m.min()) / (m.max() - m.min())


def noise_map(n=None, rng=None, coords=None, size=None):
    """iid N(0, 1) per node; ``size`` adds leading batch dimensions."""
    rng = np.random.default_rng(rng)
    x, _ = positions(n, coords)
    shape = x.shape if size is None else tuple(np.atleast_1d(size)) + x.shape
    return rng.standard_normal(shape)


def square_adjacency(height, width=None):
    """Boolean (N, N) adjacency of a 4-connected height x width world (no wraparound)."""
    width = height if width is None else width
    N = height * width
    r, c = np.divmod(np.arange(N), width)
    A = np.zeros((N, N), dtype=bool)
    for dr, dc in ((0, 1), (1, 0)):
        ok = (r + dr < height) & (c + dc < width)
        i = np.nonzero(ok)[0]
        j = (r[ok] + dr) * width + c[ok] + dc
        A[i, j] = A[j, i] = True
    return A


def random_walk_graph(adjacency, T, rng=None, start=None, stay_prob=0.0):
    """Uniform random walk over the available moves of a graph (walls unavailable)."""
    rng = np.random.default_rng(rng)
    A = np.asarray(adjacency, dtype=bool)
    N = A.shape[0]
    nbrs = [np.nonzero(A[i])[0] for i in range(N)]
    deg = np.array([len(b) for b in nbrs])
    table = np.full((N, deg.max()), -1)
    for i, b in enumerate(nbrs):
        table[i, :len(b)] = b
    u = rng.random(T)
    stay = rng.random(T) < stay_prob
    nodes = np.empty(T, dtype=np.int64)
    cur = rng.integers(N) if start is None else start
    for t in range(T):
        nodes[t] = cur
        if not stay[t]:
            cur = table[cur, int(u[t] * deg[cur])]
    return nodes


def random_walk_square(n, T, rng=None, start=None, stay_prob=0.0):
    """Random walk on an n x n 4-connected world; node id = row * n + col."""
    return random_walk_graph(square_adjacency(n), T, rng, start, stay_prob)
