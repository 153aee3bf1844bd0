"""TEMt: parallel == sequential, streamed == one pass, causality, memory semantics, losses, bad input."""
import math

import pytest
import torch

from temt_core.attention import Keys, TEMtAttention, zscore
from temt_core.model import TEMt, TEMtConfig, TEMtState
from temt_core.positions import RESET

from core_toys import N_X, small_temt

_model = small_temt


def _data(B=3, T=30, seed=0, resets=((1, 12),)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_X, (B, T), generator=g)
    a = torch.randint(0, 5, (B, T), generator=g)
    a[:, 0] = RESET
    for b, t in resets:
        a[b, t] = RESET
    return x, a


def _stream(model, x, a, cuts, **kw):
    state, outs = None, []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        out = model(x[:, lo:hi], a[:, lo:hi], state, return_memory_neurons=True, **kw)
        state = out.state
        outs.append(out)
    return outs


@pytest.mark.parametrize("dedup", [None, 0.9])
def test_parallel_equals_sequential(dedup):
    model = _model(dedup_threshold=dedup)
    x, a = _data()
    cuts = [0, 13, 30]
    par = _stream(model, x, a, cuts)
    seq = _stream(model, x, a, cuts, sequential=True)
    for p, s in zip(par, seq):
        torch.testing.assert_close(p.logits, s.logits)
        torch.testing.assert_close(p.memory_neurons, s.memory_neurons)
        assert torch.equal(p.memory_ids, s.memory_ids) and torch.equal(p.stored, s.stored)
        torch.testing.assert_close(p.loss, s.loss)
    params = [q for q in model.parameters()]
    g_par = torch.autograd.grad(par[1].loss, params, allow_unused=True)
    g_seq = torch.autograd.grad(seq[1].loss, params, allow_unused=True)
    for gp, gs in zip(g_par, g_seq):
        if gp is None:
            assert gs is None
        else:
            torch.testing.assert_close(gp, gs)
    if dedup is not None:
        assert 0 < par[0].stored.float().mean() < 1      # the test really exercises de-duplication


