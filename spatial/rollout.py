"""Run a trained TEM-t (or TEM) over fresh walks and keep what evaluation and analysis need.

    rollout = run_rollout(model, WalkConfig(...), n_worlds=16, steps=2000, seed=123, record_positions=True)

One world per batch slot, walked for `steps` steps from a RESET, fed to the model in chunks exactly as in
training (state and memory carried). Everything is returned as numpy arrays of shape (B, T, ...).

TEM (temt_core.tem.TEM) has no memory slots: its memory is a Hebbian matrix over the conjunctive cells p. For a
TEM rollout `positions` are its inferred g (the grid cells), `memory_neurons` its inferred p (B, T, P), one neuron
per p unit (the same unit in every world, so remapping compares like with like), and the slot records (`stored`,
`memories_at_end`, `side_lobe`) are None: they describe an attention over stored memories that TEM does not have.
A TEM forward needs the gradient step it was trained to (`step`): its Hebbian rates and its reliance on the memory
follow a schedule in the step, so the same weights evaluated at step 0 would be another model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from temt_core.model import TEMt
from temt_core.tem import TEM

from .walks import WalkConfig, WalkStream


@dataclass
class Rollout:
    x: np.ndarray            # (B, T) stimuli
    actions: np.ndarray      # (B, T)
    nodes: np.ndarray        # (B, T)
    revisit: np.ndarray      # (B, T) bool
    new_edge: np.ndarray     # (B, T) bool
    edge_seen: np.ndarray    # (B, T) bool
    n_visited: np.ndarray    # (B, T) nodes visited so far
    n_nodes: np.ndarray      # (B,) size of each slot's world
    correct: np.ndarray      # (B, T) bool, model's prediction from the path-integrated position was right
    stay_action: int | None
    n_stimuli: int
    worlds: list             # the World of each slot
    positions: np.ndarray | None = None        # (B, T, E) float32 e used for memory (corrected if landmark)
    memory_neurons: np.ndarray | None = None   # (B, T, S) float32 softmax weight on memory slot s
    memories_at_end: np.ndarray | None = None  # (B,) memories held in the store after the last step
    stored: np.ndarray | None = None           # (B, T) bool, the step's memory was stored (not a duplicate)
    side_lobe: np.ndarray | None = None        # (B, T) float32 memory weight on far nodes (see side_lobe_fraction)
    gate: np.ndarray | None = None             # (B, T) float32 landmark gate, mean over units (landmark models)

    def memory_nodes(self) -> np.ndarray:
        """(B, S) node at which memory slot s of each slot's world was stored, -1 past the last memory.
        Slot s is the s-th stored memory of the world (temt_core.memory), and a rollout has one world per slot."""
        if self.stored is None:
            raise ValueError("this Rollout has no `stored` record (built by hand?): memory nodes need it")
        counts = self.stored.sum(1)
        out = np.full((self.stored.shape[0], int(counts.max()) if counts.size else 0), -1, dtype=np.int64)
        rows, steps = np.nonzero(self.stored)                 # row-major: each row's stored steps in time order
        out[rows, np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)] = self.nodes[rows, steps]
        return out


@torch.no_grad()
def run_rollout(model: TEMt | TEM, walks: WalkConfig, n_worlds: int, steps: int, seed: int, chunk_length: int = 75,
                record_positions: bool = False, record_memory_neurons: bool = False,
                device: str | torch.device = "cpu", worlds: list | None = None,
                max_memory_neurons: int = 1024, record_side_lobe: bool = False, step: int | None = None) -> Rollout:
    """worlds: slot b walks worlds[b % len(worlds)] (default: random worlds of the walk config).
    max_memory_neurons: memory neurons (store slots) recorded per world; later memories are not recorded.
    record_side_lobe: keep, per step, the fraction of attention weight on memories stored far from the true node
    (side_lobe_fraction): one (B, T) number per step, computed chunk by chunk on the model's device, so it costs
    one scatter over the keys per chunk instead of keeping (B, T, K) memory neurons.
    step: TEM only (required there; a TEM-t forward does not depend on it): the gradient step of the weights,
    for TEM's schedules."""
    if isinstance(model, TEM):
        if step is None:
            raise ValueError("run_rollout of a TEM needs step= the gradient step its weights were trained to (its "
                             "Hebbian rates and memory reliance follow temt_core.tem.schedule(step))")
        return _tem_rollout(model, walks, n_worlds, steps, seed, chunk_length, record_positions,
                            record_memory_neurons, device, worlds, max_memory_neurons, step)
    stream = _walk_stream(walks, n_worlds, steps, seed, worlds)
    was_training = model.training
    model.eval()
    chunks, correct, positions, neurons, stored, side, gates = [], [], [], [], [], [], []
    state, lobes = None, None
    for lo in range(0, steps, chunk_length):
        chunk = stream.next_chunk(min(chunk_length, steps - lo))
        x = torch.from_numpy(chunk["x"]).to(device)
        a = torch.from_numpy(chunk["actions"]).to(device)
        out = model(x, a, state, return_memory_neurons=record_memory_neurons or record_side_lobe)
        state = out.state
        correct.append((out.logits.argmax(-1) == x).cpu().numpy())
        stored.append(out.stored.cpu().numpy())
        if out.gate is not None:
            gates.append(out.gate.float().mean(-1).cpu().numpy())
        chunks.append(chunk)
        if record_positions:
            positions.append(out.e.float().cpu().numpy())
        if record_memory_neurons:
            neurons.append(_by_slot(out.memory_neurons, out.memory_ids, max_memory_neurons))
        if record_side_lobe:
            if lobes is None:     # the slots' worlds are known once their first step (a RESET) has been drawn
                lobes = _SideLobes([stream.world_pool[int(i)] for i in chunk["world_index"][:, 0]], steps, device)
            side.append(lobes.record(out, torch.from_numpy(chunk["nodes"]).to(device)))
    model.train(was_training)
    return _collect(stream, walks, chunks, correct, positions,
                    memory_neurons=_concat_slots(neurons) if neurons else None,
                    memories_at_end=state.memory.valid.sum(1).cpu().numpy(),
                    stored=np.concatenate(stored, 1), side_lobe=np.concatenate(side, 1) if side else None,
                    gate=np.concatenate(gates, 1) if gates else None)


