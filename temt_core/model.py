"""TEM-t, the TEM-transformer (Whittington, Warren & Behrens, ICLR 2022), as one model.

    actions (B, T) --RecurrentPositions--> e_pi (B, T, E) --[LandmarkCorrection]--> e (B, T, E)
    stimuli (B, T) ------------------------------------------------------------+
    memories of earlier chunks + this chunk's (e, x) --TEMtAttention--> logits (B, T, n_x), memory neurons

At step t the agent has just arrived (by actions[:, t]) at a node whose stimulus x[:, t] it has not seen yet:
the path-integrated position e_pi[:, t] queries every memory stored strictly earlier in the same world and
predicts x[:, t] (this is the prediction that measures zero-shot inference). Then the stimulus is seen: with
landmark correction, x[:, t] retrieves a stored position and a gate pulls e_pi towards it; the (corrected)
position and the stimulus are stored as a new memory, unless the same conjunction is already stored.

Three execution paths, equal to float tolerance (tests/core/test_model.py, tests/core/test_landmark_loop.py):
    parallel    no landmark correction: positions for the whole chunk at once (RecurrentPositions' fused or scan
                path), then one masked attention over [stored memories; this chunk's memories]
    landmark    with landmark correction: path integration, correction and de-duplication in one fused loop with
                a hand-written backward (landmark_loop.py), then both prediction reads (from e_pi and from the
                corrected e) as one masked attention, since each reads only memories stored strictly earlier
    sequential  one step at a time, written plainly (`sequential=True`): the reference both fast paths are
                tested against

Losses (TEM's set; parts are returned unweighted, `loss` is the weighted sum):
    x_pi      cross-entropy of the prediction from the path-integrated position   (on loss_mask steps)
    x_corr    cross-entropy of the prediction from the corrected position         (landmark only)
    g         squared error between path-integrated and corrected positions       (landmark only)
    reg_e     energy of the positions (energy.py): TEM's sum over units of e^2, mean over steps (weight 0.01);
              or its mean over units, or a per-unit activity budget
    reg_w     L2 of the transition updates U_a = W_a - I                          (spec: 0.001)
    nonneg    squared negative part of the positions, only if w_nonneg > 0        (our addition, default off)
    x2_pi     cross-entropy of the second stream's prediction, same position and steps as x_pi (n_stimuli_2 > 0)

A second stimulus stream (claim C8, `n_stimuli_2 > 0`): every memory also holds a second stimulus x2 (another
modality), so a memory is a (position, x, x2) triple conjunction. The keys stay the positions and the memory
neurons stay the softmax over stored memories; only the values widen, from the one-hot x to [one-hot x; one-hot
x2]. The same weights a_t,k that read stream 1 read stream 2 (SecondStream): p(x2) = sum_{k: x2_k = x2} a_t,k, so
the stream adds n_stimuli_2 value (feature) neurons and not one memory neuron. A step repeats a stored
conjunction only if both of its stimuli match (and the positions do). A naive TEM would instead need a conjunctive
cell for every (g, x, x2) combination. Parallel and sequential paths only: landmark correction is refused.

Quick use:
    model = TEMt(TEMtConfig(n_actions=5, n_stimuli=45))
    state = None
    for x, actions, revisit in chunks:                 # (B, T) each
        out = model(x, actions, state, loss_mask=revisit)
        out.loss.backward(); opt.step(); opt.zero_grad()
        state = out.state                              # detached: truncated backprop
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import Keys, TEMtAttention, zscore
from .energy import ENERGY_KINDS, energy_penalty
from .landmark import QUERIES, LandmarkCorrection, LandmarkKeys
from .landmark_loop import DedupStore, landmark_loop, store_keys
from .memory import MemoryStore, find_duplicates, slot_ids
from .positions import ACTIVATIONS, METHODS, RESET, TRANSITIONS, RecurrentPositions
from .transition_products import wide_transitions
from .validation import assert_index_on_device, check_index_tensor, check_shape, raise_if_not_finite


@dataclass
class TEMtConfig:
    # task
    n_actions: int = 5                  # square grid: stay + 4 moves (TEM)
    n_stimuli: int = 45                 # n_x one-hot observations (TEM)
    # recurrent positions
    pos_dim: int = 128                  # E; TEM's g has 120 units in 5 modules
    activation: str = "relu"            # sigma; the paper found grid cells with 'linear' and 'relu'
    bound: float | None = 1.0           # clamp e to [-bound, bound] after sigma (TEM clamps g to [-1, 1])
    module_norm: float | None = None    # instead of the clamp (bound: null): each module's activity rescaled to this
                                        # L2 norm after sigma (positions.ModuleNorm; issue 8's bounded activity)
    transition: str = "matrix"          # 'matrix': free U_a; 'mlp': TEM's MLP of the one-hot action;
                                        # 'orthogonal': W_a = Cayley(skew), a rotation (spec L8)
    transition_init_std: float = 0.113  # entries of U_a ~ N(0, (0.113 / sqrt(E))^2), 0.01 at E = 128. TEM's 0 (every
                                        # move starts as the identity) stalls the start: all positions equal e_init,
                                        # the z-score cancels the task gradient and only the energy term moves W
                                        # (audit, issue 8); 0.113 raised linear accuracy after 1.5k steps 0.74 -> 0.84
    stay_action: int | None = 0         # this action's transition is exactly the identity
    n_modules: int = 1                  # >1: block-diagonal transitions (TEM's frequency modules)
    inverse_actions: tuple[tuple[int, int], ...] = ()   # opposite moves, tied in the 'orthogonal' transition
    recurrence: str = "auto"            # 'auto' | 'fused' | 'loop' | 'scan' (see positions.py)
    # attention
    key_dim: int | None = None          # d_k of W_e (None: pos_dim)
    value_dim: int | None = None        # d_v of W_x (None: n_stimuli)
    attention_multiplier: float = 1.0   # fixed factor on log(n)/sqrt(d_k) (spec L7 sweeps it)
    dedup_threshold: float | None = 0.95  # cosine above which a same-stimulus memory counts as a repeat
    max_memories: int | None = None     # per batch slot; oldest dropped first. None: only world resets clear it
    capturable: bool = False            # a training step with fixed shapes and no host reads, so that it can be
                                        # captured as a CUDA graph: the store is always max_memories wide (padding
                                        # marked invalid), input ranges are checked on the device, resets and
                                        # de-duplication run without data-dependent branches, and the per-chunk
                                        # finiteness check is the caller's (it reads a value back). Same numbers
                                        # as False (tests/core/test_capturable.py); for GPUs (temt_core.graph_step):
                                        # on a CPU the parallel step is 0.69-0.89x as fast
    # landmark correction
    landmark: str | None = None         # None | 'stimulus' | 'product' (the paper's suggested query)
    landmark_key_dim: int = 32
    # loss weights
    w_x_pi: float = 1.0
    w_x_corr: float = 1.0
    w_g: float = 1.0
    w_reg_e: float = 0.01               # TEM's L2 on g
    energy: str = "sum"                 # form of reg_e: 'sum' (TEM) | 'mean' (per unit) | 'budget' (energy.py)
    energy_budget: float = 0.1          # 'budget': mean e^2 per unit allowed before it is penalised
    w_reg_w: float = 0.001              # spec L3: weight L2 0.001, on the transition updates
    w_nonneg: float = 0.0               # penalty on negative activity, sum relu(-e)^2 (not in the paper: a soft
                                        # non-negativity for linear codes, spec L3 / Whittington et al. 2023)
    w_x2_pi: float = 1.0                # the second stream's prediction loss, weighted as stream 1's (n_stimuli_2 > 0)
    # a second stimulus stream (claim C8)
    n_stimuli_2: int = 0                # 0: one stream (the paper's model). >0: every memory also stores one of this
                                        # many second stimuli (forward(..., x2=)), read by the same memory neurons:
                                        # n_stimuli_2 more value (feature) neurons, no more memory neurons

    def __post_init__(self):
        problems = []
        for name in ("n_actions", "n_stimuli", "pos_dim", "n_modules", "landmark_key_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.n_stimuli_2 < 0:
            problems.append(f"n_stimuli_2 must be >= 0, 0 for one stimulus stream (got {self.n_stimuli_2})")
        if self.n_stimuli_2 and self.landmark is not None:
            problems.append(f"n_stimuli_2={self.n_stimuli_2} needs landmark=None (got landmark={self.landmark!r}): "
                            "landmark correction with a second stimulus stream is not implemented")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS} (got {self.activation!r})")
        if self.transition not in TRANSITIONS:
            problems.append(f"transition must be one of {TRANSITIONS} (got {self.transition!r})")
        if self.recurrence not in METHODS:
            problems.append(f"recurrence must be one of {METHODS} (got {self.recurrence!r})")
        if self.recurrence == "scan" and (self.activation != "linear" or self.bound is not None):
            problems.append("recurrence='scan' needs activation='linear' and bound=None")
        if self.energy not in ENERGY_KINDS:
            problems.append(f"energy must be one of {ENERGY_KINDS} (got {self.energy!r})")
        if not self.energy_budget >= 0:
            problems.append(f"energy_budget must be >= 0 (got {self.energy_budget})")
        if self.landmark is not None and self.landmark not in QUERIES:
            problems.append(f"landmark must be None or one of {QUERIES} (got {self.landmark!r})")
        if self.stay_action is not None and not 0 <= self.stay_action < self.n_actions:
            problems.append(f"stay_action must be in [0, n_actions={self.n_actions}) or None "
                            f"(got {self.stay_action})")
        if self.pos_dim % self.n_modules:
            problems.append(f"n_modules={self.n_modules} must divide pos_dim={self.pos_dim}")
        if self.dedup_threshold is not None and not -1 < self.dedup_threshold < 1:
            problems.append(f"dedup_threshold must be in (-1, 1) or None (got {self.dedup_threshold})")
        if self.max_memories is not None and self.max_memories < 1:
            problems.append(f"max_memories must be >= 1 or None (got {self.max_memories})")
        if self.capturable:
            if self.max_memories is None:
                problems.append("capturable=True needs max_memories (the store's fixed width), got None")
            if self.n_stimuli_2:
                problems.append(f"capturable=True needs n_stimuli_2=0 (got {self.n_stimuli_2}): the second "
                                "stream's store is not fixed-width yet")
            if self.recurrence == "loop":
                problems.append("capturable=True needs recurrence 'auto', 'fused' or 'scan' (got 'loop')")
        if self.module_norm is not None and (self.module_norm <= 0 or self.bound is not None):
            problems.append(f"module_norm must be positive and needs bound=None (got module_norm={self.module_norm}, "
                            f"bound={self.bound})")
        if self.module_norm is not None and self.recurrence == "scan":
            problems.append("recurrence='scan' cannot normalise modules: use 'fused' or 'auto' with module_norm")
        if self.bound is not None and self.bound <= 0:
            problems.append(f"bound must be positive or None (got {self.bound})")
        for f in fields(self):                  # `not 0 <= w < inf` also catches NaN
            if f.name.startswith("w_") and not 0 <= getattr(self, f.name) < math.inf:
                problems.append(f"{f.name} must be a finite number >= 0 (got {getattr(self, f.name)})")
        if problems:
            raise ValueError("invalid TEMtConfig: " + "; ".join(problems))


@dataclass
class TEMtState:
    """What carries from one chunk to the next (detached): the last position and the memory store."""
    e: torch.Tensor             # (B, E) position at the last step of the previous chunk
    memory: MemoryStore         # memories of the current world of every slot
    world: torch.Tensor         # (B,) id of each slot's current world (counts RESETs)
    count: torch.Tensor         # (B,) memories stored so far in the current world (next memory-neuron id)
    x2: torch.Tensor | None = None   # (B, M) second-stream stimulus of each stored memory, column for column with
                                     # `memory` (n_stimuli_2 > 0); None for one-stream models

    def detach(self) -> "TEMtState":
        return TEMtState(self.e.detach(), self.memory.detach(), self.world, self.count, self.x2)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat dict for checkpoints (safetensors)."""
        out = {"e": self.e, "world": self.world, "count": self.count}
        out.update({f"memory.{k}": v for k, v in self.memory.tensors().items()})
        if self.x2 is not None:
            out["x2"] = self.x2
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "TEMtState":
        """States saved without `x2` (one-stream models, and every state saved before C8) load with x2=None."""
        memory = MemoryStore.from_tensors({k[len("memory."):]: v for k, v in t.items() if k.startswith("memory.")})
        return cls(t["e"], memory, t["world"], t["count"], t.get("x2"))


