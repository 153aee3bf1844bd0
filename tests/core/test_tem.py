"""TEM (temt_core/tem.py): shapes, causality, the memory rule, streaming, resets, path integration (C5), the fused
memory functions against their plain definitions, schedules, config and input errors, and a tiny training run."""
import math

import pytest
import torch

from temt_core.config import ConfigError, from_dict
from temt_core.hebbian import HebbianMemory
from temt_core.positions import RESET
from temt_core.tem import (LOSS_NAMES, TEM, TEMConfig, TEMPathIntegration, TEMState, attractor, f_p,
                           fused_attractor, fused_hebbian_update, hebbian_update, schedule)

N_X, N_A = 7, 5
SMALL = dict(n_actions=N_A, n_stimuli=N_X, g_modules=(6, 6, 4), g_memory=(2, 2, 2), f_initial=(0.9, 0.3, 0.05),
             n_x_c=5, c_star_hidden=16, attractor_iterations=3, transition_init_std=0.5, transition_hidden=8)


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return TEM(TEMConfig(**{**SMALL, **overrides})).double()


def _data(B=3, T=16, seed=0, resets=((1, 7),)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_X, (B, T), generator=g)
    a = torch.randint(0, N_A, (B, T), generator=g)
    a[:, 0] = RESET
    for b, t in resets:
        a[b, t] = RESET
    return x, a


def _module_of_p(c):
    """(P,) module index of every p unit, written out from the definition (memory rows x n_x_c columns)."""
    return torch.tensor([f for f, n in enumerate(c.g_memory) for _ in range(n * c.n_x_c)])


def test_shapes_and_losses():
    m = _model()
    x, a = _data(B=3, T=10)
    out = m(x, a, loss_mask=torch.ones(3, 10, dtype=torch.bool), step=500)
    E, P = sum(SMALL["g_modules"]), sum(SMALL["g_memory"]) * SMALL["n_x_c"]
    for name in ("logits", "logits_g", "logits_p"):
        assert getattr(out, name).shape == (3, 10, N_X)
    assert out.g.shape == out.g_gen.shape == (3, 10, E)
    assert out.p.shape == out.p_gen.shape == out.p_x.shape == (3, 10, P)
    assert out.state.M_gen.shape == out.state.M_inf.shape == (3, P, P)
    assert out.state.x_f.shape == (3, 3, SMALL["n_x_c"]) and not out.state.M_gen.requires_grad
    assert set(out.parts) == set(LOSS_NAMES) and torch.isfinite(out.loss)
    weighted = sum(out.weights[k] * out.parts[k] for k in LOSS_NAMES)
    torch.testing.assert_close(out.loss, weighted)
    assert (out.g.abs() <= 1).all() and (out.g_gen.abs() <= 1).all()          # g is clamped to [-1, 1]


def test_predictions_are_causal():
    """x_gt at step t reads only g_{t-1}, a_t and memories of earlier steps: changing x at t' >= t or actions at
    t' > t leaves it unchanged (x_t itself is what it predicts, so it must not see it)."""
    m = _model()
    x, a = _data(B=3, T=14, resets=())
    base = m(x, a).logits
    for t in (0, 4, 9, 13):
        x2, a2 = x.clone(), a.clone()
        x2[:, t:] = (x2[:, t:] + 1 + torch.arange(x2[:, t:].numel()).view_as(x2[:, t:])) % N_X
        a2[:, t + 1:] = (a2[:, t + 1:] + 2) % N_A
        out = m(x2, a2)
        torch.testing.assert_close(out.logits[:, :t + 1], base[:, :t + 1], rtol=0, atol=0)
        if t + 1 < x.shape[1]:        # and the change is seen later (the test can fail)
            assert not torch.allclose(out.logits[:, t + 1:], base[:, t + 1:])


