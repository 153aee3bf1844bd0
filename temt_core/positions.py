"""Action-driven recurrent position encodings: e_t = sigma(e_{t-1} W_{a_t}).

This is TEM's path integration (g_{t+1} = sigma(g_t W_a), claim C5) and TEM-t's recurrent
position encoding: one code path serves both.

Two ways to feed it:
    time mode  actions (B, T) -> e (B, T, E)      actions[b, t] is the move that *arrives* at step t;
                                                  RESET (-1) starts a new world: e_t = e_init
    tree mode  parents (B, N), actions (B, N)    each node from its parent, level by level
               -> e (B, N, E)                     (roots, parent -1, get e_init)

Three ways to run the time recurrence, equal to float tolerance (tests/core/test_positions.py):
    loop   the definition, written plainly: gather W[a] per sample, one bmm per step, autograd
    fused  the same recurrence with the autograd bookkeeping removed: a custom autograd.Function,
           forward and a hand-written backward loop, each step's products with the transitions as
           transition_products.py picks them (all A at once, or the slots grouped by action)
    scan   linear sigma without a bound only: a parallel (Hillis-Steele) prefix product of affine maps,
           log2(T) sequential rounds of O(E^3) work. Worth it where launches, not flops, dominate (GPU).
'auto' picks scan for an unbounded linear recurrence on a GPU and fused everywhere else.

Transitions W_a = I + U_a (TEM: "use the inferred code as a difference", zero-initialised so every action
starts as a no-op); the stay action, if any, is exactly the identity. U_a is either a free matrix per action
('matrix') or TEM's small MLP of the one-hot action ('mlp', tanh hidden layer, zero-initialised output).
Stability: TEM clamps g to [-1, 1] after every step; `bound` does the same (None disables it). Without a
bound, or an L2 penalty on e plus clamping, free recurrences blow up (|e| ~ 1e13 was seen); see docs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transition_products import TransitionProducts
from .validation import assert_index_on_device, check_index_tensor, check_shape, raise_if_not_finite

RESET = -1  # action id that starts a new world (time mode)

# name -> (activation, derivative as a function of the pre-activation h)
_ACTIVATIONS = {
    "linear": (lambda h: h, lambda h: torch.ones_like(h)),
    "relu": (torch.relu, lambda h: (h > 0).to(h.dtype)),
    "leaky_relu": (lambda h: F.leaky_relu(h, 0.01), lambda h: torch.ones_like(h).masked_fill(h <= 0, 0.01)),
    "tanh": (torch.tanh, lambda h: 1 - torch.tanh(h) ** 2),
    "sigmoid": (torch.sigmoid, lambda h: torch.sigmoid(h) * (1 - torch.sigmoid(h))),
}
ACTIVATIONS = tuple(_ACTIVATIONS)
METHODS = ("auto", "loop", "fused", "scan")
TRANSITIONS = ("matrix", "mlp", "orthogonal")


def _activate(h: torch.Tensor, activation: str, bound: float | None) -> torch.Tensor:
    y = _ACTIVATIONS[activation][0](h)
    return y if bound is None else y.clamp(-bound, bound)


def _activate_into(h: torch.Tensor, out: torch.Tensor, activation: str, bound: float | None) -> None:
    """out = _activate(h), written in place, in one kernel for the common cases."""
    if activation == "relu":
        torch.clamp(h, min=0.0, max=bound, out=out)
    elif activation == "linear":
        if bound is None:
            out.copy_(h)
        else:
            torch.clamp(h, min=-bound, max=bound, out=out)
    else:
        out.copy_(_ACTIVATIONS[activation][0](h))
        if bound is not None:
            out.clamp_(-bound, bound)


def _activation_grad(h: torch.Tensor, activation: str, bound: float | None) -> torch.Tensor:
    """d sigma(h) / dh, elementwise, matching autograd's conventions (clamp passes the gradient at the bound)."""
    act, dact = _ACTIVATIONS[activation]
    d = dact(h)
    if bound is not None:
        y = act(h)
        d = d * ((y >= -bound) & (y <= bound)).to(h.dtype)
    return d


