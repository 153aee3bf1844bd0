"""TEMtPopulation: each member equals the TEMt it was built from (recurrence, forward, gradients, Adam training),
the population recurrence passes gradcheck, and bad members are refused with clear errors."""
import pytest
import torch

from temt_core.model import TEMt, TEMtConfig
from temt_core.population import (PopulationAdam, TEMtPopulation, _PopulationRecurrence, population_recurrence,
                                  structure_key)
from temt_core.positions import RESET, RecurrentPositions, _FusedRecurrence


def _actions(P, B, T, A, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, A, (P, B, T), generator=g)
    a[:, :, 0] = RESET
    a[0, 1, 0] = 2                          # member 0, slot 1 continues from e0: its gradient must reach e0
    a[1, 0, 5] = RESET                      # a reset inside the chunk
    return a


@pytest.mark.parametrize("activation,bound", [("relu", 1.0), ("linear", None), ("tanh", 0.7), ("sigmoid", None)])
def test_population_recurrence_equals_fused_per_member(activation, bound):
    torch.manual_seed(0)
    P, B, T, E, A = 3, 4, 12, 6, 5
    W = (torch.eye(E) + 0.4 * torch.randn(P, A, E, E)).double().requires_grad_()
    e_init = torch.rand(P, E, dtype=torch.double, requires_grad=True)
    e0 = torch.rand(P, B, E, dtype=torch.double, requires_grad=True)
    actions = _actions(P, B, T, A)
    probe = torch.randn(P, B, T, E, dtype=torch.double)
    e = population_recurrence(e0, W, e_init, actions, activation, bound)
    grads = torch.autograd.grad((e * probe).sum(), [e0, W, e_init])
    for p in range(P):
        w, ei, z0 = W.detach()[p].clone().requires_grad_(), e_init.detach()[p].clone().requires_grad_(), \
            e0.detach()[p].clone().requires_grad_()
        ref = _FusedRecurrence.apply(z0, w, ei, actions[p], activation, bound)
        ref_grads = torch.autograd.grad((ref * probe[p]).sum(), [z0, w, ei])
        torch.testing.assert_close(e[p], ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got[p], want, rtol=1e-10, atol=1e-12)
    assert grads[0][0, 1].abs().sum() > 0        # the continuing slot really depends on e0
    assert grads[0][0, 0].abs().sum() == 0       # a slot that resets at step 0 does not


@pytest.mark.parametrize("activation,bound", [("tanh", None), ("linear", None), ("relu", 2.0)])
def test_population_recurrence_gradcheck(activation, bound):
    torch.manual_seed(1)
    P, B, T, E, A = 2, 2, 4, 3, 3
    W = (torch.eye(E) + 0.3 * torch.randn(P, A, E, E)).double().requires_grad_()
    e_init = (0.2 + torch.rand(P, E)).double().requires_grad_()
    e0 = (0.2 + torch.rand(P, B, E)).double().requires_grad_()
    actions = torch.tensor([[[1, 2, RESET, 0], [0, 1, 1, 2]], [[RESET, 2, 1, 1], [2, 2, 0, RESET]]])
    f = lambda e0, W, e_init: _PopulationRecurrence.apply(e0, W, e_init, actions, activation, bound)
    assert torch.autograd.gradcheck(f, (e0, W, e_init), eps=1e-6, atol=1e-7)


def _members(configs, seeds, dtype=torch.double):
    models = []
    for c, s in zip(configs, seeds):
        torch.manual_seed(s)
        models.append(TEMt(c).to(dtype))
    return models


