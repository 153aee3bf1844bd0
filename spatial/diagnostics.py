"""Diagnostics that explain a position code: what limits its accuracy, in every evaluation and analysis report.

Accuracy on a 1,500-step walk mixes two things: how fast the model infers a new world, and whether its code stays
consistent over a long walk (two thirds of the revisits of such a walk come after 90% of the nodes are visited).
These numbers take them apart. Each function has one purpose and returns JSON-ready Python numbers (NaN where a
quantity has no samples, with the count beside it); `diagnose` runs them all on a Rollout and the model, and
`flat_diagnostics` turns the result into the scalar keys of metrics.jsonl.

    accuracy_by_length      accuracy, node and edge agents on the first 200 / 500 / 1,500 steps of the walks
    accuracy_by_coverage_split   the same before and after 90% coverage
    drift_by_lag            cosine(e at a revisit, e at the node's first visit), binned by steps since that visit
    transition_consistency  ||W_a W_b - I|| for opposite moves, commutators of the move directions
    saturation              fraction of entries of e at the clamp and at zero
    norm_by_quarter         mean ||e|| over each quarter of the walk
    locations_per_unit      nodes at which a unit is more than half-way up its range, per active unit
    side_lobe_ratio         attention weight on memories stored neither at the true node nor next to it

Flat keys (metrics.jsonl): acc_L200, acc_revisit_L200, acc_zero_shot_L200, node_agent_L200, edge_agent_L200 (and
_L500, _L1500, _cov_lt90, _cov_ge90), frac_revisits_cov_ge90, drift_cos_lag_{lt25,25_100,100_400,ge400} with
drift_n_lag_*, transition_inverse_err, transition_commutator, e_frac_at_bound, e_frac_at_zero, e_norm_q1..q4,
locations_per_unit, nodes_per_world, side_lobe_ratio, side_lobe_ratio_revisit.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from temt_core.positions import RESET

from .metrics import accuracy_summary, coverage_before

PREFIX_LENGTHS = (200, 500, 1500)        # short walks measure inference speed, long ones stability
LAG_EDGES = (25, 100, 400)               # bins lag < 25, 25 <= lag < 100, 100 <= lag < 400, lag >= 400
LAG_LABELS = ("lt25", "25_100", "100_400", "ge400")
CURVE_LAG_EDGES = (2, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)   # finer bins for the drift figure
COVERAGE_SPLIT = 0.9
ACCURACY_KEYS = ("acc", "acc_revisit", "acc_zero_shot", "node_agent", "edge_agent")
ZERO_TOL = 1e-6                          # |e| below this is "at zero"; |e| >= bound - this is "at the clamp"


# -- accuracy: inference speed vs long-walk stability ---------------------------------------------------------

def accuracy_by_length(rollout, lengths=PREFIX_LENGTHS) -> dict:
    """Accuracy (all steps, revisits, zero-shot) and the node and edge agents on the first L steps of every walk.

    The model is causal and the walk's flags (revisit, new edge) depend only on the past, so the first L steps of
    one long rollout ARE a walk of length L: every length comes from the one rollout, with no extra model run.
    L is clipped to the rollout's length; `steps` says how many steps each entry really covers.
    Returns {"L200": {"steps", "acc", ..., "n_revisit", "n_zero_shot"}, ...}.
    """
    r = rollout
    T = r.correct.shape[1]
    out = {}
    for L in lengths:
        if L < 1:
            raise ValueError(f"accuracy_by_length: walk lengths must be >= 1 (got {L})")
        n = min(int(L), T)
        s = accuracy_summary(r.correct[:, :n], r.revisit[:, :n], r.new_edge[:, :n], r.edge_seen[:, :n],
                             r.actions[:, :n], r.n_stimuli)
        out[f"L{L}"] = {"steps": n, **{k: s[k] for k in ACCURACY_KEYS + ("n_revisit", "n_zero_shot")}}
    return out


def accuracy_by_coverage_split(rollout, split: float = COVERAGE_SPLIT) -> dict:
    """The same accuracies on the steps taken before and after `split` of the world's nodes were visited
    (coverage as in spatial.metrics.coverage_before), and the fraction of all revisits that come after it.
    Late revisits are where a drifting code fails while a fast learner already looks good."""
    if not 0 < split < 1:
        raise ValueError(f"accuracy_by_coverage_split: split must be in (0, 1) (got {split})")
    r = rollout
    late = coverage_before(r.n_visited, r.revisit, r.n_nodes) >= split
    out = {"split": split}
    for name, part in (("before", ~late), ("after", late)):
        # steps outside the part count as RESET steps, which accuracy_summary leaves out everywhere
        s = accuracy_summary(r.correct, r.revisit, r.new_edge, r.edge_seen, np.where(part, r.actions, RESET),
                             r.n_stimuli)
        out[name] = {k: s[k] for k in ACCURACY_KEYS + ("n_steps", "n_revisit", "n_zero_shot")}
    n_revisit = out["before"]["n_revisit"] + out["after"]["n_revisit"]
    out["frac_revisits_after"] = out["after"]["n_revisit"] / n_revisit if n_revisit else float("nan")
    return out


# -- drift: does the code come back to the same place? ---------------------------------------------------------

def first_visit_steps(nodes: np.ndarray) -> np.ndarray:
    """(B, T) step at which each step's node was first visited in its row (the step itself on a first visit).
    One world per row (as run_rollout gives): a row never revisits a node of another world."""
    nodes = np.asarray(nodes)
    if nodes.ndim != 2:
        raise ValueError(f"first_visit_steps: nodes must be (B, T), got shape {nodes.shape}")
    B, T = nodes.shape
    key = np.arange(B)[:, None] * (int(nodes.max(initial=0)) + 1) + nodes       # (row, node) -> one integer
    _, first, inverse = np.unique(key.ravel(), return_index=True, return_inverse=True)   # first occurrences
    return (first[inverse.ravel()] % T).reshape(B, T)                            # flat index -> step in its row


def revisit_cosines(positions: np.ndarray, nodes: np.ndarray, actions: np.ndarray,
                    stay_action: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per revisit step: its lag (steps since the node's first visit) and cosine(e_t, e_first visit).

    Stay moves are left out: W_stay = I, so a stay repeats the previous step's comparison (or compares a first
    visit with itself). Steps where e is exactly zero have no direction and are left out too.
    Returns (lags, cosines), 1-D arrays of equal length.
    """
    positions = np.asarray(positions)
    if positions.ndim != 3 or positions.shape[:2] != np.shape(nodes) or np.shape(actions) != np.shape(nodes):
        raise ValueError(f"revisit_cosines: positions must be (B, T, E) and nodes, actions (B, T); got "
                         f"{positions.shape}, {np.shape(nodes)}, {np.shape(actions)}")
    _check_one_world_per_row(actions, "revisit_cosines")
    B, T, E = positions.shape
    first = first_visit_steps(nodes)
    lag = np.arange(T)[None, :] - first
    use = lag > 0
    if stay_action is not None:
        use &= np.asarray(actions) != stay_action
    now = np.flatnonzero(use)                                        # flat (row, step) indices of revisits
    then = now - lag.ravel()[now]                                    # the same row's first visit of the node
    flat = positions.reshape(B * T, E)
    # in the positions' precision (float32: ~1e-6 relative error on a cosine), squared norms of every step once
    sq = np.einsum("ij,ij->i", flat, flat)
    norms = np.sqrt(sq[now] * sq[then])
    ok = norms > 0
    now, then = now[ok], then[ok]
    cos = np.einsum("ij,ij->i", flat[now], flat[then]) / norms[ok]
    return lag.ravel()[now], np.clip(cos, -1.0, 1.0)


