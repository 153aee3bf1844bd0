"""Landmark correction of path-integration drift.

The current stimulus queries the stored stimuli and retrieves a stored position; a learned gate moves the
path-integrated position towards it (the paper, after TEM's inference of g from memory):

    s_tau   = beta * (x_t W_l) . (x_tau W_l) / sqrt(d)                       query='stimulus'
    s_tau   = beta * (x_t W_l) . (x_tau W_l) / sqrt(d) * (1 + cos(z_t, z_tau)) / 2   query='product'
    e_ret   = sum_tau softmax(s)_tau e_tau
    f       = sigmoid(Linear([e_ret, e_pi, confidence]))      one gate per unit
    e       = e_pi + f * (e_ret - e_pi)

beta = log(n) as in the main attention. The product query is the paper's suggested improvement: with one-hot
stimuli a stimulus alone cannot tell apart the several places that share it (45 stimuli on 100+ nodes), so
position similarity is multiplied in before the softmax; (1 + cos)/2 keeps the product's sign that of the
stimulus match. The confidence input is the log-sum-exp of the scores minus log(n): large when one memory
matches far better than the average, so the gate can learn to ignore retrievals that found nothing.
The corrected position is a convex combination of bounded, non-negative-if-ReLU positions, so it keeps the
recurrence's bounds.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import masked_softmax, zscore

QUERIES = ("stimulus", "product")


class LandmarkKeys(NamedTuple):
    """A group of memories landmark correction can read: positions e (B, K, E), unit-norm z-scored positions zn
    (B, K, E), stimuli x (B, K), mask (B, K)."""
    e: torch.Tensor
    zn: torch.Tensor
    x: torch.Tensor
    mask: torch.Tensor


class LandmarkCorrection(nn.Module):
    def __init__(self, pos_dim: int, n_stimuli: int, query: str = "product", key_dim: int = 32,
                 gate_bias: float = -2.0):
        super().__init__()
        if query not in QUERIES:
            raise ValueError(f"landmark query must be one of {QUERIES}, got {query!r}")
        self.query, self.key_dim = query, key_dim
        self.W_l = nn.Embedding(n_stimuli, key_dim)
        nn.init.normal_(self.W_l.weight)            # a match scores ~sqrt(d) = 5.7, a mismatch ~N(0, 1)
        self.gate = nn.Linear(2 * pos_dim + 1, pos_dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, gate_bias)  # sigmoid(-2) = 0.12: start close to pure path integration

    def forward(self, e_pi: torch.Tensor, x: torch.Tensor, memories: Sequence[LandmarkKeys]):
        """
        e_pi:     (B, E) path-integrated position at this step
        x:        (B,) stimulus observed at this step
        memories: groups of stored memories (stored before this chunk; this chunk's so far), each with positions
                  e (B, K, E), their unit-norm z-scores zn (B, K, E) (for the product query), stimuli x (B, K) and
                  a mask (B, K) of the memories this step may read
        returns the corrected position (B, E), the gate (B, E) and the retrieval weights (B, K_total)
        """
        # Stimuli are one-hot, so (x_t W_l) . (x_tau W_l) is entry (x_t, x_tau) of the Gram matrix W_l W_l^T:
        # one (n_x, n_x) product and a gather per memory, instead of embedding every memory at every step.
        gram = self.W_l.weight @ self.W_l.weight.t() / math.sqrt(self.key_dim)   # (n_x, n_x)
        row = gram[x]                                                           # (B, n_x)
        zn_pi = F.normalize(zscore(e_pi), dim=-1).unsqueeze(-1) if self.query == "product" else None
        parts = []
        for m in memories:
            s = row.gather(1, m.x)                                              # (B, K) stimulus similarity
            if self.query == "product":
                s = s * (1 + (m.zn @ zn_pi).squeeze(-1)) / 2                    # times position similarity
            parts.append(s)
        scores = torch.cat(parts, -1)                                           # (B, K_total)
        mask = torch.cat([m.mask for m in memories], -1)
        n = mask.sum(-1, keepdim=True).clamp(min=1).to(scores.dtype)
        scores = scores * torch.log(n)
        weights = masked_softmax(scores, mask)                                  # (B, K_total)
        e_ret = sum((w.unsqueeze(1) @ m.e).squeeze(1)                          # (B, E)
                    for w, m in zip(weights.split([m.x.shape[1] for m in memories], -1), memories))
        anything = mask.any(-1, keepdim=True)                                  # (B, 1)
        if scores.shape[-1]:
            masked = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            confidence = torch.where(anything, torch.logsumexp(masked, -1, keepdim=True) - torch.log(n), 0.0)
        else:                                                                   # no keys at all (first step)
            confidence = scores.new_zeros(scores.shape[0], 1)
        f = torch.sigmoid(self.gate(torch.cat([e_ret, e_pi, confidence], -1)))
        f = f * anything.to(f.dtype)                                            # nothing stored: no correction
        return e_pi + f * (e_ret - e_pi), f, weights

    def extra_repr(self) -> str:
        return f"query={self.query!r}, key_dim={self.key_dim}"