def _chunks(P, B, T, n, n_x, A=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randint(0, n_x, (P, B, T), generator=g)
        # few distinct moves so that positions and stimuli repeat: duplicates really occur
        a = torch.randint(0, A, (P, B, T), generator=g)
        if i == 0:
            a[:, :, 0] = RESET
        a[:, 1, T // 2] = RESET
        out.append((x, a, torch.rand(P, B, T, generator=g) > 0.3))
    return out


CONFIGS = [dict(transition_init_std=0.0, w_reg_e=0.01, dedup_threshold=0.95),
           dict(transition_init_std=0.4, w_reg_e=0.1, dedup_threshold=None, attention_multiplier=2.0,
                max_memories=12),
           dict(transition_init_std=0.2, w_reg_e=0.0, dedup_threshold=0.6, w_nonneg=0.05, max_memories=30,
                w_reg_w=0.01)]


def _run_side_by_side(pop, models, chunks, B):
    """Step the population and each member's TEMt through the same chunks; every member's losses, parts, logits,
    positions, stored mask, gradients and carried state must equal its TEMt's. Yields (population output, the
    members' outputs) per chunk."""
    states, pstate = [None] * len(models), None
    for x, a, mask in chunks:
        out = pop(x, a, pstate, loss_mask=mask)
        grads = torch.autograd.grad(out.loss, list(pop.parameters()))
        member_outs = []
        for p, m in enumerate(models):
            o = m(x[p], a[p], states[p], loss_mask=mask[p])
            torch.testing.assert_close(out.losses[p], o.loss, rtol=1e-12, atol=1e-12)
            for k, v in o.parts.items():
                torch.testing.assert_close(out.parts[k][p], v, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(out.logits[p], o.logits, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(out.e[p], o.e, rtol=1e-10, atol=1e-12)
            assert torch.equal(out.stored[p], o.stored)
            member_grads = torch.autograd.grad(o.loss, list(m.parameters()))
            for (name, _), g_pop, g in zip(pop.named_parameters(), grads, member_grads):
                torch.testing.assert_close(g_pop[p], g, rtol=1e-9, atol=1e-12, msg=name)
            mine = pop.member_state(out.state, p, B)
            torch.testing.assert_close(mine.e, o.state.e, rtol=1e-12, atol=1e-12)
            assert mine.memory.valid.sum(1).tolist() == o.state.memory.valid.sum(1).tolist()
            assert torch.equal(mine.count, o.state.count)
            states[p] = o.state
            member_outs.append(o)
        pstate = out.state
        yield out, member_outs


@pytest.mark.parametrize("transition,block", [("matrix", None), ("matrix", 200), ("mlp", None),
                                              ("orthogonal", 200)])
def test_forward_and_gradients_equal_the_members(transition, block):
    extra = dict(inverse_actions=((1, 2), (3, 4))) if transition == "orthogonal" else {}
    configs = [TEMtConfig(pos_dim=10, n_stimuli=6, transition=transition, **extra, **c) for c in CONFIGS]
    models = _members(configs, [0, 1, 2])
    pop = TEMtPopulation(models)
    pop.block_elements = block             # 200: several blocks of slots in the attention, None: one
    P, B, T = 3, 4, 9
    stored_any_false = False
    for out, member_outs in _run_side_by_side(pop, models, _chunks(P, B, T, 4, 6), B):
        stored_any_false |= any(bool((~o.stored).any()) for o in member_outs)
        pstate = out.state
    assert stored_any_false                               # de-duplication really dropped memories
    assert max(pop.member_state(pstate, 1, B).memory.valid.sum(1).tolist()) == 12   # member 1's capacity


def test_sdpa_and_fused_backends_equal_explicit():
    configs = [TEMtConfig(pos_dim=8, n_stimuli=5, key_dim=6, value_dim=4, **c) for c in CONFIGS[:2]]
    pop = TEMtPopulation(_members(configs, [3, 4]))
    results = {}
    for backend in ("explicit", "fused", "sdpa"):
        pop.attention_backend = backend
        state, losses = None, []
        for x, a, mask in _chunks(2, 3, 7, 3, 5):
            out = pop(x, a, state, loss_mask=mask)
            losses.append(out.losses)
            state = out.state
        results[backend] = (torch.stack(losses), torch.autograd.grad(out.loss, list(pop.parameters())))
    for backend in ("fused", "sdpa"):
        torch.testing.assert_close(results[backend][0], results["explicit"][0], rtol=1e-10, atol=1e-12)
        for a, b in zip(results[backend][1], results["explicit"][1]):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.double, 1e-10), (torch.float32, 2e-4)])
def test_training_equals_adam_and_clip_alone(dtype, tol):
    """PopulationAdam + per-member clip == torch.optim.Adam + clip_grad_norm_ per member, over several steps, with
    members that differ in seed, init std, energy weight, de-duplication, learning rate and clip."""
    configs = [TEMtConfig(pos_dim=12, n_stimuli=6, **c) for c in CONFIGS]
    lrs, clips = [3e-3, 1e-2, 5e-4], [0.5, 2.0, 0.05]       # the 0.05 clip is active at every step
    models = _members(configs, [5, 6, 7], dtype)
    pop = TEMtPopulation(models)
    opt = PopulationAdam(pop.parameters())
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(models, lrs)]
    P, B, T = 3, 4, 10
    states, pstate = [None] * P, None
    for step, (x, a, mask) in enumerate(_chunks(P, B, T, 7, 6, seed=1)):
        out = pop(x, a, pstate, loss_mask=mask)
        opt.zero_grad()
        out.loss.backward()
        norms = opt.clip_grad_norm_(clips)
        opt.step([lr * 0.9 ** step for lr in lrs])             # a schedule: each member's own rate each step
        pstate = out.state
        for p, (m, o_p) in enumerate(zip(models, opts)):
            o = m(x[p], a[p], states[p], loss_mask=mask[p])
            o_p.zero_grad(set_to_none=True)
            o.loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(m.parameters(), clips[p])
            for group in o_p.param_groups:
                group["lr"] = lrs[p] * 0.9 ** step
            o_p.step()
            states[p] = o.state
            torch.testing.assert_close(out.losses[p].detach(), o.loss.detach(), rtol=tol, atol=tol)
            torch.testing.assert_close(norms[p], norm, rtol=tol, atol=tol)
    # Weights in float32: Adam divides each gradient by its own running norm, so an entry whose gradient is near
    # zero moves by up to lr whatever its rounding; after 7 steps the members differ from their twins by up to
    # 3.4e-4 on an Intel Xeon (under 2e-4 on an AMD EPYC). float64 (tol 1e-10) is the exact test.
    w_tol = tol if dtype == torch.double else 1e-3
    for p, m in enumerate(models):
        for name, v in m.state_dict().items():
            torch.testing.assert_close(pop.member_state_dict(p)[name], v, rtol=w_tol, atol=w_tol)
    assert norms[2] > clips[2]                                  # the clip really acted