def bin_by_lag(lags: np.ndarray, values: np.ndarray, edges=LAG_EDGES) -> list[dict]:
    """Mean and count of `values` in lag bins [0, e0), [e0, e1), ..., [e_last, inf); NaN mean when empty.
    Rows {lag_lo, lag_hi, n, cos, lag_mean}; lag_hi is None for the last, open bin (JSON has no infinity), lag_mean
    (the bin's mean lag) places the bin on a figure's lag axis."""
    edges = tuple(edges)
    if list(edges) != sorted(set(edges)) or not edges or edges[0] <= 0:
        raise ValueError(f"bin_by_lag: edges must be positive and strictly increasing (got {edges})")
    which = np.digitize(lags, edges)               # 0: lag < e0, ..., len(edges): lag >= e_last
    bounds = (0,) + edges + (None,)
    rows = []
    for k in range(len(edges) + 1):
        inside = which == k
        v = values[inside]
        rows.append({"lag_lo": bounds[k], "lag_hi": bounds[k + 1], "n": int(v.size),
                     "cos": float(v.mean()) if v.size else float("nan"),
                     "lag_mean": float(lags[inside].mean()) if v.size else float("nan")})
    return rows


def drift_by_lag(positions, nodes, actions, stay_action=None, edges=LAG_EDGES) -> list[dict]:
    """Drift of the code: cosine between e at a revisit and e at the first visit of the same node (same world),
    by lag. A path-integrating code that comes back to where it was gives 1 in every bin; a code that drifts
    loses similarity with lag, which is what makes late revisits fail. Rows as bin_by_lag's."""
    lags, cos = revisit_cosines(positions, nodes, actions, stay_action)
    return bin_by_lag(lags, cos, edges)


