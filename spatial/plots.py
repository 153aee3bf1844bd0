"""Figures for :mod:`spatial.analysis` (matplotlib, Agg canvas).

Every function takes an optional ``fig``/``ax`` and returns ``(fig, ax)``
(``ax`` an array of axes for multi-panel figures). New figures are created as
``matplotlib.figure.Figure`` objects with an Agg canvas (no pyplot state, no
display needed); save them with ``fig.savefig(path)``. NaN nodes (unvisited)
are drawn grey.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
import matplotlib as mpl

from spatial.analysis.autocorr import autocorrelogram
from spatial.analysis.ratemaps import to_grid

__all__ = ["new_figure", "plot_rate_maps", "plot_score_histogram", "plot_remapping",
           "plot_hex_map", "plot_drift_by_lag", "plot_accuracy_by_length", "plot_norm_by_quarter"]

NAN_COLOUR = "0.6"


def new_figure(figsize=(6, 4)):
    fig = Figure(figsize=figsize, constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _cmap(name):
    return mpl.colormaps[name].with_extremes(bad=NAN_COLOUR)


def _axes(fig, ax, nrows, ncols, figsize):
    if ax is not None:
        ax = np.asarray(ax).ravel()
        return ax[0].figure, ax
    if fig is None:
        fig = new_figure(figsize)
    return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _show(ax, img, cmap, title=None, vmin=None, vmax=None):
    ax.imshow(np.ma.masked_invalid(img), cmap=cmap, origin="upper", interpolation="nearest",
              vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_rate_maps(maps, scores=None, sort=True, ncols=8, sacs=True, coords=None,
                   max_units=64, score_label="G60", cmap="viridis", sac_cmap="jet",
                   titles=None, fig=None, ax=None):
    """Rate maps (U, H, W) (or node maps (U, N) with ``coords``) with their SACs.

    Units are sorted by ``scores`` (descending, NaN last) when given and
    ``sort``; at most ``max_units`` are drawn. With ``sacs`` each map is
    followed by its autocorrelogram (so a row holds ncols/2 units).
    """
    m = np.asarray(maps, dtype=float)
    if coords is not None:
        m = to_grid(m, coords)
    if m.ndim == 2:
        m = m[None]
    order = np.arange(m.shape[0])
    if scores is not None:
        scores = np.asarray(scores, dtype=float)
        if sort:
            key = np.where(np.isfinite(scores), -scores, np.inf)
            order = np.argsort(key, kind="stable")
    order = order[:max_units]
    per_unit = 2 if sacs else 1
    ncols = max(per_unit, ncols - ncols % per_unit)
    n_panels = len(order) * per_unit
    nrows = int(np.ceil(n_panels / ncols))
    fig, axs = _axes(fig, ax, nrows, ncols, (1.2 * ncols, 1.3 * nrows))
    cm, scm = _cmap(cmap), _cmap(sac_cmap)
    sac_all = autocorrelogram(m[order]) if sacs else None
    for i, u in enumerate(order):
        t = titles[u] if titles is not None else f"#{u}"
        if scores is not None:
            t += f" {score_label} {scores[u]:.2f}"
        _show(axs[i * per_unit], m[u], cm, t)
        if sacs:
            _show(axs[i * per_unit + 1], sac_all[i], scm, "SAC", vmin=-1, vmax=1)
    for a in axs[n_panels:]:
        a.set_axis_off()
    return fig, axs


def plot_score_histogram(scores, null_scores=None, threshold=None, fixed_thresholds=(),
                         bins=30, label="G60", fig=None, ax=None):
    """Histogram of unit scores against a (pooled) null distribution.

    ``threshold`` (e.g. the null's 95th percentile) defaults to the 95th
    percentile of the pooled null; ``fixed_thresholds`` are drawn dotted for
    reference only (spec 5.3: never the primary criterion).
    """
    if ax is None:
        fig = fig or new_figure((4, 3))
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    s = np.asarray(scores, dtype=float).ravel()
    s = s[np.isfinite(s)]
    allv = [s]
    if null_scores is not None:
        nl = np.asarray(null_scores, dtype=float).ravel()
        nl = nl[np.isfinite(nl)]
        allv.append(nl)
    lo = min(v.min() for v in allv if v.size) if any(v.size for v in allv) else 0.0
    hi = max(v.max() for v in allv if v.size) if any(v.size for v in allv) else 1.0
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    if null_scores is not None and nl.size:
        ax.hist(nl, bins=edges, density=True, color="0.7", label="null")
        if threshold is None:
            threshold = float(np.percentile(nl, 95))
    ax.hist(s, bins=edges, density=True, histtype="step", color="C0", lw=1.5, label="units")
    if threshold is not None:
        ax.axvline(threshold, color="C3", ls="--", label="null 95%")
    for t in fixed_thresholds:
        ax.axvline(t, color="k", ls=":", lw=0.8)
    ax.set_xlabel(label)
    ax.set_ylabel("density")
    ax.legend(fontsize=7, frameon=False)
    return fig, ax


def plot_remapping(maps1, maps2, units=None, n_units=6, pair=None, gap=None, coords=None,
                   cmap="viridis", fig=None, ax=None):
    """Maps of the same units in two worlds side by side, plus scatter panels.

    maps1, maps2: (U, H, W) (or (U, N) with ``coords``). Row 1: world 1, row 2:
    world 2, one column per unit. ``pair``: output of
    :func:`spatial.analysis.pair_structure` (scatter of unit-pair correlations,
    world 1 vs 2); ``gap``: output of :func:`spatial.analysis.grid_at_place`
    (scatter of grid rate at place peaks). Scatter panels are added as extra
    columns.
    """
    a = np.asarray(maps1, dtype=float)
    b = np.asarray(maps2, dtype=float)
    if coords is not None:
        a, b = to_grid(a, coords), to_grid(b, coords)
    units = np.arange(min(n_units, a.shape[0])) if units is None else np.asarray(units)
    extra = int(pair is not None) + int(gap is not None)
    ncols = len(units) + extra
    if ax is None:
        fig = fig or new_figure((1.3 * ncols + 0.5, 3.0))
        gs = fig.add_gridspec(2, ncols)
        axs = [fig.add_subplot(gs[r, c]) for r in range(2) for c in range(len(units))]
        axs += [fig.add_subplot(gs[:, len(units) + i]) for i in range(extra)]
        axs = np.array(axs)
    else:
        axs = np.asarray(ax).ravel()
        fig = axs[0].figure
    cm = _cmap(cmap)
    k = len(units)
    for i, u in enumerate(units):
        _show(axs[i], a[u], cm, f"#{u} world 1")
        _show(axs[k + i], b[u], cm, "world 2")
    j = 2 * k
    if pair is not None:
        axp = axs[j]
        axp.scatter(pair["c1"], pair["c2"], s=3, alpha=0.5)
        axp.set_xlabel("pair r, world 1")
        axp.set_ylabel("pair r, world 2")
        axp.set_title(f"pair structure r={pair['r']:.2f} (null p95 {pair['p95']:.2f})", fontsize=7)
        j += 1
    if gap is not None:
        axg = axs[j]
        axg.scatter(np.ravel(gap["x"]), np.ravel(gap["y"]), s=3, alpha=0.5)
        axg.set_xlabel("grid rate at place peak, world 1")
        axg.set_ylabel("world 2")
        axg.set_title(f"gridAtPlace r={gap['r']:.2f} (null p95 {gap['p95']:.2f})", fontsize=7)
    return fig, axs


def plot_hex_map(values, coords, cmap="viridis", vmin=None, vmax=None, title=None,
                 colorbar=False, fig=None, ax=None):
    """Node values on a hexagonal world drawn as hexagons (neighbour distance 1).

    ``coords`` (N, 2) Cartesian (x, y) as from :func:`spatial.analysis.hex_coords`;
    pointy-top hexagons of circumradius 1/sqrt(3) tile that lattice. NaN grey.
    """
    if ax is None:
        fig = fig or new_figure((3, 3))
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    v = np.asarray(values, dtype=float).ravel()
    c = np.asarray(coords, dtype=float)
    ang = np.deg2rad(90 + 60 * np.arange(6))
    r = 1 / np.sqrt(3)
    verts = c[:, None, :] + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)[None]
    pc = PolyCollection(verts, array=np.ma.masked_invalid(v), cmap=_cmap(cmap),
                        edgecolors="none")
    if vmin is not None or vmax is not None:
        pc.set_clim(vmin, vmax)
    ax.add_collection(pc)
    ax.set_xlim(c[:, 0].min() - 1, c[:, 0].max() + 1)
    ax.set_ylim(c[:, 1].min() - 1, c[:, 1].max() + 1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar:
        fig.colorbar(pc, ax=ax)
    return fig, ax


def _single_axes(fig, ax, figsize):
    if ax is None:
        fig = fig or new_figure(figsize)
        ax = fig.add_subplot(1, 1, 1)
    return ax.figure, ax


def plot_drift_by_lag(rows, label=None, fig=None, ax=None):
    """Drift of the code: mean cosine(e at a revisit, e at the node's first visit) against the lag (steps since
    that first visit), one point per non-empty lag bin at the bin's mean lag, log lag axis.

    ``rows``: :func:`spatial.diagnostics.bin_by_lag` rows (``lag_mean``, ``cos``, ``n``). Call again on the
    same ``ax`` with another ``label`` to compare rollouts. A code that returns to where it was stays at 1.
    """
    fig, ax = _single_axes(fig, ax, (4.5, 3.2))
    used = [r for r in rows if r["n"]]
    ax.plot([r["lag_mean"] for r in used], [r["cos"] for r in used], "o-", label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("lag (steps since the first visit)")
    ax.set_ylabel("cosine(e now, e at first visit)")
    if label is not None:
        ax.legend(fontsize=6)
    return fig, ax


def plot_accuracy_by_length(by_length, fig=None, ax=None):
    """Accuracy on the first L steps of the walks (all steps, revisits, zero-shot) with the node agent (upper
    bound) and the edge agent (lower bound) on all steps, against L.

    ``by_length``: :func:`spatial.diagnostics.accuracy_by_length` (``{"L200": {"steps", "acc", ...}}``).
    Short walks show how fast a world is inferred; the drop (or not) at long lengths shows stability.
    """
    fig, ax = _single_axes(fig, ax, (4.5, 3.2))
    rows = sorted(by_length.values(), key=lambda r: r["steps"])
    L = [r["steps"] for r in rows]
    for key, style, label in (("acc", "o-", "TEM-t, all steps"), ("acc_revisit", "s-", "TEM-t, revisits"),
                              ("acc_zero_shot", "^-", "TEM-t, zero-shot"), ("node_agent", "k--", "node agent"),
                              ("edge_agent", "k:", "edge agent")):
        ax.plot(L, [r[key] for r in rows], style, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("walk length L (first L steps)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    return fig, ax


def plot_norm_by_quarter(norms, label=None, fig=None, ax=None):
    """Mean ||e|| in each quarter of the walk (:func:`spatial.diagnostics.norm_by_quarter`): a code that grows
    or shrinks along a walk shows a slope. Call again on the same ``ax`` to compare rollouts."""
    fig, ax = _single_axes(fig, ax, (3.5, 3.0))
    ax.plot(np.arange(1, len(norms) + 1), norms, "o-", label=label)
    ax.set_xticks(np.arange(1, len(norms) + 1))
    ax.set_xlabel("quarter of the walk")
    ax.set_ylabel("mean ||e||")
    ax.set_ylim(bottom=0)
    if label is not None:
        ax.legend(fontsize=6)
    return fig, ax
