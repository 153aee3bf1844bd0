"""TEMt with a second stimulus stream (claim C8): n_stimuli_2=0 is the old model, the memory neurons do not grow, the
stream-2 read is the memory neurons applied to the stored x2, streaming carries x2, a tiny run learns stream 2,
bad input is named."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from temt_core.config import ConfigError, from_dict
from temt_core.model import TEMt, TEMtConfig, TEMtState
from temt_core.positions import RESET

from core_toys import N_X, small_temt

N_X2 = 5
_model = small_temt


def _data(B=3, T=30, seed=0, resets=((1, 12),)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_X, (B, T), generator=g)
    x2 = torch.randint(0, N_X2, (B, T), generator=g)
    a = torch.randint(0, 5, (B, T), generator=g)
    a[:, 0] = RESET
    for b, t in resets:
        a[b, t] = RESET
    return x, a, x2


def _ring_walk(B=3, T=40, n_nodes=6, seed=0):
    """Walks on a ring of n_nodes (action 1: +1, 2: -1, 0: stay) with stimulus 1 = the node (unique per node, so a
    stream-1 match means the same node) and stream 2 a random table per node: both streams are functions of the
    node, as in a world."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 3, (B, T), generator=g)
    a[:, 0] = RESET
    step = torch.where(a == 1, 1, torch.where(a == 2, -1, 0))
    nodes = step.cumsum(1) % n_nodes
    table = torch.randint(0, N_X2, (B, n_nodes), generator=g)
    return nodes, a, table.gather(1, nodes)


def _stream(model, x, a, x2, cuts, **kw):
    state, outs = None, []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        out = model(x[:, lo:hi], a[:, lo:hi], state, return_memory_neurons=True,
                    x2=None if x2 is None else x2[:, lo:hi], **kw)
        state = out.state
        outs.append(out)
    return outs


def test_no_second_stream_is_the_old_model():
    """n_stimuli_2=0 builds exactly the model built without the key: same weights, outputs, loss, state."""
    torch.manual_seed(3)
    old = TEMt(TEMtConfig(n_actions=5, n_stimuli=N_X, pos_dim=16))
    torch.manual_seed(3)
    new = TEMt(TEMtConfig(n_actions=5, n_stimuli=N_X, pos_dim=16, n_stimuli_2=0, w_x2_pi=3.0))
    assert new.stream_2 is None and new.feature_neurons == N_X
    assert old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    x, a, _ = _data()
    o, n = old(x, a, return_memory_neurons=True), new(x, a, return_memory_neurons=True)
    assert torch.equal(o.loss, n.loss) and torch.equal(o.logits, n.logits)
    assert torch.equal(o.memory_neurons, n.memory_neurons) and list(n.parts) == list(o.parts)
    assert n.logits2 is None and "x2_pi" not in n.parts and "x2" not in n.state.tensors()


