"""RecurrentPositions: the fast paths equal the plain loop, gradients are right, tree mode, bad input."""
import pytest
import torch

from temt_core.positions import ACTIVATIONS, RESET, RecurrentPositions
from temt_core.validation import NonFiniteError


def _actions(B, T, A, seed=0, resets=((1, 7),)):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, A, (B, T), generator=g)
    a[:, 0] = RESET
    for b, t in resets:
        a[b, t] = RESET
    return a


def _run(module, actions, e0, method, probe):
    e0 = e0.clone().requires_grad_()
    e = module(actions, e0, method=method)
    params = [e0, module.e_init] + ([module.U] if module.transition == "matrix" else list(module.parameters())[1:])
    grads = torch.autograd.grad((e * probe).sum(), params)
    return e, grads


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bound", [None, 0.7])
def test_fused_equals_loop(activation, bound):
    torch.manual_seed(0)
    m = RecurrentPositions(5, 12, activation=activation, bound=bound, stay_action=0, init_std=0.6).double()
    a = _actions(3, 25, 5)
    a[2, 0] = 3                              # slot 2 continues from e0: its gradient must flow back to e0
    e0 = torch.rand(3, 12, dtype=torch.double)
    probe = torch.randn(3, 25, 12, dtype=torch.double)
    e_loop, g_loop = _run(m, a, e0, "loop", probe)
    e_fused, g_fused = _run(m, a, e0, "fused", probe)
    torch.testing.assert_close(e_fused, e_loop, rtol=1e-12, atol=1e-12)
    for gf, gl in zip(g_fused, g_loop):
        torch.testing.assert_close(gf, gl, rtol=1e-10, atol=1e-10)
    assert g_loop[0][2].abs().sum() > 0      # the continuing slot really depends on e0


def test_scan_equals_loop_linear():
    torch.manual_seed(1)
    m = RecurrentPositions(4, 10, activation="linear", bound=None, stay_action=None, init_std=0.3).double()
    a = _actions(2, 37, 4, resets=((0, 5), (1, 20), (1, 21)))
    a[0, 0] = 2
    e0 = torch.randn(2, 10, dtype=torch.double)
    probe = torch.randn(2, 37, 10, dtype=torch.double)
    e_loop, g_loop = _run(m, a, e0, "loop", probe)
    e_scan, g_scan = _run(m, a, e0, "scan", probe)
    torch.testing.assert_close(e_scan, e_loop, rtol=1e-10, atol=1e-10)
    for gs, gl in zip(g_scan, g_loop):
        torch.testing.assert_close(gs, gl, rtol=1e-9, atol=1e-9)


def test_mlp_transition_fused_equals_loop():
    torch.manual_seed(2)
    m = RecurrentPositions(5, 8, activation="relu", bound=1.0, transition="mlp", stay_action=0,
                           init_std=1.0).double()
    a = _actions(2, 15, 5)
    e0 = torch.rand(2, 8, dtype=torch.double)
    probe = torch.randn(2, 15, 8, dtype=torch.double)
    e_loop, g_loop = _run(m, a, e0, "loop", probe)
    e_fused, g_fused = _run(m, a, e0, "fused", probe)
    torch.testing.assert_close(e_fused, e_loop)
    for gf, gl in zip(g_fused, g_loop):
        torch.testing.assert_close(gf, gl)


def test_gradcheck_fused_float64():
    torch.manual_seed(3)
    from temt_core.positions import _FusedRecurrence
    A, E = 3, 5
    W = (torch.eye(E) + 0.4 * torch.randn(A, E, E)).double().requires_grad_()
    e0 = torch.rand(2, E, dtype=torch.double, requires_grad=True)
    e_init = torch.rand(E, dtype=torch.double, requires_grad=True)
    a = torch.tensor([[1, 2, RESET, 0, 2, 1], [0, 0, 1, 2, RESET, 2]])
    for activation, bound in (("tanh", None), ("linear", None), ("sigmoid", None)):
        assert torch.autograd.gradcheck(lambda e0, W, ei: _FusedRecurrence.apply(e0, W, ei, a, activation, bound),
                                        (e0, W, e_init))


def test_gradcheck_scan_float64():
    torch.manual_seed(4)
    m = RecurrentPositions(3, 4, activation="linear", bound=None, init_std=0.5).double()
    a = torch.tensor([[1, 2, RESET, 0, 2, 1, 1]])
    e0 = torch.rand(1, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e0, U: m(a, e0, method="scan"), (e0, m.U))


