"""Run a trained TEM-t over fresh walks and keep what evaluation and analysis need.

    rollout = run_rollout(model, WalkConfig(...), n_worlds=16, steps=2000, seed=123, record_positions=True)

One world per batch slot, walked for `steps` steps from a RESET, fed to the model in chunks exactly as in
training (state and memory carried). Everything is returned as numpy arrays of shape (B, T, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from temt_core.model import TEMt

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


@torch.no_grad()
def run_rollout(model: TEMt, walks: WalkConfig, n_worlds: int, steps: int, seed: int, chunk_length: int = 75,
                record_positions: bool = False, record_memory_neurons: bool = False,
                device: str | torch.device = "cpu", worlds: list | None = None,
                max_memory_neurons: int = 1024) -> Rollout:
    """worlds: slot b walks worlds[b % len(worlds)] (default: random worlds of the walk config).
    max_memory_neurons: memory neurons (store slots) recorded per world; later memories are not recorded."""
    stream = WalkStream(replace(walks, walk_length=(steps, steps)), n_worlds, seed=seed, worlds=worlds,
                        fixed=worlds is not None)
    was_training = model.training
    model.eval()
    chunks, correct, positions, neurons = [], [], [], []
    state = None
    for lo in range(0, steps, chunk_length):
        chunk = stream.next_chunk(min(chunk_length, steps - lo))
        x = torch.from_numpy(chunk["x"]).to(device)
        a = torch.from_numpy(chunk["actions"]).to(device)
        out = model(x, a, state, return_memory_neurons=record_memory_neurons)
        state = out.state
        correct.append((out.logits.argmax(-1) == x).cpu().numpy())
        chunks.append(chunk)
        if record_positions:
            positions.append(out.e.float().cpu().numpy())
        if record_memory_neurons:
            neurons.append(_by_slot(out.memory_neurons, out.memory_ids, max_memory_neurons))
    model.train(was_training)
    cat = lambda k: np.concatenate([c[k] for c in chunks], 1)
    worlds = [stream.world_pool[int(i)] for i in cat("world_index")[:, 0]]
    return Rollout(x=cat("x"), actions=cat("actions"), nodes=cat("nodes"), revisit=cat("revisit"),
                   new_edge=cat("new_edge"), edge_seen=cat("edge_seen"), n_visited=cat("n_visited"),
                   n_nodes=np.array([w.n_nodes for w in worlds]), correct=np.concatenate(correct, 1),
                   stay_action=worlds[0].stay_action, n_stimuli=walks.n_stimuli, worlds=worlds,
                   positions=np.concatenate(positions, 1) if positions else None,
                   memory_neurons=_concat_slots(neurons) if neurons else None,
                   memories_at_end=state.memory.valid.sum(1).cpu().numpy())


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
