"""spatial.diagnostics: known answers on hand-built inputs, agreement with direct computations, and the new keys
of the Trainer's evaluation and the analysis report."""
import json
import math

import numpy as np
import pytest
import torch

from spatial import diagnostics as D
from spatial import plots
from spatial.analyse import AnalysisConfig, analyse_model
from spatial.config import SpatialConfig
from spatial.metrics import accuracy_summary, coverage_before
from spatial.report import write_report
from spatial.rollout import Rollout, run_rollout, side_lobe_fraction
from spatial.train import Trainer
from spatial.worlds import graph_world, hex_world, square_world
from temt_core.config import load_config
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET

torch.set_num_threads(1)
TINY = ["model.pos_dim=16", "walks.sizes=[5]", "walks.walk_length=[100, 200]", "train.chunk_length=50",
        "model.transition_init_std=0.5"]


def _model(overrides=()):
    cfg = load_config(SpatialConfig, None, TINY + list(overrides))
    torch.manual_seed(0)
    return TEMt(cfg.model).eval(), cfg


@pytest.fixture(scope="module")
def tiny_rollout():
    model, cfg = _model()
    r = run_rollout(model, cfg.walks, 3, 250, seed=5, chunk_length=50, record_positions=True,
                    record_memory_neurons=True, record_side_lobe=True)
    return model, cfg, r


# -- transitions ----------------------------------------------------------------------------------------------

def test_inverse_pairs_are_read_off_the_worlds():
    assert D.inverse_action_pairs(square_world(4)) == ((1, 3), (2, 4))          # north/south, east/west
    assert D.inverse_action_pairs(hex_world(2)) == ((1, 4), (2, 5), (3, 6))     # E/W, NE/SW, NW/SE
    # a one-way ring: 'next' has no inverse, so no pair
    ring = graph_world([(i, (i + 1) % 4, "next") for i in range(4)])
    assert D.inverse_action_pairs(ring) == ()


def test_exact_inverses_give_zero_error_and_random_transitions_do_not():
    rng = np.random.default_rng(0)
    E = 8
    W = np.eye(E) + 0.3 * rng.standard_normal((5, E, E))
    W[0] = np.eye(E)
    W[3], W[4] = np.linalg.inv(W[1]), np.linalg.inv(W[2])
    exact = D.transition_consistency(W, ((1, 3), (2, 4)), ["stay", "N", "E", "S", "W"])
    assert exact["inverse_mean"] < 1e-12 and set(exact["inverse"]) == {"N/S", "E/W"}
    W[3] = np.eye(E) + 0.3 * rng.standard_normal((E, E))
    broken = D.transition_consistency(W, ((1, 3), (2, 4)))
    assert broken["inverse"]["1/3"] > 0.1 and broken["inverse"]["2/4"] < 1e-12
    # the error is relative to ||I|| = sqrt(E): W_a = 2I, W_b = I gives ||I|| / ||I|| = 1 in both orders
    assert D.transition_consistency(np.stack([2 * np.eye(E), np.eye(E)]), ((0, 1),))["inverse_mean"] == \
        pytest.approx(1.0)


def test_commuting_diagonal_transitions_give_zero_commutator():
    rng = np.random.default_rng(1)
    E = 6
    diagonal = np.stack([np.diag(rng.uniform(0.5, 2, E)) for _ in range(7)])
    hex_pairs = ((1, 4), (2, 5), (3, 6))
    d = D.transition_consistency(diagonal, hex_pairs)
    assert len(d["commutator"]) == 3 and d["commutator_mean"] < 1e-12      # E/NE, E/NW, NE/NW
    dense = np.eye(E) + 0.3 * rng.standard_normal((7, E, E))
    assert D.transition_consistency(dense, hex_pairs)["commutator_mean"] > 0.05
    assert math.isnan(D.transition_consistency(dense, ())["commutator_mean"])   # no pairs: nothing to measure


