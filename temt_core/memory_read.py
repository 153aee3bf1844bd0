"""The prediction read without the memory neurons: p(x) = sum_k softmax_k(scores) [x_k = x], one fused function.

TEMtAttention's explicit read concatenates the score blocks of its key groups (stored memories, this chunk's),
masks the rows that may not read a group, takes a softmax, zeroes the rows with nothing to read and scatters the
weights onto the n_x stimuli; autograd then walks each of those (B, T, K) passes back again. When the memory
neurons themselves are not wanted, this function (attention backend 'fused', an option: faster alone, not inside
a whole training step, docs/results/engine-2026-12-02b.md) computes the same p(x) with fewer passes over
(B, T, K) and a hand-written backward:

    forward, per group g:   S_g = bias_g + q z_g^T                  (B, T, K_g)  one baddbmm (mask as bias)
                            m_g = max_k S_g ;  P_g = exp(S_g - m_g)               in place, P_g <= 1
                            c_g = exp(m_g' - m)      m_g' = m_g where the rows may read g, else `blocked`;
                                                     m = max_g m_g'                (B, T, 1): small tensors
                            Z = sum_g c_g sum_k P_g ;  a_g = c_g [n > 0] / Z     (Z >= 1: the argmax group has c = 1)
                            p(x) = sum_g a_g scatter_x(P_g)                        (B, T, n_x)
    backward (G = dL/dp):   dS_g = P_g (a_g G[x_k] - a_g <p, G>)                  the softmax Jacobian, since
                                                                                   sum_k w_k G[x_k] = <p, G>
                            dq = sum_g dS_g z_g ;  dz_g = dS_g^T q

No group's rows are masked on a (B, T, K) tensor (the row mask enters through c_g), no scores are concatenated,
and no softmax backward over the concatenation is needed. Exponentiating each group by its own maximum keeps
every P_g <= 1, so no score magnitude overflows; rows with nothing to read come out as zeros, as in the explicit
read. Nothing is read back to the host (capturable). tests/core/test_memory_read.py checks it against the explicit
read in float64 (values and gradients; empty rows, unreadable groups, large scores) and with gradcheck.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.autograd.function import once_differentiable


def blocked_bias(mask: torch.Tensor, dtype) -> torch.Tensor:
    """0 where readable, a huge negative number elsewhere (finite: no NaN in empty rows or gradients)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min / 2)


def memory_read(q_tilde: torch.Tensor, n: torch.Tensor, keys: Sequence, n_x: int) -> torch.Tensor:
    """p(x) (B, T, n_x) read by the scaled queries q_tilde (B, T, E) from the key groups `keys`
    (attention.Keys: z (B, K, E), x (B, K), mask broadcastable to (B, T, K), rows (B, T) or None);
    n (B, T, 1): how many memories each query may read (0: the row is all zeros)."""
    flat = []
    for k in keys:
        flat += [k.z, k.x, k.mask, k.rows]
    return _MemoryRead.apply(q_tilde, n, n_x, len(keys), *flat)


class _MemoryRead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, n, n_x, n_groups, *flat):
        B, T, _ = q.shape
        blocked = torch.finfo(q.dtype).min / 2
        groups = [flat[4 * i:4 * i + 4] for i in range(n_groups)]
        P, m_read = [], []
        for z, x, mask, rows in groups:
            if z.shape[1] == 0:                     # an empty group (no memories yet): reads nothing
                P.append(q.new_zeros(B, T, 0))
                m_read.append(q.new_full((B, T, 1), blocked))
                continue
            s = torch.baddbmm(blocked_bias(mask, q.dtype), q, z.transpose(1, 2))   # (B, T, K_g) scores
            m = s.amax(-1, keepdim=True)                                            # (B, T, 1)
            P.append(s.sub_(m).exp_())                                              # <= 1, in place
            m_read.append(m if rows is None else m.masked_fill(~rows.unsqueeze(-1), blocked))
        m_all = torch.stack(m_read).amax(0)                                         # (B, T, 1)
        c = [torch.exp(m - m_all) for m in m_read]
        Z = sum(c_g * P_g.sum(-1, keepdim=True) for c_g, P_g in zip(c, P))          # >= 1
        scale = (n > 0).to(q.dtype) / Z
        a = [c_g * scale for c_g in c]                                              # (B, T, 1) per group
        p_x = q.new_zeros(B, T, n_x)
        for (z, x, _, _), P_g, a_g in zip(groups, P, a):
            p_x += q.new_zeros(B, T, n_x).scatter_add_(2, x.unsqueeze(1).expand_as(P_g), P_g) * a_g
        ctx.n_groups = n_groups
        ctx.save_for_backward(q, p_x, *[g[0] for g in groups], *[g[1] for g in groups], *P, *a)
        return p_x

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        q, p_x, *rest = ctx.saved_tensors
        ng = ctx.n_groups
        zs, xs, Ps, As = (rest[i * ng:(i + 1) * ng] for i in range(4))
        B, T, _ = q.shape
        dot = (G * p_x).sum(-1, keepdim=True)                                       # <p, G> (B, T, 1)
        dq = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        dz = []
        for i, (z, x, P_g, a_g) in enumerate(zip(zs, xs, Ps, As)):
            dS = torch.gather(G * a_g, 2, x.unsqueeze(1).expand_as(P_g))            # a_g G[x_k] (B, T, K_g)
            dS.sub_(dot * a_g).mul_(P_g)
            if dq is not None:
                dq.baddbmm_(dS, z)
            dz.append(torch.bmm(dS.transpose(1, 2), q) if ctx.needs_input_grad[4 + 4 * i] else None)
        grads = [None] * (4 * ng)
        for i, d in enumerate(dz):
            grads[4 * i] = d
        return (dq, None, None, None, *grads)
