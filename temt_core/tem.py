"""TEM, the Tolman-Eichenbaum Machine (Whittington et al., Cell 2020), in the form of its public PyTorch port
(jbakermans/torch_tem: model.py, parameters.py; noiseless, do_sample=False, no shiny objects).

Notation (row vectors throughout; B batch slots, one world each; n_f = 5 frequency modules):
    x     observation, one of n_x = 45 ids; x_c its two-hot code (n_x_c = 10)
    x_f   x_c temporally filtered per module, x_f <- (1 - alpha_f) x_f + alpha_f x_c        (B, n_f, n_x_c)
    g     abstract location ("grid cells"), 5 modules of 30, 30, 24, 18, 18 = E = 120 units  (B, E)
    g_    the first 10, 10, 8, 6, 6 = R = 40 units of g (the ones that index memory), each repeated n_x_c times
    p     conjunctive memory ("place cells"): p = f_p(g_ * x_), the flattened outer product of the R memory units
          of g with their module's x_f, P = R * n_x_c = 400 units                              (B, P) == (B, R, n_x_c)
    M     Hebbian memories, one (P, P) matrix per slot: M_gen (generative, hierarchical), M_inf (inference)

One step t (the agent arrives by a_t at a node and then sees x_t; port names in brackets):
    gen_g   g_gen = clamp(g_{t-1} W_{a_t}, -1, 1)               path integration from the previous *inferred* g
    inf     x_f from x_t; x_ = sigmoid(w_p) normalise(relu(x_f - mean)) tiled over g_; p_x = attractor(x_, M_inf)
            g_mem = MLP(p_x summed over x); g_inf = precision-weighted mean of g_gen and g_mem      [inf_g]
            p_inf = f_p(g_inf_ * x_)                                                              [inf_p]
    gen     x_p from p_inf; p_gen = attractor(g_inf_, M_gen), x_g from it; attractor(g_gen_, M_gen) -> x_gt
    memory  M_gen <- clamp(lambda M_gen + eta mask * (p_inf + p_gen)^T (p_inf - p_gen), -1, 1)
            M_inf <- clamp(lambda M_inf + eta (p_inf + p_x)^T (p_inf - p_x), -1, 1)
The prediction of x_t made before x_t is seen is x_gt (`TEMOutput.logits`): it reads only g_{t-1}, a_t and the
memories of steps < t. That is the prediction that measures zero-shot inference, as TEM-t's logits do.

Losses (port names; parts are returned unweighted, `loss` is the weighted sum; weights follow `schedule(step)`):
    p_g    0.5 |p_inf - p_gen|^2      p_x   0.5 |p_inf - p_x|^2     g  0.5 |g_inf - g_gen|^2      (weights 1, ramped)
    x_gen  CE(x_gt, x)                x_g   CE(x_g, x)              x_p  CE(x_p, x)                (weights 1)
    reg_g  |g_inf|^2 (weight 0.01)    reg_p |p_inf|_1 (weight 0.02, annealed to 0)

Path integration is temt_core's recurrent position update (claim C5): `TEMPathIntegration` is a RecurrentPositions
whose W_a = I + U_a come from TEM's per-module transition MLPs with hierarchical connectivity, and every step runs
RecurrentPositions.step_wide, the per-step form of TEM-t's recurrence. The fused chunk-at-once path (`forward`)
cannot drive TEM's own loop: there g_gen_t starts from the *inferred* g_{t-1}, which depends on the memory retrieval
from x_{t-1}, not from the previous path-integrated position, so the chunk is a sequential loop with inference in
it. The transition itself depends on the action only (not on g or x), so a pure generative rollout is exactly the
fused recurrence: `TEM.path_integrate` runs it, and tests/core/test_tem.py checks it against the loop.

Speed: the memory dominates the cost (per step, 15 attractor iterations and 2 updates on (B, 400, 400) matrices).
It runs through two autograd Functions with hand-written backward (`fused_attractor`, `fused_hebbian_update`: the
gradient of M in one matmul per retrieval, a bool instead of a float copy saved per update); forward(reference=True)
runs the plain definitions (`attractor`, `hebbian_update`) instead, and the tests check values and gradients equal.
The products are written in the forms CPU BLAS runs fast: the outer products of an update as a broadcast multiply
(not a k=1 bmm), and the backward's matrix-vector products as M x (the transposed view of a contiguous vector)
rather than x M^T (`kappa_plus_back`); the update's clamp mask comes from one comparison (clamped == pre). Measured
with `python benchmarks/tem_speed.py --baseline 6870ce9` (batch 16, chunks of 75, one thread; the commit before
these changes timed in the same run, on a loaded 2-core AMD EPYC): 6.53 -> 4.90 CPU-s per step, losses equal.
What is left is memory traffic over the (B, 400, 400) matrices: about 10 passes over each memory per step.

Deviations from the port, each for a reason:
  - f_n subtracts each slot's own mean of x_f (the port's torch.mean(x) averages over the whole batch as well,
    so one slot's memory input would depend on the other slots' observations).
  - The stay action is exactly the identity (temt's convention, stay_action=0); the port feeds stay as an all-zero
    action vector into the transition MLP, whose learned hidden bias can make it move.
  - The two-hot code of observation i is the i-th pair of itertools.combinations(range(n_x_c), 2); the port lists
    the same 45 pairs in another order (a relabelling of the observation ids, which are random per world anyway).
  - Batched: per-slot resets at world swaps (RESET = -1 in `actions`) instead of Python lists of Iterations, and
    the per-module MLPs run as one block-diagonal MLP (the same numbers, one matmul per layer).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError
from .positions import RESET, RecurrentPositions
from .transition_products import wide_transitions
from .validation import check_index_tensor, check_shape

LOSS_NAMES = ("p_g", "p_x", "x_gen", "x_g", "x_p", "g", "reg_g", "reg_p")     # the port's order
LOSS_REDUCTIONS = ("step_sum", "mean")


# -- configuration ---------------------------------------------------------------------------------------------

@dataclass
class TEMConfig:
    # task
    n_actions: int = 5                  # square grid: stay + 4 moves, as TEM-t (spatial.worlds)
    stay_action: int | None = 0         # this action's transition is exactly the identity (None: no stay action)
    n_stimuli: int = 45                 # n_x one-hot observations (TEM)
    # abstract location g
    g_modules: tuple[int, ...] = (30, 30, 24, 18, 18)     # n_g per frequency module, high frequency first (TEM)
    g_memory: tuple[int, ...] = (10, 10, 8, 6, 6)         # n_g_subsampled: the first units of each module that
                                                          # index memory (TEM: 40 of the 120)
    f_initial: tuple[float, ...] = (0.99, 0.3, 0.09, 0.03, 0.01)   # initial filter rates alpha_f of x per module
                                                          # (TEM); also orders the modules for the hierarchy
    g_bound: float = 1.0                # g clamped to [-g_bound, g_bound] after every transition (TEM: f_g_clamp)
    g_init_std: float = 0.5             # g_init and log sigma_g_init ~ truncated N(0, 0.5^2) at +-2 sd (TEM)
    g_mem_std: float = 0.1              # init sd of the last layer of the p -> g MLP (TEM's g_mem_std)
    transition_hidden: int = 20         # hidden units of each module's transition MLP (TEM's d_hidden_dim)
    transition_init_std: float = 0.0    # sd * sqrt(E) of the transition MLPs' output weights; 0 = TEM's zero init
                                        # (every move starts as the identity)
    hierarchical: bool = True           # lower-frequency modules feed higher ones in transitions and memory (TEM)
    # sensory code x
    n_x_c: int = 10                     # two-hot compressed x (TEM); needs n_x_c choose 2 >= n_stimuli
    c_star_hidden: int = 200            # hidden units of the x_c -> x decoder (TEM: 20 * n_x_c)
    leaky_slope: float = 0.01           # f_p = leaky_relu(clamp(., -1, 1)), torch's default slope (TEM)
    # Hebbian memory
    lambda_: float = 0.9999             # decay of M per step (TEM)
    eta: float = 0.5                    # Hebbian rate (TEM)
    kappa: float = 0.8                  # attractor: h <- f_p(kappa h + h M) (TEM)
    attractor_iterations: int = 5       # TEM: one per module; generative retrieval stops module f after 5 - f
    lambda_ramp_steps: int = 200        # lambda = min((step + 1) / 200, 1) * 0.9999 (TEM)
    eta_ramp_steps: int = 16_000        # eta = min((step + 1) / 16000, 1) * 0.5 (TEM)
    # loss weights and their schedules (step = gradient step)
    w_x: float = 1.0                    # x_gen, x_g, x_p (TEM)
    w_p: float = 1.0                    # p_g, p_x (TEM), ramped over p_g_ramp_steps
    w_g: float = 1.0                    # g (TEM), ramped over p_g_ramp_steps
    w_reg_g: float = 0.01               # L2 on g_inf (TEM), annealed over reg_g_anneal_steps
    w_reg_p: float = 0.02               # L1 on p_inf (TEM), annealed over reg_p_anneal_steps
    p_g_ramp_steps: int = 2000          # TEM: p and g losses reach full weight after 2000 steps
    reg_g_anneal_steps: int = 40_000_000    # TEM: effectively constant
    reg_p_anneal_steps: int = 4000      # TEM: L1 on p gone after 4000 steps
    p2g_sigma_offset: float = 10_000.0  # early in training sigma_g_mem += offset(step) * this, so g ignores the
    p2g_half_step: float = 400.0        #   memory until the memory is useful: offset = 1 / (1 + exp((step - 400)
    p2g_scale_steps: float = 200.0      #   / 200)) (TEM); L_p_x is weighted by 1 - offset
    loss_reduction: str = "step_sum"    # 'step_sum': per step the mean over loss-mask slots, summed over steps
                                        # (TEM's run.py); 'mean': mean over all loss-mask (slot, step) pairs

    def __post_init__(self):
        problems = [p for p in self._problems() if p]
        if problems:
            raise ConfigError("invalid TEMConfig: " + "; ".join(problems))

    def _problems(self):
        n_f = len(self.g_modules)
        yield "" if n_f >= 1 else "g_modules must list at least one module size"
        for name in ("n_actions", "n_stimuli", "transition_hidden", "c_star_hidden", "attractor_iterations",
                     "lambda_ramp_steps", "eta_ramp_steps", "p_g_ramp_steps", "reg_g_anneal_steps",
                     "reg_p_anneal_steps"):
            if getattr(self, name) < 1:
                yield f"{name} must be >= 1 (got {getattr(self, name)})"
        for name in ("g_memory", "f_initial"):
            if len(getattr(self, name)) != n_f:
                yield f"{name} must have one entry per module ({n_f}, as g_modules) (got {getattr(self, name)})"
        for f, (n_g, n_mem) in enumerate(zip(self.g_modules, self.g_memory)):
            if not 1 <= n_mem <= n_g:
                yield f"g_memory[{f}] = {n_mem} must be in [1, g_modules[{f}] = {n_g}]"
        for f, rate in enumerate(self.f_initial):
            if not 0 < rate < 1:
                yield f"f_initial[{f}] = {rate} must be in (0, 1) (a filter rate, learned through its logit)"
        if self.n_x_c < 2 or math.comb(self.n_x_c, 2) < self.n_stimuli:
            yield (f"n_x_c = {self.n_x_c} gives {math.comb(max(self.n_x_c, 0), 2)} two-hot codes, fewer than "
                   f"n_stimuli = {self.n_stimuli}")
        if self.stay_action is not None and not 0 <= self.stay_action < self.n_actions:
            yield f"stay_action must be in [0, n_actions={self.n_actions}) or None (got {self.stay_action})"
        if not 0 < self.lambda_ <= 1:
            yield f"lambda_ must be in (0, 1] (got {self.lambda_})"
        if not 0 <= self.leaky_slope < 1:
            yield f"leaky_slope must be in [0, 1) (got {self.leaky_slope})"
        if not 0 < self.g_bound < math.inf:
            yield f"g_bound must be a finite number > 0 (got {self.g_bound})"
        if self.loss_reduction not in LOSS_REDUCTIONS:
            yield f"loss_reduction must be one of {LOSS_REDUCTIONS} (got {self.loss_reduction!r})"
        finite = ("eta", "kappa", "g_init_std", "g_mem_std", "transition_init_std", "p2g_sigma_offset",
                  "p2g_half_step")
        for f in fields(self):                  # `not 0 <= v < inf` also catches NaN
            if (f.name.startswith("w_") or f.name in finite) and not 0 <= getattr(self, f.name) < math.inf:
                yield f"{f.name} must be a finite number >= 0 (got {getattr(self, f.name)})"
        if not 0 < self.p2g_scale_steps < math.inf:
            yield f"p2g_scale_steps must be a finite number > 0 (got {self.p2g_scale_steps})"


@dataclass(frozen=True)
class Schedule:
    """TEM's per-step settings (the port's parameter_iteration); weights are keyed by LOSS_NAMES."""
    eta: float
    lambda_: float
    p2g_offset: float
    weights: dict


def schedule(step: int, c: TEMConfig) -> Schedule:
    """Hebbian rates and loss weights at gradient step `step` (0-based), exactly as the port computes them."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0 (the gradient step), got {step!r}")
    ramp = lambda n: min((step + 1) / n, 1.0)                          # noqa: E731 (0 -> 1 over n steps)
    offset = 1.0 / (1.0 + math.exp(min((step - c.p2g_half_step) / c.p2g_scale_steps, 700.0)))
    w_pg = ramp(c.p_g_ramp_steps)
    weights = {"p_g": w_pg * c.w_p, "p_x": w_pg * c.w_p * (1 - offset), "x_gen": c.w_x, "x_g": c.w_x,
               "x_p": c.w_x, "g": w_pg * c.w_g, "reg_g": (1 - ramp(c.reg_g_anneal_steps)) * c.w_reg_g,
               "reg_p": (1 - ramp(c.reg_p_anneal_steps)) * c.w_reg_p}
    return Schedule(eta=ramp(c.eta_ramp_steps) * c.eta, lambda_=ramp(c.lambda_ramp_steps) * c.lambda_,
                    p2g_offset=offset, weights=weights)


