"""TEM-t attention: positions address the memory, stimuli fill it.

    z = LN(e)                       a plain z-score of each position (layer norm with fixed weights)
    q_t = z_t W_e,  k_tau = z_tau W_e            queries and keys from positions only
    v_tau = x_tau W_x                            values from stimuli only (x one-hot: a row of W_x)
    a_t,tau = softmax_tau( beta_t q_t . k_tau ),  over the memories tau the query may see (strictly earlier)
    beta_t = multiplier * log(n_t) / sqrt(d_k),   n_t = number of memories step t can see
    logits_t = (sum_tau a_t,tau v_tau) W_out + b    prediction of the stimulus at step t

The softmax weights a_t,tau are the *memory neurons* (one neuron per stored memory) and are returned for analysis.

Scaling. The paper weights the softmax by log(n_memories) so that retrieval does not dilute as memories
accumulate: with a match of similarity s above n others, the matching weight is about n^(c s)/(n^(c s) + n),
the same for every n. The paper does not say whether this replaces 1/sqrt(d); we keep 1/sqrt(d) as in any
transformer and multiply by log(n) (and an optional fixed multiplier, spec L7). A learned scale would be
redundant: W_e's norm already sets the sharpness.

Cost. scores are computed as (z_q W_e W_e^T) z_k^T: stored memories keep only their z (detached), and this
order avoids projecting every stored memory again each chunk while giving W_e exactly the gradient of
q . k. Time O(B T K E), memory O(B T K) per chunk of T queries over K keys; streaming chunks bound it.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grouped_read import grouped_read
from .memory_read import blocked_bias, memory_read

BACKENDS = ("auto", "explicit", "fused", "sdpa")


def zscore(e: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LN(e) with fixed weights: zero mean, unit variance over the last axis. Not inside the recurrence."""
    return F.layer_norm(e, e.shape[-1:], eps=eps)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis restricted to mask; rows with nothing to attend to are all zero."""
    probs = torch.softmax(scores + blocked_bias(mask, scores.dtype), dim=-1)
    return probs * mask.any(-1, keepdim=True).to(probs.dtype)


class Keys(NamedTuple):
    """One group of memories: z-scored positions (B, K, E), stimulus ids (B, K), and which queries may read
    them: `mask`, a bool tensor broadcastable to (B, T, K) ((B, 1, K) when every query sees the same keys), and
    optionally `rows` (B, T), False for queries that may read none of this group (cheaper than a (B, T, K) mask).
    """
    z: torch.Tensor
    x: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor | None = None

    def count(self) -> torch.Tensor:
        """(B, T, 1) or (B, 1, 1): how many of these keys each query may read."""
        n = self.mask.sum(-1, keepdim=True)
        return n if self.rows is None else n * self.rows.unsqueeze(-1)

    def scores(self, q: torch.Tensor) -> torch.Tensor:
        """(B, T, K) q . z, blocked where the query may not read: one baddbmm plus, if rows, one in-place fill."""
        s = torch.baddbmm(blocked_bias(self.mask, q.dtype), q, self.z.transpose(1, 2))
        if self.rows is not None:
            s = s.masked_fill_(~self.rows.unsqueeze(-1), torch.finfo(q.dtype).min / 2)
        return s


def explicit_read(q_tilde: torch.Tensor, n: torch.Tensor, keys: Sequence[Keys], n_x: int, capturable: bool):
    """p(x) (B, T, n_x) and the memory neurons (B, T, K): scores of every key group, one softmax, the rows with
    nothing to read zeroed, the weights summed onto the stimuli."""
    B, T, _ = q_tilde.shape
    x_all = torch.cat([k.x for k in keys], 1)                               # (B, K)
    scores = torch.cat([k.scores(q_tilde) for k in keys], -1)              # (B, T, K)
    probs = torch.softmax(scores, -1)                                       # (B, T, K) memory neurons
    empty = n == 0                                                          # nothing to read: weights all zero
    if capturable or bool(empty.any()):
        probs = probs.masked_fill(empty, 0.0)
    # The values are rows of W_x picked by the stored stimuli, so the read sum_k a_k W_x[x_k] equals
    # p(x) W_x with p(x) = sum_{k: x_k = x} a_k, the stimulus distribution the memory neurons retrieve.
    # A scatter-add over K plus a (n_x x d_v) matmul is ~3x cheaper than gathering (B, K, d_v) values.
    p_x = probs.new_zeros(B, T, n_x).scatter_add(2, x_all.unsqueeze(1).expand_as(probs), probs)
    return p_x, probs


def prediction_read(q_tilde: torch.Tensor, n: torch.Tensor, keys: Sequence[Keys], n_x: int, capturable: bool,
                    grouped: bool, need_weights: bool = False):
    """The explicit read, p(x) (B, T, n_x) and the memory neurons (or None): through grouped_read (the stored
    memories' padding skipped) where it may run (not capturable, no memory neurons wanted) and pays, else whole."""
    if grouped and not capturable and not need_weights:
        p_x = grouped_read(q_tilde, n, keys, n_x, lambda q, n_g, k: explicit_read(q, n_g, k, n_x, False)[0])
        if p_x is not None:
            return p_x, None
    return explicit_read(q_tilde, n, keys, n_x, capturable)


class TEMtAttention(nn.Module):
    """One TEM-t attention read: positions query the (position, stimulus) memories.

    Args:
        pos_dim: E, size of the position encodings.
        n_stimuli: n_x, number of distinct stimuli (one-hot observations).
        key_dim: d_k, width of W_e (default E).
        value_dim: d_v, width of W_x (default n_x).
        multiplier: fixed extra factor on beta (1.0 = the paper's log(n) scaling alone).
        capturable: never branch on the data (rows with nothing to read are zeroed unconditionally).
    """

    def __init__(self, pos_dim: int, n_stimuli: int, key_dim: int | None = None, value_dim: int | None = None,
                 multiplier: float = 1.0, capturable: bool = False):
        super().__init__()
        if multiplier <= 0:
            raise ValueError(f"multiplier must be positive, got {multiplier}")
        self.pos_dim, self.n_stimuli = pos_dim, n_stimuli
        self.key_dim = key_dim or pos_dim
        self.value_dim = value_dim or n_stimuli
        self.multiplier = multiplier
        self.capturable = capturable
        self.grouped = True             # explicit read without the memory neurons: skip padding (grouped_read.py)
        self.W_e = nn.Parameter(torch.empty(pos_dim, self.key_dim))
        nn.init.orthogonal_(self.W_e)          # q . k = z . z' at init when d_k = E: similarity of positions
        self.W_x = nn.Embedding(n_stimuli, self.value_dim)
        self.readout = nn.Linear(self.value_dim, n_stimuli)

    def query(self, z_q: torch.Tensor) -> torch.Tensor:
        """(.., E) -> (.., E): z_q W_e W_e^T, so that query(z_q) . z_k = q . k."""
        return z_q @ (self.W_e @ self.W_e.t())

    def forward(self, z_q: torch.Tensor, keys: Sequence[Keys], need_weights: bool = True, backend: str = "auto"):
        """
        z_q:  (B, T, E) z-scored query positions
        keys: groups of memories (Keys(z, x, mask)), concatenated in order into the K keys. Detached stored
              memories and this chunk's memories come as separate groups: no gradient is computed for the stored
              ones, and their mask can stay (B, 1, M) instead of a (B, T, M) tensor
        need_weights: return the memory-neuron activations (B, T, K); without them the read may use the fused
                      read or PyTorch's SDPA kernel, neither of which returns the (B, T, K) weights
        backend: 'explicit' | 'fused' | 'sdpa' | 'auto'. 'fused' (memory_read.py) computes the same read with
                 fewer passes over the (B, T, K) scores and a hand-written backward, without the weights; alone it
                 is 1.1-1.7x faster on a CPU (benchmarks/read_speed.py) but inside a whole training step it was
                 not (docs/results/engine-2026-12-02b.md), so it is an option. 'auto': sdpa on CUDA, explicit
                 elsewhere (on a CPU sdpa is slower for these sizes, benchmarks/core_speed.py). need_weights=True
                 always takes the explicit read
        returns logits (B, T, n_x) and the memory-neuron activations (B, T, K) or None
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if need_weights:                # only the explicit read materialises the memory neurons
            backend = "explicit"
        if backend == "auto":
            backend = "sdpa" if z_q.is_cuda else "explicit"
        B, T, _ = z_q.shape
        n = sum(k.count() for k in keys).expand(B, T, 1)                    # (B, T, 1) memories each query sees
        beta = self.multiplier * torch.log(n.clamp(min=1).to(z_q.dtype)) / math.sqrt(self.key_dim)
        q_tilde = self.query(z_q) * beta                                    # (B, T, E), beta folded in (cheaper
                                                                            #  than scaling (B, T, K) scores)
        if backend == "fused":
            return self.readout(memory_read(q_tilde, n, keys, self.n_stimuli) @ self.W_x.weight), None
        if backend == "sdpa":
            x_all = torch.cat([k.x for k in keys], 1)                       # (B, K)
            # fully masked rows come out as zeros (torch >= 2.5)
            mask = torch.cat([(k.mask if k.rows is None else k.mask & k.rows.unsqueeze(-1)).expand(B, T, k.z.shape[1])
                              for k in keys], -1)
            z_all = torch.cat([k.z for k in keys], 1)
            read = F.scaled_dot_product_attention(q_tilde.unsqueeze(1), z_all.unsqueeze(1),
                                                  self.W_x(x_all).unsqueeze(1), attn_mask=mask.unsqueeze(1),
                                                  scale=1.0)
            return self.readout(read.squeeze(1)), None
        p_x, probs = prediction_read(q_tilde, n, keys, self.n_stimuli, self.capturable, self.grouped, need_weights)
        logits = self.readout(p_x @ self.W_x.weight)                        # (B, T, n_x)
        return logits, (probs if need_weights else None)

    def extra_repr(self) -> str:
        return (f"pos_dim={self.pos_dim}, n_stimuli={self.n_stimuli}, key_dim={self.key_dim}, "
                f"value_dim={self.value_dim}, multiplier={self.multiplier}")