def test_member_export_round_trip_and_initial_weights():
    configs = [TEMtConfig(pos_dim=8, n_stimuli=5, transition_init_std=s) for s in (0.1, 0.5)]
    models = _members(configs, [11, 12], torch.float32)
    pop = TEMtPopulation(models)
    for p, seed in enumerate([11, 12]):
        torch.manual_seed(seed)
        fresh = TEMt(configs[p])                               # TEMt(config_p) seeded the same way
        for name, v in fresh.state_dict().items():
            assert torch.equal(pop.member_state_dict(p)[name], v), name
        exported = pop.member_model(p)
        assert isinstance(exported, TEMt) and exported.config == configs[p]
        for name, v in fresh.state_dict().items():
            assert torch.equal(exported.state_dict()[name], v)
    with pytest.raises(IndexError, match="member 2 out of range"):
        pop.member_state_dict(2)


def test_adam_state_exports_as_torch_adam():
    models = _members([TEMtConfig(pos_dim=8, n_stimuli=5)] * 2, [0, 1], torch.float32)
    pop = TEMtPopulation(models)
    opt = PopulationAdam(pop.parameters())
    x, a, mask = _chunks(2, 2, 6, 1, 5)[0]
    pop(x, a, loss_mask=mask).loss.backward()
    opt.step([1e-3, 2e-3])
    model = pop.member_model(1)
    torch_opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch_opt.load_state_dict(opt.member_torch_state(1, model))
    state = torch_opt.state[model.positions.U]
    assert float(state["step"]) == 1
    torch.testing.assert_close(state["exp_avg"], opt.exp_avg[pop.names.index("positions.U")][1])


def test_bad_members_are_refused():
    landmark = TEMtConfig(pos_dim=8, n_stimuli=5, landmark="stimulus")
    with pytest.raises(ValueError, match="member 1 cannot share a population with member 0: landmark differ"):
        TEMtPopulation(_members([TEMtConfig(pos_dim=8, n_stimuli=5), landmark], [0, 1]))
    with pytest.raises(ValueError, match="member 1 cannot share a population with member 0: pos_dim, key_dim differ"):
        TEMtPopulation(_members([TEMtConfig(pos_dim=8, n_stimuli=5), TEMtConfig(pos_dim=12, n_stimuli=5)], [0, 1]))
    with pytest.raises(ValueError, match="at least one member"):
        TEMtPopulation([])
    # key_dim None and key_dim == pos_dim give the same shapes: one population
    assert structure_key(TEMtConfig(pos_dim=8, n_stimuli=5)) == structure_key(TEMtConfig(pos_dim=8, n_stimuli=5,
                                                                                         key_dim=8))
    pop = TEMtPopulation(_members([TEMtConfig(pos_dim=8, n_stimuli=5)] * 2, [0, 1]))
    x, a, _ = _chunks(2, 2, 5, 1, 5)[0]
    with pytest.raises(ValueError, match=r"x must have shape \(P=2, B, T\)"):
        pop(x[0], a[0])
    with pytest.raises(ValueError, match="out of range"):
        pop(x + 10, a)


def test_divergence_names_the_member():
    models = _members([TEMtConfig(pos_dim=6, n_stimuli=5, bound=None, activation="linear")] * 3, [0, 1, 2],
                      torch.float32)
    pop = TEMtPopulation(models)
    with torch.no_grad():
        pop.param("positions.U")[2] += 1e3
    x, a, _ = _chunks(3, 2, 40, 1, 5)[0]
    a[:, :, 1:] = 1                                              # one move, repeated: float32 overflows
    from temt_core.validation import NonFiniteError
    with pytest.raises(NonFiniteError, match=r"member\(s\) \[2\]"):
        pop(x, a)


