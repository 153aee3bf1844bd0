"""The fused landmark path (temt_core/landmark_loop.py) against the plain step-by-step reference (TEMt._sequential).

float64 throughout: outputs, losses and gradients must agree to 1e-10, with and without de-duplication, for both
landmark queries, across chunk boundaries and world resets.
"""
import pytest
import torch

from temt_core.landmark_loop import DedupStore, _softmax_logsumexp, landmark_loop, store_keys
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET

N_X = 7
TOL = dict(rtol=1e-10, atol=1e-10)


def _model(query, dedup, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = TEMtConfig(n_actions=5, n_stimuli=N_X, pos_dim=16, transition_init_std=0.5, landmark=query,
                     dedup_threshold=dedup, landmark_key_dim=8, **kw)
    model = TEMt(cfg).double()
    with torch.no_grad():          # open the gate and make it depend on its inputs, so corrections matter
        model.landmark.gate.weight.normal_(0, 0.3)
        model.landmark.gate.bias.fill_(0.5)
    return model


def _walk(B=3, T=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_X, (B, T), generator=g)
    a = torch.randint(0, 5, (B, T), generator=g)
    a[:, 0] = RESET
    a[1, 12] = RESET              # a new world inside the first chunk
    a[2, 21] = RESET              # ... and exactly at a chunk boundary
    a[0, 30] = RESET
    return x, a


def _run(model, x, a, cuts, sequential):
    state, outs, total = None, [], 0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        mask = (torch.arange(lo, hi) % 3 != 0).expand(x.shape[0], -1)        # a loss mask that is not all ones
        out = model(x[:, lo:hi], a[:, lo:hi], state, loss_mask=mask, return_memory_neurons=True,
                    sequential=sequential)
        total = total + out.loss
        outs.append(out)
        state = out.state
    grads = torch.autograd.grad(total, list(model.parameters()), allow_unused=True)
    return outs, grads


@pytest.mark.parametrize("query", ["stimulus", "product"])
@pytest.mark.parametrize("dedup", [None, 0.9])
def test_fused_landmark_equals_sequential_reference(query, dedup):
    model = _model(query, dedup)
    x, a = _walk()
    cuts = [0, 9, 21, 40]
    fast, g_fast = _run(model, x, a, cuts, sequential=False)
    ref, g_ref = _run(model, x, a, cuts, sequential=True)
    for f, r in zip(fast, ref):
        for name in ("logits", "logits_corrected", "e", "e_pi", "gate", "memory_neurons", "loss"):
            torch.testing.assert_close(getattr(f, name), getattr(r, name), **TOL, msg=name)
        for name in f.parts:
            torch.testing.assert_close(f.parts[name], r.parts[name], **TOL, msg=name)
        assert torch.equal(f.stored, r.stored) and torch.equal(f.memory_ids, r.memory_ids)
        for k, v in f.state.tensors().items():
            torch.testing.assert_close(v, r.state.tensors()[k], **TOL, msg=k)
    for p, gf, gr in zip(model.parameters(), g_fast, g_ref):
        assert (gf is None) == (gr is None)
        if gf is not None:
            torch.testing.assert_close(gf, gr, **TOL)
    # the test exercises what it claims: corrections move positions, gradients reach the landmark weights,
    # and de-duplication drops some memories
    e = torch.cat([o.e for o in fast], 1)
    e_pi = torch.cat([o.e_pi for o in fast], 1)
    assert (e - e_pi).abs().max() > 1e-3
    named = dict(zip([n for n, _ in model.named_parameters()], g_fast))
    assert named["landmark.W_l.weight"].abs().max() > 1e-6 and named["landmark.gate.weight"].abs().max() > 1e-6
    stored = torch.cat([o.stored for o in fast], 1).double().mean()
    assert (0 < stored < 1) if dedup is not None else stored == 1


def test_fused_landmark_float32_close_to_reference():
    model = _model("product", 0.9).float()
    x, a = _walk()
    fast, g_fast = _run(model, x, a, [0, 20, 40], sequential=False)
    ref, g_ref = _run(model, x, a, [0, 20, 40], sequential=True)
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f.logits_corrected, r.logits_corrected, rtol=1e-4, atol=1e-5)
    for gf, gr in zip(g_fast, g_ref):
        if gf is not None:
            torch.testing.assert_close(gf, gr, rtol=1e-3, atol=1e-5)


