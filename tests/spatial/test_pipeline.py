"""The analysis, scaling and reproduction pipeline end to end on tiny models (fast; no claims tested here)."""
import json

import numpy as np
import pytest
import torch

from spatial.analyse import AnalysisConfig, analyse_model
from spatial.config import SpatialConfig
from spatial.report import write_report
from spatial import reproduce
from spatial.reproduce import write_combined_report
from spatial.scaling import ScalingConfig, memory_scaling
from temt_core.config import load_config
from temt_core.model import RESET, TEMt

TINY = ["model.pos_dim=16", "walks.sizes=[5]", "walks.walk_length=[100, 200]", "train.chunk_length=25"]


def _model(overrides=()):
    cfg = load_config(SpatialConfig, None, TINY + list(overrides))
    torch.manual_seed(0)
    return TEMt(cfg.model).eval(), cfg


@pytest.mark.slow        # 9-10 s on a loaded 2-core CPU
def test_analysis_and_report_on_a_tiny_model(tmp_path):
    model, cfg = _model(["model.transition_init_std=0.5"])
    acfg = AnalysisConfig(sizes=(5, 5), steps=300, n_shuffles=10, n_perm=10)
    analysis = analyse_model(model, cfg, acfg)
    m = analysis.metrics
    assert len(m["worlds"]) == 2 and m["worlds"][0]["units"] == 16
    acc, r = m["accuracy"], analysis.rollout
    assert acc["n_steps"] == 2 * (300 - 1)                     # two worlds, each walk starts with a RESET
    assert acc["acc_revisit"] == pytest.approx(r.correct[r.revisit & (r.actions != RESET)].mean())
    assert acc["acc_revisit"] < 0.2                            # untrained: near chance (1/45); more would be a leak
    assert m["worlds"][0]["active_units"] >= 3                 # so the pair structure must have been computed:
    assert -1 <= m["remapping"]["position_pair_r"] <= 1 and m["remapping"]["memory_neurons_compared"] >= 3
    report = write_report(analysis, tmp_path / "an", config=cfg, step=0, analysis_config=acfg)
    text = report.read_text()
    assert "| grid_cells |" in text and "rate_maps_g60.png" in text
    for name in ("rate_maps_g60.png", "scores.png", "metrics.json"):
        assert (tmp_path / "an" / name).is_file()
    saved = json.loads((tmp_path / "an" / "metrics.json").read_text())
    assert saved["worlds"][0]["world"] == "square5x5"


def test_hex_analysis_runs():
    model, cfg = _model(["model.n_actions=7", "walks.kind=hex", "walks.sizes=[2]", "model.transition_init_std=0.5"])
    analysis = analyse_model(model, cfg, AnalysisConfig(sizes=(2,), steps=300, n_shuffles=5, n_perm=5))
    assert analysis.metrics["worlds"][0]["n_nodes"] == 19


def test_memory_scaling_grows_the_store_without_dedup():
    model, cfg = _model(["model.transition_init_std=0.5"])
    rows = memory_scaling(model, cfg, ScalingConfig(lengths=(40, 120), size=5, n_worlds=2))
    off = {r["walk_length"]: r["memories_at_end"] for r in rows if not r["dedup"]}
    on = {r["walk_length"]: r["memories_at_end"] for r in rows if r["dedup"]}
    assert off == {40: 40.0, 120: 120.0}                   # every step stored
    assert on[120] <= off[120] and np.isfinite(rows[0]["ms_per_step"])


def test_combined_report_states_verdicts(tmp_path):
    worlds = [{"lattice_counts": {"hex": 3, "square": 0, "band": 0, "ramp": 5, "none": 0}}]
    good = {"mean_over_worlds": {"frac_grid_of_active": 0.4, "frac_square_of_active": 0.0, "frac_band_of_active": 0.2,
                                 "memory_place_metric_median": 0.95, "frac_beat_both_nulls_g60": 0.5},
            "worlds": worlds, "remapping": {"memory_pair_r": 0.02, "position_pair_r": 0.9}}
    bad = {"mean_over_worlds": {"frac_grid_of_active": 0.01, "frac_square_of_active": 0.02, "frac_band_of_active": 0.0},
           "worlds": worlds, "remapping": {}}
    for arm, m in (("relu", good), ("linear", bad)):
        (tmp_path / arm / "analysis").mkdir(parents=True)
        (tmp_path / arm / "analysis" / "metrics.json").write_text(json.dumps(m))
    text = write_combined_report(tmp_path, ["relu", "linear", "hex"], quick=True, seconds=60).read_text()
    assert "| C1 grid cells, ReLU | reproduced |" in text
    assert "| C1 grid cells, linear | NOT reproduced |" in text
    assert "| C9 hex worlds | not run |" in text
    assert "| C3 memory neurons, relu | reproduced |" in text
    assert "| C2 band cells, relu | reproduced |" in text and "| C2 band cells, linear | NOT reproduced |" in text


def _arm(grid=0.0, square=0.0, band=0.0, place=None, mem_r=None, pos_r=None):
    m = {"frac_grid_of_active": grid, "frac_square_of_active": square, "frac_band_of_active": band,
         "memory_place_metric_median": place}
    return {"mean_over_worlds": m, "worlds": [{"lattice_counts": {}}],
            "remapping": {"memory_pair_r": mem_r, "position_pair_r": pos_r}}


def _verdict(rows, claim):
    return next(v for c, v, _ in rows if c == claim)


def test_verdicts_and_their_stated_rules_come_from_one_table(monkeypatch):
    t = reproduce.THRESHOLDS
    at = _arm(t["grid_frac"], 0, t["band_frac"], t["place_median"], t["remap_r"] / 2, t["kept_r"] + 0.01)
    below = _arm(t["grid_frac"] - 0.01, t["grid_frac"], t["band_frac"] - 0.01, t["place_median"] - 0.01,
                 t["remap_r"] * 2, t["kept_r"])
    rows = reproduce._verdicts({"relu": at, "linear": below})
    assert _verdict(rows, "C1 grid cells, ReLU") == "reproduced"
    assert _verdict(rows, "C1 grid cells, linear") == "square grids only"
    assert _verdict(rows, "C2 band cells, relu") == "reproduced"
    assert _verdict(rows, "C2 band cells, linear") == "NOT reproduced"
    assert _verdict(rows, "C3 memory neurons, relu") == "reproduced"
    assert _verdict(rows, "C3 memory neurons, linear") == "NOT reproduced"
    text = reproduce.verdict_rules()
    assert "at least 15% " in text and "3 times the 5%" in text and ">= 0.8" in text and "|r| < 0.1" in text
    # change the table: both the verdicts and the stated rules follow
    monkeypatch.setitem(reproduce.THRESHOLDS, "grid_frac", 0.3)
    monkeypatch.setitem(reproduce.THRESHOLDS, "place_median", 0.9)
    rows = reproduce._verdicts({"relu": at})
    assert _verdict(rows, "C1 grid cells, ReLU") == "NOT reproduced"
    assert _verdict(rows, "C3 memory neurons, relu") != "reproduced"
    text = reproduce.verdict_rules()
    assert "at least 30% " in text and "6 times the 5%" in text and ">= 0.9" in text