def test_recurrence_matches_recurrent_positions_module():
    """The population recurrence of a population built from RecurrentPositions' own W equals its fused path."""
    torch.manual_seed(0)
    mods = [RecurrentPositions(5, 7, stay_action=0, init_std=0.5).double() for _ in range(2)]
    a = _actions(2, 3, 10, 5)
    W = torch.stack([m.transition_matrices() for m in mods])
    e0 = torch.stack([m.initial(3) for m in mods])
    e = population_recurrence(e0, W, torch.stack([m.e_init for m in mods]), a, "relu", 1.0)
    for p, m in enumerate(mods):
        torch.testing.assert_close(e[p], m(a[p], e0[p], method="fused"), rtol=1e-12, atol=1e-12)


def test_subset_keeps_the_members_weights_moments_and_state():
    models = _members([TEMtConfig(pos_dim=8, n_stimuli=5, **c) for c in CONFIGS], [0, 1, 2])
    pop = TEMtPopulation(models)
    opt = PopulationAdam(pop.parameters())
    chunks = _chunks(3, 2, 6, 2, 5)
    x, a, mask = chunks[0]
    out = pop(x, a, loss_mask=mask)
    out.loss.backward()
    opt.step([1e-2, 2e-2, 3e-2])
    small = pop.subset([2, 0])
    small_opt = opt.subset([2, 0], list(small.parameters()))
    state = TEMtPopulation.subset_state(out.state, [2, 0], 2)
    assert small.configs == [pop.configs[2], pop.configs[0]]
    for q, p in enumerate([2, 0]):
        for name, v in pop.member_state_dict(p).items():
            assert torch.equal(small.member_state_dict(q)[name], v)
        for m_small, m in zip(small_opt.exp_avg_sq, opt.exp_avg_sq):
            assert torch.equal(m_small[q], m[p])
        assert torch.equal(small.member_state(state, q, 2).e, pop.member_state(out.state, p, 2).e)
    # the next step of the kept members is the one they take in the full population
    x, a, mask = chunks[1]
    full = pop(x, a, out.state, loss_mask=mask)
    part = small(x[[2, 0]], a[[2, 0]], state, loss_mask=mask[[2, 0]])
    torch.testing.assert_close(part.losses, full.losses[[2, 0]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("query", ["stimulus", "product"])
def test_landmark_population_equals_the_members(query):
    """Landmark correction in a population: every member's losses, logits, gradients and state equal its TEMt's
    (the fused loop run with stacked weights), members differing in seed, de-duplication (on, off), capacity and
    the landmark loss weights."""
    lm = [dict(dedup_threshold=0.9, w_g=0.5), dict(dedup_threshold=None, w_x_corr=2.0, max_memories=12),
          dict(dedup_threshold=0.6, transition_init_std=0.3)]
    configs = [TEMtConfig(pos_dim=10, n_stimuli=6, landmark=query, landmark_key_dim=4, **c) for c in lm]
    models = _members(configs, [0, 1, 2])
    for m in models:                        # open the gates a little, so that the correction really moves e
        torch.nn.init.normal_(m.landmark.gate.weight, std=0.3)
        torch.nn.init.constant_(m.landmark.gate.bias, 0.0)
    pop = TEMtPopulation(models)
    P, B, T = 3, 4, 9
    for out, _ in _run_side_by_side(pop, models, _chunks(P, B, T, 4, 6), B):
        pass
    assert (out.parts["g"] > 1e-6).all()             # the correction really moved every member's positions
    assert not out.stored[0].all() and out.stored[1].all()    # member 0 de-duplicates, member 1 does not


@pytest.mark.parametrize("query", ["stimulus", "product"])
def test_landmark_population_with_more_members_than_actions(query):
    """Regression: the landmark loop's backward took the number of actions from W.shape[0], which in a population
    is P. With P > n_actions the transition gradient came out (P, P, E, E) and backward failed (found 2026-12-04);
    a member that took fewer than P distinct actions could get a wrongly shaped one too."""
    configs = [TEMtConfig(pos_dim=6, n_stimuli=4, landmark=query, landmark_key_dim=3, dedup_threshold=None,
                          transition_init_std=0.1 * p) for p in range(7)]
    models = _members(configs, list(range(7)))
    pop = TEMtPopulation(models)
    for out, _ in _run_side_by_side(pop, models, _chunks(7, 2, 6, 2, 4), 2):
        pass
    assert pop.n_actions == 5 and pop.P == 7