# -- the memory: temt_core.hebbian's rules, with TEM's hierarchical masks --------------------------------------

def f_p(h: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    """TEM's activation of p: leaky_relu(clamp(h, -1, 1)) (sparse, bounded)."""
    return F.leaky_relu(h.clamp(-1.0, 1.0), slope)


def hebbian_update(M: torch.Tensor, p: torch.Tensor, p_hat: torch.Tensor, decay: float, rate: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """M <- clamp(decay M + rate mask * (p + p_hat)^T (p - p_hat), -1, 1); M (B, P, P), p and p_hat (B, P).

    HebbianMemory.store (temt_core/hebbian.py) with TEM's connection mask: entry (i, j) connects unit i to unit j
    (retrieval is h M), and mask (P, P) keeps only connections from lower- to higher-frequency modules."""
    update = (p + p_hat).unsqueeze(2) * (p - p_hat).unsqueeze(1)                 # (B, P, P) outer products
    if mask is not None:
        update = update * mask
    return (decay * M + rate * update).clamp(-1.0, 1.0)


def attractor(query: torch.Tensor, M: torch.Tensor, kappa: float, iterations: int,
              unit_iterations: torch.Tensor | None = None, slope: float = 0.01) -> torch.Tensor:
    """Pattern completion: h = f_p(query), then `iterations` times h <- f_p(kappa h + h M).

    HebbianMemory.retrieve with f = f_p applied to the query first, as TEM does. unit_iterations (P,) stops unit
    k after that many iterations (TEM's hierarchical retrieval: low-frequency modules settle first); None: all.
    query (B, P), M (B, P, P) -> (B, P)."""
    h = f_p(query, slope)
    for it in range(iterations):
        new = f_p(kappa * h + torch.bmm(h.unsqueeze(1), M).squeeze(1), slope)
        h = new if unit_iterations is None else torch.where(unit_iterations > it, new, h)
    return h


def kappa_plus_back(dpre: torch.Tensor, M: torch.Tensor, kappa: float) -> torch.Tensor:
    """kappa dpre + dpre M^T for dpre (B, K, P), M (B, P, P), computed as (M dpre^T)^T: a matrix-vector product
    with the row-major M on the left and the transposed view of a contiguous dpre on the right, the form CPU BLAS
    runs about 3x faster than dpre @ M^T (same sums, in another order)."""
    back = torch.bmm(M, dpre.contiguous().transpose(1, 2)).transpose(1, 2)            # (B, K, P)
    return back.add(dpre, alpha=kappa)


class _FusedAttractor(torch.autograd.Function):
    """`attractor` after its f_p(query), for K queries per slot that share one memory, with a hand-written
    backward: autograd would write one (B, P, P) gradient of M per iteration and add them up; here
        dpre_i = dh_i * f_p'(pre_i),   dh_{i-1} = kappa dpre_i + dpre_i M^T,   dM = sum_i h_{i-1}^T dpre_i
    and dM is one (B, P, K*iterations) x (B, K*iterations, P) matmul after the loop. Same numbers as `attractor`
    (tests/core/test_tem.py checks values and gradients in float64)."""

    @staticmethod
    def forward(ctx, h, M, unit_iterations, kappa, iterations, slope):
        hs, pres = [], []                                                  # inputs and pre-activations per iteration
        for it in range(iterations):
            pre = torch.baddbmm(h, h, M, beta=kappa)                       # kappa h + h M, (B, K, P)
            new = f_p(pre, slope)
            hs.append(h)
            pres.append(pre)
            h = new if unit_iterations is None else torch.where(unit_iterations > it, new, h)
        ctx.save_for_backward(M, unit_iterations, *hs, *pres)
        ctx.kappa, ctx.iterations, ctx.slope = kappa, iterations, slope
        return h

    @staticmethod
    def backward(ctx, dh):
        M, unit_iterations, *saved = ctx.saved_tensors
        n = ctx.iterations
        hs, pres = saved[:n], saved[n:]
        dpres = [None] * n
        for it in range(n - 1, -1, -1):
            pre = pres[it]
            # f_p'(pre), with autograd's conventions: clamp passes at the bounds, leaky_relu uses the slope at 0
            # (the slope as a tensor of pre's dtype: a Python float in torch.where would be rounded to float32)
            d = torch.where(pre > 0, pre.new_ones(()), pre.new_full((), ctx.slope)) * ((pre >= -1) & (pre <= 1))
            if unit_iterations is None:
                dpre = dh * d
                dh = kappa_plus_back(dpre, M, ctx.kappa)
            else:
                active = unit_iterations > it
                dpre = torch.where(active, dh * d, 0.0)
                dh = torch.where(active, 0.0, dh) + kappa_plus_back(dpre, M, ctx.kappa)
            dpres[it] = dpre
        dM = torch.cat(hs, 1).transpose(1, 2) @ torch.cat(dpres, 1) if ctx.needs_input_grad[1] else None
        return dh, dM, None, None, None, None


class _FusedHebbian(torch.autograd.Function):
    """`hebbian_update` for u = p + p_hat and v = p - p_hat, saving one bool (B, P, P) for its backward instead of
    autograd's float pre-clamp copy and outer product: with G = dM_new * [-1 <= pre <= 1],
        dM = decay G,   du = rate (G * mask) v^T,   dv = rate u (G * mask)."""

    @staticmethod
    def forward(ctx, M, u, v, decay, rate, mask):
        pre = u.unsqueeze(2) * v.unsqueeze(1)                              # (B, P, P) outer products (broadcast:
        if mask is not None:                                               # the same products as a k=1 bmm,
            pre.mul_(mask)                                                 # without its slow BLAS call)
        pre.mul_(rate).add_(M, alpha=decay)
        new = pre.clamp(-1.0, 1.0)
        inside = new == pre               # = (-1 <= pre <= 1) in one pass (NaN: False in both)
        ctx.save_for_backward(u, v, inside, mask)
        ctx.decay, ctx.rate = decay, rate
        return new

    @staticmethod
    def backward(ctx, dM_new):
        u, v, inside, mask = ctx.saved_tensors
        G = dM_new * inside.view(torch.uint8)           # the same products as * bool, through a faster kernel
        dM = ctx.decay * G if ctx.needs_input_grad[0] else None
        if mask is not None:
            G.mul_(mask)                                # G is this function's own temporary (dM is a copy)
        # G v^T with G on the left and the transposed view of v on the right: the matrix-vector form CPU BLAS runs
        # about 5x faster than bmm(G, v.unsqueeze(2)) (same sums)
        du = ctx.rate * torch.bmm(G, v.unsqueeze(1).transpose(1, 2)).squeeze(2)
        dv = ctx.rate * torch.bmm(u.unsqueeze(1), G).squeeze(1)
        return dM, du, dv, None, None, None


def fused_attractor(queries: torch.Tensor, M: torch.Tensor, kappa: float, iterations: int,
                    unit_iterations: torch.Tensor | None = None, slope: float = 0.01) -> torch.Tensor:
    """`attractor` for queries (B, K, P) that share the memory M (B, P, P) -> (B, K, P); fast backward."""
    return _FusedAttractor.apply(f_p(queries, slope), M, unit_iterations, kappa, iterations, slope)


def fused_hebbian_update(M, p, p_hat, decay, rate, mask=None):
    """`hebbian_update` with a lean backward (same numbers)."""
    return _FusedHebbian.apply(M, p + p_hat, p - p_hat, decay, rate, mask)


# -- networks ----------------------------------------------------------------------------------------------------

_ACT = {"elu": F.elu, "tanh": torch.tanh, "exp": torch.exp, None: lambda h: h}


class ModuleMLP(nn.Module):
    """One two-layer MLP per module (the port's MLP class): module f maps its own n_in[f] inputs to n_out[f]
    outputs through n_hidden[f] units. Run as one block-diagonal MLP: `blocks()` builds the weights once per
    chunk and `run` is then one matmul per layer, with the same numbers as the per-module loop."""

    def __init__(self, n_in, n_hidden, n_out, activations=("elu", None), bias=(True, True)):
        super().__init__()
        self.activations = activations
        self.first = nn.ModuleList(nn.Linear(i, h, bias=bias[0]) for i, h in zip(n_in, n_hidden))
        self.second = nn.ModuleList(nn.Linear(h, o, bias=bias[1]) for h, o in zip(n_hidden, n_out))
        for layer in [*self.first, *self.second]:          # the port: Xavier-normal weights, zero biases
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    @staticmethod
    def _block(layers):
        W = torch.block_diag(*[layer.weight.t() for layer in layers])                 # (sum in, sum out)
        b = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
        return W, b

    def blocks(self):
        return self._block(self.first), self._block(self.second)

    def run(self, x: torch.Tensor, blocks=None) -> torch.Tensor:
        """x (B, sum n_in), modules side by side -> (B, sum n_out)."""
        (W1, b1), (W2, b2) = blocks or self.blocks()
        h = _ACT[self.activations[0]](x @ W1 if b1 is None else torch.addmm(b1, x, W1))
        return _ACT[self.activations[1]](h @ W2 if b2 is None else torch.addmm(b2, h, W2))


class TEMPathIntegration(RecurrentPositions):
    """TEM's transition g_t = clamp(g_{t-1} W_a, -1, 1), W_a = I + U_a, as a temt_core RecurrentPositions.

    U_a is TEM's MLP_D_a: per module f_to, an MLP of the one-hot action (tanh hidden layer, zero-initialised output)
    gives a (n_in, n_g[f_to]) block that reads the modules with f_initial[f_from] <= f_initial[f_to] (the same and
    lower-frequency modules: hierarchical connectivity) and writes module f_to. The port's
    g + cat(g[from]) @ D_a is g W_a with these blocks in place. The stay action is exactly the identity."""

    def __init__(self, c: TEMConfig):
        E = sum(c.g_modules)
        super().__init__(c.n_actions, E, activation="linear", bound=c.g_bound, transition="mlp",
                         stay_action=c.stay_action, init_std=0.0, mlp_hidden=c.transition_hidden)
        del self.mlp_in, self.mlp_out            # the base class's single MLP; TEM has one per module (below)
        self.module_sizes = tuple(c.g_modules)
        offsets = [0, *itertools.accumulate(c.g_modules)]
        n_f = len(c.g_modules)
        sources = []                             # per module: indices of the g units it reads
        for f_to in range(n_f):
            src = [f for f in range(n_f) if (c.f_initial[f] <= c.f_initial[f_to] if c.hierarchical else f == f_to)]
            sources.append(torch.cat([torch.arange(offsets[f], offsets[f + 1]) for f in src]))
        for f, idx in enumerate(sources):
            self.register_buffer(f"source_{f}", idx, persistent=False)
        self.D_in = nn.ModuleList(nn.Linear(c.n_actions, c.transition_hidden) for _ in range(n_f))
        self.D_out = nn.ModuleList(nn.Linear(c.transition_hidden, len(idx) * n_g, bias=False)
                                   for idx, n_g in zip(sources, c.g_modules))
        with torch.no_grad():
            for lin, out in zip(self.D_in, self.D_out):
                nn.init.xavier_normal_(lin.weight)
                nn.init.zeros_(lin.bias)
                nn.init.normal_(out.weight, std=c.transition_init_std / math.sqrt(E))
            # g_init ~ truncated N(0, sd^2) at +-2 sd (the port's truncnorm), inside the clamp
            b = min(2 * c.g_init_std, c.g_bound)
            nn.init.trunc_normal_(self.e_init, std=c.g_init_std, a=-b, b=b) if c.g_init_std > 0 else \
                self.e_init.zero_()

    def updates(self) -> torch.Tensor:
        """U_a for every action, (A, E, E): each module's block placed at (its source rows, its columns)."""
        A, E = self.n_actions, self.dim
        onehot = torch.eye(A, device=self.e_init.device, dtype=self.e_init.dtype)
        columns = []
        for f, n_g in enumerate(self.module_sizes):
            rows = getattr(self, f"source_{f}")
            D = self.D_out[f](torch.tanh(self.D_in[f](onehot))).view(A, len(rows), n_g)
            columns.append(D.new_zeros(A, E, n_g).index_copy(1, rows, D))
        return torch.cat(columns, 2) * self.update_mask                  # update_mask: zero for the stay action


# -- state and output --------------------------------------------------------------------------------------------

@dataclass
class TEMState:
    """What carries from one chunk to the next (detached: truncated backprop)."""
    g: torch.Tensor             # (B, E) inferred g of the last step
    x_f: torch.Tensor           # (B, n_f, n_x_c) filtered observations of the last step
    M_gen: torch.Tensor         # (B, P, P) generative memory
    M_inf: torch.Tensor         # (B, P, P) inference memory

    def detach(self) -> "TEMState":
        return TEMState(*(t.detach() for t in (self.g, self.x_f, self.M_gen, self.M_inf)))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat dict for checkpoints (safetensors)."""
        return {"g": self.g, "x_f": self.x_f, "M_gen": self.M_gen, "M_inf": self.M_inf}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "TEMState":
        return cls(t["g"], t["x_f"], t["M_gen"], t["M_inf"])


@dataclass
class TEMOutput:
    loss: torch.Tensor                  # scalar: sum over LOSS_NAMES of weight * part
    parts: dict[str, torch.Tensor]      # unweighted loss terms, reduced like `loss`
    weights: dict[str, float]           # the schedule's weights used
    logits: torch.Tensor                # (B, T, n_x) x_gt: prediction of x_t before it is seen (zero-shot)
    logits_g: torch.Tensor              # (B, T, n_x) x_g: from g_inf (has seen x_t through memory)
    logits_p: torch.Tensor              # (B, T, n_x) x_p: from p_inf (has seen x_t)
    g_gen: torch.Tensor                 # (B, T, E) path-integrated g
    g: torch.Tensor                     # (B, T, E) inferred g
    p: torch.Tensor                     # (B, T, P) inferred p (what is stored)
    p_gen: torch.Tensor                 # (B, T, P) p retrieved from g_inf (the generative memory's p_hat)
    p_x: torch.Tensor                   # (B, T, P) p retrieved from x_t (the inference memory's p_hat)
    state: TEMState                     # detached state for the next chunk


# -- the model ---------------------------------------------------------------------------------------------------

class TEM(nn.Module):
    def __init__(self, config: TEMConfig):
        super().__init__()
        self.config = c = config
        n_f, E, R = len(c.g_modules), sum(c.g_modules), sum(c.g_memory)
        self.n_f, self.E, self.R, self.P = n_f, E, R, R * c.n_x_c
        self.path = TEMPathIntegration(c)                                       # W_a and g_init
        self.logsig_g_init = nn.Parameter(torch.empty(E))                       # log sigma of the prior on g
        b = 2 * c.g_init_std
        nn.init.trunc_normal_(self.logsig_g_init, std=c.g_init_std, a=-b, b=b) if c.g_init_std > 0 else \
            nn.init.zeros_(self.logsig_g_init)
        # x filtering and memory input (one scalar per module each, TEM)
        self.alpha = nn.Parameter(torch.tensor([math.log(f / (1 - f)) for f in c.f_initial]))    # logit alpha_f
        self.w_p = nn.Parameter(torch.ones(n_f))               # sigmoid(w_p): weight of x_f in p, per module
        self.w_x = nn.Parameter(torch.tensor(1.0))             # p -> x_c readout gain
        self.b_x = nn.Parameter(torch.zeros(c.n_x_c))          # and bias
        # MLPs (the port's sizes)
        g2 = [2 * n for n in c.g_modules]
        self.sigma_g_path = ModuleMLP(c.g_modules, g2, c.g_modules, ("tanh", "exp"))        # sigma of g_gen
        self.mu_g_mem = ModuleMLP(c.g_memory, g2, c.g_modules)                              # p_x -> g_mem
        with torch.no_grad():
            for layer in self.mu_g_mem.second:
                nn.init.trunc_normal_(layer.weight, std=c.g_mem_std, a=-2 * c.g_mem_std, b=2 * c.g_mem_std) \
                    if c.g_mem_std > 0 else nn.init.zeros_(layer.weight)
        self.sigma_g_mem = ModuleMLP([2] * n_f, g2, c.g_modules, ("tanh", "exp"))          # sigma of g_mem
        self.c_star = ModuleMLP([c.n_x_c], [c.c_star_hidden], [c.n_stimuli])                # x_c -> x logits
        self._register_tables(c)

    def _register_tables(self, c: TEMConfig) -> None:
        """Fixed index tables and masks (buffers, rebuilt from the config, not saved)."""
        n_f, R = self.n_f, self.R
        offsets = [0, *itertools.accumulate(c.g_modules)]
        codes = torch.zeros(c.n_stimuli, c.n_x_c)
        for i, pair in zip(range(c.n_stimuli), itertools.combinations(range(c.n_x_c), 2)):
            codes[i, list(pair)] = 1.0
        row_module = torch.cat([torch.full((n,), f) for f, n in enumerate(c.g_memory)])     # (R,) module of row
        memory_units = torch.cat([torch.arange(offsets[f], offsets[f] + n) for f, n in enumerate(c.g_memory)])
        unit_module = torch.cat([torch.full((n,), f) for f, n in enumerate(c.g_modules)])   # (E,)
        p_module = row_module.repeat_interleave(c.n_x_c)                                    # (P,)
        freq = torch.tensor(c.f_initial)[p_module]
        if c.hierarchical:   # M_gen: unit i -> unit j only from a lower- (or equal-) frequency module
            mask = (freq.unsqueeze(1) <= freq.unsqueeze(0)).float()
            gen_iters = (c.attractor_iterations - p_module).clamp(min=0)    # module f settles after 5 - f
        else:
            mask, gen_iters = torch.ones(self.P, self.P), torch.full((self.P,), c.attractor_iterations)
        self.register_buffer("two_hot", codes, persistent=False)                          # (n_x, n_x_c)
        self.register_buffer("row_module", row_module, persistent=False)
        self.register_buffer("memory_units", memory_units, persistent=False)              # (R,) into g
        self.register_buffer("unit_module", F.one_hot(unit_module, n_f).float(), persistent=False)   # (E, n_f)
        self.register_buffer("gen_mask", mask, persistent=False)                          # (P, P)
        self.register_buffer("gen_iterations", gen_iters, persistent=False)               # (P,)
        self.n_rows0 = c.g_memory[0]                  # x is read out from the highest-frequency module only

    # -- state -------------------------------------------------------------------------------------------------

    def initial_state(self, batch: int, device=None, dtype=None) -> TEMState:
        ref = self.path.e_init
        device, dtype = device or ref.device, dtype or ref.dtype
        return TEMState(g=self.path.initial(batch).detach().to(device, dtype),
                        x_f=torch.zeros(batch, self.n_f, self.config.n_x_c, device=device, dtype=dtype),
                        M_gen=torch.zeros(batch, self.P, self.P, device=device, dtype=dtype),
                        M_inf=torch.zeros(batch, self.P, self.P, device=device, dtype=dtype))

    def path_integrate(self, actions: torch.Tensor, g0: torch.Tensor | None = None) -> torch.Tensor:
        """Pure generative path integration over a chunk, no inference: temt_core's fused recurrence (C5)."""
        return self.path(actions, g0)

    # -- the pieces of one step (port names) ----------------------------------------------------------------------

    def x_to_memory(self, x_f: torch.Tensor) -> torch.Tensor:
        """x_ (B, R, n_x_c): each memory row gets sigmoid(w_p_f) normalise(relu(x_f - mean)) of its module f."""
        x_n = F.normalize(F.relu(x_f - x_f.mean(-1, keepdim=True)), dim=-1)     # (B, n_f, n_x_c), per slot
        return (torch.sigmoid(self.w_p).unsqueeze(-1) * x_n)[:, self.row_module]

    def g_to_memory(self, g: torch.Tensor) -> torch.Tensor:
        """g_ (B, R, 1): the memory units of g (TEM's g_downsample, then W_repeat by broadcasting)."""
        return g[:, self.memory_units].unsqueeze(-1)

    def gen_x(self, p: torch.Tensor, c_star) -> torch.Tensor:
        """Logits of x (B, n_x) from p (B, P): sum the highest-frequency module's p over g (TEM's W_tile^T), then
        decompress x_c with an MLP."""
        B = p.shape[0]
        x_c = p[:, :self.n_rows0 * self.config.n_x_c].view(B, self.n_rows0, -1).sum(1)
        return self.c_star.run(self.w_x * x_c + self.b_x, c_star)

    def gen_p(self, gs: list[torch.Tensor], M: torch.Tensor, reference: bool = False) -> list[torch.Tensor]:
        """p retrieved from the generative memory by each g in gs: attractor(g_, M_gen) with hierarchical early
        stopping. The queries share M_gen, so the fused path reads it once for all of them."""
        c = self.config
        queries = [self.g_to_memory(g).expand(-1, -1, c.n_x_c).flatten(1) for g in gs]          # (B, P) each
        if reference:
            return [attractor(q, M, c.kappa, c.attractor_iterations, self.gen_iterations, c.leaky_slope)
                    for q in queries]
        p = fused_attractor(torch.stack(queries, 1), M, c.kappa, c.attractor_iterations, self.gen_iterations,
                            c.leaky_slope)
        return list(p.unbind(1))

    def inf_p_x(self, x_: torch.Tensor, M_inf: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """p retrieved from the inference memory by the current sensory input x_ (B, R, n_x_c) -> (B, P)."""
        c = self.config
        if reference:
            return attractor(x_.flatten(1), M_inf, c.kappa, c.attractor_iterations, None, c.leaky_slope)
        return fused_attractor(x_.flatten(1).unsqueeze(1), M_inf, c.kappa, c.attractor_iterations, None,
                               c.leaky_slope).squeeze(1)

    def inf_g(self, p_x, g_gen, sigma_gen, x_onehot, offset, nets) -> torch.Tensor:
        """g_inf: precision-weighted mean of g_gen (path integration) and g_mem (from the memory retrieved by x)."""
        c, B = self.config, p_x.shape[0]
        mu_mem = self.mu_g_mem.run(p_x.view(B, self.R, c.n_x_c).sum(-1), nets["mu_g_mem"])     # (B, E)
        with torch.no_grad():       # memory quality: how well the retrieved p predicts x (the port: no gradient)
            x_hat = torch.softmax(self.gen_x(p_x, nets["c_star"]), -1)
            err = 0.5 * ((x_onehot - x_hat) ** 2).sum(-1, keepdim=True)                          # (B, 1)
        norms = (mu_mem ** 2) @ self.unit_module                                                 # (B, n_f)
        quality = torch.stack([norms, err.expand(-1, self.n_f)], -1).flatten(1)                  # (B, 2 n_f)
        sigma_mem = self.sigma_g_mem.run(quality, nets["sigma_g_mem"]) + offset * c.p2g_sigma_offset
        mu_mem = mu_mem.clamp(-c.g_bound, c.g_bound)
        prec_gen, prec_mem = sigma_gen ** -2, sigma_mem ** -2
        return (g_gen * prec_gen + mu_mem * prec_mem) / (prec_gen + prec_mem)

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, actions: torch.Tensor, state: TEMState | None = None,
                loss_mask: torch.Tensor | None = None, step: int = 0, reference: bool = False) -> TEMOutput:
        """
        x:         (B, T) observation ids
        actions:   (B, T) action arriving at each step, RESET (-1) starts a new world in that slot (memories,
                   filtered x and g reset there)
        state:     the previous chunk's output state (None: fresh worlds everywhere)
        loss_mask: (B, T) bool, the steps that count in the losses (TEM: arrivals at visited nodes); None: all
        step:      the gradient step, for the schedules of eta, lambda and the loss weights (`schedule`)
        reference: run the memory through the plain autograd definitions (`attractor`, `hebbian_update`) instead
                   of the fused functions with hand-written backward (same numbers; slower; for tests)
        """
        B, T = self._check_inputs(x, actions, state, loss_mask)
        sch = schedule(step, self.config)
        state = self.initial_state(B, x.device) if state is None else state
        chunk = self._chunk_constants(sch, reference)
        x_c, x_onehot = self.two_hot[x], F.one_hot(x, self.config.n_stimuli).to(self.two_hot.dtype)
        reset = actions == RESET                                                 # (B, T)
        reset_steps = reset.any(0).tolist()                                      # one host sync, not T
        records = []
        for t in range(T):
            state, record = self._iteration(state, x[:, t], actions[:, t], x_c[:, t], x_onehot[:, t],
                                            reset[:, t] if reset_steps[t] else None, chunk)
            records.append(record)
        out = {k: torch.stack([r[k] for r in records], 1) for k in records[0]}
        loss, parts = self._reduce(out.pop("L"), loss_mask, sch.weights)
        return TEMOutput(loss=loss, parts=parts, weights=sch.weights, state=state.detach(), **out)

    def _chunk_constants(self, sch: Schedule, reference: bool) -> dict:
        """What every step of a chunk shares: transitions, the block-diagonal MLP weights, the schedule."""
        nets = {name: getattr(self, name).blocks() for name in ("sigma_g_path", "mu_g_mem", "sigma_g_mem", "c_star")}
        return {"wide": wide_transitions(self.path.transition_matrices()),          # (E, A*E)
                "nets": nets, "sigma_init": self.logsig_g_init.exp(), "schedule": sch, "reference": reference,
                "alpha": torch.sigmoid(self.alpha).unsqueeze(-1)}                    # (n_f, 1)

    def _iteration(self, state: TEMState, x, a, x_c, x_onehot, reset, chunk: dict):
        """One TEM step (the port's Model.iteration). x, a (B,); x_c (B, n_x_c); x_onehot (B, n_x); reset (B,)
        bool or None when no slot starts a new world here. Returns the new state and this step's records."""
        c, nets, sch, reference = self.config, chunk["nets"], chunk["schedule"], chunk["reference"]
        g, x_f, M_gen, M_inf = state.g, state.x_f, state.M_gen, state.M_inf
        if reset is not None:                                           # new worlds: the port's init_walks
            keep = (~reset).to(M_gen.dtype)
            M_gen, M_inf, x_f = M_gen * keep[:, None, None], M_inf * keep[:, None, None], x_f * keep[:, None, None]
        # gen_g: path integration from the previous inferred g (RESET -> g_init, sigma_g_init)
        g_gen = self.path.step_wide(g, a, chunk["wide"])                                        # (B, E)
        sigma_gen = self.sigma_g_path.run(g, nets["sigma_g_path"])
        if reset is not None:
            sigma_gen = torch.where(reset.unsqueeze(-1), chunk["sigma_init"], sigma_gen)
        # inference: filter x, retrieve p from x, infer g, then p
        x_f = (1 - chunk["alpha"]) * x_f + chunk["alpha"] * x_c.unsqueeze(1)                    # (B, n_f, n_x_c)
        x_ = self.x_to_memory(x_f)                                                              # (B, R, n_x_c)
        p_x = self.inf_p_x(x_, M_inf, reference)                                                # (B, P)
        g_inf = self.inf_g(p_x, g_gen, sigma_gen, x_onehot, sch.p2g_offset, nets)               # (B, E)
        p_inf = f_p(self.g_to_memory(g_inf) * x_, c.leaky_slope).flatten(1)                    # (B, P)
        # generative: x from p_inf, from the memory's p of g_inf, and from the memory's p of g_gen (x_gt)
        p_gen, p_gt = self.gen_p([g_inf, g_gen], M_gen, reference)
        logits_p, logits_g, logits = (self.gen_x(p, nets["c_star"]) for p in (p_inf, p_gen, p_gt))
        # memory: store p_inf in both memories (error-correcting against each memory's own retrieval)
        store = hebbian_update if reference else fused_hebbian_update
        M_gen = store(M_gen, p_inf, p_gen, sch.lambda_, sch.eta, self.gen_mask if c.hierarchical else None)
        M_inf = store(M_inf, p_inf, p_x, sch.lambda_, sch.eta)
        record = {"logits": logits, "logits_g": logits_g, "logits_p": logits_p, "g_gen": g_gen, "g": g_inf,
                  "p": p_inf, "p_gen": p_gen, "p_x": p_x,
                  "L": self._step_losses(x, g_gen, g_inf, p_inf, p_gen, p_x, logits, logits_g, logits_p)}
        return TEMState(g_inf, x_f, M_gen, M_inf), record

    # -- losses ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _step_losses(x, g_gen, g_inf, p_inf, p_gen, p_x, logits, logits_g, logits_p) -> torch.Tensor:
        """(B, 8) per-slot losses of one step, in LOSS_NAMES order (the port's Model.loss)."""
        sq = lambda a, b: 0.5 * ((a - b) ** 2).sum(-1)                         # noqa: E731 (utils.squared_error)
        ce = lambda z: F.cross_entropy(z, x, reduction="none")                 # noqa: E731
        return torch.stack([sq(p_inf, p_gen), sq(p_inf, p_x), ce(logits), ce(logits_g), ce(logits_p),
                            sq(g_inf, g_gen), (g_inf ** 2).sum(-1), p_inf.abs().sum(-1)], -1)

    def _reduce(self, L: torch.Tensor, loss_mask, weights: dict):
        """L (B, T, 8) -> (weighted scalar loss, unweighted parts), over the loss-mask steps."""
        m = torch.ones(L.shape[:2], dtype=L.dtype, device=L.device) if loss_mask is None else loss_mask.to(L.dtype)
        if self.config.loss_reduction == "step_sum":          # per step: mean over its masked slots; sum over steps
            per_step = (L * m.unsqueeze(-1)).sum(0) / m.sum(0).clamp(min=1).unsqueeze(-1)      # (T, 8)
            totals = per_step.sum(0)
        else:
            totals = (L * m.unsqueeze(-1)).sum((0, 1)) / m.sum().clamp(min=1)
        parts = dict(zip(LOSS_NAMES, totals.unbind()))
        loss = sum(weights[k] * parts[k] for k in LOSS_NAMES)
        return loss, parts

    # -- input checks ----------------------------------------------------------------------------------------------

    def _check_inputs(self, x, actions, state, loss_mask) -> tuple[int, int]:
        c = self.config
        check_index_tensor("x", x, ndim=2, low=0, high=c.n_stimuli - 1,
                           meaning=f"an observation id in [0, n_stimuli={c.n_stimuli})")
        check_index_tensor("actions", actions, ndim=2, low=RESET, high=c.n_actions - 1,
                           meaning="an action id in [0, n_actions) or RESET (-1)")
        if x.shape != actions.shape:
            raise ValueError(f"x and actions must have the same shape (B, T), got {tuple(x.shape)} and "
                             f"{tuple(actions.shape)}")
        B, T = x.shape
        if T == 0:
            raise ValueError("a chunk needs at least one step (got T = 0)")
        if loss_mask is not None:
            check_shape("loss_mask", loss_mask, (B, T))
            if loss_mask.dtype != torch.bool:
                raise TypeError(f"loss_mask must be a bool tensor, got dtype {loss_mask.dtype}")
        if state is not None:
            for name, shape in (("g", (B, self.E)), ("x_f", (B, self.n_f, c.n_x_c)),
                                ("M_gen", (B, self.P, self.P)), ("M_inf", (B, self.P, self.P))):
                check_shape(f"state.{name}", getattr(state, name), shape)
        return B, T

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
