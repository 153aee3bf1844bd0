"""Bounded activity by per-module normalisation (positions.ModuleNorm): the fused paths equal the plain ones,
gradients are right, every module keeps its norm, and bad settings are named."""
import pytest
import torch

from temt_core.model import TEMt, TEMtConfig
from temt_core.population import check_population_config
from temt_core.positions import RESET, ModuleNorm, RecurrentPositions


def _actions(B, T, A, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, A, (B, T), generator=g)
    a[:, 0] = RESET
    a[1, min(7, T - 2)] = RESET
    a[2, 0] = 2                                  # slot 2 continues from e0
    return a


@pytest.mark.parametrize("activation", ["relu", "linear", "tanh"])
@pytest.mark.parametrize("n_modules", [1, 3])
def test_fused_equals_loop_and_keeps_the_norm(activation, n_modules):
    torch.manual_seed(0)
    m = RecurrentPositions(5, 12, activation=activation, bound=None, stay_action=0, init_std=0.6,
                           n_modules=n_modules, module_norm=1.5).double()
    a = _actions(3, 20, 5)
    e0 = torch.rand(3, 12, dtype=torch.double, requires_grad=True)
    probe = torch.randn(3, 20, 12, dtype=torch.double)
    outs = []
    for method in ("loop", "fused"):
        e = m(a, e0, method=method)
        outs.append((e, torch.autograd.grad((e * probe).sum(), [e0, m.e_init, m.U])))
    (e_loop, g_loop), (e_fused, g_fused) = outs
    torch.testing.assert_close(e_fused, e_loop, rtol=1e-12, atol=1e-12)
    for gf, gl in zip(g_fused, g_loop):
        torch.testing.assert_close(gf, gl, rtol=1e-10, atol=1e-10)
    norms = torch.linalg.vector_norm(e_fused.unflatten(-1, (n_modules, -1)), dim=-1)      # (B, T, modules)
    alive = norms > 0                            # a module ReLU silenced entirely stays at zero
    torch.testing.assert_close(norms[alive], torch.full_like(norms[alive], 1.5))
    assert alive.float().mean() > 0.9
    torch.testing.assert_close(torch.linalg.vector_norm(m.e_init.unflatten(-1, (n_modules, -1)), dim=-1),
                               torch.full((n_modules,), 1.5, dtype=torch.double))   # starts on the sphere


def test_fused_gradcheck_with_module_norm():
    torch.manual_seed(1)
    m = RecurrentPositions(3, 6, activation="tanh", bound=None, init_std=0.5, n_modules=2, module_norm=1.0).double()
    a = _actions(3, 6, 3)
    e0 = torch.rand(3, 6, dtype=torch.double, requires_grad=True)
    W = m.transition_matrices().detach().requires_grad_()
    f = lambda e0, W: m(a, e0, method="fused", W=W)
    assert torch.autograd.gradcheck(f, (e0, W), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("query", ["stimulus", "product"])
def test_landmark_path_equals_sequential_with_module_norm(query):
    torch.manual_seed(2)
    model = TEMt(TEMtConfig(n_actions=5, n_stimuli=7, pos_dim=12, bound=None, module_norm=2.0, n_modules=3,
                            transition_init_std=0.5, landmark=query, landmark_key_dim=8, dedup_threshold=0.9)).double()
    with torch.no_grad():
        model.landmark.gate.bias.fill_(0.5)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 7, (3, 24), generator=g)
    a = _actions(3, 24, 5, seed=4)
    a[2, 0] = RESET
    fast, ref = model(x, a), model(x, a, sequential=True)
    for name in ("e", "e_pi", "logits", "logits_corrected"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=1e-10, atol=1e-10)
    params = list(model.parameters())
    for gf, gr in zip(torch.autograd.grad(fast.loss, params), torch.autograd.grad(ref.loss, params)):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-10)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="set bound=None"):
        RecurrentPositions(5, 8, bound=1.0, module_norm=1.0)
    with pytest.raises(ValueError, match="module_norm must be positive"):
        ModuleNorm(0.0, 2)
    with pytest.raises(ValueError, match="module_norm must be positive and needs bound=None"):
        TEMtConfig(module_norm=1.0)                                      # the default bound is 1.0
    with pytest.raises(ValueError, match="cannot normalise modules"):
        TEMtConfig(module_norm=1.0, bound=None, activation="linear", recurrence="scan")
    with pytest.raises(ValueError, match="populations do not normalise modules yet"):
        check_population_config(TEMtConfig(module_norm=1.0, bound=None))
