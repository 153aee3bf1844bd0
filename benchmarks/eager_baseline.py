"""A straightforward eager TEM-t, the honest baseline for speed-ups (issue 7, part 0).

What anyone would write first: per step one batched matmul for the recurrence and one masked attention over the
memories so far (the store of earlier chunks plus this chunk's, grown by one per step), plain autograd, Adam.
Same maths as TEMt without de-duplication or landmark correction (the benchmark's reference config); it is not
used by the library, only timed against it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EagerTEMt(nn.Module):
    def __init__(self, n_actions: int = 5, n_stimuli: int = 45, dim: int = 128, init_std: float = 0.3):
        super().__init__()
        self.U = nn.Parameter(init_std / math.sqrt(dim) * torch.randn(n_actions, dim, dim))
        self.e_init = nn.Parameter(0.5 * torch.randn(dim).abs())
        self.W_e = nn.Parameter(torch.linalg.qr(torch.randn(dim, dim))[0])
        self.W_x = nn.Embedding(n_stimuli, n_stimuli)
        self.readout = nn.Linear(n_stimuli, n_stimuli)
        self.dim = dim

    def forward(self, x, actions, state):
        """x, actions (B, T); state = (e (B, E), z (B, M, E) stored LN(e), stimuli (B, M), valid (B, M)) or None."""
        B, T = x.shape
        W = torch.eye(self.dim) + self.U
        if state is None:
            state = (self.e_init.expand(B, -1), x.new_zeros(B, 0, self.dim, dtype=torch.float),
                     x.new_zeros(B, 0), torch.zeros(B, 0, dtype=torch.bool))
        e, z_store, stim_store, valid_store = state
        # stored keys and values projected once per chunk (a KV cache); keys kept as (B, E, M) so that a query row
        # times them is a fast matrix-vector product on a CPU (the (B, M, E) x (B, E, 1) form is ~10x slower)
        k_store_t = (z_store @ self.W_e).transpose(1, 2).contiguous()
        v_store = self.W_x(stim_store)                 # (B, M, n_x)
        k_chunk = z_store.new_zeros(B, 0, self.dim)    # this chunk's keys, grown by one per step
        stim_chunk, valid_chunk = x[:, :0], torch.zeros(B, 0, dtype=torch.bool)
        logits, es, zs = [], [], []
        for t in range(T):
            a = actions[:, t]
            e = torch.relu(torch.bmm(e.unsqueeze(1), W[a.clamp(min=0)]).squeeze(1)).clamp(max=1.0)
            reset = (a < 0).unsqueeze(-1)
            e = torch.where(reset, self.e_init.expand_as(e), e)
            valid_store, valid_chunk = valid_store & ~reset, valid_chunk & ~reset    # a new world forgets
            z = F.layer_norm(e, (self.dim,))
            q = z @ self.W_e                                                 # (B, E)
            valid = torch.cat([valid_store, valid_chunk], 1)
            n = valid.sum(-1, keepdim=True).clamp(min=1)
            s = torch.cat([(q.unsqueeze(1) @ k_store_t).squeeze(1), (k_chunk @ q.unsqueeze(-1)).squeeze(-1)], 1)
            s = s * torch.log(n.float()) / math.sqrt(self.dim)              # (B, M + t)
            p = torch.softmax(s.masked_fill(~valid, -1e9), -1) * valid.any(-1, keepdim=True)
            p_store, p_chunk = p.split([k_store_t.shape[2], k_chunk.shape[1]], 1)
            read = (p_store.unsqueeze(1) @ v_store).squeeze(1) + (p_chunk.unsqueeze(1) @ self.W_x(stim_chunk)).squeeze(1)
            logits.append(self.readout(read))
            k_chunk = torch.cat([k_chunk, q.unsqueeze(1)], 1)
            stim_chunk = torch.cat([stim_chunk, x[:, t:t + 1]], 1)
            valid_chunk = torch.cat([valid_chunk, torch.ones(B, 1, dtype=torch.bool)], 1)
            es.append(e)
            zs.append(z)
        logits = torch.stack(logits, 1)
        e_all = torch.stack(es, 1)
        loss = F.cross_entropy(logits.flatten(0, 1), x.flatten()) + 0.01 * e_all.square().sum(-1).mean()
        z_all = torch.cat([z_store, torch.stack(zs, 1).detach()], 1)
        stim, valid = torch.cat([stim_store, stim_chunk], 1), torch.cat([valid_store, valid_chunk], 1)
        keep = valid.sum(1).max()                                            # drop memories no slot can read
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :keep]
        state = (e.detach(), z_all.gather(1, order.unsqueeze(-1).expand(-1, -1, self.dim)),
                 stim.gather(1, order), valid.gather(1, order))
        return loss, state