def _check_one_world_per_row(actions, where: str) -> None:
    later_reset = np.asarray(actions)[:, 1:] == RESET
    if later_reset.any():
        b, t = np.argwhere(later_reset)[0]
        raise ValueError(f"{where}: row {b} starts a new world at step {t + 1}; diagnostics expect one world per "
                         "row, as run_rollout gives")


# -- transitions: are opposite moves inverse, do moves commute? -------------------------------------------------

def inverse_action_pairs(world) -> tuple[tuple[int, int], ...]:
    """Pairs (a, b), a < b, of distinct actions that undo each other everywhere in the world: wherever a leads
    from n to m (m != n), b leads from m back to n, and the other way round. Square worlds: north/south and
    east/west; hex worlds: east/west, northeast/southwest, northwest/southeast. Read off the transition table,
    so graph worlds get theirs too (an action with no such partner is left out)."""
    T = world.transitions
    n = np.arange(world.n_nodes)
    moves = [a for a in range(world.n_actions) if a != world.stay_action and (T[:, a] >= 0).any()]

    def undone_by(a, b):   # every a-move m = T[n, a] is undone by b: T[m, b] == n
        src = n[T[:, a] >= 0]
        dst = T[src, a]
        return bool(np.all(T[dst, b] == src))

    pairs, paired = [], set()
    for i, a in enumerate(moves):
        for b in moves[i + 1:]:
            if a not in paired and b not in paired and undone_by(a, b) and undone_by(b, a):
                pairs.append((a, b))
                paired.update((a, b))
    return tuple(pairs)


