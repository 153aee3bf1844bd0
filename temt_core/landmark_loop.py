"""Landmark correction at the parallel path's speed: the sequential part of TEM-t as one fused loop.

With landmark correction each step's position depends on the corrections before it (the corrected e_{t-1} is
path-integrated into e_pi_t, and the correction of step t reads the corrected positions stored before it), so the
chunk must be walked one step at a time. Everything else is not sequential and is taken out of the loop:

    in the loop (this module)            e_pi_t = sigma(e_{t-1} W_{a_t})        (e_init on RESET)
                                         landmark retrieval over [stored memories; this chunk's so far]
                                         e_t = e_pi_t + f_t * (e_ret_t - e_pi_t)
                                         de-duplication of (e_t, x_t) (no gradient)
    after the loop (TEMt, one call)      both prediction reads, from e_pi and from e, as one masked attention:
                                         they read only memories stored strictly earlier, so they need nothing
                                         that the loop has not already produced

The loop is a custom autograd.Function with a hand-written backward (as `_FusedRecurrence` is for the recurrence
alone): an autograd graph of T x ~40 tiny ops costs far more than the arithmetic. Buffers are preallocated: the
keys (unit-norm z-scored positions, for the product query and de-duplication) and values (positions) of the
stored memories and of the chunk live in one (B, M + T, E) array each, the chunk's entry t written at step t;
per-step outputs are time-major (T, B, .) so that each step's slice is contiguous. Per step t, with K = M + T:

    S[t]    = gram[x_t, x_k]                     stimulus similarity, all steps at once before the loop
    c_k     = zn_k . u_t,   u_t = normalize(LN(e_pi_t))                       (query 'product' only)
    s_k     = S[t]_k * (1 + c_k) / 2   ('product')    or   S[t]_k   ('stimulus')
    w       = softmax_k(log(n_t) s_k) over the readable keys k (stored in the same world, strictly earlier)
    e_ret   = w @ values ;  conf = logsumexp(log(n_t) s) - log(n_t)   (0 when nothing is readable)
    f       = sigmoid([e_ret, e_pi, conf] G^T + b) * anything_readable
    e_t     = e_pi + f * (e_ret - e_pi)

Backward walks the steps in reverse. When it reaches step t, the later steps' gradients on their reads are known,
so the gradient they send to chunk memory t (through its value e_t and its key zn_t) is pulled in one product per
slot over them, and step t's total gradient is complete.
The weight gradients (transitions, gate, stimulus Gram matrix) are reduced once after the loop.

`TEMt._sequential` is the plain reference; tests/core/test_landmark_loop.py checks this path against it in float64
(outputs, losses, gradients; both queries, with and without de-duplication, across chunks and world resets).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .positions import RESET, _activate_into, _activation_grad, transition_grad
from .transition_products import TransitionProducts

_LN_EPS = 1e-5          # zscore()'s layer-norm epsilon
_NORM_EPS = 1e-12       # F.normalize's


def _zscore_unit(e: torch.Tensor):
    """zn = normalize(LN(e)) over the last axis, with what the backward needs: z = LN(e), 1/sigma, ||z||."""
    mu = e.mean(-1, keepdim=True)
    xc = e - mu
    rstd = torch.rsqrt(xc.square().mean(-1, keepdim=True) + _LN_EPS)
    z = xc * rstd
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp(min=_NORM_EPS)
    return z / norm, z, rstd, norm


def _zscore_unit_backward(d_zn: torch.Tensor, z: torch.Tensor, rstd: torch.Tensor, norm: torch.Tensor):
    """Gradient on e of zn = normalize(LN(e)), given d_zn (the layer norm has fixed weights)."""
    zn = z / norm
    d_z = (d_zn - zn * (zn * d_zn).sum(-1, keepdim=True)) / norm
    return rstd * (d_z - d_z.mean(-1, keepdim=True) - z * (d_z * z).mean(-1, keepdim=True))


class StoreKeys(NamedTuple):
    """What landmark retrieval reads of the memories stored before the chunk (detached), M' entries per slot.

    An entry is one memory, or (query 'stimulus', whose scores depend only on the stimulus) all memories of one
    stimulus at once: sum_{k: x_k = s} exp(score_s) e_k = exp(score_s + log count_s) mean_s, so n_x entries stand
    for any number of memories exactly (`store_keys` builds them).
        e (B, M', E) positions (or group means); zn (B, M', E) unit-norm z-scores (product query; else (B, M', 0));
        x (B, M') stimuli; count (B, M') memories per entry (0: empty); readable (T, B, M') bool per step
    """
    e: torch.Tensor
    zn: torch.Tensor
    x: torch.Tensor
    count: torch.Tensor
    readable: torch.Tensor


class DedupStore(NamedTuple):
    """The stored memories de-duplication compares with: zn (B, M, E), x (B, M), readable (B, M) by some step."""
    zn: torch.Tensor
    x: torch.Tensor
    readable: torch.Tensor


def store_keys(e, zn, x, valid, same_world, n_x: int, grouped: bool) -> StoreKeys:
    """StoreKeys for memories e, zn (B, M, E), x, valid (B, M); same_world (B, T): step t may read the store.
    grouped: one entry per stimulus (exact for the 'stimulus' query only)."""
    if not grouped:
        return StoreKeys(e, zn, x, valid.long(), valid.unsqueeze(0) & same_world.t().unsqueeze(-1))
    B, M, E = e.shape
    # Row b * (n_x + 1) + x of one flat table per stimulus, and a last row per slot that collects the invalid
    # memories and is dropped: index_add_ adds whole rows of E, about 4x faster on a CPU than a scatter_add_ over
    # an expanded (B, M, E) index, and no (B, M, E) product with the valid mask is needed.
    rows = (torch.where(valid, x, n_x) + torch.arange(B, device=e.device).unsqueeze(1) * (n_x + 1)).view(-1)
    sums = e.new_zeros(B * (n_x + 1), E).index_add_(0, rows, e.reshape(B * M, E)).view(B, n_x + 1, E)[:, :n_x]
    count = e.new_zeros(B * (n_x + 1)).index_add_(0, rows, e.new_ones(B * M)).view(B, n_x + 1)[:, :n_x]
    means = sums / count.clamp(min=1).unsqueeze(-1)                                              # (B, n_x, E)
    groups = torch.arange(n_x, device=e.device).expand(B, n_x)
    nonempty = count > 0
    return StoreKeys(means, e.new_zeros(B, n_x, 0), groups, count.long(),
                     nonempty.unsqueeze(0) & same_world.t().unsqueeze(-1))


class _LandmarkLoop(torch.autograd.Function):
    """Inputs (B batch slots, T steps, E units, M' store entries, K = M' + T keys):

        e0 (B, E), W (A, E, E), e_init (E,), gram (n_x, n_x), gate_w (E, 2E+1), gate_b (E,)   differentiable
        actions, x, world (B, T); store: StoreKeys; dedup_store: DedupStore or None
        activation, bound, product (bool), dedup (threshold or None; a (B, 1) tensor of per-slot thresholds works)
    Outputs (time-major): e_pi, e, f (T, B, E) and stored (T, B) bool.

    A population of P models (temt_core.population): W (P, A, E, E), e_init (P, E), gram (P, n_x, n_x), gate_w
    (P, E, 2E+1), gate_b (P, E), and the B slots are P blocks of B/P, member p's first; wherever a weight enters,
    a batched matmul over members replaces the matmul (`_Weights`), everything else is the same code.

    Layouts are chosen for the per-step reads, which are matrix-vector products bound by memory bandwidth: a row
    vector times a (B, E, K) matrix is ~10x faster on a CPU than a (B, K, E) matrix times a column vector, so the
    keys are kept as (B, E, K) and the values as (B, K, E), and the backward makes the two transposed copies once.
    """

    @staticmethod
    def forward(ctx, e0, W, e_init, gram, gate_w, gate_b, actions, x, world, store, dedup_store,
                activation, bound, product, dedup, norm=None, capturable=False, products="auto"):
        ctx.set_materialize_grads(False)        # outputs the loss does not use (often the gate) get None
        B, T = actions.shape
        E = W.shape[-1]
        M = store.e.shape[1]
        K = M + T
        n_x = gram.shape[-1]
        wts = _Weights(W, B)
        tp = TransitionProducts(actions, W.shape[-3], wts.P, E, products, capturable)   # e_b W_{a_bt} per step
        forward_weights = tp.weights(W)
        e_init_rows = wts.per_slot(e_init)                                  # (E,) or (B, E)
        reset = (actions == RESET).t()                                      # (T, B)
        # one host read per chunk (capturable: none, and every step applies the reset)
        reset_steps = [True] * T if capturable else reset.any(1).tolist()
        x_t, world_t = x.t(), world.t()                                     # (T, B)
        earlier = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)          # [t, tau]: tau < t
        static = torch.cat([store.readable, earlier.unsqueeze(1) & (world_t.unsqueeze(-1) == world.unsqueeze(0))],
                           -1)                                              # (T, B, K) readable if stored
        count = torch.cat([store.count, torch.ones_like(x)], 1)            # (B, K) memories per key
        log_count = torch.log(count.clamp(min=1).to(e0.dtype))             # (B, K) 0 for single memories
        # stimulus similarity of every step to every key, once: S[t, b, k] = gram[x_bt, key_x_bk]
        gram_index = x_t.unsqueeze(-1) * n_x + torch.cat([store.x, x], 1).unsqueeze(0)      # (T, B, K)
        S = gram.reshape(-1)[wts.gram_rows(gram_index, n_x)]                # (T, B, K)
        values = e0.new_zeros(B, K, E)                                      # positions of the keys
        values[:, :M] = store.e
        need_keys = product or dedup is not None
        keys_t = None                                                       # unit-norm z-scores, (B, E, K)
        if need_keys:
            keys_t = e0.new_zeros(B, E, K)
            if product:
                keys_t[:, :, :M] = store.zn.transpose(1, 2)
        # Readability as an additive score bias (log count where readable, `blocked` elsewhere) and the count n of
        # readable memories per step, all steps at once; de-duplication later blocks the chunk memories it drops
        # (their column in later steps, and one off those steps' counts).
        blocked = torch.finfo(e0.dtype).min / 2
        bias_all = torch.where(static, log_count.unsqueeze(0), blocked)    # (T, B, K)
        n_all = (static * count).sum(-1, keepdim=True)                      # (T, B, 1)
        if dedup is None:
            any_all = (n_all > 0).to(e0.dtype)
            L_all = torch.log(n_all.clamp(min=1).to(e0.dtype))
        else:
            L_all, any_all = e0.new_empty(T, B, 1), e0.new_empty(T, B, 1)
            groups = (_FlatStore if capturable else _StimulusGroups)(dedup_store.zn, dedup_store.x,
                                                                      dedup_store.readable, n_x)
            chunk_ok = static[:, :, M:] & (x.unsqueeze(0) == x_t.unsqueeze(-1))           # (T, B, T) same x
            store_readable_t = store.readable.any(-1)                                    # (T, B)

        h_all, e_pi_all, e_all, f_all = (e0.new_empty(T, B, E) for _ in range(4))
        stored = torch.ones(T, B, dtype=torch.bool, device=e0.device)     # False where de-duplication drops one
        if not product and dedup is None:
            # Nothing of the retrieval weights depends on the loop here (stimulus scores, fixed readability), so
            # they are computed for all steps at once, with the confidence and the stored memories' part of e_ret
            # and of the gate; the loop keeps only what needs e_{t-1} (`_precomputed_loop`).
            gin, w_all = _precomputed_loop(e0, wts, tp, forward_weights, e_init_rows, reset, reset_steps, bias_all,
                                           S, L_all, any_all, values, gate_w, gate_b, activation, bound, norm,
                                           h_all, e_pi_all, e_all, f_all)
            c_all = None
        else:
            gin = e0.new_empty(T, B, 2 * E + 1)                                 # gate inputs [e_ret, e_pi, conf]
            w_all = e0.new_empty(T, B, K)                                       # retrieval weights
            c_all = e0.new_empty(T, B, K) if product else None                  # position similarity (product)
            e = e0
            for t in range(T):
                # path integration from the corrected previous position
                e_pi = _path_integrate(e, t, tp, forward_weights, activation, bound, norm, reset, reset_steps,
                                       e_init_rows, h_all, e_pi_all)
                if dedup is None:
                    L, anything = L_all[t], any_all[t]
                else:
                    anything = any_all[t].copy_(n_all[t] > 0)
                    L = torch.log(n_all[t].clamp(min=1).to(e0.dtype), out=L_all[t])
                # retrieval
                if product:
                    u = F.normalize(F.layer_norm(e_pi, (E,), eps=_LN_EPS), dim=-1, eps=_NORM_EPS)
                    c = torch.bmm(u.unsqueeze(1), keys_t, out=c_all[t].unsqueeze(1)).squeeze(1)     # (B, K)
                    s = S[t] * (1 + c) * 0.5
                else:
                    s = S[t]
                scores = torch.addcmul(bias_all[t], s, L)                       # (B, K)
                w, lse = _softmax_logsumexp(scores, out=w_all[t])
                w.mul_(anything)                                                # zero rows: nothing readable
                e_ret = torch.bmm(w.unsqueeze(1), values).squeeze(1)            # (B, E)
                gin[t, :, :E] = e_ret
                gin[t, :, E:2 * E] = e_pi
                gin[t, :, 2 * E:] = (lse - L) * anything                        # confidence
                f = torch.sigmoid(wts.gate(gate_b, gin[t], gate_w), out=f_all[t]).mul_(anything)
                e = torch.addcmul(e_pi, f, e_ret - e_pi, out=e_all[t])
                # store the memory: its value, its key, and whether it repeats a stored conjunction
                values[:, M + t] = e
                if need_keys:
                    zn = F.normalize(F.layer_norm(e, (E,), eps=_LN_EPS), dim=-1, eps=_NORM_EPS)
                    keys_t[:, :, M + t] = zn
                    if dedup is not None:
                        cos = torch.bmm(zn.unsqueeze(1), keys_t[:, :, M:]).squeeze(1)            # (B, T) chunk
                        repeat = ((cos > dedup) & chunk_ok[t]).any(-1)
                        repeat |= groups.repeats(zn, x_t[t], dedup, store_readable_t[t])
                        stored[t] = ~repeat
                        if t + 1 < T:           # a dropped memory: later steps can neither read nor count it
                            dropped = static[t + 1:, :, M + t] & repeat                            # (T-t-1, B)
                            bias_all[t + 1:, :, M + t].masked_fill_(dropped, blocked)
                            n_all[t + 1:] -= dropped.unsqueeze(-1).to(n_all.dtype)
                            chunk_ok[t + 1:, :, t] &= ~repeat
        ctx.save_for_backward(e0, W, e_init, gate_w, actions, h_all, e_all, e_pi_all, f_all, gin, w_all, L_all,
                              S, gram_index, values, keys_t, c_all)
        ctx.activation, ctx.bound, ctx.product, ctx.n_x, ctx.M, ctx.norm = activation, bound, product, n_x, M, norm
        ctx.capturable, ctx.gram_shape, ctx.tp = capturable, gram.shape, tp
        ctx.mark_non_differentiable(stored)
        return e_pi_all, e_all, f_all, stored

    @staticmethod
    def backward(ctx, g_epi, g_e, g_f, _g_stored):
        (e0, W, e_init, gate_w, actions, h_all, e_all, e_pi_all, f_all, gin, w_all, L_all, S, gram_index, values,
         keys_t, c_all) = ctx.saved_tensors
        product, M = ctx.product, ctx.M
        T, B, E = e_all.shape
        A = W.shape[-3]                             # (A, E, E), or a population's (P, A, E, E)
        reset = (actions == RESET).t()
        reset_steps = [True] * T if ctx.capturable else reset.any(1).tolist()
        wts = _Weights(W, B)
        tp = ctx.tp
        backward_weights = tp.weights(W.transpose(-1, -2))                 # d_b W_{a_bt}^T
        dsig = _activation_grad(h_all, ctx.activation, ctx.bound).masked_fill_(reset.unsqueeze(-1), 0.0)
        norm = ctx.norm
        if norm is not None:
            unit, scale = norm.factors(h_all, ctx.activation)
        values_t = values.transpose(1, 2).contiguous()                      # (B, E, K) for d_w
        # per-step factors, all steps at once (fewer tiny ops inside the loop)
        e_ret_all = gin[:, :, :E]
        diff_all = e_ret_all - e_pi_all                                     # d e / d f
        one_minus_f = 1 - f_all
        f_slope = f_all * one_minus_f                                       # d f / d pre (0 where f = 0)
        wL_all = w_all * L_all                                              # d scores / d s, times w
        if product:
            keys = keys_t.transpose(1, 2).contiguous()                      # (B, K, E) for d_u
            u_all, zpi, rpi, npi = _zscore_unit(e_pi_all)
            _, ze, re, ne = _zscore_unit(e_all)
            half_1c = (1 + c_all) * 0.5                                     # d s / d S
            half_S = S * 0.5                                                # d s / d c
        else:
            # the stimulus query: d_w, the shift and dS need only d_ret of every step, so they are computed for all
            # steps at once after the loop (d_ret), and the loop's gate product skips the confidence column
            gate_w2 = gate_w[..., :2 * E].contiguous()                      # (E, 2E) or (P, E, 2E)
        # The gradient later steps send to chunk memory tau, through its value e_tau (and its key zn_tau), is
        # pulled when step tau is reached: one (1 x (T-tau-1)) @ ((T-tau-1) x E) product per slot over the later
        # steps' d e_ret (and d c), which are complete by then. (Pushing each step's share into all earlier
        # memories instead writes B x t x E per step into a strided buffer, about 2x slower on a CPU.)
        w_chunk = w_all[:, :, M:].permute(1, 2, 0).contiguous()            # (B, tau, t) weight of step t on tau
        d_ret = e0.new_empty(B, T, E)                                       # d e_ret per step, batch-major
        if product:
            u_bt = u_all.transpose(0, 1).contiguous()                       # (B, T, E) the steps' queries u_t
            d_c_chunk = e0.new_zeros(B, T, T)                               # (B, tau, t) d c_t for chunk key tau
        dS = torch.zeros_like(S)
        d_pre_all = torch.empty_like(e_all)
        dh_all = torch.empty_like(h_all)
        d_init = torch.zeros_like(e_init)           # (E,) or (P, E)
        de = torch.zeros_like(e0)                   # gradient on e_t from step t+1's path integration
        for t in range(T - 1, -1, -1):
            # total gradient on e_t: from step t+1's path integration (de) and from reads of memory t by later steps
            g = de if t == T - 1 else torch.baddbmm(de.unsqueeze(1), w_chunk[:, t:t + 1, t + 1:],
                                                    d_ret[:, t + 1:]).squeeze(1)
            if g_e is not None:
                g += g_e[t]                         # (at t = T - 1, g is de's own zeros: no one else holds them)
            if product and t < T - 1:
                d_key = torch.bmm(d_c_chunk[:, t:t + 1, t + 1:], u_bt[:, t + 1:]).squeeze(1)         # (B, E)
                g += _zscore_unit_backward(d_key, ze[t], re[t], ne[t])
            d_f = g * diff_all[t] if g_f is None else torch.addcmul(g_f[t], g, diff_all[t])
            d_pre = torch.mul(d_f, f_slope[t], out=d_pre_all[t])
            d_gin = wts.mm(d_pre, gate_w if product else gate_w2)   # [d e_ret, d e_pi(, d conf)] (B, 2E(+1))
            d_ret_t = torch.addcmul(d_gin[:, :E], g, f_all[t], out=d_ret[:, t])
            d_pi = torch.addcmul(d_gin[:, E:2 * E], g, one_minus_f[t])
            if g_epi is not None:
                d_pi += g_epi[t]
            if product:
                # e_ret = w @ values and conf = logsumexp(scores) - log n (d conf / d scores = w):
                # d scores = w * (d_w - sum_k w_k d_w_k + d_conf), and sum_k w_k d_w_k = e_ret . d_ret
                d_w = torch.bmm(d_ret_t.unsqueeze(1), values_t).squeeze(1)               # (B, K)
                shift = d_gin[:, 2 * E:] - (e_ret_all[t] * d_ret_t).sum(-1, keepdim=True)
                d_s = d_w.add_(shift).mul_(wL_all[t])
                torch.mul(d_s, half_1c[t], out=dS[t])
                d_c = d_s.mul_(half_S[t])                                             # (B, K)
                d_u = torch.bmm(d_c.unsqueeze(1), keys).squeeze(1)                   # (B, E)
                d_c_chunk[:, :, t] = d_c[:, M:]         # read by the chunk keys tau < t when step tau is reached
                d_pi += _zscore_unit_backward(d_u, zpi[t], rpi[t], npi[t])
            # back through the path integration
            if reset_steps[t]:
                d_init = d_init + wts.sum_slots(d_pi * reset[t, :, None])
            torch.mul(d_pi if norm is None else norm.backward(d_pi, unit[t], scale[t]), dsig[t], out=dh_all[t])
            de = tp(dh_all[t], t, backward_weights)
        if not product:             # the same d scores as the product branch's, all steps at once
            d_conf = (d_pre_all * wts.per_slot(gate_w[..., 2 * E])).sum(-1, keepdim=True)          # (T, B, 1)
            d_ret_all = d_ret.transpose(0, 1)                                                       # (T, B, E)
            shift = d_conf - (e_ret_all * d_ret_all).sum(-1, keepdim=True)
            d_w = torch.bmm(d_ret, values_t).transpose(0, 1)                                       # (T, B, K)
            torch.mul(d_w.add_(shift), wL_all, out=dS)
        dW = wts.transition_grad(e0, e_all, dh_all, actions, A, ctx.capturable) if ctx.needs_input_grad[1] else None
        n_x = ctx.n_x
        d_gram = dS.new_zeros(wts.P * n_x * n_x).index_add_(0, wts.gram_rows(gram_index, n_x).reshape(-1),
                                                            dS.reshape(-1)).view(ctx.gram_shape)
        d_gate_w, d_gate_b = wts.gate_grads(d_pre_all, gin)
        return (de, dW, d_init, d_gram, d_gate_w, d_gate_b) + (None,) * 12


def _softmax_logsumexp(scores: torch.Tensor, out: torch.Tensor | None = None):
    """softmax(scores) over the last axis and logsumexp(scores) (keepdim), the latter from the former:
    max_k w_k = exp(max_k s_k - lse), so lse = max s - log max w (max w >= 1/K: the log is safe and as precise).
    torch.logsumexp exponentiates every entry, and on a CPU exp of the blocked entries (which underflow) is ~10x
    slower than of ordinary ones (MKL's exp: 0.92 ms against 0.095 ms for 144k entries, half of them blocked);
    softmax's own exp does not slow down. Rows that read nothing (all blocked) give blocked + log K, finite."""
    w = torch.softmax(scores, -1, out=out)
    return w, scores.amax(-1, keepdim=True) - torch.log(w.amax(-1, keepdim=True))


def _path_integrate(e, t, tp, weights, activation, bound, norm, reset, reset_steps, e_init_rows, h_all, e_pi_all):
    """Step t's path integration e_pi = sigma(e W_a) (normalised, reset to e_init at a new world), written into
    h_all[t] and e_pi_all[t]; returns e_pi_all[t]. tp, weights: the chunk's TransitionProducts and its weights."""
    tp(e, t, weights, out=h_all[t])
    e_pi = e_pi_all[t]
    _activate_into(h_all[t], e_pi, activation, bound)
    if norm is not None:
        e_pi.copy_(norm(e_pi))
    if reset_steps[t]:
        e_pi.copy_(torch.where(reset[t, :, None], e_init_rows, e_pi))
    return e_pi


def _precomputed_loop(e0, wts, tp, weights, e_init_rows, reset, reset_steps, bias, S, L, anything, values, gate_w,
                      gate_b, activation, bound, norm, h_all, e_pi_all, e_all, f_all):
    """The forward loop for the stimulus query without de-duplication, where the retrieval weights do not depend
    on the loop: w, conf, the stored entries' part of e_ret and the gate's constant part for all steps at once
    (large ops), then per step only the recurrence, the chunk's part of e_ret (its first t values) and the gate.
    Fills h, e_pi, e, f (T, B, E) and the chunk's values (values[:, M:], B x T x E; the first M hold the store) as
    the general loop does, and returns the gate inputs (T, B, 2E+1) and w (T, B, K)."""
    T, B, E = e_all.shape
    M = values.shape[1] - T
    store_e = values[:, :M]
    scores = torch.addcmul(bias, S, L)                                  # (T, B, K)
    w_all, lse = _softmax_logsumexp(scores)
    w_all.mul_(anything)                                                # zero rows: nothing readable
    conf = (lse - L) * anything                                         # (T, B, 1)
    e_ret_all = torch.bmm(w_all[:, :, :M].transpose(0, 1), store_e).transpose(0, 1).contiguous()   # (T, B, E)
    gate_ret, gate_pi = (gate_w[..., i * E:(i + 1) * E].transpose(-1, -2).contiguous() for i in (0, 1))
    const = (wts.mm_steps(e_ret_all, gate_ret) + conf * wts.per_slot(gate_w[..., 2 * E])).add_(
        wts.per_slot(gate_b))                                           # (T, B, E) gate pre-activation, stored part
    e = e0
    for t in range(T):
        e_pi = _path_integrate(e, t, tp, weights, activation, bound, norm, reset, reset_steps, e_init_rows, h_all,
                               e_pi_all)
        e_ret = e_ret_all[t]                                            # (B, E), the stored part so far
        pre = wts.addmm(const[t], e_pi, gate_pi)
        if t:                                                           # + the chunk's memories stored before t
            chunk = torch.bmm(w_all[t, :, M:M + t].unsqueeze(1), values[:, M:M + t]).squeeze(1)      # (B, E)
            e_ret += chunk
            pre = wts.addmm(pre, chunk, gate_ret)
        f = torch.sigmoid(pre, out=f_all[t]).mul_(anything[t])
        e = torch.addcmul(e_pi, f, e_ret - e_pi, out=e_all[t])
        values[:, M + t] = e
    return torch.cat([e_ret_all, e_pi_all, conf], -1), w_all             # (T, B, 2E+1), (T, B, K)


class _Weights:
    """Where a weight enters the loop: one model's matmul, or (W of 4 dimensions) a population's batched matmul
    over its P members, each on its own block of B/P slots."""

    def __init__(self, W: torch.Tensor, B: int):
        self.P = W.shape[0] if W.dim() == 4 else 1
        self.pop = W.dim() == 4
        self.Bp = B // self.P                                               # slots per member

    def mm(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, I) @ (I, J), or member p's block of rows @ w[p]."""
        if not self.pop:
            return torch.mm(v, w)
        return torch.bmm(v.view(self.P, self.Bp, -1), w).view(self.P * self.Bp, -1)

    def addmm(self, c: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """c + v @ w for (B, J) c, or per member in a population."""
        if not self.pop:
            return torch.addmm(c, v, w)
        return torch.baddbmm(c.view(self.P, self.Bp, -1), v.view(self.P, self.Bp, -1), w).view(self.P * self.Bp, -1)

    def mm_steps(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(T, B, I) @ (I, J) for every step at once, or per member in a population: (T, B, J)."""
        T, B, _ = v.shape
        if not self.pop:
            return (v.reshape(T * B, -1) @ w).view(T, B, -1)
        return torch.bmm(self._by_member(v), w).view(self.P, T, self.Bp, -1).transpose(0, 1).reshape(T, B, -1)

    def _by_member(self, v: torch.Tensor) -> torch.Tensor:
        """(T, B, J) -> (P, T * B/P, J): every step's rows of one member together, for one bmm per member."""
        T = v.shape[0]
        return v.view(T, self.P, self.Bp, -1).transpose(0, 1).reshape(self.P, T * self.Bp, -1)

    def gate(self, b: torch.Tensor, gin: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """gin @ w^T + b (the gate's Linear), per member in a population."""
        if not self.pop:
            return torch.addmm(b, gin, w.t())
        return torch.baddbmm(b.unsqueeze(1), gin.view(self.P, self.Bp, -1), w.transpose(1, 2)).view(
            self.P * self.Bp, -1)

    def per_slot(self, v: torch.Tensor) -> torch.Tensor:
        """A per-member vector (E,) or (P, E) as rows of the slots (broadcastable against (B, E))."""
        return v.repeat_interleave(self.Bp, 0) if self.pop else v

    def sum_slots(self, v: torch.Tensor) -> torch.Tensor:
        """(B, E) summed over each member's slots: (E,) or (P, E)."""
        return v.view(self.P, self.Bp, -1).sum(1) if self.pop else v.sum(0)

    def gram_rows(self, gram_index: torch.Tensor, n_x: int) -> torch.Tensor:
        """Flat indices into gram (n_x, n_x) or (P, n_x, n_x) for (T, B, K) within-member indices."""
        if not self.pop:
            return gram_index
        member = torch.arange(self.P, device=gram_index.device).repeat_interleave(self.Bp)        # (B,)
        return gram_index + (member * n_x * n_x).view(1, -1, 1)

    def transition_grad(self, e0, e_all, dh_all, actions, A, fixed_shapes):
        if not self.pop:
            return transition_grad(e0, e_all, dh_all, actions, A, fixed_shapes)
        rows = lambda p: slice(p * self.Bp, (p + 1) * self.Bp)
        return torch.stack([transition_grad(e0[rows(p)], e_all[:, rows(p)], dh_all[:, rows(p)], actions[rows(p)], A,
                                            fixed_shapes) for p in range(self.P)])

    def gate_grads(self, d_pre_all: torch.Tensor, gin: torch.Tensor):
        """d gate_w and d gate_b from d_pre (T, B, E) and the gate inputs (T, B, 2E+1)."""
        T, B, E = d_pre_all.shape
        if not self.pop:
            d_pre_flat = d_pre_all.reshape(T * B, E)
            return d_pre_flat.t().mm(gin.reshape(T * B, -1)), d_pre_flat.sum(0)
        d_pre = self._by_member(d_pre_all)
        return torch.bmm(d_pre.transpose(1, 2), self._by_member(gin)), d_pre.sum(1)


class _StimulusGroups:
    """The stored memories' keys grouped by stimulus, for de-duplication: a step can only repeat a stored memory
    with its own stimulus, so it is compared with that group (about M / n_x keys) instead of all M.

    zn (B, M, E) unit-norm keys, x (B, M) stimuli, readable (B, M) memories any step of the chunk may read.
    """

    def __init__(self, zn: torch.Tensor, x: torch.Tensor, readable: torch.Tensor, n_x: int):
        B, M, E = zn.shape
        onehot = torch.zeros(B, M, n_x, dtype=torch.long, device=zn.device)
        onehot.scatter_(2, x.unsqueeze(-1), readable.long().unsqueeze(-1))
        rank = (onehot.cumsum(1) - 1).gather(2, x.unsqueeze(-1)).squeeze(-1)       # place within its group
        G = max(int(onehot.sum(1).max()), 1) if M else 1
        self.keys = zn.new_zeros(B, n_x, G, E)
        self.valid = torch.zeros(B, n_x, G, dtype=torch.bool, device=zn.device)
        b, m = readable.nonzero(as_tuple=True)
        self.keys[b, x[b, m], rank[b, m]] = zn[b, m]
        self.valid[b, x[b, m], rank[b, m]] = True
        self.rows = torch.arange(B, device=zn.device)

    def repeats(self, zn: torch.Tensor, x: torch.Tensor, threshold: float, readable: torch.Tensor) -> torch.Tensor:
        """(B,) the step's (zn, x) repeats a stored memory; readable (B,): the slot may read its store."""
        keys = self.keys[self.rows, x]                                     # (B, G, E)
        cos = torch.bmm(keys, zn.unsqueeze(-1)).squeeze(-1)                # (B, G)
        return ((cos > threshold) & self.valid[self.rows, x]).any(-1) & readable


class _FlatStore:
    """`_StimulusGroups` with fixed shapes: each step is compared with every stored key (same-stimulus ones count),
    M keys instead of about M / n_x, and no grouping whose size depends on the data (capturable steps)."""

    def __init__(self, zn: torch.Tensor, x: torch.Tensor, readable: torch.Tensor, n_x: int):
        self.keys_t = zn.transpose(1, 2).contiguous()                      # (B, E, M)
        self.x, self.valid = x, readable

    def repeats(self, zn: torch.Tensor, x: torch.Tensor, threshold: float, readable: torch.Tensor) -> torch.Tensor:
        cos = torch.bmm(zn.unsqueeze(1), self.keys_t).squeeze(1)           # (B, M)
        return ((cos > threshold) & self.valid & (self.x == x.unsqueeze(1))).any(-1) & readable


def landmark_loop(e0, W, e_init, gram, gate_w, gate_b, actions, x, world, store: StoreKeys,
                  dedup_store: DedupStore | None, activation: str, bound: float | None, product: bool,
                  dedup: float | None, norm=None, capturable: bool = False, products: str = "auto"):
    """Run `_LandmarkLoop` (see the module docstring); returns e_pi, e, f as (B, T, E) and stored (B, T).
    norm: the recurrence's positions.ModuleNorm, or None. capturable: no host reads and no data-dependent shapes
    (TEMtConfig.capturable): resets applied at every step, de-duplication against the whole store (_FlatStore).
    products: how the steps multiply by the transitions (transition_products.MODES)."""
    e_pi, e, f, stored = _LandmarkLoop.apply(e0, W, e_init, gram, gate_w, gate_b, actions, x, world, store,
                                             dedup_store, activation, bound, product, dedup, norm, capturable,
                                             products)
    return e_pi.transpose(0, 1), e.transpose(0, 1), f.transpose(0, 1), stored.t()