def test_tied_orthogonal_transitions_of_a_model_are_inverse():
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(pos_dim=12, transition="orthogonal", inverse_actions=((1, 3), (2, 4)),
                            transition_init_std=0.5))
    W = model.positions.transition_matrices().detach()
    d = D.transition_consistency(W, D.inverse_action_pairs(square_world(4)))
    assert d["inverse_mean"] < 1e-5          # tied by construction: W_S = W_N^T = W_N^-1
    assert d["commutator_mean"] > 1e-3       # but two random rotations do not commute


def test_transition_pairs_out_of_range_are_reported():
    with pytest.raises(ValueError, match=r"pair \(1, 7\)"):
        D.transition_consistency(np.stack([np.eye(3)] * 5), ((1, 7),))


# -- drift ------------------------------------------------------------------------------------------------------

def test_first_visit_steps():
    nodes = np.array([[3, 1, 3, 2, 1], [0, 0, 4, 0, 4]])
    assert D.first_visit_steps(nodes).tolist() == [[0, 1, 0, 3, 1], [0, 0, 2, 0, 2]]


def _synthetic_walk(T=300, n_nodes=30, E=6, seed=0):
    rng = np.random.default_rng(seed)
    nodes = rng.integers(0, n_nodes, size=(2, T))
    actions = rng.integers(1, 5, size=(2, T))
    actions[:, 0] = -1
    codes = rng.standard_normal((n_nodes, E))
    return nodes, actions, codes


def _rotate(v, theta):
    """Rotate every consecutive pair of coordinates by theta: cosine(v, R v) = cos(theta) for any v."""
    c, s = np.cos(theta), np.sin(theta)
    x, y = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v)
    out[..., 0::2], out[..., 1::2] = c * x - s * y, s * x + c * y
    return out