class ModuleNorm:
    """Bounded activity without a clamp: after sigma, each module's activity vector is rescaled to a fixed norm,
        y = r * a / ||a||   per block of E / n_modules units,   a = sigma(h)
    (issue 8: hard non-negativity with bounded activity; with ReLU the code stays non-negative and every module
    keeps the same total activity, so no unit can grow without the others shrinking). A module whose activity is
    all zero stays zero. The Jacobian is r / ||a|| (I - y y^T / r^2) per module; `backward` applies it.
    """

    def __init__(self, norm: float, n_modules: int):
        if not norm > 0:
            raise ValueError(f"module_norm must be positive or None, got {norm}")
        self.norm, self.n_modules = float(norm), n_modules

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_modules, -1))                       # (..., n_modules, E / n_modules)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """Out of place (autograd differentiates it): r * a / ||a|| per module."""
        blocks = self._blocks(a)
        n = torch.linalg.vector_norm(blocks, dim=-1, keepdim=True).clamp(min=1e-12)
        return (blocks * (self.norm / n)).flatten(-2)

    def factors(self, h: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
        """For `backward`, all steps at once from the pre-activations: the unit direction a / ||a|| per module and
        r / ||a||, shapes (..., n_modules, E / n_modules) and (..., n_modules, 1)."""
        blocks = self._blocks(_ACTIVATIONS[activation][0](h))
        n = torch.linalg.vector_norm(blocks, dim=-1, keepdim=True).clamp(min=1e-12)
        return blocks / n, self.norm / n

    def backward(self, dy: torch.Tensor, unit: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Gradient on a given the gradient dy on y (..., E) and one step's `factors`."""
        d = self._blocks(dy)
        return (scale * (d - unit * (unit * d).sum(-1, keepdim=True))).flatten(-2)

    def __repr__(self) -> str:
        return f"ModuleNorm(norm={self.norm}, n_modules={self.n_modules})"


class _FusedRecurrence(torch.autograd.Function):
    """The recurrence with a hand-written backward: no autograd graph of T x (gather, matmul, sigma) nodes.

    Forward keeps the pre-activations h (B, T, E) and outputs y (B, T, E); backward runs the loop in reverse:
        dh_t = (dy_t + de_t) * sigma'(h_t)        (zero on RESET steps: their output is e_init)
        de_{t-1} = dh_t W_{a_t}^T                 (per step, as transition_products.TransitionProducts picks)
        dW_a = sum_{b,t: a_bt = a} y_{t-1}^T dh_t (all steps at once, after the loop)
    """

    @staticmethod
    def forward(ctx, e0, W, e_init, actions, activation, bound, norm=None, capturable=False, products="auto"):
        # Time-major inside (T, B, E): every per-step slice is contiguous, which makes the products and the stores
        # several times cheaper than strided (B, T, E) slices.
        B, T = actions.shape
        A, E, _ = W.shape
        tp = TransitionProducts(actions, A, 1, E, products, capturable)            # e_b W_{a_bt}, per step
        forward_weights = tp.weights(W)
        reset = (actions == RESET).t()                                    # (T, B)
        # which steps have a RESET: one host read, not T (capturable: none, and every step applies the reset)
        reset_steps = [True] * T if capturable else reset.any(1).tolist()
        h_all = e0.new_empty(T, B, E)
        y_all = e0.new_empty(T, B, E)
        e = e0
        for t in range(T):
            tp(e, t, forward_weights, out=h_all[t])                       # written straight into its slot
            _activate_into(h_all[t], y_all[t], activation, bound)
            if norm is not None:
                y_all[t] = norm(y_all[t])
            if reset_steps[t]:
                y_all[t] = torch.where(reset[t, :, None], e_init, y_all[t])
            e = y_all[t]
        ctx.save_for_backward(e0, W, e_init, actions, h_all, y_all)
        ctx.activation, ctx.bound, ctx.norm, ctx.capturable, ctx.tp = activation, bound, norm, capturable, tp
        return y_all.transpose(0, 1)                                      # (B, T, E) view

    @staticmethod
    def backward(ctx, grad_y):
        e0, W, e_init, actions, h_all, y_all = ctx.saved_tensors
        T, B, E = h_all.shape
        A = W.shape[0]
        reset = (actions == RESET).t()                                    # (T, B)
        reset_steps = [True] * T if ctx.capturable else reset.any(1).tolist()
        tp = ctx.tp
        backward_weights = tp.weights(W.transpose(1, 2))                  # d_b W_{a_bt}^T
        dsig = _activation_grad(h_all, ctx.activation, ctx.bound)         # (T, B, E), all steps at once
        dsig = dsig.masked_fill(reset.unsqueeze(-1), 0.0)
        norm = ctx.norm
        if norm is not None:
            unit, scale = norm.factors(h_all, ctx.activation)
        grad_y = grad_y.transpose(0, 1).contiguous()                      # (T, B, E)
        dh_all = torch.empty_like(h_all)
        d_init = torch.zeros_like(e_init)
        de = torch.zeros_like(e0)
        for t in range(T - 1, -1, -1):
            de = de + grad_y[t]                                           # total gradient on y_t
            if reset_steps[t]:
                d_init = d_init + (de * reset[t, :, None]).sum(0)
            torch.mul(de if norm is None else norm.backward(de, unit[t], scale[t]), dsig[t], out=dh_all[t])
            de = tp(dh_all[t], t, backward_weights)                       # gradient on y_{t-1}
        dW = transition_grad(e0, y_all, dh_all, actions, A, ctx.capturable) if ctx.needs_input_grad[1] else None
        return de, dW, d_init, None, None, None, None, None, None


def transition_grad(e0: torch.Tensor, y_all: torch.Tensor, dh_all: torch.Tensor, actions: torch.Tensor,
                    n_actions: int, fixed_shapes: bool = False) -> torch.Tensor:
    """dW_a = sum over the steps that took action a of y_{t-1}^T dh_t, for a recurrence h_t = y_{t-1} W_{a_t}.

    e0 (B, E) position before the chunk, y_all (T, B, E) positions, dh_all (T, B, E) gradients on h, actions (B, T).
    Samples are sorted by action and each action gets one matmul (4x cheaper than a one-hot (A*E, N) product).
    RESET rows must have dh = 0 (their output is e_init), so their action id is moot.
    fixed_shapes: no shape depends on the actions and nothing is read back to the host (TEMtConfig.capturable):
    one (A*E, N) x (N, E) product of the one-hot-expanded positions, A times the arithmetic of the sorted split.
    """
    T, B, E = y_all.shape
    prev = torch.cat([e0.unsqueeze(0), y_all[:-1]], 0).reshape(T * B, E)
    flat = actions.t().clamp(min=0).reshape(-1)
    if fixed_shapes:
        onehot = F.one_hot(flat, n_actions).to(prev.dtype)                               # (N, A)
        wide_prev = (onehot.unsqueeze(-1) * prev.unsqueeze(1)).reshape(T * B, n_actions * E)
        return wide_prev.t().mm(dh_all.reshape(T * B, E)).view(n_actions, E, E)
    order = torch.argsort(flat)
    counts = torch.bincount(flat, minlength=n_actions).tolist()
    prev_sorted = prev[order].split(counts)
    dh_sorted = dh_all.reshape(T * B, E)[order].split(counts)
    return torch.stack([p.t().mm(d) for p, d in zip(prev_sorted, dh_sorted)])


def _scan_linear(e0: torch.Tensor, W: torch.Tensor, e_init: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Unbounded linear recurrence as a prefix composition of affine maps e -> e M_t + c_t.

    A move is (W_a, 0); RESET is (0, e_init). Hillis-Steele: after the round with shift s, entry t holds the
    composition of steps max(0, t-2s+1)..t. log2(T) rounds, each one batched matmul over (B, T, E, E).
    """
    B, T = actions.shape
    E = W.shape[-1]
    reset = (actions == RESET).unsqueeze(-1)
    M = W[actions.clamp(min=0)]                                           # (B, T, E, E)
    M = M.masked_fill(reset.unsqueeze(-1), 0.0)
    c = torch.where(reset, e_init.expand(B, T, E), torch.zeros_like(e_init).expand(B, T, E))  # (B, T, E)
    shift = 1
    while shift < T:
        # compose (M, c)[t - shift] then (M, c)[t]:  e -> (e M' + c') M + c
        M_prev, c_prev = M[:, :-shift], c[:, :-shift]
        M_tail, c_tail = M[:, shift:], c[:, shift:]
        M = torch.cat([M[:, :shift], M_prev @ M_tail], 1)
        c = torch.cat([c[:, :shift], (c_prev.unsqueeze(2) @ M_tail).squeeze(2) + c_tail], 1)
        shift *= 2
    return (e0[:, None, None, :] @ M).squeeze(2) + c


class RecurrentPositions(nn.Module):
    """e_t = clamp(sigma(e_{t-1} W_{a_t}), -bound, bound), W_a = I + U_a.

    Args:
        n_actions: number of actions A (ids 0..A-1; RESET = -1 is not one of them).
        dim: E, the number of position units.
        activation: sigma, one of ACTIVATIONS. The paper found grid cells with 'linear' and 'relu'.
        bound: clamp after sigma (TEM clamps g to [-1, 1]); None for none. The scan path needs None.
        transition: 'matrix' (a free U_a per action), 'mlp' (TEM: U_a = MLP(one_hot(a)), tanh hidden) or
            'orthogonal' (W_a = Cayley(S_a) = (I - S_a)^-1 (I + S_a), S_a skew-symmetric: rotations; spec L8, a
            strong prior; the spec's example is exp(S_a), the Cayley map is the cheaper exactly-orthogonal map)
        module_norm: instead of the clamp (bound=None), rescale each module's activity to this L2 norm after sigma
            (ModuleNorm: bounded, and non-negative with ReLU); None: off.
        inverse_actions: pairs (a, b) of opposite moves; with 'orthogonal', W_b = W_a^T = W_a^-1 exactly
            (a path and its reverse cancel). Ignored by the other transitions.
        stay_action: the action whose transition is exactly the identity (TEM's 'stand still'), or None.
        n_modules: >1 makes U_a block-diagonal (TEM's frequency modules; spec L6).
        init_std: std of the initial U_a entries times sqrt(E) (0 = TEM's zero init: every move a no-op).
        mlp_hidden: hidden width of the 'mlp' transition (TEM's d_hidden_dim is 20).
        method: default execution path for time mode, one of METHODS.
        check_finite: raise a clear error, naming batch and step, when e stops being finite.
        capturable: no host reads and no data-dependent shapes in forward and backward (TEMtConfig.capturable):
            actions are range-checked on the device (torch._assert_async), resets are applied at every step,
            and the finiteness check is left to the caller (it reads a value back).
    """

    def __init__(self, n_actions: int, dim: int, activation: str = "relu", bound: float | None = 1.0,
                 transition: str = "matrix", stay_action: int | None = None, n_modules: int = 1,
                 init_std: float = 0.0, mlp_hidden: int = 20, method: str = "auto", check_finite: bool = True,
                 inverse_actions: tuple = (), module_norm: float | None = None, capturable: bool = False):
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if bound is not None and not bound > 0:
            raise ValueError(f"bound must be positive or None, got {bound}")
        if stay_action is not None and not 0 <= stay_action < n_actions:
            raise ValueError(f"stay_action must be in [0, {n_actions}) or None, got {stay_action}")
        if n_modules < 1 or dim % n_modules:
            raise ValueError(f"n_modules must divide dim={dim}, got {n_modules}")
        if module_norm is not None and bound is not None:
            raise ValueError(f"module_norm bounds the activity in place of the clamp: set bound=None "
                             f"(got bound={bound})")
        self.norm = None if module_norm is None else ModuleNorm(module_norm, n_modules)
        self.n_actions, self.dim = n_actions, dim
        self.activation, self.bound, self.transition, self.method = activation, bound, transition, method
        self.stay_action, self.n_modules, self.check_finite = stay_action, n_modules, check_finite
        self.capturable = capturable
        self.products = "auto"          # how the fused path multiplies by the transitions (transition_products.py)

        # Start position of every new world (TEM's g_init). Non-negative activations get |N(0, 0.5)| so that
        # the first step does not kill half of the units.
        e_init = 0.5 * torch.randn(dim)
        if activation in ("relu", "sigmoid"):
            e_init = e_init.abs()
        if bound is not None:
            e_init = e_init.clamp(-bound, bound)
        if self.norm is not None:                    # start on the sphere the steps keep the code on
            e_init = self.norm(e_init)
        self.e_init = nn.Parameter(e_init)

        for a, b in inverse_actions:
            if not (0 <= a < n_actions and 0 <= b < n_actions) or a == b:
                raise ValueError(f"inverse_actions: ({a}, {b}) is not a pair of distinct action ids in "
                                 f"[0, {n_actions})")
        self.inverse_actions = tuple(tuple(p) for p in inverse_actions)
        self.rebuild_buffers()
        if transition in ("matrix", "orthogonal"):
            self.U = nn.Parameter(init_std / math.sqrt(dim) * torch.randn(n_actions, dim, dim))
        else:  # TEM's transition MLP; zero output layer = identity transitions at init
            self.mlp_in = nn.Linear(n_actions, mlp_hidden)
            self.mlp_out = nn.Linear(mlp_hidden, dim * dim, bias=False)
            nn.init.xavier_normal_(self.mlp_in.weight)
            nn.init.zeros_(self.mlp_in.bias)
            nn.init.normal_(self.mlp_out.weight, std=init_std / math.sqrt(dim))

    def rebuild_buffers(self, device=None) -> None:
        """(Re)create the derived, unsaved buffers from the settings: which entries of U may be non-zero (no update
        for the stay action, block-diagonal for modules) and, for 'orthogonal', which generator each action uses.
        Call it after building the module on the meta device (Hugging Face's from_pretrained does)."""
        A, E = self.n_actions, self.dim
        mask = torch.ones(A, E, E, device=device)
        if self.stay_action is not None:
            mask[self.stay_action] = 0.0
        if self.n_modules > 1:
            block = E // self.n_modules
            mask = mask * torch.block_diag(*[torch.ones(block, block, device=device)] * self.n_modules)
        sign, source = torch.ones(A, device=device), torch.arange(A, device=device)
        for a, b in self.inverse_actions:      # the second action of a pair uses minus the first one's generator
            sign[b], source[b] = -1.0, a
        self.register_buffer("update_mask", mask, persistent=False)
        self.register_buffer("generator_sign", sign.view(-1, 1, 1), persistent=False)
        self.register_buffer("generator_source", source, persistent=False)

    def updates(self) -> torch.Tensor:
        """U_a for every action, (A, E, E), with the structural zeros applied."""
        if self.transition == "matrix":
            U = self.U
        elif self.transition == "orthogonal":
            # Cayley map W = (I - S)^-1 (I + S) of a skew-symmetric S: exactly orthogonal, and one linear solve
            # instead of a matrix exponential (10x cheaper with its backward). Cayley(-S) = Cayley(S)^T, so the
            # inverse move of a pair is the transpose: W_b W_a = I exactly.
            G = self.U * self.update_mask
            S = G - G.transpose(1, 2)                                                   # (A, E, E) skew
            eye = torch.eye(self.dim, device=S.device, dtype=S.dtype)
            W = torch.linalg.solve(eye - S, eye + S)
            W = torch.where(self.generator_sign > 0, W[self.generator_source],
                            W[self.generator_source].transpose(1, 2))
            return W - eye
        else:
            onehot = torch.eye(self.n_actions, device=self.e_init.device, dtype=self.e_init.dtype)
            U = self.mlp_out(torch.tanh(self.mlp_in(onehot))).view(self.n_actions, self.dim, self.dim)
        return U * self.update_mask

    def transition_matrices(self) -> torch.Tensor:
        """W_a = I + U_a, (A, E, E). Row-vector convention: e_next = sigma(e W_a)."""
        return self.updates() + torch.eye(self.dim, device=self.e_init.device, dtype=self.e_init.dtype)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        y = _activate(h, self.activation, self.bound)
        return y if self.norm is None else self.norm(y)

    def initial(self, batch: int) -> torch.Tensor:
        """Start positions for a batch of fresh worlds, (B, E)."""
        return self.e_init.expand(batch, self.dim)

    def pick_method(self, device: torch.device, method: str | None = None) -> str:
        method = method or self.method
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "scan" and (self.activation != "linear" or self.bound is not None or self.norm is not None):
            raise ValueError("method='scan' needs activation='linear' and bound=None (a prefix product is only "
                             f"exact for a linear recurrence); this encoder has activation={self.activation!r}, "
                             f"bound={self.bound}. Use method='fused'.")
        if method == "auto":
            linear = self.activation == "linear" and self.bound is None and self.norm is None
            method = "scan" if linear and device.type == "cuda" else "fused"
        return method

    def forward(self, actions: torch.Tensor, e0: torch.Tensor | None = None, method: str | None = None,
                W: torch.Tensor | None = None) -> torch.Tensor:
        """Path-integrate a batch of action sequences.

        actions: (B, T) integer; actions[:, t] is the action that arrives at step t, RESET (-1) for a new world.
        e0:      (B, E) position before step 0 (the last position of the previous chunk); None = e_init.
        method:  'loop' | 'fused' | 'scan' | 'auto' (None = the module default).
        W:       precomputed transition_matrices(), to share one computation between calls.
        returns  e: (B, T, E)
        """
        check = assert_index_on_device if self.capturable else check_index_tensor
        check("actions", actions, ndim=2, low=RESET, high=self.n_actions - 1,
              meaning="an action id in [0, n_actions) or RESET (-1)")
        B, T = actions.shape
        if e0 is None:
            e0 = self.initial(B)
        check_shape("e0", e0, (B, self.dim))
        if T == 0:
            return e0.new_zeros(B, 0, self.dim)
        if W is None:
            W = self.transition_matrices()
        method = self.pick_method(actions.device, method)
        if method == "loop":
            e = self._loop(e0, W, actions)
        elif method == "fused":
            # The recurrence runs in the parameters' precision, outside autocast: its buffers are written in place
            # (autocast would hand it low-precision matmul outputs), and a long product of transitions is where low
            # precision hurts most.
            with torch.autocast(device_type=actions.device.type, enabled=False):
                e = _FusedRecurrence.apply(e0.to(W.dtype), W, self.e_init, actions, self.activation, self.bound,
                                           self.norm, self.capturable, self.products)
        else:
            e = _scan_linear(e0, W, self.e_init, actions)
        if self.check_finite and not self.capturable:
            raise_if_not_finite("positions e", e, hint=self._stability_hint())
        return e

    def step(self, e_prev: torch.Tensor, actions: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """One step for sequential models: e_prev (B, E), actions (B,) -> e (B, E)."""
        W = self.transition_matrices() if W is None else W
        e = self.activate(torch.bmm(e_prev.unsqueeze(1), W[actions.clamp(min=0)]).squeeze(1))
        reset = actions == RESET
        return torch.where(reset.unsqueeze(-1), self.e_init.expand_as(e), e)

    def step_wide(self, e_prev: torch.Tensor, actions: torch.Tensor, wide: torch.Tensor) -> torch.Tensor:
        """`step` with W given as `transition_products.wide_transitions(W)`: one (B, E) x (E, A*E) matmul and a
        gather instead of gathering B matrices of E x E (several times cheaper on a CPU); same result."""
        E = self.dim
        cols = (actions.clamp(min=0) * E).unsqueeze(-1) + torch.arange(E, device=actions.device)
        e = self.activate((e_prev @ wide).gather(1, cols))
        return torch.where((actions == RESET).unsqueeze(-1), self.e_init.expand_as(e), e)

    def _loop(self, e0: torch.Tensor, W: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The definition, one step at a time (the reference the fast paths are tested against)."""
        e, out = e0, []
        for t in range(actions.shape[1]):
            e = self.step(e, actions[:, t], W)
            out.append(e)
        return torch.stack(out, 1)

    def tree(self, parents: torch.Tensor, actions: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """Positions on trees: e_node = sigma(e_parent W_{a_node}); roots (parent -1) get e_init.

        parents: (B, N) integer, index of each node's parent within its own row, -1 for a root.
        actions: (B, N) integer, the action from the parent to the node (ignored for roots).
        Computed level by level (one batched step per depth), not node by node.
        returns  e: (B, N, E)
        """
        if parents.shape != actions.shape:
            raise ValueError(f"parents and actions must have the same shape, got {tuple(parents.shape)} "
                             f"and {tuple(actions.shape)}")
        B, N = parents.shape
        check_index_tensor("parents", parents, ndim=2, low=-1, high=N - 1,
                           meaning="a node index in the same row, or -1 for a root")
        is_root = parents < 0
        check_index_tensor("actions", actions.masked_fill(is_root, 0), ndim=2, low=0, high=self.n_actions - 1,
                           meaning="an action id in [0, n_actions) (roots are ignored)")
        W = self.transition_matrices() if W is None else W
        depth = _tree_depths(parents)                                      # (B, N), raises on cycles
        flat_parent = (parents + torch.arange(B, device=parents.device).unsqueeze(1) * N).reshape(-1)
        flat_action = actions.reshape(-1)
        flat_depth = depth.reshape(-1)
        e = self.e_init.expand(B * N, self.dim)
        for d in range(1, int(flat_depth.max()) + 1 if flat_depth.numel() else 1):
            nodes = (flat_depth == d).nonzero().squeeze(1)
            e_parent = e[flat_parent[nodes]]
            step = self.activate(torch.bmm(e_parent.unsqueeze(1), W[flat_action[nodes]]).squeeze(1))
            e = e.index_put((nodes,), step)                               # out of place: autograd-safe
        e = e.reshape(B, N, self.dim)
        if self.check_finite:
            raise_if_not_finite("tree positions e", e, hint=self._stability_hint())
        return e

    def _stability_hint(self) -> str:
        if self.norm is not None:
            return "the activity is normalised per module, so the weights themselves diverged: lower the learning rate"
        if self.bound is None:
            return ("the recurrence has no bound: set bound (TEM clamps to [-1, 1]) or add the L2 penalty on e "
                    "(reg_e) and lower the learning rate")
        return "check the learning rate and the gradient clipping; e is clamped, so the weights themselves diverged"

    def extra_repr(self) -> str:
        return (f"n_actions={self.n_actions}, dim={self.dim}, activation={self.activation!r}, bound={self.bound}, "
                f"transition={self.transition!r}, stay_action={self.stay_action}, n_modules={self.n_modules}, "
                f"method={self.method!r}" + (f", module_norm={self.norm.norm}" if self.norm is not None else ""))


def _tree_depths(parents: torch.Tensor) -> torch.Tensor:
    """Depth of every node (roots 0) by pointer jumping; raises if a parent chain has a cycle.

    Each round every node adds its ancestor's distance and jumps to that ancestor's ancestor, so
    ceil(log2(depth)) + 1 rounds suffice; a chain that is still open after that many rounds is a cycle.
    """
    N = parents.shape[1]
    ptr = parents.clone()
    dist = (parents >= 0).long()
    for _ in range(max(1, N).bit_length() + 2):
        active = ptr >= 0
        if not bool(active.any()):
            return dist
        safe = ptr.clamp(min=0)
        dist = torch.where(active, dist + dist.gather(1, safe), dist)
        ptr = torch.where(active, ptr.gather(1, safe), ptr)
    row, node = (ptr >= 0).nonzero()[0].tolist()
    raise ValueError(f"parents: the parent chain of node {node} in row {row} has a cycle "
                     "(every chain must end at a root with parent -1)")
