"""Null distributions and the grid / band cell rules (spec 5.3, 5.4, 5.7 L0).

Circular-shift null (primary)
    Each unit's activity time series is circularly shifted against the node
    sequence of the same walk by s steps, s uniform in
    [min_shift, T - min_shift] with min_shift = n_nodes by default (the spec's
    "at least the number of nodes", so the shifted activity at a node comes
    from a different part of the walk); maps are rebuilt with the same visit
    rule and rescored. All units share the shifts of one shuffle (each unit's
    null is over shuffles). Default 100 shuffles.
Node-permutation null
    The values of a unit's map are permuted over its valid nodes (NaN nodes
    stay NaN), independently per unit and shuffle, and rescored. High-frequency,
    checkerboard-like codes, which beat the circular-shift null, fail this one;
    smooth ramps, which fail this one less, beat the shift null: a grid cell
    must beat both.
Low-pass noise reference
    iid N(0,1) node values smoothed with a Gaussian of ``sigma`` nodes
    (default 1; square worlds: ``scipy.ndimage.gaussian_filter``, reflecting
    edges; point worlds: a normalised Gaussian kernel over node distances),
    rectified (max(0, .)), NaN where the world's mask is NaN; scored like the
    real maps as a size-matched reference distribution.

Per-unit 95th percentile: ``np.nanpercentile(null, 95, axis=0)``; p-value
(1 + #{null >= observed}) / (1 + #valid null values) (NaN observed -> NaN).
A unit "beats" a null when observed > its 95th percentile (NaN never beats).

Grid cell rule (spec 5.3), :func:`classify_grid_cells`
    hex grid cell ("grid"): G60 > circular-shift p95 AND G60 > node-permutation
    p95, Fourier class "hex", not band-like, active.
    square grid cell ("square grid", reported separately): the same with G90
    and Fourier class "square".
    band-like: band score B >= 0.55 with wavelength < 0.7 n (more than about
    half of the non-DC power in one +/- wave-vector pair; 0.55 lies between the
    largest synthetic lattice value, square grids on 8-node maps up to ~0.46,
    and the lowest rectified band, ~0.65).
    active: at least ``min_active_frac`` (5 %) of valid nodes have |rate| >
    ``active_rel`` (1 %) of the population scale, the 90th percentile over units
    of each unit's max |rate| (robust to a few huge units; dead ReLU units are 0
    everywhere and fail), and the map is not constant.
Band cell rule (spec 5.4), :func:`classify_band_cells`
    B > its circular-shift p95, wavelength < 0.7 n (rejects single blobs),
    grid scores below their nulls, read as: neither G60 nor G90 passes the
    grid-score test above (beating both nulls), active. (Reading it as "below
    the shift null alone" rejected axis-aligned bands, whose square support
    lifts G90 just like a bump's.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from .ratemaps import averaging_matrix, rate_maps
from .scoring import as_geometry, lattice_classes, score_maps

__all__ = ["NullResult", "circular_shift_null", "node_permutation_null", "lowpass_noise_maps",
           "noise_reference", "null_summary", "active_units", "classify_grid_cells",
           "classify_band_cells", "BAND_LIKE_THRESHOLD"]

BAND_LIKE_THRESHOLD = 0.55


@dataclass
class NullResult:
    """observed[name] (U,), null[name] (n_shuffles, U), p95[name] (U,), pvalue[name] (U,)."""
    observed: dict
    null: dict
    p95: dict = field(default_factory=dict)
    pvalue: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def beats(self, name):
        """observed > 95th percentile of the null (False where either is NaN)."""
        o, p = self.observed[name], self.p95[name]
        with np.errstate(invalid="ignore"):
            return np.isfinite(o) & np.isfinite(p) & (o > p)


def null_summary(observed, null):
    """(p95, pvalue) per unit from observed (U,) and null (S, U) (see module doc)."""
    observed = np.asarray(observed, dtype=float)
    null = np.asarray(null, dtype=float)
    valid = np.isfinite(null)
    with np.errstate(invalid="ignore"):
        allnan = ~valid.any(axis=0)
        p95 = np.full(observed.shape, np.nan)
        if (~allnan).any():
            p95[~allnan] = np.nanpercentile(null[:, ~allnan], 95, axis=0)
        ge = (null >= observed[None]) & valid
        p = (1.0 + ge.sum(axis=0)) / (1.0 + valid.sum(axis=0))
    p = np.where(np.isfinite(observed) & ~allnan, p, np.nan)
    return p95, p


def _finish(observed, null, extra=None):
    res = NullResult(observed=observed, null=null, extra=extra or {})
    for k in observed:
        res.p95[k], res.pvalue[k] = null_summary(observed[k], null[k])
    return res


def circular_shift_null(activity, nodes, world, n_shuffles=100, min_shift=None,
                        second_half=True, rng=0, variant="mean", band=True,
                        batch_shuffles=8, observed=None):
    """Circular-shift null of grid (and band) scores for every unit.

    activity (T, U), nodes (T,), world: coordinates (n_nodes, 2) or a Geometry / spatial World.
    Returns a :class:`NullResult` with keys g60, g90 (+ band, wavelength);
    ``extra["shifts"]`` the shifts used, ``extra["maps"]`` the observed maps.
    """
    w = as_geometry(world)
    act = np.asarray(activity, dtype=float)
    if act.ndim == 1:
        act = act[:, None]
    nodes = np.asarray(nodes).astype(np.int64)
    T, U = act.shape
    min_shift = w.n_nodes if min_shift is None else int(min_shift)
    if T - 2 * min_shift < 1:
        raise ValueError(f"walk of {T} steps too short for shifts of at least {min_shift}")
    rng = np.random.default_rng(rng)
    shifts = rng.integers(min_shift, T - min_shift + 1, size=n_shuffles)
    maps, _ = rate_maps(act, nodes, w.n_nodes, second_half)
    if observed is None:
        observed = score_maps(maps, w, variant=variant, band=band)
    keys = list(observed)
    null = {k: np.empty((n_shuffles, U)) for k in keys}
    occ = np.bincount(nodes, minlength=w.n_nodes)
    for a in range(0, n_shuffles, batch_shuffles):
        ss = shifts[a:a + batch_shuffles]
        mm = np.concatenate([np.asarray(averaging_matrix(nodes, w.n_nodes, second_half, s) @ act).T
                             for s in ss])
        mm[:, occ == 0] = np.nan
        sc = score_maps(mm, w, variant=variant, band=band)
        for k in keys:
            null[k][a:a + len(ss)] = sc[k].reshape(len(ss), U)
    return _finish(observed, null, {"shifts": shifts, "maps": maps})


def _permute_valid(maps, rng):
    """Permute each row's finite values over that row's finite positions."""
    valid = np.isfinite(maps)
    keys = rng.random(maps.shape)
    keys[~valid] = np.inf
    src = np.argsort(keys, axis=1)                         # valid entries first, random order
    dst = np.argsort(~valid, axis=1, kind="stable")        # valid positions first, in order
    out = np.full_like(maps, np.nan)
    vals = np.take_along_axis(maps, src, axis=1)
    np.put_along_axis(out, dst, vals, axis=1)
    return out


def node_permutation_null(maps, world, n_perm=100, rng=0, variant="mean", band=True,
                          batch_perms=8, observed=None):
    """Node-permutation null: scores of maps whose node labels are permuted (see module doc).

    maps (U, N) node maps. Returns a :class:`NullResult`.
    """
    w = as_geometry(world)
    m = np.asarray(maps, dtype=float)
    if m.ndim == 1:
        m = m[None]
    U = m.shape[0]
    rng = np.random.default_rng(rng)
    if observed is None:
        observed = score_maps(m, w, variant=variant, band=band)
    keys = list(observed)
    null = {k: np.empty((n_perm, U)) for k in keys}
    for a in range(0, n_perm, batch_perms):
        b = min(batch_perms, n_perm - a)
        mm = _permute_valid(np.tile(m, (b, 1)), rng)
        sc = score_maps(mm, w, variant=variant, band=band)
        for k in keys:
            null[k][a:a + b] = sc[k].reshape(b, U)
    return _finish(observed, null)


def lowpass_noise_maps(world, n_maps, sigma=1.0, rng=0, mask=None, rectify=True):
    """Low-pass-filtered, rectified noise node maps (n_maps, N) (see module doc).

    ``mask`` (N,) bool: nodes to keep (others NaN), e.g. the visited nodes.
    """
    w = as_geometry(world)
    rng = np.random.default_rng(rng)
    if w.kind == "square":
        z = rng.standard_normal((n_maps,) + w.shape)
        if sigma > 0:
            z = gaussian_filter(z, sigma=(0, sigma, sigma), mode="reflect")
        rc = np.rint(w.coords).astype(np.int64)
        rc = rc - rc.min(axis=0)
        out = z[:, rc[:, 0], rc[:, 1]]
    else:
        z = rng.standard_normal((n_maps, w.n_nodes))
        if sigma > 0:
            d2 = ((w.coords[:, None, :] - w.coords[None, :, :]) ** 2).sum(-1)
            K = np.exp(-d2 / (2 * sigma ** 2))
            K /= K.sum(axis=1, keepdims=True)
            z = z @ K.T
        out = z
    if rectify:
        out = np.maximum(out, 0.0)
    if mask is not None:
        out[:, ~np.asarray(mask, dtype=bool)] = np.nan
    return out


def noise_reference(world, n_maps=200, sigma=1.0, rng=0, mask=None, variant="mean"):
    """Scores of low-pass rectified noise maps: dict of arrays plus ``<key>_p95``."""
    maps = lowpass_noise_maps(world, n_maps, sigma, rng, mask)
    sc = score_maps(maps, world, variant=variant)
    out = dict(sc)
    for k, v in sc.items():
        out[k + "_p95"] = float(np.nanpercentile(v, 95)) if np.isfinite(v).any() else np.nan
    return out


def active_units(maps, active_rel=0.01, min_active_frac=0.05):
    """Boolean (U,): unit is active (see module doc)."""
    m = np.asarray(maps, dtype=float)
    if m.ndim == 1:
        m = m[None]
    a = np.abs(m)
    with np.errstate(invalid="ignore"):
        umax = np.nanmax(np.where(np.isfinite(a), a, -np.inf), axis=1)
        umax = np.where(np.isfinite(umax), umax, 0.0)
        scale = np.percentile(umax, 90)
        if not scale > 0:
            return np.zeros(m.shape[0], dtype=bool)
        valid = np.isfinite(m)
        frac = ((a > active_rel * scale) & valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        rng_ = np.nanmax(np.where(valid, m, -np.inf), axis=1) - np.nanmin(np.where(valid, m, np.inf), axis=1)
    return (frac >= min_active_frac) & (rng_ > 1e-12 * scale)


def _common(activity, nodes, world, n_shuffles, n_perm, min_shift, second_half, rng,
            variant, shift_null, perm_null):
    w = as_geometry(world)
    rng = np.random.default_rng(rng)
    if shift_null is None:
        shift_null = circular_shift_null(activity, nodes, w, n_shuffles, min_shift,
                                         second_half, rng, variant)
    maps = shift_null.extra["maps"]
    if perm_null is None:
        perm_null = node_permutation_null(maps, w, n_perm, rng, variant,
                                          observed=shift_null.observed)
    return w, maps, shift_null, perm_null


def classify_grid_cells(activity, nodes, world, n_shuffles=100, n_perm=100, min_shift=None,
                        second_half=True, rng=0, variant="mean", active_rel=0.01,
                        min_active_frac=0.05, band_like_threshold=BAND_LIKE_THRESHOLD,
                        max_wavelength_frac=0.7, shift_null=None, perm_null=None):
    """Spec 5.3's full grid-cell rule for every unit of one walk in one world.

    Returns a dict of (U,) arrays: ``is_grid`` (hexagonal grid cell),
    ``is_square_grid``, ``g60``, ``g90``, ``lattice``, ``band_like``,
    ``active``, ``beats_shift_g60``, ``beats_perm_g60``, ``beats_shift_g90``,
    ``beats_perm_g90``, p-values, plus ``maps``, ``shift_null``,
    ``perm_null`` (pass the nulls back in to reuse them for band cells).
    """
    w, maps, sn, pn = _common(activity, nodes, world, n_shuffles, n_perm, min_shift,
                              second_half, rng, variant, shift_null, perm_null)
    lat = lattice_classes(maps, w)
    act = active_units(maps, active_rel, min_active_frac)
    obs = sn.observed
    with np.errstate(invalid="ignore"):
        band_like = (obs["band"] >= band_like_threshold) & (obs["wavelength"] < max_wavelength_frac * w.n)
    b60 = sn.beats("g60") & pn.beats("g60")
    b90 = sn.beats("g90") & pn.beats("g90")
    return dict(
        is_grid=b60 & (lat == "hex") & ~band_like & act,
        is_square_grid=b90 & (lat == "square") & ~band_like & act,
        g60=obs["g60"], g90=obs["g90"], band=obs["band"], wavelength=obs["wavelength"],
        lattice=lat, band_like=band_like, active=act,
        beats_shift_g60=sn.beats("g60"), beats_perm_g60=pn.beats("g60"),
        beats_shift_g90=sn.beats("g90"), beats_perm_g90=pn.beats("g90"),
        p_shift_g60=sn.pvalue["g60"], p_perm_g60=pn.pvalue["g60"],
        p_shift_g90=sn.pvalue["g90"], p_perm_g90=pn.pvalue["g90"],
        maps=maps, shift_null=sn, perm_null=pn)


def classify_band_cells(activity, nodes, world, n_shuffles=100, n_perm=100, min_shift=None,
                        second_half=True, rng=0, variant="mean", active_rel=0.01,
                        min_active_frac=0.05, max_wavelength_frac=0.7, shift_null=None,
                        perm_null=None):
    """Spec 5.4's band-cell rule (see module doc). Returns a dict of (U,) arrays.

    Pass ``shift_null``/``perm_null`` from :func:`classify_grid_cells` to reuse them.
    """
    w, maps, sn, pn = _common(activity, nodes, world, n_shuffles, n_perm, min_shift,
                              second_half, rng, variant, shift_null, perm_null)
    obs = sn.observed
    act = active_units(maps, active_rel, min_active_frac)
    with np.errstate(invalid="ignore"):
        short = obs["wavelength"] < max_wavelength_frac * w.n
    grid_like = (sn.beats("g60") & pn.beats("g60")) | (sn.beats("g90") & pn.beats("g90"))
    not_grid = ~grid_like & np.isfinite(obs["g60"]) & np.isfinite(obs["g90"])
    return dict(is_band=sn.beats("band") & short & not_grid & act,
                band=obs["band"], wavelength=obs["wavelength"],
                orientation=obs["orientation"], beats_shift_band=sn.beats("band"),
                p_shift_band=sn.pvalue["band"], grid_below_null=not_grid, active=act,
                maps=maps, shift_null=sn, perm_null=pn)