def test_definition_and_reset_semantics():
    m = RecurrentPositions(3, 4, activation="relu", bound=None, stay_action=0, init_std=1.0).double()
    W = m.transition_matrices()
    torch.testing.assert_close(W[0], torch.eye(4, dtype=torch.double))        # stay is exactly the identity
    e0 = torch.rand(1, 4, dtype=torch.double)
    a = torch.tensor([[2, 1, RESET, 1]])
    e = m(a, e0)
    step1 = torch.relu(e0 @ W[2])
    torch.testing.assert_close(e[:, 0], step1)
    torch.testing.assert_close(e[:, 1], torch.relu(step1 @ W[1]))
    torch.testing.assert_close(e[0, 2], m.e_init)
    torch.testing.assert_close(e[:, 3], torch.relu(m.e_init.unsqueeze(0) @ W[1]))


def test_block_diagonal_modules():
    m = RecurrentPositions(3, 6, n_modules=3, init_std=1.0)
    U = m.updates()
    assert torch.all(U[:, 0, 2:] == 0) and torch.all(U[:, 2:4, :2] == 0) and U[1, 0, 1] != 0


def test_tree_mode_matches_definition():
    torch.manual_seed(5)
    m = RecurrentPositions(4, 6, activation="tanh", bound=None, init_std=0.5).double()
    W = m.transition_matrices()
    #            node: 0   1  2  3  4  5
    parents = torch.tensor([[-1, 0, 0, 1, 3, -1], [2, 2, -1, 0, 1, 4]])
    actions = torch.tensor([[0, 1, 2, 3, 1, 0], [1, 2, 0, 3, 3, 0]])
    e = m.tree(parents, actions)
    for b in range(2):
        expect = {}
        order = sorted(range(6), key=lambda n: _depth(parents[b], n))
        for n in order:
            p = int(parents[b, n])
            expect[n] = m.e_init if p < 0 else torch.tanh(expect[p] @ W[actions[b, n]])
            torch.testing.assert_close(e[b, n], expect[n])
    e.sum().backward()                        # differentiable
    assert m.U.grad is not None and m.U.grad.abs().sum() > 0


def _depth(parents, n):
    d = 0
    while parents[n] >= 0:
        n, d = int(parents[n]), d + 1
    return d


def test_tree_mode_on_a_chain_equals_time_mode():
    torch.manual_seed(6)
    m = RecurrentPositions(5, 8, activation="relu", bound=1.0, init_std=0.5)
    a = torch.randint(0, 5, (2, 40))
    parents = torch.arange(-1, 39).expand(2, 40)
    e_tree = m.tree(parents, a)
    a_time = a.clone()
    a_time[:, 0] = RESET
    torch.testing.assert_close(e_tree, m(a_time))