@dataclass
class TEMtOutput:
    loss: torch.Tensor                       # scalar, weighted sum of parts
    parts: dict[str, torch.Tensor]           # unweighted loss terms (see module docstring)
    logits: torch.Tensor                     # (B, T, n_x) prediction from the path-integrated position
    e: torch.Tensor                          # (B, T, E) positions stored in memory (corrected if landmark)
    e_pi: torch.Tensor                       # (B, T, E) path-integrated positions
    state: TEMtState                         # detached state for the next chunk
    logits_corrected: torch.Tensor | None = None   # (B, T, n_x) from the corrected position (landmark)
    gate: torch.Tensor | None = None         # (B, T, E) landmark gate
    memory_neurons: torch.Tensor | None = None     # (B, T, K) softmax weights over the K keys below
    memory_ids: torch.Tensor | None = None   # (B, K) memory-neuron id (slot) of each key, -1 = not a memory
    stored: torch.Tensor | None = None       # (B, T) bool, the step's memory was stored (not a duplicate)
    logits2: torch.Tensor | None = None      # (B, T, n_x2) second stream's prediction (n_stimuli_2 > 0)


class SecondStream(nn.Module):
    """The values and readout of a second stimulus stream (claim C8); its memories are stream 1's memories.

    The memory neurons a_t,k (TEMtAttention's softmax over stored memories) are applied to one-hot codes of the
    memories' stream-2 stimuli x2_k, exactly as TEMtAttention reads stream 1:
        p(x2)_t = sum_{k: x2_k = x2} a_t,k              (B, T, n_x2) the stream-2 distribution the memories hold
        logits2_t = (p(x2)_t W_x2) W_out2 + b2           (B, T, n_x2)
    W_x2 is n_x2 x n_x2 (d_v = n_x2, as stream 1's default d_v = n_x): n_x2 more value (feature) neurons.
    """

    def __init__(self, n_stimuli: int):
        super().__init__()
        self.n_stimuli = n_stimuli
        self.W_x = nn.Embedding(n_stimuli, n_stimuli)
        self.readout = nn.Linear(n_stimuli, n_stimuli)

    def forward(self, probs: torch.Tensor, x2_keys: torch.Tensor) -> torch.Tensor:
        """probs (B, T, K) memory-neuron weights, x2_keys (B, K) stream-2 stimulus of each key -> (B, T, n_x2)"""
        B, T, _ = probs.shape
        p_x2 = probs.new_zeros(B, T, self.n_stimuli).scatter_add(2, x2_keys.unsqueeze(1).expand_as(probs), probs)
        return self.readout(p_x2 @ self.W_x.weight)


