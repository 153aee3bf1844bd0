"""Each slot's product with its transition (temt_core/transition_products.py): the grouped blocks equal the wide
product and the definition, and every fused recurrence that uses them (positions, populations, the landmark loop)
equals its reference with the blocks forced, in float64. 'auto' picks what the rule says."""
import pytest
import torch

import temt_core.transition_products as tp_module
from temt_core.model import TEMt, TEMtConfig
from temt_core.population import TEMtPopulation, population_recurrence
from temt_core.positions import RESET, RecurrentPositions, _FusedRecurrence
from temt_core.transition_products import TransitionProducts

from test_landmark_loop import _model as _landmark_model, _run as _landmark_run, _walk as _landmark_walk
from test_population import _chunks, _members, _run_side_by_side


def _actions(B, T, A, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, A, (B, T), generator=g)
    a[:, 0] = RESET
    a[-1, 0] = 1                         # a slot that continues from e0
    a[0, 4] = RESET
    a[:, 6] = 2                          # a step where every slot takes one action: one full group
    return a


@pytest.fixture
def count_blocks(monkeypatch):
    """Counts the TransitionProducts built with blocks (a test of the blocks must see them used)."""
    built = []
    init = TransitionProducts.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self.blocks)
    monkeypatch.setattr(TransitionProducts, "__init__", spy)
    return built


@pytest.mark.parametrize("members,stacked", [(1, False), (1, True), (3, True)])
@pytest.mark.parametrize("mode", ["wide", "blocks"])
def test_products_equal_the_definition(members, stacked, mode):
    """One model's W (A, E, E), a population's (P, A, E, E), and a population of one (P = 1, stacked)."""
    torch.manual_seed(0)
    Bp, T, E, A = 5, 9, 7, 4
    B = members * Bp
    W = torch.randn(members, A, E, E, dtype=torch.double)
    actions = _actions(B, T, A)
    tp = TransitionProducts(actions, A, members, E, mode)
    assert tp.blocks == (mode == "blocks")
    Wm = W if stacked else W[0]
    member = torch.arange(B) // Bp
    for transpose in (False, True):
        weights = tp.weights(Wm.transpose(-1, -2) if transpose else Wm)
        for t in range(T):
            v = torch.randn(B, E, dtype=torch.double)
            out = torch.full((B, E), float("nan"), dtype=torch.double)
            got = tp(v, t, weights, out=out)
            mats = W[member, actions[:, t].clamp(min=0)]                             # (B, E, E)
            want = torch.einsum("be,bef->bf", v, mats.transpose(-1, -2) if transpose else mats)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            assert got.data_ptr() == out.data_ptr()


def test_auto_picks_blocks_only_where_they_pay():
    a16 = _actions(16, 20, 5)
    assert TransitionProducts(a16, 5, 1, 128).blocks                       # the reference config
    assert not TransitionProducts(a16, 5, 1, 32).blocks                    # small e: the extra op costs more
    assert not TransitionProducts(a16, 5, 1, 128, capturable=True).blocks  # fixed shapes, no host read
    assert not TransitionProducts(_actions(4, 20, 5), 5, 1, 128).blocks    # batch 4: too few slots to group
    two = torch.randint(0, 2, (16, 20), generator=torch.Generator().manual_seed(0))
    assert not TransitionProducts(two, 2, 1, 128).blocks                   # 2 actions: the blocks over half full
    assert TransitionProducts(_actions(32, 20, 5), 5, 2, 128).blocks       # a population of 2 x 16
    with pytest.raises(ValueError, match="mode must be one of"):
        TransitionProducts(a16, 5, 1, 128, mode="grouped")