def transition_consistency(W: np.ndarray, pairs, names=None) -> dict:
    """How far the learned transitions are from a consistent path integrator.

    W: (A, E, E) transition matrices (row vectors: e_next = sigma(e W_a)); pairs: opposite moves (a, b).
    inverse[a/b]  (||W_a W_b - I||_F + ||W_b W_a - I||_F) / (2 ||I||_F): 0 when a move and its opposite cancel.
                  Both orders, so the number does not depend on which move of the pair is named first.
    commutator    ||W_i W_j - W_j W_i||_F / ||I||_F for every two move directions (the first action of each pair
                  stands for its direction: square N, E; hex E, NE, NW): 0 when moves commute, as translations do.
    Errors are relative to ||I||_F = sqrt(E), so they compare across code sizes. Without pairs: NaN means.
    """
    # The products run in torch, not numpy: torch keeps to torch.set_num_threads, while numpy's OpenBLAS starts
    # its own threads, which on a busy 2-core machine made these few 128 x 128 products take 130 ms instead of 1.
    W = torch.as_tensor(W).detach().to(torch.float64)
    if W.ndim != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"transition_consistency: W must be (A, E, E), got shape {tuple(W.shape)}")
    A, E, _ = W.shape
    for a, b in pairs:
        if not (0 <= a < A and 0 <= b < A):
            raise ValueError(f"transition_consistency: pair ({a}, {b}) is not a pair of action ids in [0, {A})")
    names = names or [str(a) for a in range(A)]
    eye, scale = torch.eye(E, dtype=torch.float64), math.sqrt(E)
    norm = lambda M: float(torch.linalg.matrix_norm(M))                      # Frobenius
    inverse = {f"{names[a]}/{names[b]}": (norm(W[a] @ W[b] - eye) + norm(W[b] @ W[a] - eye)) / (2 * scale)
               for a, b in pairs}
    reps = [a for a, _ in pairs]
    commutator = {f"{names[i]}/{names[j]}": norm(W[i] @ W[j] - W[j] @ W[i]) / scale
                  for k, i in enumerate(reps) for j in reps[k + 1:]}
    mean = lambda d: float(np.mean(list(d.values()))) if d else float("nan")
    return {"inverse": inverse, "commutator": commutator, "inverse_mean": mean(inverse),
            "commutator_mean": mean(commutator)}


def common_inverse_pairs(worlds) -> tuple[tuple[int, int], ...]:
    """The inverse pairs shared by every (distinct) world of a rollout: one set of transitions serves them all."""
    distinct = list({id(w): w for w in worlds}.values())
    common = set(inverse_action_pairs(distinct[0]))
    for w in distinct[1:]:
        common &= set(inverse_action_pairs(w))
    return tuple(sorted(common))


# -- the code's activity ---------------------------------------------------------------------------------------

def saturation(positions: np.ndarray, bound: float | None) -> dict:
    """Fraction of all entries of e at the clamp (|e| >= bound - 1e-6; NaN without a bound) and at zero
    (|e| < 1e-6). A code pinned at the clamp or at zero cannot move with the walk: it has stopped integrating."""
    mag = np.abs(np.asarray(positions))
    if mag.size == 0:
        raise ValueError("saturation: positions are empty")
    frac = lambda mask: np.count_nonzero(mask) / mask.size        # count_nonzero: no float64 copy, as mean makes
    return {"frac_at_bound": frac(mag >= bound - ZERO_TOL) if bound is not None else float("nan"),
            "frac_at_zero": frac(mag < ZERO_TOL)}


def norm_by_quarter(positions: np.ndarray) -> list[float]:
    """Mean ||e|| over each quarter of the walk (steps split into 4 contiguous parts, all rows): a code that
    grows or shrinks along a walk shows it here. NaN for an empty quarter (walks shorter than 4 steps)."""
    p = np.asarray(positions)
    norms = np.sqrt(np.einsum("bte,bte->bt", p, p))                                   # (B, T)
    return [float(q.mean()) if q.size else float("nan") for q in np.array_split(norms, 4, axis=1)]


