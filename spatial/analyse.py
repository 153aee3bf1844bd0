"""Analyse a trained TEM-t (or TEM): grid, band and place cells, remapping, with figures and a report.

    temt-spatial analyse runs/relu                      # writes runs/relu/analysis/{report.md, metrics.json, *.png}
    python -m spatial analyse runs/relu steps=8000 sizes=[11,11,14]   # key=value: AnalysisConfig fields (below)

The model walks fresh worlds (one per entry of `sizes`, fresh observations, the training policy) for `steps`
steps each, with no learning. Per world, for every position unit (e) and every memory neuron (one per stored
memory, identified by its storage order):
    position units   rate maps, G60/G90 (ring-max), band score, Fourier class, the spec's two nulls
                     (circular shift of activity against the walk, node permutation), the grid- and band-cell
                     rules of spec 5.3/5.4, and the translation-invariance of the whole code
    memory neurons   Skaggs information, sparsity, number of fields, the paper's place metric
Across the first two worlds (same shape): per-cell rate-map correlation, preserved pair structure for grid cells
and for memory neurons, and gridAtPlace. Scores are computed per world and averaged over worlds, never on
averaged maps (grids realign between worlds). The diagnostics of spatial.diagnostics (accuracy by walk length and
coverage, drift, transition consistency, saturation, locations per unit, side lobes) are computed on the same walks.

A TEM run (model_kind=tem) is analysed the same way with its inferred g as the position units and its conjunctive
cells p as the memory neurons (spatial.rollout): one memory neuron per p unit, the same unit in both worlds. The
attention side-lobe ratio does not exist for TEM (no stored memories to attend to) and is reported as NaN.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from temt_core.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from temt_core.model import TEMt
from temt_core.tem import TEM

from .analysis import (as_geometry, classify_band_cells, classify_grid_cells, place_fields, place_metric,
                       rate_maps, sparsity, spatial_information, translation_invariance)
from .analysis.remapping import cell_correlations, grid_at_place, pair_structure
from .config import SpatialConfig
from .diagnostics import diagnose
from .rollout import Rollout, run_rollout
from .worlds import config_world


@dataclass
class AnalysisConfig:
    sizes: tuple[int, ...] = (11, 11)    # one world per entry; the first two must be equal (remapping)
    steps: int = 6000                    # walk length per world (~50 visits per node of an 11 x 11 world)
    n_shuffles: int = 100                # circular-shift null per unit (spec: 100+)
    n_perm: int = 100                    # node-permutation null per unit
    place_threshold: float = 0.2         # place-field threshold, fraction of the peak (spec 5.5)
    min_memory_visits: int = 3           # memory neurons active at fewer nodes than this are not analysed
    max_memory_neurons: int = 512        # memory neurons analysed per world (the first stored)
    seed: int = 777

    def __post_init__(self):
        if not self.sizes:
            raise ValueError("analysis.sizes must list at least one world size")
        if self.steps < 100:
            raise ValueError(f"analysis.steps must be >= 100 (got {self.steps})")
        if self.seed < 0:
            raise ValueError(f"analysis.seed must be >= 0 (got {self.seed})")


@dataclass
class Analysis:
    metrics: dict
    rollout: Rollout
    worlds: list
    per_world: list = field(default_factory=list)      # dicts of arrays per world (maps, scores, classes)
    remap: dict = field(default_factory=dict)


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[TEMt | TEM, SpatialConfig, int]:
    """The model of a run directory's latest checkpoint (TEM-t or TEM, as config.model_kind says), its config and
    its step."""
    from .train import build_model, load_model_weights, load_run_config, model_kind_of
    config = load_run_config(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to analyse")
    tensors, meta = load_checkpoint(ckpt)
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{ckpt}: the run's weights are not finite ({', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''} hold NaN or inf): the run diverged by step "
                              f"{meta.get('step')}; there is nothing to analyse in this checkpoint")
    model = build_model(config)
    load_model_weights(model, tensors, ckpt, config.model_kind, model_kind_of(meta.get("config")))
    return model.to(device).eval(), config, meta["step"]


def _memory_neuron_metrics(neurons: np.ndarray, nodes: np.ndarray, world, cfg: AnalysisConfig) -> dict:
    """Place metrics of the memory neurons of one world. neurons (T, S) softmax weights."""
    w = as_geometry(world)
    maps, occupancy = rate_maps(neurons, nodes, w.n_nodes, second_half=False)
    active_nodes = (np.nan_to_num(maps) > 1e-3 * np.nanmax(maps, axis=1, keepdims=True).clip(1e-12)).sum(1)
    keep = np.flatnonzero((active_nodes >= cfg.min_memory_visits) & np.isfinite(maps).any(1))
    keep = keep[:cfg.max_memory_neurons]
    maps_k = np.clip(maps[keep], 0, None)
    if w.kind == "square":
        grid = w.grid(maps_k)
        pm = place_metric(grid, threshold=cfg.place_threshold)
        n_fields = np.array([len(place_fields(g, threshold=cfg.place_threshold)[1]) for g in grid])
    else:
        pm = place_metric(maps_k, adjacency=w.adjacency, threshold=cfg.place_threshold)
        n_fields = np.array([len(place_fields(m, adjacency=w.adjacency, threshold=cfg.place_threshold)[1])
                             for m in maps_k])
    return dict(ids=keep, maps=maps_k, place_metric=np.atleast_1d(pm),
                information=np.atleast_1d(spatial_information(maps_k, occupancy)),
                sparsity=np.atleast_1d(sparsity(maps_k, occupancy)), n_fields=n_fields)


def analyse_model(model: TEMt | TEM, config: SpatialConfig, cfg: AnalysisConfig, device: str = "cpu",
                  step: int | None = None) -> Analysis:
    """step: the gradient step of the weights (needed for TEM, whose memory rates follow it; load_trained gives
    it)."""
    worlds = [config_world(config.walks.kind, s, f"analysis.sizes[{i}]") for i, s in enumerate(cfg.sizes)]
    r = run_rollout(model, config.walks, len(worlds), cfg.steps, cfg.seed, config.train.chunk_length,
                    record_positions=True, record_memory_neurons=True, device=device, worlds=worlds,
                    max_memory_neurons=cfg.max_memory_neurons, record_side_lobe=True, step=step)
    per_world, summary = [], []
    for b, world in enumerate(worlds):
        act, nodes = r.positions[b], r.nodes[b]
        grid, band, cells = classify_cells(act, nodes, world, cfg, b)
        node_codes, _ = rate_maps(act, nodes, world.n_nodes, second_half=False)      # (E, N)
        inv = translation_invariance(node_codes.T, as_geometry(world).coords)
        mem = _memory_neuron_metrics(r.memory_neurons[b], nodes, world, cfg)
        per_world.append(dict(world=world, grid=grid, band=band, invariance=inv, memory=mem,
                              maps=grid["maps"]))
        summary.append({
            "world": world.name, "n_nodes": world.n_nodes, **cells,
            "translation_invariance": _scalar(inv),
            "memory_neurons": int(mem["ids"].size),
            "memory_place_metric_median": _nanq(mem["place_metric"], 0.5),
            "memory_frac_single_field": float(np.mean(mem["n_fields"] == 1)) if mem["ids"].size else float("nan"),
            "memory_information_median": _nanq(mem["information"], 0.5),
            "memory_sparsity_median": _nanq(mem["sparsity"], 0.5),
        })
    remap = _remapping(per_world, cfg) if len(worlds) > 1 and worlds[0].n_nodes == worlds[1].n_nodes else {}
    from .metrics import accuracy_by_coverage, accuracy_summary
    acc = accuracy_summary(r.correct, r.revisit, r.new_edge, r.edge_seen, r.actions, r.n_stimuli)
    metrics = {"accuracy": acc,
               "accuracy_by_coverage": accuracy_by_coverage(r.correct, r.revisit, r.edge_seen, r.actions,
                                                            r.n_visited, r.n_nodes, r.n_stimuli, new_edge=r.new_edge),
               "diagnostics": diagnose(r, model),
               "worlds": summary,
               "mean_over_worlds": {k: float(np.nanmean([s[k] for s in summary])) for k in summary[0]
                                    if isinstance(summary[0][k], (int, float))},
               "remapping": {k: v for k, v in remap.items() if not k.startswith("_")}}
    return Analysis(metrics=metrics, rollout=r, worlds=worlds, per_world=per_world, remap=remap)


def classify_cells(act: np.ndarray, nodes: np.ndarray, world, cfg: AnalysisConfig, index: int = 0):
    """The search's cell rule (spec 5.3) on one walk: activity (T, U) at walk nodes (T,) in `world`, the index-th
    analysis world (its nulls draw from seed cfg.seed + index). Returns the grid and band classifications and the
    per-world counts and fractions of active units that every analysis reports."""
    grid = classify_grid_cells(act, nodes, world, n_shuffles=cfg.n_shuffles, n_perm=cfg.n_perm, rng=cfg.seed + index)
    band = classify_band_cells(act, nodes, world, rng=cfg.seed + index, shift_null=grid["shift_null"],
                               perm_null=grid["perm_null"])
    active = grid["active"]
    cells = {
        "units": int(act.shape[1]), "active_units": int(active.sum()),
        "grid_cells": int(grid["is_grid"].sum()), "square_grid_cells": int(grid["is_square_grid"].sum()),
        "band_cells": int(band["is_band"].sum()),
        "frac_grid_of_active": _frac(grid["is_grid"], active),
        "frac_square_of_active": _frac(grid["is_square_grid"], active),
        "frac_band_of_active": _frac(band["is_band"], active),
        "frac_beat_both_nulls_g60": _frac(grid["beats_shift_g60"] & grid["beats_perm_g60"], active),
        "frac_beat_both_nulls_g90": _frac(grid["beats_shift_g90"] & grid["beats_perm_g90"], active),
        "g60_median": _nanq(grid["g60"][active], 0.5), "g60_p90": _nanq(grid["g60"][active], 0.9),
        "g90_median": _nanq(grid["g90"][active], 0.5), "g90_p90": _nanq(grid["g90"][active], 0.9),
        "lattice_counts": {k: int(((grid["lattice"] == k) & active).sum())
                           for k in ("hex", "square", "band", "ramp", "none")},
    }
    return grid, band, cells


def _remapping(per_world: list, cfg: AnalysisConfig) -> dict:
    a, b = per_world[0], per_world[1]
    out = {}
    active = a["grid"]["active"] & b["grid"]["active"]
    cells = cell_correlations(a["maps"][active], b["maps"][active])
    out["position_cell_corr_median"] = _nanq(cells, 0.5)
    grid_units = (a["grid"]["is_grid"] | a["grid"]["is_square_grid"]) & active
    out["n_grid_units_world1"] = int(grid_units.sum())
    units = grid_units if grid_units.sum() >= 5 else active
    out["pair_structure_units"] = "grid cells" if grid_units.sum() >= 5 else "all active units"
    if units.sum() >= 3:
        ps = pair_structure(a["maps"][units], b["maps"][units], n_perm=1000, rng=cfg.seed)
        out.update(position_pair_r=ps["r"], position_pair_null_p95=ps["p95"], position_pair_p=ps["pvalue"])
        out["_position_pair"] = ps
    # memory neurons: the same storage slot in both worlds
    ids_a, ids_b = a["memory"]["ids"], b["memory"]["ids"]
    common = np.intersect1d(ids_a, ids_b)
    if common.size >= 3:
        ma = a["memory"]["maps"][np.searchsorted(ids_a, common)]
        mb = b["memory"]["maps"][np.searchsorted(ids_b, common)]
        out["memory_cell_corr_median"] = _nanq(cell_correlations(ma, mb), 0.5)
        ps = pair_structure(ma, mb, n_perm=1000, rng=cfg.seed)
        out.update(memory_pair_r=ps["r"], memory_pair_null_p95=ps["p95"], memory_pair_p=ps["pvalue"],
                   memory_neurons_compared=int(common.size))
        out["_memory_pair"] = ps
        place = (a["memory"]["place_metric"][np.searchsorted(ids_a, common)] > 0.8) & \
                (b["memory"]["place_metric"][np.searchsorted(ids_b, common)] > 0.8)
        if place.sum() >= 2 and units.sum() >= 1:
            gap = grid_at_place(ma[place], mb[place], a["maps"][units], b["maps"][units], a["world"],
                                n_perm=5000, rng=cfg.seed)
            out.update(grid_at_place_r=gap["r"], grid_at_place_null_p95=gap["p95"],
                       grid_at_place_p=gap["pvalue"], grid_at_place_place_cells=int(gap["kept"].size))
    return out


def _frac(mask, active) -> float:
    n = int(active.sum())
    return float((mask & active).sum() / n) if n else float("nan")


def _nanq(x, q) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else float("nan")


def _scalar(inv) -> float:
    if isinstance(inv, dict):
        return float(inv.get("score", np.nan))
    return float(inv)


def save_metrics(metrics: dict, path: Path) -> None:
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not k.startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return None if not np.isfinite(v) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v
    path.write_text(json.dumps(clean(metrics), indent=1))