@pytest.mark.parametrize("activation,bound", [("relu", 1.0), ("tanh", None), ("linear", None)])
def test_fused_recurrence_with_blocks_equals_wide_and_loop(activation, bound, count_blocks):
    torch.manual_seed(1)
    B, T, E, A = 6, 15, 9, 5
    enc = RecurrentPositions(A, E, activation=activation, bound=bound, init_std=1.0).double()
    actions = _actions(B, T, A)
    e0 = torch.rand(B, E, dtype=torch.double, requires_grad=True)
    probe = torch.randn(B, T, E, dtype=torch.double)
    results = {}
    for products in ("wide", "blocks"):
        enc.products = products
        e = enc(actions, e0, method="fused")
        results[products] = (e, torch.autograd.grad((e * probe).sum(), [e0] + list(enc.parameters())))
    loop = enc(actions, e0, method="loop")
    loop_grads = torch.autograd.grad((loop * probe).sum(), [e0] + list(enc.parameters()))
    assert count_blocks == [False, True]
    for e, grads in results.values():
        torch.testing.assert_close(e, loop, rtol=1e-12, atol=1e-12)
        for got, want in zip(grads, loop_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert results["blocks"][1][0].abs().sum() > 0                     # e0 reaches the output (slots continue)


def test_fused_recurrence_with_blocks_gradcheck():
    torch.manual_seed(2)
    B, T, E, A = 4, 5, 3, 3
    W = (torch.eye(E) + 0.3 * torch.randn(A, E, E)).double().requires_grad_()
    e_init = (0.2 + torch.rand(E)).double().requires_grad_()
    e0 = (0.2 + torch.rand(B, E)).double().requires_grad_()
    actions = torch.tensor([[1, 2, RESET, 0, 0], [0, 1, 1, 2, 2], [0, 0, 1, RESET, 2], [2, 2, 0, 1, 1]])
    f = lambda e0, W, e_init: _FusedRecurrence.apply(e0, W, e_init, actions, "tanh", None, None, False, "blocks")
    assert torch.autograd.gradcheck(f, (e0, W, e_init), eps=1e-6, atol=1e-7)


def test_population_recurrence_with_blocks_equals_its_members(count_blocks):
    torch.manual_seed(3)
    P, B, T, E, A = 3, 5, 12, 6, 5
    W = (torch.eye(E) + 0.4 * torch.randn(P, A, E, E)).double().requires_grad_()
    e_init = torch.rand(P, E, dtype=torch.double, requires_grad=True)
    e0 = torch.rand(P, B, E, dtype=torch.double, requires_grad=True)
    actions = _actions(P * B, T, A).view(P, B, T)
    probe = torch.randn(P, B, T, E, dtype=torch.double)
    e = population_recurrence(e0, W, e_init, actions, "relu", 1.0, products="blocks")
    grads = torch.autograd.grad((e * probe).sum(), [e0, W, e_init])
    assert count_blocks == [True]
    for p in range(P):
        w, ei, z0 = (t.detach()[p].clone().requires_grad_() for t in (W, e_init, e0))
        ref = _FusedRecurrence.apply(z0, w, ei, actions[p], "relu", 1.0, None, False, "wide")
        ref_grads = torch.autograd.grad((ref * probe[p]).sum(), [z0, w, ei])
        torch.testing.assert_close(e[p], ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got[p], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("query", ["stimulus", "product"])
@pytest.mark.parametrize("dedup", [None, 0.9])
def test_landmark_loop_with_blocks_equals_sequential_reference(query, dedup, count_blocks):
    model = _landmark_model(query, dedup)
    model.positions.products = "blocks"
    x, a = _landmark_walk(B=5)
    cuts = [0, 9, 21, 40]
    fast, g_fast = _landmark_run(model, x, a, cuts, sequential=False)
    assert count_blocks and all(count_blocks)
    ref, g_ref = _landmark_run(model, x, a, cuts, sequential=True)
    for f, r in zip(fast, ref):
        for name in ("logits", "logits_corrected", "e", "e_pi", "gate", "loss"):
            torch.testing.assert_close(getattr(f, name), getattr(r, name), rtol=1e-10, atol=1e-10, msg=name)
        assert torch.equal(f.stored, r.stored)
    for gf, gr in zip(g_fast, g_ref):
        assert (gf is None) == (gr is None)
        if gf is not None:
            torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("landmark", [None, "stimulus"])
def test_population_with_blocks_equals_its_members(landmark, count_blocks):
    configs = [TEMtConfig(pos_dim=8, n_stimuli=6, landmark=landmark, landmark_key_dim=4, dedup_threshold=d,
                          transition_init_std=0.3) for d in (0.9, None)]
    models = _members(configs, [0, 1])
    for m in models:
        m.positions.products = "wide"
    pop = TEMtPopulation(models)
    pop.products = "blocks"
    assert pop.subset([1, 0]).products == "blocks"
    for _ in _run_side_by_side(pop, models, _chunks(2, 6, 10, 3, 6), 6):
        pass
    assert True in count_blocks and False in count_blocks     # the population used blocks, its members wide


def test_auto_uses_blocks_in_a_model_at_the_reference_width(monkeypatch, count_blocks):
    """With the rule's thresholds lowered, 'auto' takes the blocks inside a model: the wiring is what runs."""
    monkeypatch.setattr(tp_module, "MIN_DIM", 8)
    model = TEMt(TEMtConfig(pos_dim=8, n_stimuli=6, dedup_threshold=None))
    x, a = _chunks(1, 16, 10, 1, 6)[0][:2]
    model(x[0], a[0])
    assert count_blocks == [True]