def _loop_inputs(query, dedup, seed=0, B=2, T=6, E=5, M=4):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.double)
    A = 3
    e0 = rnd(B, E).requires_grad_()
    W = (torch.eye(E, dtype=torch.double) + 0.4 * rnd(A, E, E)).requires_grad_()
    e_init = rnd(E).requires_grad_()
    gram = rnd(N_X, N_X).requires_grad_()
    gate_w, gate_b = (0.5 * rnd(E, 2 * E + 1)).requires_grad_(), rnd(E).requires_grad_()
    actions = torch.randint(0, A, (B, T), generator=g)
    actions[0, 3] = RESET
    x = torch.randint(0, N_X, (B, T), generator=g)
    world = (actions == RESET).long().cumsum(1)
    mem_e, mem_z = rnd(B, M, E), rnd(B, M, E)
    mem_zn = torch.nn.functional.normalize(mem_z, dim=-1)
    mem_x = torch.randint(0, N_X, (B, M), generator=g)
    valid = torch.rand(B, M, generator=g) > 0.25
    same_world = world == 0
    product = query == "product"
    store = store_keys(mem_e, mem_zn if product else mem_zn[:, :, :0], mem_x, valid, same_world, N_X,
                       grouped=not product)
    dedup_store = DedupStore(mem_zn, mem_x, valid) if dedup is not None else None
    inputs = (e0, W, e_init, gram, gate_w, gate_b)
    rest = (actions, x, world, store, dedup_store, "tanh", None, product, dedup)
    return inputs, rest


@pytest.mark.parametrize("query", ["stimulus", "product"])
def test_landmark_loop_gradcheck(query):
    inputs, rest = _loop_inputs(query, None)

    def f(*inp):
        e_pi, e, gate, _ = landmark_loop(*inp, *rest)
        return e_pi, e, gate

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_grouped_store_equals_one_key_per_memory():
    """For the stimulus query, one key per stimulus with a log-count bias is the same retrieval as one per memory."""
    inputs, (actions, x, world, grouped, *_) = _loop_inputs("stimulus", None, M=9)
    _, (_, _, _, per_memory, *_) = _loop_inputs("product", None, M=9)     # same draws, one key per memory
    per_memory = per_memory._replace(zn=per_memory.zn[:, :, :0])
    assert grouped.e.shape[1] == N_X and per_memory.e.shape[1] == 9
    outs = [landmark_loop(*inputs, actions, x, world, store, None, "tanh", None, False, None)
            for store in (grouped, per_memory)]
    for u, v in zip(outs[0][:3], outs[1][:3]):
        torch.testing.assert_close(u, v, **TOL)
    assert (outs[0][1] - outs[0][0]).abs().max() > 1e-3          # the correction did something


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_softmax_logsumexp_known_answer(dtype):
    """The confidence's logsumexp taken from the softmax equals torch.logsumexp, with blocked entries, a row that
    is all blocked, one dominant entry and a nearly uniform row."""
    blocked = torch.finfo(dtype).min / 2
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(5, 4, 30, generator=g, dtype=torch.float64) * 3).to(dtype)
    s[0, :, 10:] = blocked                   # unreadable keys
    s[1, 2] = blocked                        # a row that reads nothing
    s[2, 1, 3] = 40.0                        # one key dominates: max w near 1
    s[3, 0] = 1e-3 * s[3, 0]                 # nearly uniform: max w near 1/K
    w, lse = _softmax_logsumexp(s)
    torch.testing.assert_close(w, torch.softmax(s, -1), rtol=0, atol=0)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-5)
    readable = s[..., :1] > blocked          # (the all-blocked row: finite, blocked + log K)
    torch.testing.assert_close(lse[readable], torch.logsumexp(s, -1, keepdim=True)[readable], **tol)
    assert torch.isfinite(lse).all() and lse[1, 2].item() < blocked / 2
    out = torch.empty_like(s)
    w2, _ = _softmax_logsumexp(s, out=out)
    assert w2.data_ptr() == out.data_ptr()