def test_second_stream_leaves_stream_one_as_it_was():
    """The second stream is built last: the shared weights draw the same numbers as the one-stream model's, and with
    every step stored (no de-duplication) stream 1 reads the same memories, so its prediction is unchanged and
    the loss only gains w_x2_pi * x2_pi."""
    plain = _model(dedup_threshold=None)
    two = _model(dedup_threshold=None, n_stimuli_2=N_X2, w_x2_pi=0.7)
    shared = plain.state_dict()
    assert {k for k in two.state_dict() if k not in shared} == {"stream_2.W_x.weight", "stream_2.readout.weight",
                                                               "stream_2.readout.bias"}
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in shared.items())
    x, a, x2 = _data()
    p, t = plain(x, a), two(x, a, x2=x2)
    torch.testing.assert_close(t.logits, p.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(t.loss, p.loss + 0.7 * t.parts["x2_pi"], rtol=0, atol=1e-12)
    assert t.logits2.shape == (3, 30, N_X2) and t.parts["x2_pi"] > 0


def test_memory_neurons_do_not_grow_and_values_widen():
    """On the same walk with the same positions, the two-stream model stores exactly the plain model's memories
    (a conjunction repeats iff position and both stimuli match, and here stream 1 already names the node):
    same number of memory neurons, same ids, same weights over them; the value width grows by n_stimuli_2."""
    x, a, x2 = _ring_walk()
    plain = _model(n_stimuli=6)
    two = _model(n_stimuli=6, n_stimuli_2=N_X2)
    assert (plain.feature_neurons, two.feature_neurons) == (6, 6 + N_X2)
    for sequential in (False, True):
        p = _stream(plain, x, a, None, [0, 17, 40], sequential=sequential)
        t = _stream(two, x, a, x2, [0, 17, 40], sequential=sequential)
        for po, to in zip(p, t):
            assert torch.equal(po.stored, to.stored) and torch.equal(po.memory_ids, to.memory_ids)
            assert po.memory_neurons.shape == to.memory_neurons.shape
            torch.testing.assert_close(po.memory_neurons, to.memory_neurons, rtol=0, atol=1e-12)
        assert torch.equal(p[-1].state.count, t[-1].state.count)
        stored = torch.cat([o.stored for o in t], 1)
        assert 0 < stored.sum(1).max() < 40           # de-duplication really merged revisits


def test_a_repeat_needs_both_stimuli_to_match():
    """Standing still (the stay action is the identity) keeps the position; the same x with alternating x2 is one
    conjunction for the plain model and two for the two-stream model. Known answer: 1 vs 2 memories."""
    T = 8
    a = torch.zeros(2, T, dtype=torch.long)
    a[:, 0] = RESET
    x = torch.full((2, T), 3)
    x2 = torch.tensor([[0, 1] * (T // 2), [4] * T])
    plain, two = _model(), _model(n_stimuli_2=N_X2)
    for sequential in (False, True):
        assert plain(x, a, sequential=sequential).state.count.tolist() == [1, 1]
        out = two(x, a, x2=x2, sequential=sequential)
        assert out.state.count.tolist() == [2, 1]
        assert out.stored[0].tolist() == [True, True] + [False] * (T - 2)


def test_stream_two_prediction_is_the_memory_neurons_on_one_hot_x2():
    """float64, across a chunk boundary (stored memories and this chunk's): logits2 = readout2((a @ onehot(x2_k))
    W_x2), with a the memory neurons and x2_k the stream-2 stimulus of key k; x2_pi its masked cross-entropy."""
    model = _model(n_stimuli_2=N_X2)
    x, a, x2 = _data(B=2, T=14, resets=((1, 9),))
    mask = torch.rand(2, 14, generator=torch.Generator().manual_seed(1)) > 0.3
    first = model(x[:, :6], a[:, :6], x2=x2[:, :6])
    out = model(x[:, 6:], a[:, 6:], first.state, loss_mask=mask[:, 6:], return_memory_neurons=True, x2=x2[:, 6:])
    keys_x2 = torch.cat([first.state.x2, x2[:, 6:]], 1)                          # (B, M + T)
    p_x2 = out.memory_neurons @ F.one_hot(keys_x2, N_X2).double()                # (B, T, n_x2)
    s = model.stream_2
    direct = p_x2 @ s.W_x.weight @ s.readout.weight.t() + s.readout.bias
    torch.testing.assert_close(out.logits2, direct, rtol=0, atol=1e-12)
    expected = torch.ones(2, 8, dtype=torch.float64)
    expected[1, 3] = 0.0                          # slot 1 starts a new world at step 9: nothing to read yet
    torch.testing.assert_close(p_x2.sum(-1), expected, rtol=0, atol=1e-12)      # a distribution over x2
    ce = F.cross_entropy(direct.flatten(0, 1), x2[:, 6:].flatten(), reduction="none").view(2, 8)
    m = mask[:, 6:].double()
    torch.testing.assert_close(out.parts["x2_pi"], (ce * m).sum() / m.sum(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dedup", [None, 0.9])
def test_parallel_equals_sequential(dedup):
    model = _model(dedup_threshold=dedup, n_stimuli_2=N_X2)
    x, a, x2 = _data()
    par = _stream(model, x, a, x2, [0, 13, 30])
    seq = _stream(model, x, a, x2, [0, 13, 30], sequential=True)
    for p, s in zip(par, seq):
        torch.testing.assert_close(p.logits2, s.logits2)
        assert torch.equal(p.stored, s.stored) and torch.equal(p.state.x2, s.state.x2)
        torch.testing.assert_close(p.loss, s.loss)
    g_par = torch.autograd.grad(par[1].loss, list(model.stream_2.parameters()))
    g_seq = torch.autograd.grad(seq[1].loss, list(model.stream_2.parameters()))
    for gp, gs in zip(g_par, g_seq):
        torch.testing.assert_close(gp, gs)


def _assert_state_holds_stored_x2(state, stored, x, a, x2, capacity=None):
    """state.x2 and state.memory.x, column for column, are the stimuli of the steps that stored the memories of each
    slot's final world (the newest `capacity` of them)."""
    world = (a == RESET).long().cumsum(1)
    keep = slice(-capacity, None) if capacity else slice(None)
    for b in range(x.shape[0]):
        steps = stored[b] & (world[b] == world[b, -1])
        valid = state.memory.valid[b]
        assert torch.equal(state.x2[b, valid], x2[b, steps][keep])
        assert torch.equal(state.memory.x[b, valid], x[b, steps][keep])


def test_streamed_chunks_equal_one_pass():
    """However the walk is cut, the same predictions of both streams, and a state that carries the stored x2."""
    model = _model(dedup_threshold=0.9, n_stimuli_2=N_X2)
    x, a, x2 = _data(T=40, resets=((1, 12), (2, 33)))
    with torch.no_grad():
        one = _stream(model, x, a, x2, [0, 40])[0]
        chunks = _stream(model, x, a, x2, [0, 7, 20, 21, 40])
    torch.testing.assert_close(torch.cat([c.logits2 for c in chunks], 1), one.logits2)
    torch.testing.assert_close(torch.cat([c.logits for c in chunks], 1), one.logits)
    assert torch.equal(torch.cat([c.stored for c in chunks], 1), one.stored)
    assert 0 < one.stored.float().mean() < 1                            # de-duplication took part
    for state in (one.state, chunks[-1].state):
        _assert_state_holds_stored_x2(state, one.stored, x, a, x2)


def test_carried_x2_follows_its_memories_when_the_store_is_repacked():
    """With a capacity the store drops its oldest memories and repacks at chunk ends; x2 moves with them."""
    model = _model(dedup_threshold=0.9, n_stimuli_2=N_X2, max_memories=5)
    x, a, x2 = _data(T=40, resets=((1, 12), (2, 33)))
    with torch.no_grad():
        chunks = _stream(model, x, a, x2, [0, 7, 20, 21, 33, 40])
    stored = torch.cat([c.stored for c in chunks], 1)
    assert int(stored.sum(1).max()) > 5                                 # the capacity really dropped memories
    state = chunks[-1].state
    _assert_state_holds_stored_x2(state, stored, x, a, x2, capacity=5)


def test_state_round_trips_and_old_states_load():
    model = _model(n_stimuli_2=N_X2)
    x, a, x2 = _data()
    out = model(x[:, :15], a[:, :15], x2=x2[:, :15])
    state = TEMtState.from_tensors({k: v.clone() for k, v in out.state.tensors().items()})
    assert torch.equal(state.x2, out.state.x2)
    again = model(x[:, 15:], a[:, 15:], state, x2=x2[:, 15:])
    torch.testing.assert_close(again.logits2, model(x[:, 15:], a[:, 15:], out.state, x2=x2[:, 15:]).logits2)
    # a state saved by a one-stream model (every state before C8) has no "x2" and loads for n_stimuli_2 = 0
    plain = _model()
    saved = {k: v.clone() for k, v in plain(x[:, :15], a[:, :15]).state.tensors().items()}
    assert "x2" not in saved
    loaded = TEMtState.from_tensors(saved)
    assert loaded.x2 is None
    plain(x[:, 15:], a[:, 15:], loaded)


def test_bad_input_is_named():
    plain, two = _model(), _model(n_stimuli_2=N_X2)
    x, a, x2 = _data(B=2, T=6, resets=())
    with pytest.raises(ValueError, match=r"x2 is required: this model has a second stimulus stream \(n_stimuli_2 = 5"):
        two(x, a)
    bad = x2.clone()
    bad[1, 4] = N_X2
    with pytest.raises(ValueError, match=r"x2\[1, 4\] = 5 is out of range"):
        two(x, a, x2=bad)
    with pytest.raises(ValueError, match=r"x2 must have shape \(2, 6\), got \(2, 5\)"):
        two(x, a, x2=x2[:, :5])
    with pytest.raises(TypeError, match="x2 must be an integer tensor"):
        two(x, a, x2=x2.double())
    with pytest.raises(ValueError, match="x2 was given, but this model has one stimulus stream"):
        plain(x, a, x2=x2)
    with pytest.raises(ValueError, match="state.x2 is None: the state comes from a one-stream model"):
        two(x, a, plain(x, a).state, x2=x2)
    with pytest.raises(ValueError, match="state.x2 holds second-stream memories, but this model has n_stimuli_2 = 0"):
        plain(x, a, two(x, a, x2=x2).state)


def test_unsupported_combinations_are_refused_by_key():
    with pytest.raises(ValueError, match="n_stimuli_2=5 needs landmark=None"):
        TEMtConfig(n_stimuli_2=5, landmark="product")
    with pytest.raises(ConfigError, match="n_stimuli_2 must be >= 0"):
        from_dict(TEMtConfig, {"n_stimuli_2": -1})
    with pytest.raises(ConfigError, match="w_x2_pi must be a finite number >= 0"):
        from_dict(TEMtConfig, {"n_stimuli_2": 3, "w_x2_pi": -1.0})
    with pytest.raises(ConfigError, match="n_stimuli_2"):
        from_dict(TEMtConfig, {"n_stimuli_2": 3, "landmark": "stimulus"})
    # TEM (model_kind=tem) does not read the TEM-t section: the key is refused there by name
    from spatial.config import SpatialConfig
    with pytest.raises(ConfigError, match=r"model.n_stimuli_2 is a TEM-t key, but this run trains model_kind=tem"):
        from_dict(SpatialConfig, {"model_kind": "tem", "model": {"n_stimuli_2": 3}})


def test_tiny_run_learns_the_second_stream():
    """3x3 worlds, stream 2 drawn per node and world independently of stream 1 (20 values, chance 0.05): after 60
    steps of 16 walks x 20 steps, stream-2 accuracy on revisits by a move (not the trivial stay) is far above
    chance and far above where it started (measured: 0.05 in the first 10 steps, 0.83 in the last 10)."""
    from spatial.conjunctions import SecondStimuli
    from spatial.walks import WalkConfig, WalkStream
    torch.manual_seed(0)
    model = TEMt(TEMtConfig(n_stimuli=45, pos_dim=32, n_stimuli_2=20))
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    walks = WalkStream(WalkConfig(sizes=(3,), walk_length=(60, 120)), 16, seed=0)
    second = SecondStimuli(walks, 20, seed=0)
    state, accuracy = None, []
    for _ in range(60):
        chunk = walks.next_chunk(20)
        x2 = torch.from_numpy(second.of(chunk))
        x, a, revisit = (torch.from_numpy(chunk[k]) for k in ("x", "actions", "revisit"))
        out = model(x, a, state, loss_mask=revisit, x2=x2)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        state = out.state
        moved = revisit & (a != walks.stay) & (a != RESET)
        accuracy.append(float((out.logits2.argmax(-1) == x2)[moved].float().mean()))
    first, last = np.mean(accuracy[:10]), np.mean(accuracy[-10:])
    assert first < 0.2 and last > 0.5, (first, last)


def test_paths_that_feed_one_stream_refuse_two():
    """A population (sweeps) and `temt-spatial train` feed one stimulus stream: a two-stream config is refused by
    name before anything is built, instead of a population that ignores stream 2 or a traceback at the first step."""
    from spatial.config import SpatialConfig
    from temt_core.population import check_population_config
    with pytest.raises(ValueError, match=r"member 3: model.n_stimuli_2=4: populations predict one stimulus stream"):
        check_population_config(TEMtConfig(n_stimuli_2=4), where="member 3")
    with pytest.raises(ConfigError, match=r"model.n_stimuli_2=4: spatial training feeds one stimulus stream"):
        from_dict(SpatialConfig, {"model": {"n_stimuli_2": 4}})