def locations_per_unit(positions: np.ndarray, nodes: np.ndarray, n_nodes) -> dict:
    """How many locations each position unit codes for (capacity pressure: periodic codes appear when a unit must
    serve many locations; spec 5.7, 2026 notes).

    Definition: per world, a unit's rate at a node is its mean activity over all visits there (spec 5.1; unvisited
    nodes are left out). The unit's locations are the nodes where its rate exceeds the middle of its range,
    min + (max - min) / 2. For a unit that is silent somewhere (min = 0, every ReLU unit with a dead node) this
    is "more than half of its maximum"; using the range keeps the count meaningful for linear codes, whose
    offsets and signs are arbitrary. Active units: range > 1e-6 (a unit that is the same everywhere codes no
    location). Per world the mean over active units (NaN if none); `mean` averages worlds, `nodes_per_world`
    gives the scale to compare with.
    """
    positions, nodes = np.asarray(positions), np.asarray(nodes)
    B, T, E = positions.shape
    n_nodes = np.broadcast_to(np.asarray(n_nodes), (B,))
    rates, visited = node_means(positions, nodes, int(n_nodes.max()))
    per_world = []
    for b in range(B):
        m = rates[b, visited[b]]                                     # (visited nodes, E)
        lo, hi = m.min(0), m.max(0)
        active = hi - lo > ZERO_TOL
        count = (m > (lo + hi) / 2).sum(0)
        per_world.append(float(count[active].mean()) if active.any() else float("nan"))
    finite = [v for v in per_world if np.isfinite(v)]
    return {"per_world": per_world, "mean": float(np.mean(finite)) if finite else float("nan"),
            "nodes_per_world": float(np.mean(n_nodes))}