def test_tree_cycle_is_reported():
    m = RecurrentPositions(2, 4)
    with pytest.raises(ValueError, match="cycle"):
        m.tree(torch.tensor([[-1, 2, 1]]), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("activation,bound", [("relu", 1.0), ("linear", 1.0), ("tanh", None)])
def test_stable_over_1e5_steps_of_random_actions(activation, bound):
    """Random, non-trivial transitions (spectral radius well above 1) over 10^5 steps: finite and bounded."""
    torch.manual_seed(7)
    m = RecurrentPositions(5, 32, activation=activation, bound=bound, stay_action=0, init_std=1.5)
    assert torch.linalg.matrix_norm(m.transition_matrices()[1:], ord=2).min() > 1.5   # would blow up unbounded
    a = torch.randint(0, 5, (4, 100_000))
    a[:, 0] = RESET
    with torch.no_grad():
        e = m(a)
    limit = bound if bound is not None else max(1.0, m.e_init.detach().abs().max().item())   # tanh: |e| < 1 after a step
    assert torch.isfinite(e).all() and e.abs().max() <= limit + 1e-6


@pytest.fixture
def one_thread():
    """Small models on a shared CPU: two OpenMP threads spin against each other's load (10x slower seen here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_gradients_stay_finite_and_bounded_over_a_1500_step_walk(activation, one_thread):
    """Training along one 1,500-step walk per slot (chunks of 75 with the state carried, Adam steps between, as
    the Trainer does) at TEM-t's default init: every chunk's gradient is finite, none explodes, and the last
    chunks' gradients are no larger than the first ones' although the memory store has grown all along."""
    from spatial.walks import WalkConfig, WalkStream
    from temt_core import TEMt, TEMtConfig
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(n_actions=5, n_stimuli=45, pos_dim=32, activation=activation))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    walks = WalkStream(WalkConfig(sizes=(6,), walk_length=(1500, 1500)), batch_size=4, seed=0)
    state, norms, stored = None, [], []
    for _ in range(20):
        chunk = walks.next_chunk(75)
        x, a, mask = (torch.as_tensor(chunk[k]) for k in ("x", "actions", "revisit"))
        out = model(x, a, state=state, loss_mask=mask)
        opt.zero_grad()
        out.loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item())
        opt.step()
        state = out.state
        stored.append(int(state.memory.valid.sum(1).min()))
    assert (walks.world_count == 0).all()                     # one world per slot all the way: a 1,500-step walk
    assert stored[-1] > 2 * stored[0]                         # the memory store kept growing along the walk
    assert all(torch.isfinite(torch.tensor(norms))) and max(norms) < 50
    assert sum(norms[-5:]) < 5 * sum(norms[:5])


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_full_backprop_through_1500_steps_is_finite_at_the_default_init(activation, one_thread):
    """No truncation at all: the gradient through 1,500 steps of the clamped recurrence at TEM-t's default init
    (transition_init_std 0.113) is finite. (With the expanding transitions of init_std 1.5, as above, the linear
    and tanh recurrences' gradients overflow to NaN: an exploding gradient, which the Trainer's chunks of 75 steps
    and gradient clip keep out of training.)"""
    torch.manual_seed(7)
    m = RecurrentPositions(5, 32, activation=activation, bound=1.0, stay_action=0, init_std=0.113)
    a = torch.randint(0, 5, (4, 1500))
    a[:, 0] = RESET
    (m(a) ** 2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_unbounded_blow_up_raises_a_clear_error():
    torch.manual_seed(8)
    m = RecurrentPositions(3, 16, activation="linear", bound=None, stay_action=None, init_std=3.0)
    a = torch.randint(0, 3, (2, 5000))
    with torch.no_grad(), pytest.raises(NonFiniteError, match=r"non-finite at index \(\d+, \d+\).*bound"):
        m(a)


@pytest.mark.parametrize("bad,match", [
    (torch.full((2, 3), 5), r"actions\[0, 0\] = 5 is out of range"),
    (torch.full((2, 3), -2), r"out of range"),
    (torch.zeros(2, 3), r"integer tensor"),
    (torch.zeros(6, dtype=torch.long), r"2 dimensions"),
])
def test_bad_actions(bad, match):
    m = RecurrentPositions(5, 4)
    with pytest.raises((ValueError, TypeError), match=match):
        m(bad)


def test_bad_e0_and_config():
    m = RecurrentPositions(5, 4)
    with pytest.raises(ValueError, match=r"e0 must have shape \(2, 4\)"):
        m(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="method='scan' needs activation='linear'"):
        m(torch.zeros(2, 3, dtype=torch.long), method="scan")
    with pytest.raises(ValueError, match="activation must be one of"):
        RecurrentPositions(5, 4, activation="swish")
    with pytest.raises(ValueError, match="n_modules must divide"):
        RecurrentPositions(5, 4, n_modules=3)


def test_orthogonal_transitions_are_rotations_with_exact_inverses():
    torch.manual_seed(9)
    m = RecurrentPositions(5, 8, activation="linear", bound=None, transition="orthogonal", stay_action=0,
                           init_std=1.0, inverse_actions=((1, 3), (2, 4))).double()
    W = m.transition_matrices()
    eye = torch.eye(8, dtype=torch.double)
    for a in range(5):
        torch.testing.assert_close(W[a] @ W[a].t(), eye)          # orthogonal: norm-preserving
    torch.testing.assert_close(W[1] @ W[3], eye)                   # north then south: back where it started
    torch.testing.assert_close(W[2] @ W[4], eye)
    torch.testing.assert_close(W[0], eye)
    e = m(torch.tensor([[RESET, 1, 2, 3, 4, 1, 1, 3, 3]]))
    torch.testing.assert_close(e[0, -1].norm(), m.e_init.norm())  # a closed loop never grows the code
    with pytest.raises(ValueError, match="inverse_actions"):
        RecurrentPositions(5, 8, transition="orthogonal", inverse_actions=((1, 1),))


def test_fused_runs_under_autocast_in_full_precision():
    torch.manual_seed(10)
    m = RecurrentPositions(5, 16, activation="relu", init_std=0.3)
    a = _actions(2, 12, 5)
    expect = m(a, method="loop")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = m(a, method="fused")
        e.sum().backward()
    assert e.dtype == torch.float32
    torch.testing.assert_close(e, expect)