def test_codes_that_return_exactly_give_cosine_one_in_every_nonempty_bin():
    nodes, actions, codes = _synthetic_walk()
    nodes[0, 10:20], actions[0, 10:20] = nodes[0, 9], 0   # ten stays at step 9's node ...
    positions = codes[nodes]
    positions[0, 10:20] = -positions[0, 10:20]           # ... with a scrambled code: left out by the diagnostic
    rows = D.drift_by_lag(positions, nodes, actions, stay_action=0)
    assert [r["n"] > 0 for r in rows] == [True, True, True, False]          # 300 steps: no lag >= 400
    for r in rows[:3]:
        assert r["cos"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(rows[3]["cos"]) and rows[3]["lag_hi"] is None
    assert D.drift_by_lag(positions, nodes, actions)[0]["cos"] < 0.99       # the stays do count without stay_action


def test_a_known_rotation_gives_the_known_cosine_per_lag_bin():
    nodes, actions, codes = _synthetic_walk(T=900, n_nodes=60)
    lag = np.arange(900)[None] - D.first_visit_steps(nodes)
    angle = np.select([lag == 0, lag < 25, lag < 100, lag < 400], [0.0, 0.2, 0.7, 1.3], 2.0)
    positions = _rotate(codes[nodes], angle[..., None])
    rows = D.drift_by_lag(positions, nodes, actions)
    assert all(r["n"] > 0 for r in rows)
    assert [r["cos"] for r in rows] == pytest.approx(np.cos([0.2, 0.7, 1.3, 2.0]), abs=1e-9)


def test_drift_refuses_rows_with_two_worlds():
    nodes, actions, codes = _synthetic_walk(T=50)
    actions[1, 30] = -1
    with pytest.raises(ValueError, match="row 1 starts a new world at step 30"):
        D.drift_by_lag(codes[nodes], nodes, actions)


# -- accuracy -----------------------------------------------------------------------------------------------------

def test_prefix_accuracy_equals_a_model_run_on_the_truncated_walk(tiny_rollout):
    model, cfg, r = tiny_rollout
    L, chunk = 150, 50
    state, correct = None, []
    with torch.no_grad():
        for lo in range(0, L, chunk):            # the first L steps alone, through the model afresh
            x = torch.from_numpy(r.x[:, lo:lo + chunk])
            out = model(x, torch.from_numpy(r.actions[:, lo:lo + chunk]), state)
            state = out.state
            correct.append((out.logits.argmax(-1) == x).numpy())
    direct = accuracy_summary(np.concatenate(correct, 1), r.revisit[:, :L], r.new_edge[:, :L],
                              r.edge_seen[:, :L], r.actions[:, :L], r.n_stimuli)
    prefix = D.accuracy_by_length(r, (L, 1000))
    for k in D.ACCURACY_KEYS + ("n_revisit", "n_zero_shot"):
        assert prefix["L150"][k] == pytest.approx(direct[k], nan_ok=True), k
    assert prefix["L150"]["n_revisit"] > 0
    whole = accuracy_summary(r.correct, r.revisit, r.new_edge, r.edge_seen, r.actions, r.n_stimuli)
    assert prefix["L1000"]["steps"] == 250 and prefix["L1000"]["acc"] == whole["acc"]      # clipped


def test_coverage_split_partitions_the_steps():
    # one row, 4-node world: nodes 0 1 0 2 3 1 -> coverage before arriving 0, 1/4, 2/4, 2/4, 3/4, 1
    nodes = np.array([[0, 1, 0, 2, 3, 1]])
    revisit = np.array([[False, False, True, False, False, True]])
    n_visited = np.array([[1, 2, 2, 3, 4, 4]])
    assert coverage_before(n_visited, revisit, [4]).tolist() == [[0, 0.25, 0.5, 0.5, 0.75, 1.0]]
    r = Rollout(x=nodes, actions=np.array([[-1, 2, 4, 3, 2, 4]]), nodes=nodes, revisit=revisit,
                new_edge=np.array([[False, True, True, True, True, True]]), edge_seen=np.zeros((1, 6), bool),
                n_visited=n_visited, n_nodes=np.array([4]), correct=np.array([[False, True, True, False, True, False]]),
                stay_action=0, n_stimuli=10, worlds=[])
    split = D.accuracy_by_coverage_split(r, 0.75)
    assert split["before"]["n_steps"] == 3 and split["after"]["n_steps"] == 2       # the RESET step is left out
    assert split["before"]["acc_revisit"] == 1.0 and split["after"]["acc_revisit"] == 0.0
    assert split["frac_revisits_after"] == 0.5


# -- activity ------------------------------------------------------------------------------------------------------

def test_saturation_and_norm_by_quarter_known_answers():
    e = np.array([[[1.0, -1.0, 0.0, 0.5]]])
    assert D.saturation(e, 1.0) == {"frac_at_bound": 0.5, "frac_at_zero": 0.25}
    assert math.isnan(D.saturation(e, None)["frac_at_bound"])
    norms = np.repeat([1.0, 2.0, 3.0, 4.0], 2)                   # 8 steps, the norm grows each quarter
    positions = np.zeros((3, 8, 2))
    positions[..., 0] = norms
    assert D.norm_by_quarter(positions) == [1.0, 2.0, 3.0, 4.0]


def test_locations_per_unit_known_answer():
    nodes = np.array([[0, 1, 2, 3, 2, 0, 1]])                    # a 5-node world, node 4 never visited
    rates = np.array([[0.0, 0.0, 1.0, 0.0],                      # one location
                      [1.0, 1.0, 1.0, 0.0],                      # three
                      [-1.0, -1.0, 1.0, 1.0],                    # two: the middle of its range is 0
                      [0.4, 0.4, 0.7, 1.0],                      # one: above 0.7, the middle of 0.4..1 (half
                                                                 #   of the maximum, 0.5, would give two)
                      [0.3, 0.3, 0.3, 0.3]])                     # no range: not an active unit
    positions = rates.T[nodes]                                   # (1, T, 5)
    d = D.locations_per_unit(positions, nodes, 5)
    assert d["per_world"] == [1.75] and d["mean"] == 1.75 and d["nodes_per_world"] == 5.0


# -- side lobes ---------------------------------------------------------------------------------------------------

def test_side_lobe_fraction_known_answers():
    path = square_world(4, 2)                                    # 2 x 4 grid: node 0 neighbours 1 and 4
    near = torch.from_numpy(path.adjacency() | np.eye(8, dtype=bool))[None]
    key_nodes = torch.tensor([[0, 1, 6, -1]])                    # the last key is padding, not a memory
    weights = torch.tensor([[[1.0, 0.0, 0.0, 0.0],               # all on the true node's memory
                             [0.5, 0.3, 0.2, 0.0],               # 0.2 on node 6, far from node 0
                             [0.5, 0.3, 0.2, 0.0],               # seen from node 6: 0.8 on nodes 0 and 1
                             [0.0, 0.0, 0.0, 0.0]]])             # nothing to read
    got = side_lobe_fraction(weights, key_nodes, torch.tensor([[0, 0, 6, 0]]), near)[0]
    assert got[:3].tolist() == pytest.approx([0.0, 0.2, 0.8]) and math.isnan(got[3])


def test_rollout_side_lobe_matches_a_direct_loop_over_memory_neurons(tiny_rollout):
    _, _, r = tiny_rollout
    memory_nodes = r.memory_nodes()
    assert memory_nodes.shape[1] == r.memory_neurons.shape[2]    # every memory recorded (below the cap)
    for b in (0, 2):
        near = r.worlds[b].adjacency() | np.eye(r.worlds[b].n_nodes, dtype=bool)
        for t in range(0, 250, 7):
            w = r.memory_neurons[b, t]
            stored_nodes = memory_nodes[b]
            if w.sum() == 0:
                assert math.isnan(r.side_lobe[b, t])
                continue
            far = sum(w[s] for s in range(w.size) if stored_nodes[s] >= 0 and not near[r.nodes[b, t], stored_nodes[s]])
            assert r.side_lobe[b, t] == pytest.approx(far / w.sum(), abs=1e-5), (b, t)
    assert 0 < D.side_lobe_ratio(r)["all"] < 1 and D.side_lobe_ratio(r)["steps"] == 3 * 249


def test_diagnose_names_the_missing_recording():
    model, cfg = _model()
    r = run_rollout(model, cfg.walks, 1, 60, seed=1, chunk_length=50)
    with pytest.raises(ValueError, match="record_positions=True"):
        D.diagnose(r, model)
    with pytest.raises(ValueError, match="record_side_lobe=True"):
        D.side_lobe_ratio(r)


# -- end to end ---------------------------------------------------------------------------------------------------

def test_trainer_evaluation_logs_the_diagnostics(tmp_path):
    cfg = load_config(SpatialConfig, None, TINY + ["train.steps=3", "train.log_every=3", "eval.every=3",
                                                   "eval.steps=150", "eval.n_worlds=3", "train.batch_size=4"])
    final = Trainer(cfg, tmp_path / "run", progress=False).run()
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ev = [row for row in log if row["split"] == "eval"][-1]
    assert all(not isinstance(v, (dict, list)) for v in ev.values())            # flat scalars only
    for k in ("acc", "acc_revisit", "acc_zero_shot", "node_agent", "edge_agent", "chance"):   # old keys kept
        assert k in ev
    finite = ["acc_L200", "acc_revisit_L500", "node_agent_L1500", "edge_agent_L200", "acc_cov_lt90",
              "drift_cos_lag_lt25", "drift_cos_lag_25_100", "transition_inverse_err", "transition_commutator",
              "e_frac_at_bound", "e_frac_at_zero", "e_norm_q1", "e_norm_q4", "locations_per_unit",
              "nodes_per_world", "side_lobe_ratio", "side_lobe_ratio_revisit", "frac_revisits_cov_ge90"]
    for k in finite:
        assert np.isfinite(ev[k]), k
    assert ev["drift_n_lag_ge400"] == 0 and math.isnan(ev["drift_cos_lag_ge400"])   # a 150-step walk
    assert -1 <= ev["e_step_cosine"] <= 1 and math.isnan(ev["landmark_gate_mean"])  # no landmark correction
    assert ev["acc_L200"] == ev["acc_L1500"] == pytest.approx(ev["acc"])             # clipped to 150 steps
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["diagnostics"]["accuracy_by_length"]["L200"]["steps"] == 150
    assert {"revisit", "zero_shot"} <= set(saved["by_coverage"][0])
    assert final["transition_inverse_err"] == saved["transition_inverse_err"]


def test_step_cosine_known_answers_and_the_landmark_gate_is_recorded():
    e = np.zeros((1, 4, 2))
    e[0, :, 0] = 1.0                             # a code that never moves ...
    e[0, 2] = [0.0, 1.0]                         # ... except at step 2 (90 degrees)
    actions = np.array([[RESET, 1, 2, 0]])       # the move into step 3 is a stay
    assert D.step_cosine(e, actions, stay_action=0) == pytest.approx((1.0 + 0.0) / 2)
    assert D.step_cosine(e, actions, stay_action=None) == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(pos_dim=16, landmark="stimulus", landmark_key_dim=8))
    cfg = load_config(SpatialConfig, None, TINY)
    r = run_rollout(model, cfg.walks, 2, 60, seed=1, chunk_length=20, record_positions=True, record_side_lobe=True)
    assert r.gate.shape == (2, 60)
    d = D.diagnose(r, model)
    assert d["landmark_gate"] == pytest.approx(float(r.gate.mean())) and 0 < d["landmark_gate"] < 0.5  # closed


