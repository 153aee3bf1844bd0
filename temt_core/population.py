"""A population of P independent TEM-t models trained in one process: every weight gets a leading member axis.

    models = []
    for cfg, seed in zip(configs, seeds):
        torch.manual_seed(seed); models.append(TEMt(cfg))
    pop = TEMtPopulation(models)                     # member p starts exactly where models[p] starts
    opt = PopulationAdam(pop.parameters())
    state = None
    for x, actions, mask in chunks:                  # (P, B, T) each: member p's own walks
        out = pop(x, actions, state, loss_mask=mask)
        opt.zero_grad(); out.loss.backward()         # out.loss = sum of member losses: each gradient is its own
        opt.clip_grad_norm_(max_norm)                # (P,) per-member clip, over the member's own slices
        opt.step(lr)                                 # (P,) per-member learning rate
        state = out.state
    pop.member_state_dict(p)                         # a plain TEMt state_dict

Small models are launch/overhead-bound, so one process stepping P models with batched matmuls beats P runs one
after another (benchmarks/population_speed.py). The members share everything that fixes shapes or code paths
(n_actions, n_stimuli, pos_dim, key/value dims, n_modules, activation, bound, transition kind, stay action,
inverse actions, landmark query) and may differ in everything else (MEMBER_KEYS: loss weights, init std,
de-duplication threshold, attention multiplier, memory capacity; and, outside the model, seeds, learning-rate
schedules, clips and walks).

The forward is TEMt's parallel path over P*B batch slots (member p owns slots p*B .. p*B + B - 1):
    where no parameter enters (memory store, duplicate finding, masks, slot ids) the P*B slots are one batch and
    MemoryStore / find_duplicates / slot_ids / Keys are reused as they are (per-slot thresholds and capacities
    are broadcast tensors);
    where parameters enter, batched matmuls with per-member weights: the recurrence (each slot times its
    member's transition, transition_products.py; a population version of positions._FusedRecurrence with a
    hand-written backward), the attention
    (W_e W_e^T, W_x, readout per member) and the losses (per member; the total is their sum).
Always the fused recurrence (a member's `recurrence` setting only picks among paths that are equal to float
tolerance in TEMt). With landmark correction the sequential part is landmark_loop's fused loop, which takes the
members' stacked weights directly, and both prediction reads are one attention over 2T queries, as in TEMt.
tests/core/test_population.py checks a member against TEMt + torch.optim.Adam +
clip_grad_norm_ trained alone.

Capturable members (TEMtConfig.capturable, all with the same max_memories) make a capturable population: the
store keeps its fixed width (MemoryStore.append_fixed), every step applies the reset, the weight gradient is the
one-hot product (`_one_hot_outer`) and nothing is read back to the host in forward or backward
(tests/core/test_capturable.py); with PopulationAdam(capturable=True), temt_core.graph_step.PopulationGraphStep
replays the whole step as a CUDA graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import BACKENDS, Keys, prediction_read, zscore
from .energy import energy_penalty
from .landmark_loop import DedupStore, landmark_loop, store_keys
from .memory import MemoryStore, find_duplicates, slot_ids
from .memory_read import memory_read
from .model import TEMt, TEMtConfig, TEMtState
from .positions import RESET, _activate_into, _activation_grad
from .transition_products import TransitionProducts
from .validation import NonFiniteError, assert_index_on_device, check_index_tensor, check_shape

# TEMtConfig fields members may differ in: they change values, not shapes or code paths. Every other field must be
# equal across a population (a field added to TEMtConfig later is a grouping key until it is handled here).
MEMBER_KEYS = ("transition_init_std", "attention_multiplier", "dedup_threshold", "max_memories", "recurrence",
               "w_x_pi", "w_x_corr", "w_g", "w_reg_e", "w_reg_w", "w_nonneg")


def structure_key(config: TEMtConfig) -> tuple:
    """What must be equal for two configs to share a population: every field outside MEMBER_KEYS, with the
    key/value widths resolved (key_dim=None and key_dim=pos_dim give the same shapes); for capturable members
    max_memories too (the store's fixed width is a shape)."""
    resolved = {"key_dim": config.key_dim or config.pos_dim, "value_dim": config.value_dim or config.n_stimuli}
    shared = [f.name for f in fields(config) if f.name not in MEMBER_KEYS or
              (config.capturable and f.name == "max_memories")]
    return tuple((name, resolved.get(name, getattr(config, name))) for name in shared)


def check_population_config(config: TEMtConfig, where: str = "member") -> None:
    if config.n_stimuli_2:
        raise ValueError(f"{where}: model.n_stimuli_2={config.n_stimuli_2}: populations predict one stimulus stream; "
                         "train two-stream models one by one")
    if config.module_norm is not None:
        raise ValueError(f"{where}: model.module_norm={config.module_norm}: populations do not normalise modules yet; "
                         "train these models one by one")


@dataclass
class PopulationOutput:
    loss: torch.Tensor                  # scalar, sum over members of each member's weighted loss
    losses: torch.Tensor                # (P,) each member's weighted loss (TEMtOutput.loss of that member)
    parts: dict[str, torch.Tensor]      # name -> (P,) unweighted loss terms, as TEMtOutput.parts
    logits: torch.Tensor                # (P, B, T, n_x)
    e: torch.Tensor                     # (P, B, T, E)
    stored: torch.Tensor                # (P, B, T) bool
    state: TEMtState                    # detached, over P*B slots (member p: slots p*B .. p*B + B - 1)


class _PopulationRecurrence(torch.autograd.Function):
    """positions._FusedRecurrence for P members at once, each with its own transitions and e_init.

    Forward, per step: h_t = e_{t-1} W[p, a_t] per slot (P*B rows, transition_products.py: all P*A candidates
    in one bmm and each slot's block picked, or the slots grouped by (member, action)), y_t = sigma(h_t), RESET
    slots e_init. Backward, in reverse:
        dh_t = (dy_t + de_t) * sigma'(h_t)            (zero on RESET steps)
        de_{t-1} = dh_t W[p, a_t]^T                   (the same products with the transposes)
        dW[p, a] = sum_{b,t: a_pbt = a} y_{t-1}^T dh_t (after the loop: rows sorted by (member, action), padded
                                                       to the largest group, one bmm)
    """

    @staticmethod
    def forward(ctx, e0, W, e_init, actions, activation, bound, capturable=False, products="auto"):
        # e0 (P, B, E), W (P, A, E, E), e_init (P, E), actions (P, B, T); time-major buffers (T, P, B, E)
        P, B, T = actions.shape
        A, E = W.shape[1], W.shape[-1]
        tp = TransitionProducts(actions.reshape(P * B, T), A, P, E, products, capturable)
        forward_weights = tp.weights(W)
        reset = (actions == RESET).permute(2, 0, 1)                                # (T, P, B)
        # one host sync, not T (capturable: none, and every step applies the reset)
        reset_steps = [True] * T if capturable else reset.flatten(1).any(1).tolist()
        h_all = e0.new_empty(T, P, B, E)
        y_all = e0.new_empty(T, P, B, E)
        init = e_init.unsqueeze(1)                                                 # (P, 1, E)
        e = e0
        for t in range(T):
            tp(e.reshape(P * B, E), t, forward_weights, out=h_all[t].view(P * B, E))
            _activate_into(h_all[t], y_all[t], activation, bound)
            if reset_steps[t]:
                y_all[t] = torch.where(reset[t].unsqueeze(-1), init, y_all[t])
            e = y_all[t]
        ctx.save_for_backward(e0, W, e_init, actions, h_all, y_all)
        ctx.activation, ctx.bound, ctx.capturable, ctx.tp = activation, bound, capturable, tp
        return y_all.permute(1, 2, 0, 3)                                           # (P, B, T, E) view

    @staticmethod
    def backward(ctx, grad_y):
        e0, W, e_init, actions, h_all, y_all = ctx.saved_tensors
        T, P, B, E = h_all.shape
        A = W.shape[1]
        reset = (actions == RESET).permute(2, 0, 1)                                # (T, P, B)
        reset_steps = [True] * T if ctx.capturable else reset.flatten(1).any(1).tolist()
        tp = ctx.tp
        backward_weights = tp.weights(W.transpose(2, 3))                           # dh W[p, a]^T
        dsig = _activation_grad(h_all, ctx.activation, ctx.bound)                  # (T, P, B, E)
        dsig = dsig.masked_fill(reset.unsqueeze(-1), 0.0)
        grad_y = grad_y.permute(2, 0, 1, 3).contiguous()                           # (T, P, B, E)
        dh_all = torch.empty_like(h_all)
        d_init = torch.zeros_like(e_init)                                          # (P, E)
        de = torch.zeros_like(e0)                                                  # (P, B, E)
        for t in range(T - 1, -1, -1):
            de = de + grad_y[t]
            if reset_steps[t]:
                d_init = d_init + (de * reset[t].unsqueeze(-1)).sum(1)
            torch.mul(de, dsig[t], out=dh_all[t])
            de = tp(dh_all[t].view(P * B, E), t, backward_weights).view(P, B, E)
        dW = None
        if ctx.needs_input_grad[1]:
            dW = (_one_hot_outer if ctx.capturable else _grouped_outer)(e0, y_all, dh_all, actions, A)
        return de, dW, d_init, None, None, None, None, None


def _grouped_outer(e0: torch.Tensor, y_all: torch.Tensor, dh_all: torch.Tensor, actions: torch.Tensor,
                   A: int) -> torch.Tensor:
    """dW[p, a] = sum of prev^T dh over the steps (t, b) where member p's slot b took action a; prev is the
    position before the step (e0 at t = 0, y_{t-1} after). e0 (P, B, E), y_all and dh_all (T, P, B, E), actions
    (P, B, T). RESET rows have dh = 0, so their action id is moot. The rows are placed, grouped by (member,
    action), into zero-padded (P*A, width, E) blocks (width = the largest group): one batched matmul instead of
    P*A small ones."""
    T, P, B, E = dh_all.shape
    member = torch.arange(P, device=actions.device).view(1, P, 1)
    group = (actions.permute(2, 0, 1).clamp(min=0) + A * member).reshape(-1)    # (T*P*B,) p*A + a, rows (t, p, b)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=P * A)
    width = int(counts.max())
    start = counts.cumsum(0) - counts
    dest = torch.empty_like(group)
    dest[order] = group[order] * width + torch.arange(group.numel(), device=group.device) - start[group[order]]
    padded_prev = dh_all.new_zeros(P * A * width, E)
    padded_dh = dh_all.new_zeros(P * A * width, E)
    n0 = P * B                                                                     # rows of step 0
    padded_prev.index_copy_(0, dest[:n0], e0.reshape(n0, E))
    padded_prev.index_copy_(0, dest[n0:], y_all[:-1].reshape(-1, E))
    padded_dh.index_copy_(0, dest, dh_all.reshape(-1, E))
    return torch.bmm(padded_prev.view(P * A, width, E).transpose(1, 2),
                     padded_dh.view(P * A, width, E)).view(P, A, E, E)


def _one_hot_outer(e0: torch.Tensor, y_all: torch.Tensor, dh_all: torch.Tensor, actions: torch.Tensor,
                   A: int) -> torch.Tensor:
    """`_grouped_outer` with fixed shapes and no host read (capturable steps), as positions.transition_grad's
    fixed_shapes: per member one (A*E, N) x (N, E) product of the one-hot-expanded previous positions, A times
    the arithmetic of the grouped product."""
    T, P, B, E = dh_all.shape
    prev = torch.cat([e0.unsqueeze(0), y_all[:-1]], 0).transpose(0, 1).reshape(P, T * B, E)    # rows (t, b)
    onehot = F.one_hot(actions.transpose(1, 2).clamp(min=0).reshape(P, T * B), A).to(prev.dtype)  # (P, N, A)
    wide_prev = (onehot.unsqueeze(-1) * prev.unsqueeze(2)).reshape(P, T * B, A * E)
    dh = dh_all.transpose(0, 1).reshape(P, T * B, E)
    return torch.bmm(wide_prev.transpose(1, 2), dh).view(P, A, E, E)


def population_recurrence(e0: torch.Tensor, W: torch.Tensor, e_init: torch.Tensor, actions: torch.Tensor,
                          activation: str, bound: float | None, capturable: bool = False,
                          products: str = "auto") -> torch.Tensor:
    """e (P, B, T, E) of P recurrences e_t = sigma(e_{t-1} W[p, a_t]); member p's slots restart at e_init[p].

    e0 (P, B, E), W (P, A, E, E) transition matrices, e_init (P, E), actions (P, B, T) with RESET = -1.
    Runs in W's precision, outside autocast (as RecurrentPositions' fused path does). capturable: no host read and
    no shape that depends on the actions (every step applies the reset; the weight gradient as `_one_hot_outer`).
    products: how the steps multiply by the transitions (transition_products.MODES)."""
    with torch.autocast(device_type=actions.device.type, enabled=False):
        return _PopulationRecurrence.apply(e0.to(W.dtype), W, e_init, actions, activation, bound, capturable,
                                           products)


class TEMtPopulation(nn.Module):
    """P TEM-t models with stacked parameters (P, ...), built from P TEMt models (their initial weights are
    copied, so member p starts exactly where models[p] does)."""

    def __init__(self, models: list[TEMt]):
        super().__init__()
        if not models:
            raise ValueError("a population needs at least one member")
        first = models[0].config
        for i, m in enumerate(models):
            check_population_config(m.config, f"member {i}")
            if structure_key(m.config) != structure_key(first):
                diff = [a[0] for a, b in zip(structure_key(m.config), structure_key(first)) if a != b]
                raise ValueError(f"member {i} cannot share a population with member 0: {', '.join(diff)} differ "
                                 f"(only {', '.join(MEMBER_KEYS)} may differ within a population)")
        self.configs = [m.config for m in models]
        self.P = len(models)
        c = first
        # capturable (a grouping key, with max_memories, the store's fixed width): fixed shapes and no host reads,
        # as TEMtConfig.capturable
        self.capturable = c.capturable
        pos = models[0].positions                 # the shared structure: masks, activation, bound, transition
        self.n_actions, self.dim, self.activation, self.bound = pos.n_actions, pos.dim, pos.activation, pos.bound
        self.transition, self.check_finite = pos.transition, pos.check_finite
        for name in ("update_mask", "generator_sign", "generator_source"):
            self.register_buffer(name, getattr(pos, name).clone(), persistent=False)
        self.names = [n for n, _ in models[0].named_parameters()]     # TEMt's parameter names, in order
        states = [dict(m.named_parameters()) for m in models]
        for name in self.names:
            stacked = torch.stack([s[name].detach() for s in states]).clone()
            self.register_parameter(_key(name), nn.Parameter(stacked))
        self.key_dim = c.key_dim or c.pos_dim
        cfg = self.configs
        # per-member numbers, kept as Python floats and made into tensors of the parameters' dtype when used, so that
        # a float64 population sees exactly the float64 values TEMt's Python floats give (not float32 roundings)
        self.numbers = {"w_x_pi": [k.w_x_pi for k in cfg], "w_reg_e": [k.w_reg_e for k in cfg],
                        "w_x_corr": [k.w_x_corr for k in cfg], "w_g": [k.w_g for k in cfg],
                        "w_reg_w": [k.w_reg_w for k in cfg], "w_nonneg": [k.w_nonneg for k in cfg],
                        "multiplier": [k.attention_multiplier for k in cfg],
                        # dedup off == a threshold no cosine exceeds: the same `stored` mask as TEMt's "all stored"
                        "dedup": [math.inf if k.dedup_threshold is None else k.dedup_threshold for k in cfg]}
        self._number_cache: dict = {}
        self.any_dedup = any(k.dedup_threshold is not None for k in cfg)
        self.any_nonneg = any(k.w_nonneg > 0 for k in cfg)
        self.landmark = c.landmark                # a grouping key: the same query (or None) for every member
        self.landmark_key_dim = c.landmark_key_dim
        big = torch.iinfo(torch.long).max // 4
        self.register_buffer("capacity", torch.tensor([big if k.max_memories is None else k.max_memories
                                                       for k in cfg]), persistent=False)             # (P,)
        self.any_capacity = any(k.max_memories is not None for k in cfg)
        self.attention_backend = "auto"     # 'explicit' | 'fused' | 'sdpa' | 'auto' (as TEMt)
        # explicit attention: largest (slots x T x K) score block (None: all slots at once). 2^21 floats = 8 MB,
        # the size of a single reference model's scores (benchmarks/population_speed.py)
        self.block_elements: int | None = 2 ** 21
        self.grouped = True                 # explicit read: skip the stored memories' padding (grouped_read.py)
        self.products = "auto"              # how the recurrences multiply by the transitions (transition_products.py)

    def number(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """(P,) tensor of a per-member number (see self.numbers) in like's dtype and device."""
        key = (name, like.dtype, like.device)
        if key not in self._number_cache:
            self._number_cache[key] = torch.tensor(self.numbers[name], dtype=like.dtype, device=like.device)
        return self._number_cache[key]

    # -- parameters ----------------------------------------------------------------------------------------------

    def param(self, name: str) -> torch.Tensor:
        """The stacked (P, ...) parameter of TEMt's parameter `name` (e.g. 'positions.U')."""
        return getattr(self, _key(name))

    def member_state_dict(self, p: int) -> dict[str, torch.Tensor]:
        """Member p as a plain TEMt state_dict (copies)."""
        if not 0 <= p < self.P:
            raise IndexError(f"member {p} out of range: the population has {self.P} members")
        return {name: self.param(name)[p].detach().clone() for name in self.names}

    def member_model(self, p: int) -> TEMt:
        """Member p as a TEMt (same dtype and device as the population). Leaves torch's RNG as it was."""
        ref = self.param("positions.e_init")
        with torch.random.fork_rng(devices=[]):
            model = TEMt(self.configs[p])
        model = model.to(device=ref.device, dtype=ref.dtype)
        model.load_state_dict(self.member_state_dict(p))
        return model

    def subset(self, keep: list[int]) -> "TEMtPopulation":
        """The population of members `keep` (in that order) with their current weights (e.g. to drop diverged
        members)."""
        ref = self.param("positions.e_init")
        pop = TEMtPopulation([self.member_model(p) for p in keep]).to(ref.device)
        pop.block_elements, pop.attention_backend, pop.grouped = self.block_elements, self.attention_backend, self.grouped
        pop.products = self.products
        return pop

    @staticmethod
    def subset_state(state: TEMtState, keep: list[int], batch: int) -> TEMtState:
        """The slots of members `keep` of a population state (P*B slots -> len(keep)*B)."""
        rows = torch.cat([torch.arange(p * batch, (p + 1) * batch) for p in keep]).to(state.e.device)
        take = lambda t: t.index_select(0, rows)
        mem = MemoryStore(**{f.name: take(getattr(state.memory, f.name)) for f in fields(MemoryStore)})
        return TEMtState(take(state.e), mem, take(state.world), take(state.count))

    def member_state(self, state: TEMtState, p: int, batch: int) -> TEMtState:
        """Member p's slots of a population state, as a TEMtState for `batch` slots (the store keeps its padded
        width; TEMt re-packs it when needed)."""
        rows = slice(p * batch, (p + 1) * batch)
        mem = MemoryStore(**{f.name: getattr(state.memory, f.name)[rows] for f in fields(MemoryStore)})
        return TEMtState(state.e[rows], mem, state.world[rows], state.count[rows])

    def updates(self) -> torch.Tensor:
        """U_a of every member, (P, A, E, E), with the structural zeros applied (RecurrentPositions.updates)."""
        if self.transition == "matrix":
            return self.param("positions.U") * self.update_mask
        if self.transition == "orthogonal":
            G = self.param("positions.U") * self.update_mask
            S = G - G.transpose(2, 3)                                                  # (P, A, E, E) skew
            eye = torch.eye(self.dim, device=S.device, dtype=S.dtype)
            W = torch.linalg.solve(eye - S, eye + S)
            src = W[:, self.generator_source]
            W = torch.where(self.generator_sign > 0, src, src.transpose(2, 3))        # inverse pairs: transposes
            return W - eye
        w_in, b_in = self.param("positions.mlp_in.weight"), self.param("positions.mlp_in.bias")   # (P, H, A), (P, H)
        w_out = self.param("positions.mlp_out.weight")                                             # (P, E*E, H)
        onehot = torch.eye(self.n_actions, device=w_in.device, dtype=w_in.dtype).expand(self.P, -1, -1)
        hidden = torch.tanh(torch.baddbmm(b_in.unsqueeze(1), onehot, w_in.transpose(1, 2)))       # (P, A, H)
        U = torch.bmm(hidden, w_out.transpose(1, 2)).view(self.P, self.n_actions, self.dim, self.dim)
        return U * self.update_mask

    def initial_state(self, batch: int) -> TEMtState:
        e_init = self.param("positions.e_init")
        P, E = e_init.shape
        keep_e = self.landmark is not None
        memory = (MemoryStore.empty_fixed(P * batch, self.configs[0].max_memories, E, keep_e, e_init.device,
                                          e_init.dtype) if self.capturable else
                  MemoryStore.empty(P * batch, E, keep_e, e_init.device, e_init.dtype))
        return TEMtState(e=e_init.detach().unsqueeze(1).expand(P, batch, E).reshape(P * batch, E),
                         memory=memory,
                         world=torch.zeros(P * batch, dtype=torch.long, device=e_init.device),
                         count=torch.zeros(P * batch, dtype=torch.long, device=e_init.device))

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, actions: torch.Tensor, state: TEMtState | None = None,
                loss_mask: torch.Tensor | None = None) -> PopulationOutput:
        """
        x:         (P, B, T) stimulus ids, member p's walks in x[p]
        actions:   (P, B, T) arriving actions, RESET (-1) starts a new world in that slot
        state:     the previous output's state (P*B slots), None: fresh worlds everywhere
        loss_mask: (P, B, T) steps counted in the prediction loss (None: all)
        """
        P, B, T = self._check_inputs(x, actions, state, loss_mask)
        E = self.dim
        state = self.initial_state(B) if state is None else state
        xf, af = x.reshape(P * B, T), actions.reshape(P * B, T)                   # (P*B, T): one batch
        eye = torch.eye(E, device=x.device, dtype=self.param("positions.e_init").dtype)
        U = self.updates()                                                        # (P, A, E, E)
        W = U + eye
        world = state.world.unsqueeze(1) + (af == RESET).long().cumsum(1)        # (P*B, T)
        if self.landmark is not None:
            return self._forward_landmark(xf, af, state, world, W, U, loss_mask, P, B, T)
        e = population_recurrence(state.e.view(P, B, E), W, self.param("positions.e_init"), actions,
                                  self.activation, self.bound, self.capturable, self.products)   # (P, B, T, E)
        if self.check_finite and not self.capturable:
            self._raise_if_not_finite(e)
        ef = e.reshape(P * B, T, E)
        z = zscore(ef)                                                            # (P*B, T, E)
        mem = state.memory
        if self.any_dedup:
            threshold = self.number("dedup", z).repeat_interleave(B).view(P * B, 1, 1)         # per slot, broadcast
            stored = ~find_duplicates(z, xf, world, mem, threshold, fixed_rounds=self.capturable)   # (P*B, T)
        else:
            stored = torch.ones(P * B, T, dtype=torch.bool, device=x.device)
        earlier = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)
        same_world = world == state.world.unsqueeze(1)
        stored_keys = Keys(mem.z, mem.x, mem.valid.unsqueeze(1), rows=same_world)
        chunk_mask = earlier & stored.unsqueeze(1) & (world.unsqueeze(1) == world.unsqueeze(2))
        logits = self._attend(z, xf, [stored_keys, Keys(z, xf, chunk_mask)], P, B)        # (P*B, T, n_x)
        losses, parts = self._losses(xf, logits, e, U, loss_mask, P, B, T)
        next_state = self._next_state(xf, af, state, world, ef, z, stored, B)
        return PopulationOutput(loss=losses.sum(), losses=losses, parts=parts, logits=logits.view(P, B, T, -1),
                                e=e, stored=stored.view(P, B, T), state=next_state)

    def _forward_landmark(self, xf, af, state, world, W, U, loss_mask, P, B, T) -> PopulationOutput:
        """TEMt._landmark_fused over P*B slots: the fused loop with the members' stacked weights, then both
        prediction reads (from e_pi and from the corrected e) as one attention over 2T queries."""
        E, mem = self.dim, state.memory
        product = self.landmark == "product"
        need_keys = product or self.any_dedup
        same_world = world == state.world.unsqueeze(1)                            # (P*B, T) store readable
        W_l = self.param("landmark.W_l.weight")                                   # (P, n_x, d_l)
        gram = W_l @ W_l.transpose(1, 2) / math.sqrt(self.landmark_key_dim)       # (P, n_x, n_x)
        dtype = W.dtype
        mem_zn = F.normalize(mem.z, dim=-1).to(dtype) if need_keys else mem.z[:, :, :0].to(dtype)
        store = store_keys(mem.e.to(dtype), mem_zn if product else mem_zn[:, :, :0], mem.x, mem.valid, same_world,
                           gram.shape[-1], grouped=not product)
        dedup_store, threshold = None, None
        if self.any_dedup:
            dedup_store = DedupStore(mem_zn, mem.x, mem.valid & same_world.any(1, keepdim=True))
            threshold = self.number("dedup", mem_zn).repeat_interleave(B).view(P * B, 1)  # inf: member dedups nothing
        with torch.autocast(device_type=xf.device.type, enabled=False):
            e_pi, e, gate, stored = landmark_loop(
                state.e.to(dtype), W, self.param("positions.e_init"), gram, self.param("landmark.gate.weight"),
                self.param("landmark.gate.bias"), af, xf, world, store, dedup_store, self.activation, self.bound,
                product, threshold, None, self.capturable, self.products)          # (P*B, T, E) each
        if self.check_finite and not self.capturable:
            self._raise_if_not_finite(e.view(P, B, T, E))
        z = zscore(e)
        earlier = torch.ones(T, T, dtype=torch.bool, device=xf.device).tril(-1)
        chunk_mask = earlier & stored.unsqueeze(1) & (world.unsqueeze(1) == world.unsqueeze(2))
        keys = [Keys(mem.z, mem.x, mem.valid.unsqueeze(1), rows=same_world.repeat(1, 2)),
                Keys(z, xf, chunk_mask.repeat(1, 2, 1))]
        both = self._attend(torch.cat([zscore(e_pi), z], 1), xf, keys, P, B)    # (P*B, 2T, n_x)
        logits, corrected = both[:, :T], both[:, T:]
        e4, e_pi4 = e.view(P, B, T, E), e_pi.view(P, B, T, E)
        losses, parts = self._losses(xf, logits, e4, U, loss_mask, P, B, T)
        weights, denom = self._loss_weights(loss_mask, e.dtype, P, B, T, xf.device)
        ce = F.cross_entropy(corrected.flatten(0, 1), xf.flatten(), reduction="none").view(P, B, T)
        parts["x_corr"] = (ce * weights).sum((1, 2)) / denom
        parts["g"] = (e_pi4 - e4).square().sum(-1).mean((1, 2))
        losses = losses + self.number("w_x_corr", e) * parts["x_corr"] + self.number("w_g", e) * parts["g"]
        next_state = self._next_state(xf, af, state, world, e, z, stored, B)
        return PopulationOutput(loss=losses.sum(), losses=losses, parts=parts, logits=logits.reshape(P, B, T, -1),
                                e=e4, stored=stored.view(P, B, T), state=next_state)

    @staticmethod
    def _loss_weights(loss_mask, dtype, P, B, T, device):
        weights = torch.ones(P, B, T, dtype=dtype, device=device) if loss_mask is None else loss_mask.to(dtype)
        return weights, weights.sum((1, 2)).clamp(min=1.0)                       # (P, B, T), (P,)

    def _attend(self, z, x, keys, P, B):
        """TEMtAttention.forward over P*B slots with member p's W_e, W_x and readout on its slots.
        z (P*B, T, E), x (P*B, T) -> logits (P*B, T, n_x)."""
        PB, T, E = z.shape
        W_e = self.param("attention.W_e")                                         # (P, E, d_k)
        W_x = self.param("attention.W_x.weight")                                  # (P, n_x, d_v)
        R, bias = self.param("attention.readout.weight"), self.param("attention.readout.bias")  # (P, n_x, d_v), (P, n_x)
        n_x = W_x.shape[1]
        n = sum(k.count() for k in keys).expand(PB, T, 1)                         # (P*B, T, 1)
        multiplier = self.number("multiplier", z).repeat_interleave(B).view(PB, 1, 1)
        beta = multiplier * torch.log(n.clamp(min=1).to(z.dtype)) / math.sqrt(self.key_dim)
        query = torch.bmm(z.reshape(P, B * T, E), W_e @ W_e.transpose(1, 2))      # (P, B*T, E)
        q_tilde = query.view(PB, T, E) * beta
        x_all = torch.cat([k.x for k in keys], 1)                                 # (P*B, K)
        backend = self.attention_backend
        if backend not in BACKENDS:
            raise ValueError(f"attention_backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "sdpa" or (backend == "auto" and z.is_cuda):
            mask = torch.cat([(k.mask if k.rows is None else k.mask & k.rows.unsqueeze(-1)).expand(PB, T, k.z.shape[1])
                              for k in keys], -1)
            z_all = torch.cat([k.z for k in keys], 1)
            offset = (torch.arange(P, device=x.device) * n_x).repeat_interleave(B).unsqueeze(1)
            values = W_x.reshape(P * n_x, -1)[x_all + offset]                     # (P*B, K, d_v)
            read = F.scaled_dot_product_attention(q_tilde.unsqueeze(1), z_all.unsqueeze(1), values.unsqueeze(1),
                                                  attn_mask=mask.unsqueeze(1), scale=1.0).squeeze(1)  # (P*B, T, d_v)
        else:
            # The (slots, T, K) scores are computed for blocks of members at a time: one (P*B, T, K) tensor would
            # be P times a single model's, too large for the caches and (above 32 MB) allocated by mmap, page
            # fault by page fault, on every call; blocks of at most `block_elements` keep it like a single model's.
            K = x_all.shape[1]
            per_block = PB if self.block_elements is None else \
                max(1, self.block_elements // max(1, B * T * K)) * B
            splits = [min(per_block, PB - r) for r in range(0, PB, per_block)]
            parts = [torch.split(t, splits) for t in (q_tilde, n)]
            key_parts = [[Keys(*f) for f in zip(*[torch.split(t, splits) if t is not None else [None] * len(splits)
                                                  for t in k])] for k in keys]
            p_x = torch.cat([self._read_block(q, n_b, [g[i] for g in key_parts], n_x)
                             for i, (q, n_b) in enumerate(zip(*parts))])               # (P*B, T, n_x)
            read = torch.bmm(p_x.view(P, B * T, n_x), W_x)                        # (P, B*T, d_v)
        logits = torch.baddbmm(bias.unsqueeze(1), read.reshape(P, B * T, -1), R.transpose(1, 2))  # (P, B*T, n_x)
        return logits.view(PB, T, n_x)

    def _read_block(self, q_tilde, n, keys, n_x):
        """TEMtAttention's read for a block of slots: (S, T, E) queries -> p(x) (S, T, n_x), the stimulus
        distribution the memory neurons retrieve (explicit, or with attention_backend 'fused' memory_read.py)."""
        if self.attention_backend == "fused":
            return memory_read(q_tilde, n, keys, n_x)
        return prediction_read(q_tilde, n, keys, n_x, self.capturable, self.grouped)[0]

    def _losses(self, x, logits, e, U, loss_mask, P, B, T):
        """TEMt._losses per member: parts (P,) each, losses (P,) = sum_k w_k[p] * part_k[p]."""
        weights, denom = self._loss_weights(loss_mask, e.dtype, P, B, T, x.device)
        ce = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(P, B, T)
        parts = {"x_pi": (ce * weights).sum((1, 2)) / denom,
                 # energy and energy_budget are grouping keys: every member of a population has the same
                 "reg_e": energy_penalty(e, self.configs[0].energy, self.configs[0].energy_budget),
                 "reg_w": U.square().sum((1, 2, 3))}
        w = lambda name: self.number(name, e)
        losses = w("w_x_pi") * parts["x_pi"] + w("w_reg_e") * parts["reg_e"] + w("w_reg_w") * parts["reg_w"]
        if self.any_nonneg:
            parts["nonneg"] = torch.relu(-e).square().sum(-1).mean((1, 2))
            losses = losses + w("w_nonneg") * parts["nonneg"]
        return losses, parts

    def _next_state(self, x, actions, state, world, e, z, stored, B) -> TEMtState:
        """TEMt._next_state over P*B slots, with each member's own memory capacity."""
        slots, count = slot_ids(stored, actions == RESET, state.count)
        kept_e = e.detach() if self.landmark is not None else e.new_zeros(*e.shape[:2], 0)
        chunk = MemoryStore(z=z.detach(), e=kept_e, x=x, world=world, slot=slots, valid=stored)
        if self.capturable:                   # the fixed width is every member's max_memories: nothing to cut
            memory = state.memory.append_fixed(chunk, world[:, -1])
            return TEMtState(e=e[:, -1].detach(), memory=memory, world=world[:, -1], count=count)
        memory = state.memory.append(chunk, world[:, -1], None)
        if self.any_capacity:
            capacity = self.capacity.repeat_interleave(B).unsqueeze(1)            # (P*B, 1)
            if bool((memory.valid.sum(1, keepdim=True) > capacity).any()):
                memory = memory.select(memory.valid, capacity)                    # newest `capacity` per slot
        return TEMtState(e=e[:, -1].detach(), memory=memory, world=world[:, -1], count=count)

    def _raise_if_not_finite(self, e: torch.Tensor) -> None:
        finite = torch.isfinite(e).flatten(1).all(1)                              # (P,)
        if bool(finite.all()):
            return
        bad = [int(p) for p in (~finite).nonzero().flatten()]
        hint = ("the recurrence has no bound: set bound or add the L2 penalty on e (reg_e) and lower the learning "
                "rate" if self.bound is None else "check the learning rate and the gradient clipping")
        err = NonFiniteError(f"positions e of population member(s) {bad} became non-finite: {hint}")
        err.members = bad                      # indices, for callers that name their members
        raise err

    def _check_inputs(self, x, actions, state, loss_mask):
        c = self.configs[0]
        if x.dim() != 3 or x.shape[0] != self.P:
            raise ValueError(f"x must have shape (P={self.P}, B, T), got {tuple(x.shape)}")
        check_shape("actions", actions, tuple(x.shape))
        P, B, T = x.shape
        check = assert_index_on_device if self.capturable else check_index_tensor
        check("x", x.reshape(P * B, T), ndim=2, low=0, high=c.n_stimuli - 1, meaning="a stimulus id in [0, n_stimuli)")
        check("actions", actions.reshape(P * B, T), ndim=2, low=RESET, high=c.n_actions - 1,
              meaning="an action id in [0, n_actions) or RESET (-1)")
        if T == 0:
            raise ValueError("x and actions must have at least one step (got T = 0)")
        if loss_mask is not None:
            check_shape("loss_mask", loss_mask, (P, B, T))
        if state is not None:
            check_shape("state.e", state.e, (P * B, c.pos_dim))
            if self.capturable and state.memory.size != c.max_memories:
                raise ValueError(f"state.memory is {state.memory.size} wide, but a capturable population keeps "
                                 f"exactly max_memories = {c.max_memories}: the state comes from other settings")
        return P, B, T


def _key(name: str) -> str:
    return name.replace(".", "__")       # module attribute names cannot hold dots


class PopulationAdam:
    """torch.optim.Adam with its defaults (betas (0.9, 0.999), eps 1e-8, no weight decay, no amsgrad), written
    out for stacked (P, ...) parameters so that every member has its own learning rate, and
    torch.nn.utils.clip_grad_norm_ per member over the member's own slices.

    The update is torch's single-tensor Adam (torch/optim/adam.py, the CPU default), element for element:
        m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) g^2
        p += (-lr / (1 - beta1^k)) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)
    Members step in lockstep, so the step count k is shared.

    capturable=True (for a CUDA graph, temt_core.graph_step.PopulationGraphStep): nothing is read back to the host
    and nothing copied to the device during a step. The step count k is a device tensor, the learning rates and clip
    norms are (P,) device tensors set in place before the step (`set_lr`, `set_clip`), and `step()` /
    `clip_grad_norm_()` are called without arguments. The same numbers as the default mode (float64 to 1e-12).
    """

    def __init__(self, params, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 capturable: bool = False):
        self.params = list(params)
        if not self.params:
            raise ValueError("PopulationAdam got no parameters")
        self.P = self.params[0].shape[0]
        if any(p.shape[0] != self.P for p in self.params):
            raise ValueError("every parameter must have the same leading (member) dimension")
        self.betas, self.eps = betas, eps
        self._steps = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.capturable = capturable
        if capturable:
            ref = self.params[0]
            self._k = torch.zeros((), dtype=ref.dtype, device=ref.device)          # the step count, on the device
            self._lr = torch.zeros(self.P, dtype=ref.dtype, device=ref.device)     # (P,) set by set_lr
            self._clip = torch.full((self.P,), math.inf, dtype=ref.dtype, device=ref.device)   # (P,) by set_clip

    @property
    def steps(self) -> int:
        """Adam steps taken (capturable mode: read from the device, so not inside a graph)."""
        return int(self._k) if self.capturable else self._steps

    @steps.setter
    def steps(self, value: int) -> None:
        if self.capturable:
            self._k.fill_(value)               # in place: a captured graph keeps reading the same tensor
        else:
            self._steps = int(value)

    def set_lr(self, lr) -> None:
        """(P,) learning rates for the coming steps (capturable mode), copied into the device tensor in place."""
        self._require_capturable("set_lr")
        self._lr.copy_(torch.as_tensor(lr, dtype=self._lr.dtype).reshape(self.P))

    def set_clip(self, max_norm) -> None:
        """(P,) gradient-norm clips for the coming steps (capturable mode; inf: no clip), set in place."""
        self._require_capturable("set_clip")
        self._clip.copy_(torch.as_tensor(max_norm, dtype=self._clip.dtype).reshape(self.P))

    def _require_capturable(self, what: str) -> None:
        if not self.capturable:
            raise ValueError(f"PopulationAdam.{what} is for capturable=True; otherwise pass the values to the call")

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _member(self, values, like: torch.Tensor) -> torch.Tensor:
        """(P,) numbers -> a tensor shaped (P, 1, ..., 1) that broadcasts against `like`."""
        t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
        if t.shape != (self.P,):
            raise ValueError(f"expected {self.P} per-member values, got shape {tuple(t.shape)}")
        return t.view(self.P, *[1] * (like.dim() - 1))

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm=None) -> torch.Tensor:
        """Scale member p's gradients by min(1, max_norm[p] / (norm_p + 1e-6)), norm_p the 2-norm of all of
        member p's gradients (clip_grad_norm_'s formula). Returns the norms before clipping, (P,).
        max_norm: (P,) clips; capturable mode: None, the values of set_clip."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2.0, dim=1) for g in grads], 1)  # (P, n)
        total = torch.linalg.vector_norm(norms, 2.0, dim=1)                                          # (P,)
        if self.capturable:
            if max_norm is not None:
                raise ValueError("capturable PopulationAdam: set the clips with set_clip, then clip_grad_norm_()")
            max_norm = self._clip
        max_norm = torch.as_tensor(max_norm, dtype=total.dtype, device=total.device)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(self.P, *[1] * (g.dim() - 1)))
        return total

    @torch.no_grad()
    def step(self, lr=None) -> None:
        """One Adam step; lr: (P,) learning rates (a sequence or a tensor); capturable mode: None, set_lr's."""
        if self.capturable:
            if lr is not None:
                raise ValueError("capturable PopulationAdam: set the learning rates with set_lr, then step()")
            return self._step_on_device()
        beta1, beta2 = self.betas
        self._steps += 1
        bias_correction1 = 1 - beta1 ** self._steps
        bias_correction2_sqrt = (1 - beta2 ** self._steps) ** 0.5
        lr = [float(v) for v in (lr.tolist() if isinstance(lr, torch.Tensor) else lr)]
        neg_step = [-v / bias_correction1 for v in lr]
        self._update(lambda p: self._member(neg_step, p), bias_correction2_sqrt)

    def _step_on_device(self) -> None:
        """`step` with k, the learning rates and the bias corrections as device tensors (no host read or copy)."""
        beta1, beta2 = self.betas
        self._k += 1
        bias_correction1 = 1 - beta1 ** self._k
        neg_step = -self._lr / bias_correction1                                    # (P,)
        self._update(lambda p: neg_step.view(self.P, *[1] * (p.dim() - 1)), (1 - beta2 ** self._k).sqrt())

    def _update(self, neg_step_for, bias_correction2_sqrt) -> None:
        """The moments' update and p += neg_step * m / denom; neg_step_for(p): the (P, 1, ...) factor for p."""
        beta1, beta2 = self.betas
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.add_(neg_step_for(p) * m / denom)                    # addcdiv_'s order: (value * m) / denom

    def subset(self, keep: list[int], params) -> "PopulationAdam":
        """The optimizer of members `keep` for their new stacked parameters `params` (TEMtPopulation.subset)."""
        opt = PopulationAdam(params, self.betas, self.eps, capturable=self.capturable)
        opt.steps = self.steps
        if self.capturable:
            index_ = torch.tensor(keep, device=self._lr.device)
            opt._lr.copy_(self._lr.index_select(0, index_))
            opt._clip.copy_(self._clip.index_select(0, index_))
        index = torch.tensor(keep, device=self.params[0].device)
        opt.exp_avg = [m.index_select(0, index) for m in self.exp_avg]
        opt.exp_avg_sq = [v.index_select(0, index) for v in self.exp_avg_sq]
        return opt

    def state_dict(self) -> dict:
        return {"steps": self.steps, "betas": list(self.betas), "eps": self.eps,
                "exp_avg": list(self.exp_avg), "exp_avg_sq": list(self.exp_avg_sq)}

    def load_state_dict(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq"):
            if len(state[name]) != len(self.params):
                raise ValueError(f"optimizer state has {len(state[name])} {name} tensors, expected "
                                 f"{len(self.params)}")
            for mine, theirs in zip(getattr(self, name), state[name]):
                if mine.shape != theirs.shape:
                    raise ValueError(f"optimizer state {name}: shape {tuple(theirs.shape)}, expected "
                                     f"{tuple(mine.shape)}")
                mine.copy_(theirs)
        self.steps = int(state["steps"])
        self.betas, self.eps = tuple(state["betas"]), float(state["eps"])

    def member_torch_state(self, p: int, model: TEMt) -> dict:
        """Member p's moments as a torch.optim.Adam state_dict for `model` (parameters in TEMt's order), so that
        a member checkpoint can be continued alone by spatial.train.Trainer."""
        opt = torch.optim.Adam(model.parameters())
        for param, m, v in zip(model.parameters(), self.exp_avg, self.exp_avg_sq):
            opt.state[param] = {"step": torch.tensor(float(self.steps)), "exp_avg": m[p].clone(),
                                "exp_avg_sq": v[p].clone()}
        return opt.state_dict()