def node_means(positions: np.ndarray, nodes: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rate maps of every row at once (spec 5.1, all visits): (B, N, E) mean of e over the visits to each node,
    and (B, N) bool visited. One sparse product for the whole batch instead of one per world."""
    B, T, E = positions.shape
    if nodes.shape != (B, T) or (nodes.size and (nodes.min() < 0 or nodes.max() >= n_nodes)):
        raise ValueError(f"node_means: nodes must be (B, T) = {(B, T)} ids in [0, {n_nodes}), got shape "
                         f"{nodes.shape}")
    cell = (np.arange(B)[:, None] * n_nodes + nodes).ravel()                 # (row, node) of every step
    counts = np.bincount(cell, minlength=B * n_nodes)
    # weights in the positions' dtype: a float64 matrix would copy all (B, T, E) positions to float64 first
    weight = (1.0 / counts[cell]).astype(positions.dtype if positions.dtype.kind == "f" else np.float64)
    average = sp.csr_matrix((weight, (cell, np.arange(B * T))), shape=(B * n_nodes, B * T))
    rates = np.asarray(average @ positions.reshape(B * T, E)).reshape(B, n_nodes, E)
    return rates, (counts > 0).reshape(B, n_nodes)


# -- retrieval ------------------------------------------------------------------------------------------------

def side_lobe_ratio(rollout) -> dict:
    """Mean over query steps that read at least one memory of the fraction of the memory-neuron weight of the
    prediction from the path-integrated position that falls on memories stored at nodes that are neither the
    query's true node nor a graph neighbour of it (spatial.rollout.side_lobe_fraction, recorded per step).
    A sharp, single-peaked retrieval kernel gives about 0; a periodic code whose kernel has side lobes one
    period away puts weight on far nodes that look alike. `revisit`: the same over revisits only (where a memory
    of the true node exists)."""
    s = rollout.side_lobe
    if s is None:
        raise ValueError("side_lobe_ratio needs the per-step side lobes: run_rollout(..., record_side_lobe=True)")
    has = np.isfinite(s)
    rev = has & rollout.revisit
    return {"all": float(s[has].mean()) if has.any() else float("nan"),
            "revisit": float(s[rev].mean()) if rev.any() else float("nan"), "steps": int(has.sum())}


# -- everything, for the Trainer's evaluation and the analysis report --------------------------------------------

def step_cosine(positions: np.ndarray, actions: np.ndarray, stay_action=None) -> float:
    """Mean cosine between consecutive positions on move steps (not RESET, not stay): how far one move carries the
    code. Near 1 the code hardly moves, so it cannot tell places apart (a collapsed code)."""
    a, b = positions[:, 1:], positions[:, :-1]
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    move = actions[:, 1:] != RESET
    if stay_action is not None:
        move &= actions[:, 1:] != stay_action
    return float(cos[move].mean()) if move.any() else float("nan")


def _position_module(model):
    """The model's RecurrentPositions: TEM-t's `positions`, TEM's path integration `path` (g W_a, clamped)."""
    return model.path if getattr(model, "path", None) is not None else model.positions


def _side_lobes(rollout, model) -> dict:
    """side_lobe_ratio; for TEM, whose memory is a Hebbian matrix with no stored slots to attend to, NaN with 0
    steps (the quantity does not exist), not an error."""
    from temt_core.tem import TEM
    if isinstance(model, TEM):
        return {"all": float("nan"), "revisit": float("nan"), "steps": 0,
                "not_applicable": "TEM's memory is a Hebbian matrix: no attention over stored memories"}
    return side_lobe_ratio(rollout)


def diagnose(rollout, model) -> dict:
    """All diagnostics of one rollout (run_rollout with record_positions=True and record_side_lobe=True) of
    `model` (a TEMt: its transitions and its clamp; or a TEM: its path integration of g, with g as positions).
    Nested dict, JSON-ready."""
    r = rollout
    if r.positions is None:
        raise ValueError("diagnose needs the positions: run_rollout(..., record_positions=True)")
    lags, cos = revisit_cosines(r.positions, r.nodes, r.actions, r.stay_action)
    positions = _position_module(model)
    W = positions.transition_matrices().detach().cpu()
    pairs = common_inverse_pairs(r.worlds)
    return {
        "accuracy_by_length": accuracy_by_length(r),
        "accuracy_by_coverage_split": accuracy_by_coverage_split(r),
        "drift": bin_by_lag(lags, cos, LAG_EDGES),
        "drift_curve": bin_by_lag(lags, cos, CURVE_LAG_EDGES),
        "transitions": transition_consistency(W, pairs, r.worlds[0].action_names),
        "saturation": saturation(r.positions, positions.bound),
        "norm_by_quarter": norm_by_quarter(r.positions),
        "locations": locations_per_unit(r.positions, r.nodes, r.n_nodes),
        "side_lobe": _side_lobes(r, model),
        "step_cosine": step_cosine(r.positions, r.actions, r.stay_action),
        "landmark_gate": float(r.gate.mean()) if r.gate is not None else float("nan"),
    }


def flat_diagnostics(d: dict) -> dict:
    """The scalar keys of a `diagnose` result, for metrics.jsonl (named in the module docstring)."""
    out = {}
    for name, acc in d["accuracy_by_length"].items():
        out.update({f"{k}_{name}": acc[k] for k in ACCURACY_KEYS})
    split = d["accuracy_by_coverage_split"]
    pct = round(100 * split["split"])
    for part, suffix in (("before", f"cov_lt{pct}"), ("after", f"cov_ge{pct}")):
        out.update({f"{k}_{suffix}": split[part][k] for k in ACCURACY_KEYS})
    out[f"frac_revisits_cov_ge{pct}"] = split["frac_revisits_after"]
    for label, row in zip(LAG_LABELS, d["drift"]):
        out[f"drift_cos_lag_{label}"] = row["cos"]
        out[f"drift_n_lag_{label}"] = row["n"]
    out["transition_inverse_err"] = d["transitions"]["inverse_mean"]
    out["transition_commutator"] = d["transitions"]["commutator_mean"]
    out["e_frac_at_bound"] = d["saturation"]["frac_at_bound"]
    out["e_frac_at_zero"] = d["saturation"]["frac_at_zero"]
    out.update({f"e_norm_q{i + 1}": v for i, v in enumerate(d["norm_by_quarter"])})
    out["locations_per_unit"] = d["locations"]["mean"]
    out["nodes_per_world"] = d["locations"]["nodes_per_world"]
    out["side_lobe_ratio"] = d["side_lobe"]["all"]
    out["side_lobe_ratio_revisit"] = d["side_lobe"]["revisit"]
    out["e_step_cosine"] = d["step_cosine"]
    out["landmark_gate_mean"] = d["landmark_gate"]
    return out