def _collect(stream, walks, chunks, correct, positions, **model_records) -> Rollout:
    """The Rollout of a walk stream's chunks: what every model shares, plus the model's own records."""
    cat = lambda k: np.concatenate([c[k] for c in chunks], 1)
    worlds = [stream.world_pool[int(i)] for i in cat("world_index")[:, 0]]
    return Rollout(x=cat("x"), actions=cat("actions"), nodes=cat("nodes"), revisit=cat("revisit"),
                   new_edge=cat("new_edge"), edge_seen=cat("edge_seen"), n_visited=cat("n_visited"),
                   n_nodes=np.array([w.n_nodes for w in worlds]), correct=np.concatenate(correct, 1),
                   stay_action=worlds[0].stay_action, n_stimuli=walks.n_stimuli, worlds=worlds,
                   positions=np.concatenate(positions, 1) if positions else None, **model_records)


def _walk_stream(walks: WalkConfig, n_worlds: int, steps: int, seed: int, worlds) -> WalkStream:
    """Evaluation walks have exactly `steps` steps, whatever curriculum training used."""
    return WalkStream(replace(walks, walk_length=(steps, steps), curriculum_chunks=0), n_worlds, seed=seed,
                      worlds=worlds, fixed=worlds is not None)


def _tem_rollout(model: TEM, walks, n_worlds, steps, seed, chunk_length, record_positions, record_memory_neurons,
                 device, worlds, max_memory_neurons, step) -> Rollout:
    """run_rollout for TEM: the same walks (same stream, same chunks); g as positions, p as memory neurons."""
    stream = _walk_stream(walks, n_worlds, steps, seed, worlds)
    was_training = model.training
    model.eval()
    chunks, correct, positions, neurons = [], [], [], []
    state = None
    for lo in range(0, steps, chunk_length):
        chunk = stream.next_chunk(min(chunk_length, steps - lo))
        x = torch.from_numpy(chunk["x"]).to(device)
        out = model(x, torch.from_numpy(chunk["actions"]).to(device), state, step=step)
        state = out.state
        correct.append((out.logits.argmax(-1) == x).cpu().numpy())     # x_gt: predicted before x_t is seen
        chunks.append(chunk)
        if record_positions:
            positions.append(out.g.float().cpu().numpy())
        if record_memory_neurons:
            neurons.append(out.p[..., :max_memory_neurons].float().cpu().numpy())
    model.train(was_training)
    return _collect(stream, walks, chunks, correct, positions,
                    memory_neurons=np.concatenate(neurons, 1) if neurons else None)


