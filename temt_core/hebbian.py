"""TEM's Hebbian (Hopfield) memory, and its equivalence to attention without the softmax (claim C4).

TEM stores conjunctive memories p_tau (place-cell-like vectors) in a weight matrix by Hebbian learning and
retrieves by pattern completion. With the plain outer-product rule M = sum_tau p_tau^T p_tau, one retrieval
step from a query q is

    q M = sum_tau (q . p_tau) p_tau          = attention with keys = values = p, and no softmax.

That identity is exact; `tests/core/test_hebbian.py` checks it on random inputs in float64. TEM's actual
update is error-correcting and decaying, M <- clamp(lambda M + eta (p + p_hat)^T (p - p_hat), -1, 1), with
p_hat the memory's own retrieval of p; with p_hat = 0, lambda = 1, eta = 1 and no clamp it is the outer-product
rule above. Retrieval in TEM iterates an attractor, h <- f(kappa h + h M), 5 times with kappa = 0.8; one
iteration with kappa = 0 and f = identity is the one-step retrieval. Row-vector convention throughout.
"""
from __future__ import annotations

from typing import Callable

import torch


class HebbianMemory:
    """A batch of TEM memories: M is (B, P, P), one matrix per batch slot.

    Defaults are TEM's (lambda 0.9999, eta 0.5, clamp to [-1, 1], kappa 0.8, 5 attractor iterations).
    """

    def __init__(self, batch: int, dim: int, decay: float = 0.9999, rate: float = 0.5,
                 clamp: float | None = 1.0, device=None, dtype=torch.float32):
        self.M = torch.zeros(batch, dim, dim, device=device, dtype=dtype)
        self.decay, self.rate, self.clamp = decay, rate, clamp

    def store(self, p: torch.Tensor, p_hat: torch.Tensor | None = None) -> torch.Tensor:
        """M <- clamp(decay M + rate (p + p_hat)^T (p - p_hat)); p, p_hat (B, P). Returns the new M."""
        p_hat = torch.zeros_like(p) if p_hat is None else p_hat
        update = (p + p_hat).unsqueeze(2) * (p - p_hat).unsqueeze(1)        # (B, P, P) outer products
        M = self.decay * self.M + self.rate * update
        self.M = M if self.clamp is None else M.clamp(-self.clamp, self.clamp)
        return self.M

    def retrieve(self, query: torch.Tensor, iterations: int = 5, kappa: float = 0.8,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Attractor pattern completion from query (B, P): h <- f(kappa h + h M), `iterations` times."""
        f = activation or (lambda h: h)
        h = query
        for _ in range(iterations):
            h = f(kappa * h + (h.unsqueeze(1) @ self.M).squeeze(1))
        return h


def outer_product_memory(patterns: torch.Tensor) -> torch.Tensor:
    """M = sum_tau p_tau^T p_tau for patterns (B, N, P) -> (B, P, P)."""
    return patterns.transpose(1, 2) @ patterns


def unnormalised_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_tau (q . k_tau) v_tau: dot-product attention without the softmax. (B, P), (B, N, P), (B, N, D)."""
    return ((keys @ query.unsqueeze(-1)).transpose(1, 2) @ values).squeeze(1)