def test_memory_update_matches_the_formula():
    """One step from random memories: M_gen and M_inf against the formula written out entry by entry."""
    m = _model()
    c = m.config
    B, P = 2, m.P
    torch.manual_seed(1)
    mod = _module_of_p(c)
    freq = torch.tensor(c.f_initial, dtype=torch.float64)[mod]
    mask = torch.tensor([[float(freq[i] <= freq[j]) for j in range(P)] for i in range(P)], dtype=torch.float64)
    M_gen0 = (0.3 * torch.randn(B, P, P, dtype=torch.float64)).clamp(-1, 1) * mask
    M_inf0 = (0.3 * torch.randn(B, P, P, dtype=torch.float64)).clamp(-1, 1)
    state = TEMState(g=m.initial_state(B).g, x_f=torch.rand(B, 3, c.n_x_c, dtype=torch.float64),
                     M_gen=M_gen0, M_inf=M_inf0)
    x, a = torch.tensor([[3], [5]]), torch.tensor([[1], [2]])
    step = 100
    out = m(x, a, state, step=step)
    s = schedule(step, c)
    for M0, p_hat, M1, use_mask in ((M_gen0, out.p_gen, out.state.M_gen, True),
                                    (M_inf0, out.p_x, out.state.M_inf, False)):
        p, q = out.p[:, 0], p_hat[:, 0]
        expect = torch.empty_like(M0)
        for b in range(B):
            outer = torch.outer(p[b] + q[b], p[b] - q[b])
            expect[b] = (s.lambda_ * M0[b] + s.eta * (outer * mask if use_mask else outer)).clamp(-1, 1)
        torch.testing.assert_close(M1, expect, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out.state.M_gen, M_gen0 * s.lambda_)       # the step did store something
    # the hierarchy: no connection from a higher- to a lower-frequency module ever appears
    assert (out.state.M_gen[:, mask == 0] == 0).all() and (out.state.M_inf[:, mask == 0] != 0).any()