@pytest.mark.parametrize("dedup", [None, 0.9])
def test_streamed_chunks_equal_one_long_pass(dedup):
    model = _model(dedup_threshold=dedup)
    x, a = _data(T=40, resets=((1, 12), (2, 33)))
    with torch.no_grad():
        one = _stream(model, x, a, [0, 40])[0]
        chunks = _stream(model, x, a, [0, 7, 20, 21, 40])
    torch.testing.assert_close(torch.cat([c.logits for c in chunks], 1), one.logits)
    torch.testing.assert_close(torch.cat([c.e for c in chunks], 1), one.e)
    assert torch.equal(torch.cat([c.stored for c in chunks], 1), one.stored)
    # memory neurons: same weight on the same memory id, however the walk was cut
    last = chunks[-1]
    for b in range(3):
        for t in range(19):
            ids_c, w_c = last.memory_ids[b], last.memory_neurons[b, t]
            ids_o, w_o = one.memory_ids[b], one.memory_neurons[b, 21 + t]
            world_o = one.state.world[b]       # only memories of the final world survive the chunk boundary
            by_id_c = {int(i): float(w) for i, w in zip(ids_c, w_c) if i >= 0 and w > 0}
            by_id_o = {int(i): float(w) for i, w in zip(ids_o, w_o) if i >= 0 and w > 0}
            assert by_id_c.keys() == by_id_o.keys(), (b, t, world_o)
            for k in by_id_c:
                assert math.isclose(by_id_c[k], by_id_o[k], rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("landmark", [None, "stimulus", "product"])
def test_causality_future_never_changes_the_past(landmark):
    model = _model(landmark=landmark, dedup_threshold=0.9)
    if landmark:   # open the gate so corrections matter
        torch.nn.init.constant_(model.landmark.gate.bias, 1.0)
    x, a = _data(T=24)
    t0 = 10
    base = model(x, a, return_memory_neurons=True)
    x2, a2 = x.clone(), a.clone()
    x2[:, t0 + 1:] = (x2[:, t0 + 1:] + 3) % N_X
    a2[:, t0 + 1:] = (a2[:, t0 + 1:].clamp(min=0) + 2) % 5
    pert = model(x2, a2, return_memory_neurons=True)
    torch.testing.assert_close(pert.logits[:, :t0 + 1], base.logits[:, :t0 + 1])
    torch.testing.assert_close(pert.e[:, :t0 + 1], base.e[:, :t0 + 1])
    torch.testing.assert_close(pert.memory_neurons[:, :t0 + 1], base.memory_neurons[:, :t0 + 1])
    assert not torch.allclose(pert.logits[:, t0 + 1:], base.logits[:, t0 + 1:])   # the change did reach the future
    # and the stimulus of step t itself is not used to predict step t
    x3 = x.clone()
    x3[:, t0] = (x3[:, t0] + 1) % N_X
    torch.testing.assert_close(model(x3, a).logits[:, t0], base.logits[:, t0])


def test_memory_neurons_read_only_strictly_earlier_memories_of_the_same_world():
    model = _model(dedup_threshold=None)
    x, a = _data(T=20, resets=((1, 9),))
    out = model(x, a, return_memory_neurons=True)
    w = out.memory_neurons                                        # (B, T, K) with K = T here (empty store)
    assert w.shape == (3, 20, 20)
    assert torch.all(w.triu() == 0)                              # no weight on memories at or after t
    torch.testing.assert_close(w[:, 1:].sum(-1), torch.ones(3, 19, dtype=w.dtype).index_put_(
        (torch.tensor([1]), torch.tensor([8])), torch.tensor(0.0, dtype=w.dtype)))  # row 9 is a fresh world
    assert torch.all(w[1, 9:, :9] == 0)                          # the new world cannot read the old one
    assert torch.all(w[:, 0] == 0)                               # nothing stored before the first step
    ids = out.memory_ids
    assert ids[1, :9].tolist() == list(range(9)) and ids[1, 9:].tolist() == list(range(11))


def test_log_n_scaling_known_answer():
    torch.manual_seed(0)
    att = TEMtAttention(8, 5, multiplier=1.5).double()
    z_q, z_k = torch.randn(2, 3, 8).double(), torch.randn(2, 6, 8).double()
    x_k = torch.randint(0, 5, (2, 6))
    mask = torch.rand(2, 3, 6) > 0.3
    mask[0, 0] = False
    logits, w = att(zscore(z_q), [Keys(zscore(z_k), x_k, mask)])
    q, k = zscore(z_q) @ att.W_e, zscore(z_k) @ att.W_e
    for b in range(2):
        for t in range(3):
            n = int(mask[b, t].sum())
            if n == 0:
                assert torch.all(w[b, t] == 0)
                continue
            s = 1.5 * math.log(n) / math.sqrt(8) * (k[b] @ q[b, t])
            s[~mask[b, t]] = -math.inf
            torch.testing.assert_close(w[b, t], torch.softmax(s, 0))
    expect = att.readout(w @ att.W_x(x_k))
    torch.testing.assert_close(logits, expect)


def test_sdpa_backend_equals_explicit():
    torch.manual_seed(1)
    att = TEMtAttention(8, 5).double()
    z_q, z_k = zscore(torch.randn(2, 4, 8).double()), zscore(torch.randn(2, 9, 8).double())
    x_k = torch.randint(0, 5, (2, 9))
    mask = torch.rand(2, 4, 9) > 0.4
    mask[1, 2] = False                                           # an empty row
    keys = [Keys(z_k[:, :4], x_k[:, :4], mask[:, :1, :4]), Keys(z_k[:, 4:], x_k[:, 4:], mask[:, :, 4:])]
    a, _ = att(z_q, keys, backend="explicit")
    b, w = att(z_q, keys, need_weights=False, backend="sdpa")
    assert w is None
    torch.testing.assert_close(a, b)


def test_dedup_stores_each_conjunction_once():
    """With identity transitions every position is the same, so each stimulus is stored once per world."""
    model = _model(transition_init_std=0.0, dedup_threshold=0.99)
    x, a = _data(T=30, resets=((0, 15),))
    out = model(x, a)
    for b in range(3):
        segments = [(0, 15), (15, 30)] if b == 0 else [(0, 30)]
        for lo, hi in segments:
            assert int(out.stored[b, lo:hi].sum()) == len(set(x[b, lo:hi].tolist()))
    assert out.state.memory.valid.sum(1).tolist() == [len(set(x[0, 15:].tolist()))] + \
        [len(set(x[b].tolist())) for b in (1, 2)]


def test_max_memories_keeps_the_newest():
    model = _model(dedup_threshold=None, max_memories=5)
    x, a = _data(T=12, resets=())
    out = model(x, a)
    assert out.state.memory.valid.sum(1).tolist() == [5, 5, 5]
    assert out.state.memory.slot[0].tolist() == [7, 8, 9, 10, 11]


def test_landmark_with_open_gate_snaps_to_the_stored_position():
    model = _model(landmark="stimulus", dedup_threshold=None, transition_init_std=0.8)
    torch.nn.init.constant_(model.landmark.gate.bias, 30.0)      # f = 1: e = e_retrieved
    with torch.no_grad():
        model.landmark.W_l.weight.copy_(20 * torch.eye(N_X, 32, dtype=torch.double))  # sharp stimulus match
    x = torch.tensor([[0, 1, 2, 3, 1]])
    a = torch.tensor([[RESET, 1, 2, 3, 4]])
    out = model(x, a)
    # step 4 sees stimulus 1 again: the only stored memory with stimulus 1 is step 1's position
    torch.testing.assert_close(out.e[0, 4], out.e[0, 1], atol=1e-6, rtol=0)
    assert not torch.allclose(out.e_pi[0, 4], out.e[0, 1])
    assert out.parts["g"] > 0 and "x_corr" in out.parts


def test_losses_are_the_weighted_parts():
    model = _model(w_reg_e=0.3, w_reg_w=0.2, transition_init_std=0.1)
    x, a = _data()
    mask = torch.rand(3, 30) > 0.5
    out = model(x, a, loss_mask=mask)
    p = out.parts
    torch.testing.assert_close(out.loss, p["x_pi"] + 0.3 * p["reg_e"] + 0.2 * p["reg_w"])
    ce = torch.nn.functional.cross_entropy(out.logits[mask], x[mask])
    torch.testing.assert_close(p["x_pi"], ce)
    torch.testing.assert_close(p["reg_w"], model.positions.updates().square().sum())


def test_state_round_trips_through_tensors():
    model = _model()
    x, a = _data()
    out = model(x[:, :10], a[:, :10])
    state = TEMtState.from_tensors({k: v.clone() for k, v in out.state.tensors().items()})
    nxt_a = model(x[:, 10:], a[:, 10:], out.state)
    nxt_b = model(x[:, 10:], a[:, 10:], state)
    torch.testing.assert_close(nxt_a.logits, nxt_b.logits)


def test_long_memory_streams_in_bounded_chunks():
    """10^4 memories in one world, streamed in chunks of 250: runs, and the store holds all of them."""
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(n_stimuli=N_X, pos_dim=16, dedup_threshold=None, transition_init_std=0.3))
    T, chunk = 10_000, 250
    x = torch.randint(0, N_X, (1, T))
    a = torch.randint(0, 5, (1, T))
    a[:, 0] = RESET
    state = None
    with torch.no_grad():
        for lo in range(0, T, chunk):
            out = model(x[:, lo:lo + chunk], a[:, lo:lo + chunk], state)
            state = out.state
    assert state.memory.size == T and bool(state.memory.valid.all())
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("make,match", [
    (lambda x, a: (x + 10, a), r"x\[0, \d+\] = \d+ is out of range: expected a stimulus id"),
    (lambda x, a: (x, a[:, :5]), r"actions must have shape \(3, 30\)"),
    (lambda x, a: (x, a + 7), r"actions\[.*out of range"),
    (lambda x, a: (x.float(), a), r"x must be an integer tensor"),
    (lambda x, a: (x[:, :0], a[:, :0]), r"at least one step"),
])
def test_bad_inputs_name_the_argument(make, match):
    model = _model()
    x, a = _data()
    with pytest.raises((ValueError, TypeError), match=match):
        model(*make(x, a))


def test_bad_state_and_config():
    model = _model()
    x, a = _data()
    with pytest.raises(TypeError, match="state must be a TEMtState"):
        model(x, a, state={"e": 1})
    state = model(x[:2], a[:2]).state
    with pytest.raises(ValueError, match=r"state.e must have shape \(3, 16\)"):
        model(x, a, state)
    with pytest.raises(ValueError, match="loss_mask must have shape"):
        model(x, a, loss_mask=torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"invalid TEMtConfig: activation must be one of .*; landmark must be"):
        TEMtConfig(activation="gelu", landmark="yes")
    with pytest.raises(ValueError, match="recurrence='scan' needs activation='linear'"):
        TEMtConfig(recurrence="scan")


def test_nonnegativity_penalty_is_the_squared_negative_part():
    model = _model(activation="linear", bound=None, w_nonneg=0.5, transition_init_std=0.5)
    x, a = _data()
    out = model(x, a)
    torch.testing.assert_close(out.parts["nonneg"], torch.relu(-out.e).square().sum(-1).mean())
    assert out.parts["nonneg"] > 0 and "nonneg" not in _model()(x, a).parts