def side_lobe_fraction(weights: torch.Tensor, key_nodes: torch.Tensor, query_nodes: torch.Tensor,
                       near: torch.Tensor) -> torch.Tensor:
    """Fraction of each query's memory weight on memories stored at nodes that are not near its true node.

    weights:     (B, T, K) softmax weights of T queries over K keys (the memory neurons)
    key_nodes:   (B, K) node at which each key's memory was stored, -1 for keys that are no memory (padding)
    query_nodes: (B, T) true node of each query step
    near:        (B, N, N) bool, near[b, n, m]: in slot b's world node m is n itself or a graph neighbour of n
    returns      (B, T) float: far weight / memory weight, NaN where the query had no memory to read
    The weights are first summed per node (one scatter over the keys, like the model's own read-out), so the
    cost is that of the attention's read, not of a (B, T, K) comparison.
    """
    B, T, K = weights.shape
    N = near.shape[-1]
    column = torch.where(key_nodes >= 0, key_nodes, torch.full_like(key_nodes, N))     # non-memories: spare column
    per_node = weights.new_zeros(B, T, N + 1).scatter_add_(2, column.unsqueeze(1).expand(B, T, K), weights)
    per_node = per_node[..., :N]
    near_rows = near[torch.arange(B, device=near.device).unsqueeze(1), query_nodes]     # (B, T, N)
    total = per_node.sum(-1)
    far = per_node.masked_fill(near_rows, 0.0).sum(-1)
    return torch.where(total > 0, far / total.clamp(min=torch.finfo(total.dtype).tiny),
                       torch.full_like(total, float("nan")))


class _SideLobes:
    """Tracks, during a rollout, the node at which each memory slot was stored, and gives side_lobe_fraction per
    chunk. Slot s of a world is its s-th stored memory (temt_core.memory.slot_ids): the table is filled from the
    model's `stored` flags in step order, before the chunk's queries are scored (they read this chunk's memories
    too). One world per slot: run_rollout walks each slot's world for the whole rollout."""

    def __init__(self, worlds: list, steps: int, device):
        n = max(w.n_nodes for w in worlds)
        near = np.zeros((len(worlds), n, n), dtype=bool)
        for b, w in enumerate(worlds):
            near[b, :w.n_nodes, :w.n_nodes] = w.adjacency() | np.eye(w.n_nodes, dtype=bool)
        self.near = torch.from_numpy(near).to(device)
        self.slot_nodes = torch.full((len(worlds), steps + 1), -1, dtype=torch.long, device=device)  # +1: spare
        self.count = torch.zeros(len(worlds), dtype=torch.long, device=device)
        self.spare = steps

    def record(self, out, nodes: torch.Tensor) -> np.ndarray:
        s = out.stored.long()
        slot = torch.where(out.stored, self.count.unsqueeze(1) + s.cumsum(1) - 1, torch.full_like(s, self.spare))
        self.slot_nodes.scatter_(1, slot, nodes)
        self.slot_nodes[:, self.spare] = -1
        self.count += s.sum(1)
        ids = out.memory_ids
        key_nodes = torch.where(ids >= 0, self.slot_nodes.gather(1, ids.clamp(min=0)), torch.full_like(ids, -1))
        return side_lobe_fraction(out.memory_neurons.float(), key_nodes, nodes, self.near).cpu().numpy()


def _by_slot(weights: torch.Tensor, ids: torch.Tensor, max_slots: int) -> np.ndarray:
    """(B, T, K) weights over keys -> (B, T, S) weights indexed by memory-neuron id, S <= max_slots."""
    B, T, _ = weights.shape
    S = min(max_slots, int(ids.max()) + 1 if ids.numel() else 0)
    out = torch.zeros(B, T, S + 1, dtype=torch.float32, device=weights.device)
    idx = torch.where((ids >= 0) & (ids < S), ids, torch.full_like(ids, S))   # padding, late ids -> spare column
    out.scatter_add_(2, idx.unsqueeze(1).expand(B, T, -1), weights.float())
    return out[..., :S].cpu().numpy()


def _concat_slots(parts: list[np.ndarray]) -> np.ndarray:
    S = max(p.shape[-1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, 0), (0, S - p.shape[-1]))) for p in parts], 1)