def test_memory_rules_are_temt_core_hebbian():
    """Without TEM's masks, the update and the attractor are HebbianMemory.store / .retrieve (claim C4's memory)."""
    torch.manual_seed(2)
    B, P = 3, 12
    M0 = 0.2 * torch.randn(B, P, P, dtype=torch.float64)
    p, p_hat, q = (torch.randn(B, P, dtype=torch.float64) for _ in range(3))
    mem = HebbianMemory(B, P, decay=0.97, rate=0.5, dtype=torch.float64)
    mem.M = M0.clone()
    torch.testing.assert_close(hebbian_update(M0, p, p_hat, 0.97, 0.5), mem.store(p, p_hat), rtol=1e-14, atol=1e-14)
    slope = 0.01
    expect = mem.retrieve(f_p(q, slope), iterations=4, kappa=0.8, activation=lambda h: f_p(h, slope))
    torch.testing.assert_close(attractor(q, mem.M, 0.8, 4, None, slope), expect, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("hierarchical", [True, False])
def test_fused_memory_functions_equal_their_definitions(hierarchical):
    """Values and gradients (float64) of the fused attractor / Hebbian update against plain autograd."""
    torch.manual_seed(3)
    B, K, P, iters = 2, 2, 10, 4
    unit_iters = torch.tensor([4, 4, 3, 3, 2, 2, 1, 1, 0, 4]) if hierarchical else None
    mask = (torch.rand(P, P) > 0.3).double() if hierarchical else None
    M = (0.5 * torch.randn(B, P, P, dtype=torch.float64)).requires_grad_()
    q = torch.randn(B, K, P, dtype=torch.float64, requires_grad=True)
    p, p_hat = (torch.randn(B, P, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w1, w2 = torch.randn(B, K, P, dtype=torch.float64), torch.randn(B, P, P, dtype=torch.float64)

    def run(fused):
        if fused:
            h = fused_attractor(q, M, 0.8, iters, unit_iters)
            M1 = fused_hebbian_update(M, p, p_hat, 0.9, 0.7, mask)
        else:
            h = torch.stack([attractor(q[:, k], M, 0.8, iters, unit_iters) for k in range(K)], 1)
            M1 = hebbian_update(M, p, p_hat, 0.9, 0.7, mask)
        loss = (h * w1).sum() + (M1 * w2).sum()
        return (h, M1), torch.autograd.grad(loss, (q, M, p, p_hat))

    (h_ref, M_ref), g_ref = run(False)
    (h, M1), grads = run(True)
    torch.testing.assert_close(h, h_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(M1, M_ref, rtol=1e-13, atol=1e-13)
    assert (M_ref.abs() == 1).any()                                   # the clamp is active somewhere
    for g, r in zip(grads, g_ref):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)


def test_fused_hebbian_clamp_boundary_and_fast_products_match_autograd():
    """The fused update's gradient at the clamp's edge (pre exactly +-1 passes, beyond it stops, as autograd's
    clamp), and the matrix-vector forms of the backward (kappa_plus_back, G v^T) against plain products."""
    from temt_core.tem import kappa_plus_back
    M0 = torch.tensor([[[1.0, -1.0, 1.5], [-2.0, 0.25, 1.0], [0.0, -1.0, 3.0]]], dtype=torch.float64)
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for store in (hebbian_update, fused_hebbian_update):
        M = M0.clone().requires_grad_()
        (store(M, zero, zero, 1.0, 1.0) * w).sum().backward()      # update 0: pre = M exactly
        grads.append(M.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], w * (M0.abs() <= 1))
    g = torch.Generator().manual_seed(1)
    M, dpre = torch.randn(3, 7, 7, dtype=torch.float64, generator=g), torch.randn(3, 2, 7, dtype=torch.float64,
                                                                                   generator=g)
    torch.testing.assert_close(kappa_plus_back(dpre, M, 0.8), 0.8 * dpre + dpre @ M.transpose(1, 2),
                               rtol=1e-14, atol=1e-14)


def test_model_fused_path_equals_reference_path():
    m = _model()
    x, a = _data(B=3, T=8)
    mask = torch.rand(3, 8, generator=torch.Generator().manual_seed(0)) > 0.3
    results = []
    for reference in (True, False):
        m.zero_grad()
        out = m(x, a, loss_mask=mask, step=3000, reference=reference)
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in m.parameters()]))
    (ref, g_ref), (fast, g_fast) = results
    torch.testing.assert_close(fast.logits, ref.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.state.M_gen, ref.state.M_gen, rtol=1e-12, atol=1e-12)
    for g, r in zip(g_fast, g_ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reduction", ["step_sum", "mean"])
def test_streamed_chunks_equal_one_pass(reduction):
    m = _model(loss_reduction=reduction)
    x, a = _data(B=3, T=20, resets=((1, 7), (2, 12), (0, 5)))
    mask = torch.rand(3, 20, generator=torch.Generator().manual_seed(1)) > 0.4
    full = m(x, a, loss_mask=mask, step=700)
    state, outs = None, []
    for lo, hi in ((0, 5), (5, 6), (6, 13), (13, 20)):
        out = m(x[:, lo:hi], a[:, lo:hi], state, loss_mask=mask[:, lo:hi], step=700)
        state = out.state
        outs.append(out)
    for name in ("logits", "logits_g", "g", "g_gen", "p", "p_gen"):
        torch.testing.assert_close(torch.cat([getattr(o, name) for o in outs], 1), getattr(full, name),
                                   rtol=1e-12, atol=1e-12)
    for name in ("g", "x_f", "M_gen", "M_inf"):
        torch.testing.assert_close(getattr(state, name), getattr(full.state, name), rtol=1e-12, atol=1e-12)
    if reduction == "step_sum":       # the port's loss is a sum over steps, so chunk losses add up
        torch.testing.assert_close(sum(o.loss for o in outs), full.loss, rtol=1e-12, atol=1e-12)


def test_reset_forgets_the_old_world_and_slots_are_independent():
    """After a RESET a slot runs exactly as a fresh model started there, whatever came before in it or in the
    other slots (per-slot resets of memory, x filter and g; no batch-wide statistics)."""
    m = _model()
    x, a = _data(B=3, T=18, resets=((1, 7),))
    out = m(x, a)
    x2, a2 = x[1:2, 7:], a[1:2, 7:]
    fresh = m(x2, a2)
    torch.testing.assert_close(out.logits[1:2, 7:], fresh.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.state.M_gen[1:2], fresh.state.M_gen, rtol=1e-12, atol=1e-12)
    alone = m(x[:1], a[:1])                                            # slot 0 without the others
    torch.testing.assert_close(out.logits[:1], alone.logits, rtol=1e-12, atol=1e-12)


def test_path_integration_is_the_recurrent_position_update():
    """Claim C5: TEM's transition, written as the port writes it per module (g + cat(g[lower/same frequency
    modules]) @ D_a, clamped), equals RecurrentPositions' W_a = I + U_a, and the fused chunk recurrence equals
    the loop; the stay action is exactly the identity."""
    torch.manual_seed(4)
    c = TEMConfig(**SMALL)
    path = TEMPathIntegration(c).double()
    sizes, offsets = c.g_modules, [0, 6, 12, 16]
    B = 4
    g = (0.6 * torch.randn(B, 16, dtype=torch.float64)).clamp(-1, 1)
    acts = torch.tensor([1, 2, 3, 4])
    W = path.transition_matrices()
    expect = []
    for f_to, n_g in enumerate(sizes):
        srcs = [f for f in range(3) if c.f_initial[f] <= c.f_initial[f_to]]
        g_in = torch.cat([g[:, offsets[f]:offsets[f + 1]] for f in srcs], 1)
        onehot = torch.nn.functional.one_hot(acts, N_A).double()
        D = path.D_out[f_to](torch.tanh(path.D_in[f_to](onehot))).view(B, g_in.shape[1], n_g)
        expect.append(g[:, offsets[f_to]:offsets[f_to + 1]] + (g_in.unsqueeze(1) @ D).squeeze(1))
    expect = torch.cat(expect, 1).clamp(-1, 1)
    torch.testing.assert_close(path.step(g, acts, W), expect, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(W[0], torch.eye(16, dtype=torch.float64), rtol=0, atol=0)      # stay
    assert (W[1:, :6, 6:] == 0).all() and not (W[1:, 6:, :6] == 0).all()   # high frequency never feeds low
    x, a = _data(B=3, T=25)
    loop = path(a, method="loop")
    torch.testing.assert_close(path(a, method="fused"), loop, rtol=1e-13, atol=1e-13)
    m = _model()
    assert isinstance(m.path, TEMPathIntegration)
    torch.testing.assert_close(m.path_integrate(a), m.path(a, method="loop"), rtol=1e-13, atol=1e-13)


def test_g_gen_is_the_transition_of_the_previous_inferred_g():
    m = _model()
    x, a = _data(B=2, T=6, resets=())
    out = m(x, a)
    W = m.path.transition_matrices()
    for t in range(1, 6):
        expect = torch.bmm(out.g[:, t - 1].unsqueeze(1), W[a[:, t]]).squeeze(1).clamp(-1, 1)
        torch.testing.assert_close(out.g_gen[:, t], expect, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out.g_gen[:, 0], m.path.e_init.expand(2, -1))      # RESET: g_init


def test_schedule_known_values():
    c = TEMConfig()
    s0 = schedule(0, c)
    assert s0.eta == pytest.approx(0.5 / 16000) and s0.lambda_ == pytest.approx(0.9999 / 200)
    assert s0.weights["p_g"] == pytest.approx(1 / 2000) and s0.weights["x_gen"] == 1.0
    assert s0.weights["reg_p"] == pytest.approx(0.02 * (1 - 1 / 4000))
    assert s0.p2g_offset == pytest.approx(1 / (1 + math.exp(-2)))
    s = schedule(399, c)
    assert s.p2g_offset == pytest.approx(1 / (1 + math.exp(-1 / 200)))
    assert s.weights["p_x"] == pytest.approx(0.2 * (1 - s.p2g_offset))
    late = schedule(50_000, c)
    assert late.eta == 0.5 and late.lambda_ == 0.9999 and late.weights["reg_p"] == 0.0
    assert late.weights["p_g"] == late.weights["g"] == 1.0
    assert late.weights["reg_g"] == pytest.approx(0.01 * (1 - 50_001 / 4e7))        # annealed over 4e7 steps
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        schedule(-1, c)


@pytest.mark.parametrize("overrides, field", [
    ({"g_memory": (10, 10, 8, 6)}, "g_memory must have one entry per module"),
    ({"g_memory": (10, 31, 8, 6, 6)}, "g_memory[1] = 31"),
    ({"f_initial": (0.99, 1.0, 0.09, 0.03, 0.01)}, "f_initial[1] = 1.0"),
    ({"n_x_c": 9, "n_stimuli": 45}, "n_x_c = 9 gives 36 two-hot codes"),
    ({"lambda_": 0.0}, "lambda_ must be in (0, 1]"),
    ({"eta": float("nan")}, "eta must be a finite number >= 0"),
    ({"w_reg_p": -0.1}, "w_reg_p must be a finite number >= 0"),
    ({"loss_reduction": "sum"}, "loss_reduction must be one of"),
    ({"stay_action": 5}, "stay_action must be in [0, n_actions=5)"),
    ({"attractor_iterations": 0}, "attractor_iterations must be >= 1"),
    ({"g_modules": ()}, "g_modules must list at least one module"),
])
def test_config_rejects_bad_values(overrides, field):
    with pytest.raises(ConfigError, match="invalid TEMConfig") as err:
        TEMConfig(**overrides)
    assert field in str(err.value)


def test_config_rejects_unknown_keys_and_converts_lists():
    with pytest.raises(ConfigError, match=r"unknown config key 'etaa' \(did you mean 'eta'\?\)"):
        from_dict(TEMConfig, {"etaa": 0.5})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(TEMConfig, {"n_x_c": "ten"})
    cfg = from_dict(TEMConfig, {"g_modules": [6, 6], "g_memory": [2, 2], "f_initial": [0.9, 0.1]})
    assert cfg.g_modules == (6, 6)


def test_bad_inputs_name_what_and_where():
    m = _model()
    x, a = _data(B=2, T=5, resets=())
    with pytest.raises(ValueError, match=r"x\[1, 3\] = 7 is out of range"):
        bad = x.clone()
        bad[1, 3] = N_X
        m(bad, a)
    with pytest.raises(ValueError, match=r"actions\[0, 2\] = -2"):
        bad = a.clone()
        bad[0, 2] = -2
        m(x, bad)
    with pytest.raises(ValueError, match="x and actions must have the same shape"):
        m(x, a[:, :4])
    state = m(x, a).state
    with pytest.raises(ValueError, match=r"state.g must have shape \(3, 16\), got \(2, 16\)"):
        m(torch.cat([x, x[:1]]), torch.cat([a, a[:1]]), state)
    with pytest.raises(ValueError, match=r"state.M_gen must have shape \(2, 30, 30\), got \(2, 5, 5\)"):
        m(x, a, TEMState(state.g, state.x_f, state.M_gen[:, :5, :5], state.M_inf))
    with pytest.raises(TypeError, match="loss_mask must be a bool tensor"):
        m(x, a, loss_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="step must be an integer"):
        m(x, a, step=1.5)


TRAIN_STEPS = 150


@pytest.mark.slow
def test_tiny_training_run_learns_revisits():
    """A small TEM (g 12+12+8, p 120) on 3x3 worlds with 45 observations (chance 1/45 = 0.022), TRAIN_STEPS
    gradient steps of 16 walks x 20 steps: x_gt accuracy on revisits over the last 25 steps must be far above
    chance (measured 2026-12-02 on the loaded 2-core machine: see the report; about 4 minutes)."""
    result = _train_small(steps=TRAIN_STEPS)
    assert result["acc_revisit"] > 0.2, f"{result} after {TRAIN_STEPS} steps (chance {1 / 45:.3f})"


def _train_small(steps: int, seed: int = 0, window: int = 25) -> dict:
    """Train a small TEM with TEM's schedules compressed to this short run; accuracies of x_gt (the prediction
    made before the observation is seen) over the last `window` steps: all revisits, revisits by a move (not
    the stay action), and zero-shot revisits (a new edge into a visited node)."""
    import numpy as np
    from spatial.walks import WalkConfig, WalkStream
    torch.manual_seed(seed)
    cfg = TEMConfig(g_modules=(12, 12, 8), g_memory=(4, 4, 4), f_initial=(0.99, 0.3, 0.09), attractor_iterations=3,
                    eta_ramp_steps=1, p_g_ramp_steps=50, p2g_half_step=30.0, p2g_scale_steps=10.0,
                    reg_p_anneal_steps=200)
    model = TEM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    walks = WalkStream(WalkConfig(sizes=(3,), walk_length=(100, 200)), 16, seed=seed)
    state, rows = None, []
    for step in range(steps):
        chunk = walks.next_chunk(20)
        x, a = torch.from_numpy(chunk["x"]), torch.from_numpy(chunk["actions"])
        out = model(x, a, state, loss_mask=torch.from_numpy(chunk["revisit"]), step=step)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        state = out.state
        if step >= steps - window:
            correct = (out.logits.argmax(-1) == x).numpy()
            rows.append((correct, chunk["revisit"], chunk["actions"] != walks.stay, chunk["new_edge"]))
    correct, revisit, moved, new_edge = (np.concatenate(r, 1) for r in zip(*rows))
    return {"acc_revisit": float(correct[revisit].mean()), "acc_revisit_moved": float(correct[revisit & moved].mean()),
            "acc_zero_shot": float(correct[revisit & new_edge].mean()), "n_revisit": int(revisit.sum())}