class TEMt(nn.Module):
    def __init__(self, config: TEMtConfig):
        super().__init__()
        self.config = c = config
        self.positions = RecurrentPositions(
            c.n_actions, c.pos_dim, activation=c.activation, bound=c.bound, transition=c.transition,
            stay_action=c.stay_action, n_modules=c.n_modules, init_std=c.transition_init_std, method=c.recurrence,
            inverse_actions=c.inverse_actions, module_norm=c.module_norm, capturable=c.capturable)
        self.attention = TEMtAttention(c.pos_dim, c.n_stimuli, key_dim=c.key_dim, value_dim=c.value_dim,
                                       multiplier=c.attention_multiplier, capturable=c.capturable)
        self.attention_backend = "auto"     # 'explicit' | 'fused' | 'sdpa' | 'auto' (see TEMtAttention.forward)
        self.landmark = (LandmarkCorrection(c.pos_dim, c.n_stimuli, query=c.landmark, key_dim=c.landmark_key_dim)
                         if c.landmark else None)
        # built last: every other weight draws the same random numbers as in a one-stream model of the same seed
        self.stream_2 = SecondStream(c.n_stimuli_2) if c.n_stimuli_2 else None

    @property
    def feature_neurons(self) -> int:
        """Value (feature) neurons: the width of what the memory neurons read, d_v (+ n_stimuli_2 with two streams)."""
        return self.attention.value_dim + (self.config.n_stimuli_2 if self.stream_2 is not None else 0)

    def initial_state(self, batch: int, device=None) -> TEMtState:
        device = device or self.positions.e_init.device
        c, dtype = self.config, self.positions.e_init.dtype
        memory = (MemoryStore.empty_fixed(batch, c.max_memories, c.pos_dim, self.landmark is not None, device, dtype)
                  if c.capturable else MemoryStore.empty(batch, c.pos_dim, self.landmark is not None, device, dtype))
        return TEMtState(e=self.positions.initial(batch).detach().to(device), memory=memory,
                         world=torch.zeros(batch, dtype=torch.long, device=device),
                         count=torch.zeros(batch, dtype=torch.long, device=device),
                         x2=None if self.stream_2 is None else torch.zeros(batch, 0, dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor, actions: torch.Tensor, state: TEMtState | None = None,
                loss_mask: torch.Tensor | None = None, return_memory_neurons: bool = False,
                sequential: bool = False, method: str | None = None, x2: torch.Tensor | None = None) -> TEMtOutput:
        """
        x:         (B, T) stimulus ids observed at each step
        actions:   (B, T) action arriving at each step, RESET (-1) starts a new world in that slot
        state:     from the previous chunk's output (None: fresh worlds everywhere)
        loss_mask: (B, T) which steps count in the prediction losses (spatial: arrivals at visited nodes)
        return_memory_neurons: also return the softmax over memories (B, T, K) and the memory ids
        sequential: use the plain step-by-step reference path instead of the fast ones
        method:    recurrence path for the parallel mode (None: config.recurrence)
        x2:        (B, T) second-stream stimulus ids, required iff config.n_stimuli_2 > 0 (then out.logits2 and
                   out.parts["x2_pi"] hold its prediction)
        """
        B, T = self._check_inputs(x, actions, state, loss_mask, x2)
        state = self.initial_state(B, x.device) if state is None else state
        W = self.positions.transition_matrices()
        world = state.world.unsqueeze(1) + (actions == RESET).long().cumsum(1)        # (B, T)
        if sequential:
            run = self._sequential(x, actions, state, world, W, return_memory_neurons, x2)
        elif self.landmark is not None:         # (never with a second stream: TEMtConfig refuses it)
            run = self._landmark_fused(x, actions, state, world, W, return_memory_neurons)
        else:
            run = self._parallel(x, actions, state, world, W, return_memory_neurons, method, x2)
        loss, parts = self._losses(x, run, loss_mask, x2)
        next_state = self._next_state(x, actions, state, world, run["e"], run["z"], run["stored"], x2)
        return TEMtOutput(loss=loss, parts=parts, logits=run["logits"], e=run["e"], e_pi=run["e_pi"],
                          state=next_state, logits_corrected=run.get("logits_corrected"), gate=run.get("gate"),
                          memory_neurons=run.get("probs"), memory_ids=run.get("ids"), stored=run["stored"],
                          logits2=run.get("logits2"))

    # -- the two execution paths ---------------------------------------------------------------------------

    def _parallel(self, x, actions, state, world, W, return_memory_neurons, method, x2=None):
        B, T = x.shape
        mem = state.memory
        e = self.positions(actions, state.e, method=method, W=W)                       # (B, T, E)
        z = zscore(e)
        stored = self._not_duplicate(z, x, world, mem, x2, state.x2)                   # (B, T)
        # a second stream reads the memory neurons themselves: the explicit attention, which returns them
        logits, probs = self.attention(z, self._prediction_keys(state, z, x, stored, world),
                                       need_weights=return_memory_neurons or x2 is not None,
                                       backend=self.attention_backend)
        run = dict(e=e, e_pi=e, z=z, logits=logits, stored=stored)
        if x2 is not None:                      # keys in the order of _prediction_keys: [stored; this chunk's]
            run["logits2"] = self.stream_2(probs, torch.cat([state.x2, x2], 1))         # (B, T, n_x2)
        if return_memory_neurons:
            run.update(probs=probs, ids=self._key_ids(state, actions, stored))
        return run

    @staticmethod
    def _prediction_keys(state, z, x, stored, world, copies: int = 1) -> list[Keys]:
        """The keys a prediction read sees: the stored memories of each slot's world, and this chunk's memories
        stored strictly earlier in the same world. `copies` stacks the masks for that many blocks of T queries.

        The store holds only memories of each slot's world at the chunk start (see MemoryStore.append), so a
        query reads all valid stored memories unless its slot has started a new world within this chunk."""
        T = x.shape[1]
        mem = state.memory
        same_world = world == state.world.unsqueeze(1)                                   # (B, T)
        earlier = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)          # key tau < query t
        chunk_mask = earlier & stored.unsqueeze(1) & (world.unsqueeze(1) == world.unsqueeze(2))   # (B, T, T)
        return [Keys(mem.z, mem.x, mem.valid.unsqueeze(1), rows=same_world.repeat(1, copies)),   # (B, 1, M)
                Keys(z, x, chunk_mask.repeat(1, copies, 1))]                                      # (B, cT, T)

    def _landmark_fused(self, x, actions, state, world, W, return_memory_neurons):
        """Landmark correction: the sequential part (path integration, correction, de-duplication) in one fused
        loop with a hand-written backward (landmark_loop.py), then both prediction reads in one masked attention
        (each reads only memories stored strictly earlier, which the loop has all produced)."""
        B, T = x.shape
        mem, lm, c = state.memory, self.landmark, self.config
        product = lm.query == "product"
        need_keys = product or c.dedup_threshold is not None
        same_world = world == state.world.unsqueeze(1)                                   # (B, T) store readable
        gram = lm.W_l.weight @ lm.W_l.weight.t() / math.sqrt(lm.key_dim)                # (n_x, n_x)
        dtype = W.dtype
        mem_zn = F.normalize(mem.z, dim=-1).to(dtype) if need_keys else mem.z[:, :, :0].to(dtype)
        store = store_keys(mem.e.to(dtype), mem_zn if product else mem_zn[:, :, :0], mem.x, mem.valid, same_world,
                           c.n_stimuli, grouped=not product)
        dedup_store = None if c.dedup_threshold is None else \
            DedupStore(mem_zn, mem.x, mem.valid & same_world.any(1, keepdim=True))
        with torch.autocast(device_type=x.device.type, enabled=False):
            e_pi, e, gate, stored = landmark_loop(
                state.e.to(dtype), W, self.positions.e_init, gram, lm.gate.weight, lm.gate.bias, actions, x, world,
                store, dedup_store, self.positions.activation, self.positions.bound, product, c.dedup_threshold,
                self.positions.norm, c.capturable, self.positions.products)
        if self.positions.check_finite and not c.capturable:
            raise_if_not_finite("positions e", e, hint=self.positions._stability_hint())
        z = zscore(e)
        # both reads at once: queries [LN(e_pi); LN(e)] (B, 2T, E) over the same keys
        keys = self._prediction_keys(state, z, x, stored, world, copies=2)
        logits, probs = self.attention(torch.cat([zscore(e_pi), z], 1), keys, need_weights=return_memory_neurons,
                                       backend=self.attention_backend)
        run = dict(e=e, e_pi=e_pi, z=z, logits=logits[:, :T], logits_corrected=logits[:, T:], gate=gate,
                   stored=stored)
        if return_memory_neurons:
            run.update(probs=probs[:, :T], ids=self._key_ids(state, actions, stored))
        return run

    def _sequential(self, x, actions, state, world, W, return_memory_neurons, x2=None):
        """Step by step. The stored memories are one fixed group of keys; this chunk's memories (which keep their
        gradient) grow by one per step in a second group, so no step copies the whole store."""
        B, T = x.shape
        mem = state.memory
        need_zn = self.config.dedup_threshold is not None or (self.landmark is not None and
                                                              self.landmark.query == "product")
        mem_zn = F.normalize(mem.z, dim=-1) if need_zn else mem.z              # once per chunk, not per step
        chunk = {k: [] for k in ("e", "z", "zn", "x", "world", "valid") + (("x2",) if x2 is not None else ())}
        wide = wide_transitions(W)
        e_prev = state.e
        out = {k: [] for k in ("e", "e_pi", "z", "logits", "logits_corrected", "gate", "probs", "stored", "logits2")}
        for t in range(T):
            e_pi = self.positions.step_wide(e_prev, actions[:, t], wide)              # (B, E)
            same_world = world[:, t] == state.world                                   # (B,) store readable
            c = {k: torch.stack(v, 1) if v else None for k, v in chunk.items()}        # (B, t, ...) so far
            c_readable = (c["valid"] & (c["world"] == world[:, t, None])) if t else \
                torch.zeros(B, 0, dtype=torch.bool, device=x.device)
            c_z = c["z"] if t else mem.z[:, :0]
            c_x = c["x"] if t else mem.x[:, :0]
            keys = [Keys(mem.z, mem.x, mem.valid.unsqueeze(1), rows=same_world.unsqueeze(1)),
                    Keys(c_z, c_x, c_readable.unsqueeze(1))]
            logits, probs = self.attention(zscore(e_pi).unsqueeze(1), keys)
            if x2 is not None:                  # the same weights read the stream-2 stimuli of the same keys
                c_x2 = c["x2"] if t else state.x2[:, :0]
                keys_x2 = torch.cat([state.x2, c_x2], 1)                                # (B, M + t)
                out["logits2"].append(self.stream_2(probs, keys_x2).squeeze(1))
            e_t = e_pi
            mem_readable = mem.valid & same_world.unsqueeze(1)                         # (B, M)
            if self.landmark is not None:
                groups = [LandmarkKeys(mem.e, mem_zn, mem.x, mem_readable),
                          LandmarkKeys(c["e"] if t else mem.e[:, :0], c["zn"] if t else mem_zn[:, :0], c_x,
                                       c_readable)]
                e_t, gate, _ = self.landmark(e_pi, x[:, t], groups)
                logits_c, _ = self.attention(zscore(e_t).unsqueeze(1), keys)
                out["logits_corrected"].append(logits_c.squeeze(1))
                out["gate"].append(gate)
            z_t = zscore(e_t)
            zn_t = F.normalize(z_t, dim=-1)
            stored = torch.ones(B, dtype=torch.bool, device=x.device)
            if self.config.dedup_threshold is not None:
                with torch.no_grad():
                    cos = torch.cat([(mem_zn @ zn_t.unsqueeze(-1)).squeeze(-1),
                                     (c["zn"] @ zn_t.unsqueeze(-1)).squeeze(-1) if t else mem.x[:, :0].float()], 1)
                    readable = torch.cat([mem_readable, c_readable], 1)
                    repeat = (cos > self.config.dedup_threshold) & (torch.cat([mem.x, c_x], 1) == x[:, t, None])
                    if x2 is not None:          # a repeat needs both stimuli to match
                        repeat &= keys_x2 == x2[:, t, None]
                    stored = ~(repeat & readable).any(-1)
            for k, v in (("e", e_t), ("z", z_t), ("zn", zn_t), ("x", x[:, t]), ("world", world[:, t]),
                         ("valid", stored)):
                chunk[k].append(v)
            if x2 is not None:
                chunk["x2"].append(x2[:, t])
            for name, value in (("e", e_t), ("e_pi", e_pi), ("z", z_t), ("logits", logits.squeeze(1)),
                                ("stored", stored)):
                out[name].append(value)
            if return_memory_neurons:   # pad to the final key count M + T: keys added later have weight 0
                out["probs"].append(F.pad(probs.squeeze(1), (0, T - t)))
            e_prev = e_t
        run = {k: torch.stack(v, 1) for k, v in out.items() if v}
        if return_memory_neurons:
            run["ids"] = self._key_ids(state, actions, run["stored"])
        return run

    # -- pieces shared by both paths -------------------------------------------------------------------------

    def _not_duplicate(self, z, x, world, mem, x2=None, mem_x2=None):
        if self.config.dedup_threshold is None:
            return torch.ones(x.shape, dtype=torch.bool, device=x.device)
        if x2 is not None:     # a repeat needs both stimuli to match: compare joint ids x * n_x2 + x2
            n2 = self.config.n_stimuli_2
            x, mem = x * n2 + x2, replace(mem, x=mem.x * n2 + mem_x2)
        return ~find_duplicates(z, x, world, mem, self.config.dedup_threshold, fixed_rounds=self.config.capturable)

    def _key_ids(self, state, actions, stored):
        chunk_slots, _ = slot_ids(stored, actions == RESET, state.count)
        return torch.cat([state.memory.slot, chunk_slots], 1)

    def _losses(self, x, run, loss_mask, x2=None):
        c = self.config
        weights = torch.ones(x.shape, dtype=run["e"].dtype, device=x.device) if loss_mask is None \
            else loss_mask.to(run["e"].dtype)
        denom = weights.sum().clamp(min=1.0)

        def masked_ce(logits, target):
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(weights)
            return (ce * weights).sum() / denom

        parts = {"x_pi": masked_ce(run["logits"], x),
                 "reg_e": energy_penalty(run["e"], c.energy, c.energy_budget),
                 "reg_w": self.positions.updates().square().sum()}
        if c.w_nonneg:
            parts["nonneg"] = torch.relu(-run["e"]).square().sum(-1).mean()
        if self.landmark is not None:
            parts["x_corr"] = masked_ce(run["logits_corrected"], x)
            parts["g"] = (run["e_pi"] - run["e"]).square().sum(-1).mean()
        if x2 is not None:                      # last: a one-stream loss sums its terms in the same order as before
            parts["x2_pi"] = masked_ce(run["logits2"], x2)
        loss = sum(getattr(c, f"w_{name}") * value for name, value in parts.items())
        return loss, parts

    def _next_state(self, x, actions, state, world, e, z, stored, x2=None) -> TEMtState:
        """Append this chunk's stored memories (detached); each slot keeps only its current world's."""
        slots, count = slot_ids(stored, actions == RESET, state.count)
        kept_e = e.detach() if self.landmark is not None else e.new_zeros(*e.shape[:2], 0)
        chunk = MemoryStore(z=z.detach(), e=kept_e, x=x, world=world, slot=slots, valid=stored)
        if self.config.capturable:
            memory = state.memory.append_fixed(chunk, world[:, -1])
        else:
            memory = state.memory.append(chunk, world[:, -1], self.config.max_memories)
        kept_x2 = None
        if x2 is not None:
            # The stream-2 ids ride through the same append as the ids of a store without positions: append's
            # packing depends only on `valid`, `world` and the layout's width, so each id lands in its memory's column.
            ids_only = lambda m, ids: MemoryStore(z=m.z[:, :, :0], e=m.e[:, :, :0], x=ids, world=m.world,
                                                  slot=m.slot, valid=m.valid)
            kept_x2 = ids_only(state.memory, state.x2).append(ids_only(chunk, x2), world[:, -1],
                                                              self.config.max_memories).x      # (B, M')
        return TEMtState(e=e[:, -1].detach(), memory=memory, world=world[:, -1], count=count, x2=kept_x2)

    def _check_inputs(self, x, actions, state, loss_mask, x2=None):
        c = self.config
        check = assert_index_on_device if c.capturable else check_index_tensor
        check("x", x, ndim=2, low=0, high=c.n_stimuli - 1, meaning="a stimulus id in [0, n_stimuli)")
        check_shape("actions", actions, tuple(x.shape))
        check("actions", actions, ndim=2, low=RESET, high=c.n_actions - 1,
              meaning="an action id in [0, n_actions) or RESET (-1)")
        B, T = x.shape
        if T == 0:
            raise ValueError("x and actions must have at least one step (got T = 0)")
        if loss_mask is not None:
            check_shape("loss_mask", loss_mask, (B, T))
            ok = lambda m: ((m >= 0) & torch.isfinite(m)).all()
            if loss_mask.dtype != torch.bool and c.capturable:
                torch._assert_async(ok(loss_mask), "loss_mask must hold finite weights >= 0 (a bool mask, or 0/1)")
            elif loss_mask.dtype != torch.bool and not bool(ok(loss_mask)):
                bad = ~((loss_mask >= 0) & torch.isfinite(loss_mask))
                where = tuple(bad.nonzero()[0].tolist())
                raise ValueError(f"loss_mask must hold finite weights >= 0 (a bool mask, or 0/1): "
                                 f"loss_mask[{where[0]}, {where[1]}] = {loss_mask[where].item()}")
        if state is not None:
            if not isinstance(state, TEMtState):
                raise TypeError(f"state must be a TEMtState (the .state of a previous output), got "
                                f"{type(state).__name__}")
            check_shape("state.e", state.e, (B, c.pos_dim))
            if c.capturable and state.memory.size != c.max_memories:
                raise ValueError(f"state.memory is {state.memory.size} wide, but a capturable model keeps exactly "
                                 f"max_memories = {c.max_memories}: the state comes from a model with other settings")
        self._check_second_stream(x2, state, B, T)
        return B, T

    def _check_second_stream(self, x2, state, B, T):
        """x2 is given iff the model has a second stream, and a carried state has the stream-2 memories iff so."""
        n2 = self.config.n_stimuli_2
        if not n2:
            if x2 is not None:
                raise ValueError("x2 was given, but this model has one stimulus stream (n_stimuli_2 = 0): build it "
                                 "with TEMtConfig(n_stimuli_2=...) to predict a second stream")
            if state is not None and state.x2 is not None:
                raise ValueError("state.x2 holds second-stream memories, but this model has n_stimuli_2 = 0: the "
                                 "state comes from a two-stream model")
            return
        if x2 is None:
            raise ValueError(f"x2 is required: this model has a second stimulus stream (n_stimuli_2 = {n2}); pass "
                             f"x2, (B, T) stimulus ids in [0, {n2})")
        check_shape("x2", x2, (B, T))
        check_index_tensor("x2", x2, ndim=2, low=0, high=n2 - 1, meaning="a stream-2 stimulus id in [0, n_stimuli_2)")
        if state is not None:
            if state.x2 is None:
                raise ValueError("state.x2 is None: the state comes from a one-stream model (or was saved without "
                                 f"its stream-2 memories), but this model has n_stimuli_2 = {n2}")
            check_shape("state.x2", state.x2, tuple(state.memory.x.shape))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
