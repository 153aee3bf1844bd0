"""Each slot's product with the transition it took, one step of a chunk at a time: v_b W_{a_bt}.

The fused recurrences (positions._FusedRecurrence, population._PopulationRecurrence, the landmark loop) need, at
every step t, h_b = e_b W_{a_bt} in forward and d_b W_{a_bt}^T in backward, for B slots that took different
actions. Two ways, equal up to the order of float additions (tests/core/test_transition_products.py):

    wide    v (B, E) @ [W_0 ... W_{A-1}] (E, A*E): every candidate at once, then each slot's block picked (one
            index_select of rows). One matmul of A times the arithmetic; fixed shapes, no host read: capturable
            steps and GPUs (bound by launches, not arithmetic) use it.
    blocks  the slots grouped by transition g = (member, action) into zero-padded blocks (G, R_t, E), R_t the
            largest group at step t: index_copy_ in, one bmm against the G matrices, index_select out. R_t / B of
            the arithmetic (about 1/3 at batch 16 with 5 actions), one more op per step, and one host read per
            chunk (the R_t). On a CPU at e = 128 and batch 16 a step's product is 1.1-1.6x faster than the wide
            one (docs/results/engine-2026-12-04b.md).

'auto' picks blocks on a CPU, outside capturable steps, when e >= MIN_DIM and each member has at least MIN_SLOTS
slots (below either the extra op costs more than the arithmetic saved) and the blocks hold at most MAX_FILL of the
wide rows; else wide. A population of P members (W of shape (P, A, E, E), the B slots P blocks of B / P, member
p's first) has G = P * A transitions.
"""
from __future__ import annotations

import torch

MODES = ("auto", "wide", "blocks")
MIN_DIM = 120           # benchmarks/transition_products_speed.py, batch 16, one model, one thread: the blocks were
                        # 0.50-0.65x the wide product's speed at e = 32, 0.56-0.97x at 64, 0.83-1.06x at 96,
                        # 1.6-1.7x at 120, 1.13-1.30x at 128, 1.8-2.2x at 256 (docs/results/engine-2026-12-04b.md)
MIN_SLOTS = 8           # slots per member: at batch 4 (e = 128) the blocks were 0.92-1.22x, no clear gain
MAX_FILL = 0.5          # blocks' rows / wide rows (mean R_t / slots per member): at batch 16 and 5 actions about 0.35


def wide_transitions(W: torch.Tensor) -> torch.Tensor:
    """The wide layout: (A, E, E) -> (E, A*E), or a population's (P, A, E, E) -> (P, E, A*E); v @ wide gives all A
    candidate products at once, column block a being v @ W_a (of member p)."""
    if W.dim() == 3:
        A, E, _ = W.shape
        return W.permute(1, 0, 2).reshape(E, A * E)
    P, A, E, _ = W.shape
    return W.permute(0, 2, 1, 3).reshape(P, E, A * E)


class TransitionProducts:
    """The products v_b W_{a_bt} of one chunk's steps, by the way `mode` picks (see the module docstring).

    actions (B, T) int (RESET = -1 rows give W_0's product; callers overwrite them with e_init), n_actions A,
    members P (the weights are one model's W (A, E, E), or a population's (P, A, E, E), also for P = 1), dim E;
    capturable: wide, whatever the mode.
    Use: weights = tp.weights(W) (forward) or tp.weights(W.transpose(-1, -2)) (backward, d W_a^T), then per step
    tp(v, t, weights, out) -> (B, E).
    """

    def __init__(self, actions: torch.Tensor, n_actions: int, members: int, dim: int, mode: str = "auto",
                 capturable: bool = False):
        if mode not in MODES:
            raise ValueError(f"transition products: mode must be one of {MODES}, got {mode!r}")
        B, T = actions.shape
        self.A, self.P, self.E, self.B = n_actions, members, dim, B
        self.blocks = False
        if capturable or mode == "wide" or (mode == "auto" and (actions.device.type != "cpu" or dim < MIN_DIM
                                                                or B // members < MIN_SLOTS)):
            self._plan_wide(actions)
            return
        group = actions.t().clamp(min=0)                                           # (T, B) action per slot
        if members > 1:
            group = group + n_actions * (torch.arange(B, device=actions.device) // (B // members))   # in [0, G)
        G = members * n_actions
        counts = torch.zeros(T, G, dtype=torch.long, device=actions.device).scatter_add_(
            1, group, torch.ones_like(group))                                      # (T, G) slots per transition
        R = counts.amax(1)                                                         # (T,) the largest group
        R_list = R.tolist()                                                        # the one host read
        if mode == "auto" and sum(R_list) > MAX_FILL * T * (B // members):
            self._plan_wide(actions)
            return
        # rank of each slot within its group at its step (stable: slots in order), then its row in the blocks
        order = torch.sort(group, dim=1, stable=True).indices                      # (T, B)
        start = counts.cumsum(1) - counts                                          # (T, G) first sorted position
        sorted_group = group.gather(1, order)
        position = torch.arange(B, device=actions.device).expand(T, B)
        rank = torch.empty_like(group).scatter_(1, order, position - start.gather(1, sorted_group))
        self.rows = group * R.unsqueeze(1) + rank                                  # (T, B) row in (G * R_t, E)
        self.R, self.G, self.blocks = R_list, G, True
        self._buffers = None

    def _plan_wide(self, actions: torch.Tensor) -> None:
        """Slot b's block of its action a is row b * A + a of the (B * A, E) wide product: (T, B) rows."""
        self.wide_rows = torch.arange(self.B, device=actions.device) * self.A + actions.t().clamp(min=0)

    def weights(self, W: torch.Tensor) -> torch.Tensor:
        """The layout the products read: W (A, E, E) or (P, A, E, E) -> blocks (G, E, E), or wide (E, A*E) /
        (P, E, A*E). Pass W.transpose(-1, -2) for the backward's d W_a^T."""
        if self.blocks:
            return W.reshape(self.G, self.E, self.E).contiguous()
        return wide_transitions(W)                    # by W's shape: a population of one is (1, A, E, E)

    def __call__(self, v: torch.Tensor, t: int, weights: torch.Tensor, out: torch.Tensor | None = None):
        """v (B, E) -> (B, E): row b is v_b times the transition slot b took at step t (written into out)."""
        B, E = self.B, self.E
        if not self.blocks:
            product = v @ weights if weights.dim() == 2 else torch.bmm(v.view(self.P, B // self.P, E), weights)
            # (B, A*E) as B*A rows of E: one index_select of whole rows (cheaper than an elementwise gather)
            return torch.index_select(product.reshape(B * self.A, E), 0, self.wide_rows[t], out=out)
        n = self.G * self.R[t]
        if self._buffers is None or self._buffers[0].dtype != v.dtype:
            width = self.G * max(self.R)
            # zeros once: padding rows hold earlier steps' values after that, which no real row reads
            self._buffers = (v.new_zeros(width, E), v.new_empty(width, E))
        inp, res = self._buffers[0][:n], self._buffers[1][:n]
        inp.index_copy_(0, self.rows[t], v)
        torch.bmm(inp.view(self.G, -1, E), weights, out=res.view(self.G, -1, E))
        return torch.index_select(res, 0, self.rows[t], out=out)