def test_analysis_report_has_a_diagnostics_section(tmp_path):
    model, cfg = _model()
    analysis = analyse_model(model, cfg, AnalysisConfig(sizes=(5,), steps=300, n_shuffles=5, n_perm=5))
    report = write_report(analysis, tmp_path / "an", config=cfg, step=0,
                          analysis_config=AnalysisConfig(sizes=(5,), steps=300))
    text = report.read_text()
    assert "## Diagnostics" in text and "| analysis | first 200 steps |" in text
    assert "| transitions: inverse error, mean over opposite moves |" in text
    for name in ("drift.png", "accuracy_by_length.png", "e_norm_by_quarter.png", "accuracy_by_coverage_analysis.png"):
        assert (tmp_path / "an" / name).is_file() and name in text
    saved = json.loads((tmp_path / "an" / "metrics.json").read_text())
    assert saved["diagnostics"]["locations"]["nodes_per_world"] == 25


def test_diagnostic_plots_draw_their_data():
    rows = [{"lag_mean": 3.0, "cos": 0.9, "n": 5}, {"lag_mean": 50.0, "cos": 0.5, "n": 2},
            {"lag_mean": float("nan"), "cos": float("nan"), "n": 0}]
    fig, ax = plots.plot_drift_by_lag(rows, label="a")
    assert ax.lines[0].get_ydata().tolist() == [0.9, 0.5]                   # the empty bin is not drawn
    fig, ax = plots.plot_norm_by_quarter([1.0, 2.0, 3.0, 4.0])
    assert ax.lines[0].get_ydata().tolist() == [1.0, 2.0, 3.0, 4.0]
    by_length = {"L200": {"steps": 200, "acc": 0.1, "acc_revisit": 0.2, "acc_zero_shot": 0.3, "node_agent": 0.9,
                          "edge_agent": 0.5},
                 "L500": {"steps": 500, "acc": 0.4, "acc_revisit": 0.5, "acc_zero_shot": 0.6, "node_agent": 0.95,
                          "edge_agent": 0.7}}
    fig, ax = plots.plot_accuracy_by_length(by_length)
    assert len(ax.lines) == 5 and ax.lines[2].get_ydata().tolist() == [0.3, 0.6]
