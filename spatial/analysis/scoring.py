"""Worlds and one-call scoring of node maps (used by the nulls and classifiers).

A :class:`Geometry` wraps node coordinates (the analysis side of a `spatial.worlds.World`):

* ``kind="square"``: integer (row, col) per node; maps are laid on an (H, W)
  raster (:func:`to_grid`) and scored with the FFT autocorrelogram and FFT band
  score; n = min(H, W).
* ``kind="points"`` (hexagonal or any other world): (x, y) per node; scored with
  :func:`autocorrelogram_points` (rasterised SAC) and :func:`band_score_points`;
  n = :func:`point_map_size`.

The kind is inferred (integer coordinates -> square) unless given.
"""
from __future__ import annotations

import numpy as np

from .autocorr import autocorrelogram_points, point_map_size
from .fourier import (band_score, band_score_points, classify_lattice, fourier_peaks,
                      fourier_peaks_points)
from .gridscore import grid_scores, grid_scores_from_sac
from .ratemaps import square_coords, to_grid

__all__ = ["Geometry", "as_geometry", "score_maps", "lattice_classes"]


class Geometry:
    """Node coordinates plus what the scores need (see module doc)."""

    def __init__(self, coords, kind=None, adjacency=None):
        c = np.asarray(coords, dtype=float)
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError("coords must be (N, 2)")
        if kind is None:
            kind = "square" if np.allclose(c, np.rint(c)) else "points"
        if kind not in ("square", "points"):
            raise ValueError("kind must be 'square' or 'points'")
        self.coords = c
        self.kind = kind
        self.adjacency = adjacency
        self.n_nodes = c.shape[0]
        if kind == "square":
            rc = np.rint(c).astype(np.int64)
            rc = rc - rc.min(axis=0)
            self.shape = tuple(int(s) for s in rc.max(axis=0) + 1)
            self.n = float(min(self.shape))
        else:
            self.shape = None
            self.n = point_map_size(c)

    def grid(self, maps):
        """(U, H, W) rasters of node maps (square worlds only)."""
        if self.kind != "square":
            raise ValueError("grid() needs a square world")
        return to_grid(maps, self.coords, self.shape)

    def border_distance(self):
        """Distance (node units) of each node to the nearest edge of the world's bounding box."""
        lo = self.coords.min(axis=0)
        hi = self.coords.max(axis=0)
        return np.minimum(self.coords - lo, hi - self.coords).min(axis=1)


def as_geometry(world_or_coords, kind=None):
    """A :class:`Geometry` from a Geometry, node coordinates, or a `spatial.worlds.World`.

    Task worlds (duck-typed: attributes ``transitions`` (N, A) with -1 for
    unavailable moves, ``coords``, ``kind`` and ``shape``, as built by the
    project's ``spatial.worlds``) are converted: square worlds use their
    ``shape`` and the node id convention node = row * cols + col (so rasters
    are laid out row by row, whatever the direction of their y axis); other
    worlds use their (x, y) coordinates as a point world. The adjacency comes
    from the transitions.
    """
    if isinstance(world_or_coords, Geometry):
        return world_or_coords
    obj = world_or_coords
    if hasattr(obj, "transitions") and hasattr(obj, "coords"):
        T = np.asarray(obj.transitions)
        N = T.shape[0]
        A = np.zeros((N, N), dtype=bool)
        src = np.repeat(np.arange(N), T.shape[1])
        dst = T.ravel()
        ok = (dst >= 0) & (dst != src)
        A[src[ok], dst[ok]] = True
        A |= A.T
        if getattr(obj, "kind", None) == "square" and getattr(obj, "shape", None) is not None:
            h, w = obj.shape
            return Geometry(square_coords(h, w), "square", adjacency=A)
        if obj.coords is None:
            raise ValueError("this world has no coordinates: rate-map geometry is undefined")
        return Geometry(obj.coords, "points" if kind is None else kind, adjacency=A)
    return Geometry(obj, kind)


def score_maps(maps, world, variant="mean", band=True, min_pairs=None):
    """Grid and band scores of node maps (U, N) (or (N,)) in a world.

    Returns a dict of (U,) arrays: ``g60``, ``g90`` (ring-max, ``variant``),
    and if ``band``: ``band``, ``wavelength``, ``orientation``.
    """
    w = as_geometry(world)
    m = np.asarray(maps, dtype=float)
    if m.ndim == 1:
        m = m[None]
    out = {}
    if w.kind == "square":
        g = w.grid(m)
        out["g60"], out["g90"] = grid_scores(g, variant=variant, min_pairs=min_pairs)
        if band:
            out["band"], out["wavelength"], out["orientation"] = band_score(g)
    else:
        ps = autocorrelogram_points(m, w.coords, min_pairs=min_pairs)
        out["g60"], out["g90"] = grid_scores_from_sac(ps.raster, n=ps.n, variant=variant)
        if band:
            out["band"], out["wavelength"], out["orientation"] = band_score_points(m, w.coords)
    return {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in out.items()}


def lattice_classes(maps, world, **kw):
    """Fourier lattice class per unit ("hex", "square", "band", "ramp", "none")."""
    w = as_geometry(world)
    m = np.asarray(maps, dtype=float)
    if m.ndim == 1:
        m = m[None]
    if w.kind == "square":
        peaks = fourier_peaks(w.grid(m), **kw)
    else:
        peaks = fourier_peaks_points(m, w.coords, **kw)
    if isinstance(peaks, dict):
        peaks = [peaks]
    return np.atleast_1d(classify_lattice(peaks))
