"""TEMtConfig.capturable: a training step with fixed shapes and no host reads (what CUDA-graph capture needs),
equal to the ordinary step in float64, and shown to read nothing back by a probe that can fail."""
import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode

from temt_core.memory import MemoryStore
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET

N_X = 5


def _pair(capacity=24, **overrides):
    """A capturable model and the same weights as an ordinary one, float64."""
    torch.manual_seed(0)
    cfg = dict(n_actions=5, n_stimuli=N_X, pos_dim=16, transition_init_std=0.5, max_memories=capacity)
    cfg.update(overrides)
    fixed = TEMt(TEMtConfig(**cfg, capturable=True)).double()
    plain = TEMt(TEMtConfig(**cfg)).double()
    plain.load_state_dict(fixed.state_dict())
    return fixed, plain


def _chunks(B=3, T=10, n=6, seed=0):
    """n chunks; every slot starts a world, slot 1 starts another inside chunk 2 and slot 2 at chunk 4's start
    (or in the last step when there are fewer chunks)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_X, (B, T * n), generator=g)
    a = torch.randint(0, 5, (B, T * n), generator=g)
    a[:, 0] = RESET
    a[1, min(2 * T + 3, T * n - 1)] = RESET
    a[2, min(4 * T, T * n - 1)] = RESET
    return [(x[:, i * T:(i + 1) * T], a[:, i * T:(i + 1) * T]) for i in range(n)]


def _close(u: torch.Tensor, v: torch.Tensor, tol: float = 1e-10) -> bool:
    """Equal to tol relative to the larger of 1 and v's largest entry (linear codes grow by orders of magnitude)."""
    u, v = u.detach(), v.detach()
    return bool((u - v).abs().max() <= tol * max(1.0, float(v.abs().max())))


def _memories(store: MemoryStore, b: int):
    """Slot b's readable memories in their stored order: (z, x, slot)."""
    keep = store.valid[b]
    return store.z[b, keep], store.x[b, keep], store.slot[b, keep]


@pytest.mark.parametrize("dedup", [None, 0.9])
@pytest.mark.parametrize("activation,bound,landmark", [("relu", 1.0, None), ("linear", None, None),
                                                       ("relu", 1.0, "stimulus"), ("relu", 1.0, "product")])
def test_capturable_training_equals_the_ordinary_step(dedup, activation, bound, landmark):
    """Losses, logits, gradients and the weights after Adam steps agree to 1e-10 (relative to their scale) over
    chunks with world resets and a store that overflows its capacity (24 memories, 60 steps per slot); with
    landmark correction too (both queries)."""
    fixed, plain = _pair(dedup_threshold=dedup, activation=activation, bound=bound, landmark=landmark)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (fixed, plain)]
    states = [None, None]
    overflowed = dropped = False
    for x, a in _chunks():
        outs = []
        for i, (model, opt) in enumerate(zip((fixed, plain), opts)):
            out = model(x, a, states[i])
            opt.zero_grad()
            out.loss.backward()
            outs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
            opt.step()
            states[i] = out.state
        (of, gf), (op, gp) = outs
        assert _close(of.loss, op.loss) and _close(of.logits, op.logits)
        assert torch.equal(of.stored, op.stored)
        assert gf.keys() == gp.keys()
        for name in gf:
            assert _close(gf[name], gp[name]), name
        assert of.state.memory.size == 24                      # the width never moves
        overflowed |= bool((op.state.memory.valid.sum(1) == 24).any())
        dropped |= bool((~op.stored).any())
        for b in range(x.shape[0]):
            for u, v in zip(_memories(of.state.memory, b), _memories(op.state.memory, b)):
                assert _close(u, v) if u.is_floating_point() else torch.equal(u, v)
    assert overflowed, "the test must reach the capacity"
    assert dropped == (dedup is not None), "with de-duplication some step must repeat a stored conjunction"
    for p, q in zip(fixed.parameters(), plain.parameters()):
        assert _close(p, q)


class _HostReads(TorchFunctionMode):
    """Counts what makes a device synchronise or a shape depend on the data: values read into Python (item,
    tolist, bool, int, float, index) anywhere in the step, forward and backward (the backward runs outside torch
    function modes, so the tensor methods are patched for the step's duration), and data-dependent ops called
    from Python (nonzero, equal, bincount, unique, masked_select, boolean indexing)."""

    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    FUNCS = {torch.nonzero, torch.Tensor.nonzero, torch.equal, torch.bincount, torch.unique, torch.masked_select,
             torch.Tensor.masked_select}

    def __init__(self):
        super().__init__()
        self.hits = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FUNCS or (func is torch.Tensor.__getitem__ and len(args) > 1 and isinstance(args[1], torch.Tensor)
                                  and args[1].dtype == torch.bool):
            self.hits.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._saved = {m: getattr(torch.Tensor, m) for m in self.METHODS}
        for m, f in self._saved.items():
            def counted(t, *a, _f=f, _m=m, **k):
                self.hits.append(_m)
                return _f(t, *a, **k)
            setattr(torch.Tensor, m, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for m, f in self._saved.items():
            setattr(torch.Tensor, m, f)
        return super().__exit__(*exc)


def _step_reads(model, dedup_chunks=3):
    """Host reads of the last of a few training steps (forward, loss, backward; the optimiser is the caller's:
    torch's Adam(capturable=True) covers it on a GPU)."""
    state = None
    for x, a in _chunks(n=dedup_chunks):
        probe = _HostReads()
        with probe:
            out = model(x, a, state, loss_mask=torch.ones(x.shape, dtype=torch.float64))
            out.loss.backward()
        state = out.state
    return probe.hits


@pytest.mark.parametrize("dedup", [None, 0.9])
@pytest.mark.parametrize("landmark", [None, "stimulus", "product"])
def test_a_capturable_step_reads_nothing_back(dedup, landmark):
    fixed, plain = _pair(dedup_threshold=dedup, landmark=landmark)
    assert _step_reads(fixed) == []
    assert _step_reads(plain), "the probe must see the ordinary step's host reads (else it proves nothing)"


def test_capturable_config_and_state_errors():
    with pytest.raises(ValueError, match="capturable=True needs max_memories"):
        TEMtConfig(capturable=True)
    with pytest.raises(ValueError, match="capturable=True needs n_stimuli_2=0"):
        TEMtConfig(capturable=True, max_memories=10, n_stimuli_2=3)
    fixed, plain = _pair()
    x, a = _chunks(n=1)[0]
    with pytest.raises(ValueError, match="max_memories = 24"):
        fixed(x, a, plain(x, a).state)
    bad = x.clone()
    bad[0, 3] = N_X
    with pytest.raises(RuntimeError, match=r"x holds a value out of range.*\[0, 4\]"):
        fixed(bad, a)


def test_graph_step_on_its_fixed_buffers_trains_as_an_ordinary_loop():
    """GraphTrainStep's body (what a GPU captures; eager here) equals an ordinary loop of the non-capturable
    model with the same clip and Adam: the buffers carry the state from chunk to chunk exactly."""
    from temt_core.graph_step import GraphTrainStep
    fixed, plain = _pair(dedup_threshold=0.9)
    step = GraphTrainStep(fixed, torch.optim.Adam(fixed.parameters(), lr=1e-2), batch=3, chunk=10, clip=0.5)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    state = None
    for i, (x, a) in enumerate(_chunks()):
        mask = (torch.arange(10) % 3 != 0).double().expand(3, 10)
        if i == 3:
            step.set_lr(5e-3)
            opt.param_groups[0]["lr"] = 5e-3
        loss = step(x, a, mask).clone()
        out = plain(x, a, state, loss_mask=mask)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        opt.step()
        state = out.state
        assert _close(loss, out.loss) and _close(step.parts["x_pi"], out.parts["x_pi"])
        for u, v in zip(_memories(step.state.memory, 1), _memories(state.memory, 1)):
            assert _close(u, v) if u.is_floating_point() else torch.equal(u, v)
    for p, q in zip(fixed.parameters(), plain.parameters()):
        assert _close(p, q)
    with pytest.raises(ValueError, match="fixed shape"):
        step(x[:, :5], a[:, :5])
    with pytest.raises(ValueError, match="capturable=True"):
        GraphTrainStep(plain, opt, batch=3, chunk=10)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphTrainStep(fixed, opt, batch=3, chunk=10, use_graph=True)


@pytest.mark.parametrize("landmark", [None, "stimulus", "product"])
def test_capturable_population_equals_its_capturable_members(landmark):
    """A capturable population (fixed-width store, no host reads) equals each of its capturable members trained
    alone, in float64: losses, parts, logits, positions, stored masks, gradients and carried state, over chunks
    with world resets, a store that overflows its width (14 memories, 9 steps a chunk), and members that differ
    in de-duplication (on, off) and loss weights. The members themselves equal ordinary models (the test above)."""
    from test_population import _chunks as population_chunks, _members, _run_side_by_side

    from temt_core.population import TEMtPopulation
    kinds = [dict(dedup_threshold=0.9, w_reg_e=0.01), dict(dedup_threshold=None, attention_multiplier=2.0),
             dict(dedup_threshold=0.6, transition_init_std=0.3, w_nonneg=0.05)]
    configs = [TEMtConfig(pos_dim=10, n_stimuli=6, landmark=landmark, capturable=True, max_memories=14, **k)
               for k in kinds]
    models = _members(configs, [0, 1, 2])
    if landmark:
        for m in models:                    # open the gates a little, so that the correction really moves e
            torch.nn.init.normal_(m.landmark.gate.weight, std=0.3)
    pop = TEMtPopulation(models)
    P, B, T = 3, 4, 9
    for out, _ in _run_side_by_side(pop, models, population_chunks(P, B, T, 4, 6), B):
        assert out.state.memory.size == 14                                   # the fixed width, every chunk
    assert not out.stored[0].all() and out.stored[1].all()      # member 0 de-duplicates, member 1 does not


def test_one_hot_transition_gradient_equals_the_grouped_one():
    """The capturable weight gradient of the population recurrence (one-hot product) equals the grouped one."""
    from temt_core.population import _grouped_outer, _one_hot_outer
    g = torch.Generator().manual_seed(0)
    P, B, T, E, A = 3, 4, 7, 5, 5
    e0, y, dh = torch.randn(P, B, E, generator=g), torch.randn(T, P, B, E, generator=g), \
        torch.randn(T, P, B, E, generator=g)
    actions = torch.randint(0, A, (P, B, T), generator=g)
    actions[0, :, 2] = 4                                                  # an action no other member takes there
    torch.testing.assert_close(_one_hot_outer(e0, y, dh, actions, A), _grouped_outer(e0, y, dh, actions, A))


def _population_step_reads(pop, B=4, T=9, n=3):
    from test_population import _chunks as population_chunks
    state = None
    for x, a, mask in population_chunks(pop.P, B, T, n, 6):
        probe = _HostReads()
        with probe:
            out = pop(x, a, state, loss_mask=mask.double())
            out.loss.backward()
        state = out.state
    return probe.hits


@pytest.mark.parametrize("landmark", [None, "stimulus", "product"])
def test_a_capturable_population_step_reads_nothing_back(landmark):
    from test_population import _members

    from temt_core.population import TEMtPopulation
    make = lambda capturable: TEMtPopulation(_members(
        [TEMtConfig(pos_dim=10, n_stimuli=6, landmark=landmark, capturable=capturable, max_memories=14,
                    dedup_threshold=d) for d in (0.9, None)], [0, 1]))
    assert _population_step_reads(make(True)) == []
    assert _population_step_reads(make(False)), "the probe must see the ordinary population's host reads"


def test_capturable_population_errors():
    from temt_core.population import TEMtPopulation
    make = lambda width: TEMt(TEMtConfig(pos_dim=8, n_stimuli=N_X, capturable=True, max_memories=width))
    with pytest.raises(ValueError, match="member 1 cannot share a population with member 0: max_memories differ"):
        TEMtPopulation([make(10), make(12)])
    pop = TEMtPopulation([make(10), make(10)])
    x, a = torch.zeros(2, 3, 4, dtype=torch.long), torch.full((2, 3, 4), RESET)
    with pytest.raises(ValueError, match="capturable population keeps exactly max_memories = 10"):
        pop(x, a, TEMtPopulation([make(12), make(12)])(x, a).state)


def _population_pair(dedup=(0.9, None), landmark=None, width=14):
    """A capturable population and an ordinary one with the same initial weights (float64, 2 members)."""
    from test_population import _members

    from temt_core.population import TEMtPopulation
    make = lambda capturable: TEMtPopulation(_members(
        [TEMtConfig(pos_dim=10, n_stimuli=6, landmark=landmark, capturable=capturable, max_memories=width,
                    dedup_threshold=d, transition_init_std=0.3) for d in dedup], [0, 1]))
    return make(True), make(False)


def test_capturable_population_adam_equals_the_default():
    """PopulationAdam(capturable=True) (step count, learning rates and clips as device tensors) takes the same steps
    as the default mode, through a learning-rate change, per-member clips, a state_dict round trip and a subset."""
    from test_population import _chunks as population_chunks

    from temt_core.population import PopulationAdam
    fixed, plain = _population_pair()
    plain.load_state_dict(fixed.state_dict())
    opt_fixed = PopulationAdam(fixed.parameters(), capturable=True)
    opt_plain = PopulationAdam(plain.parameters())
    states = [None, None]
    for i, (x, a, mask) in enumerate(population_chunks(2, 4, 9, 5, 6)):
        lr, clip = [1e-2 if i < 3 else 3e-3, 2e-2], [0.05, float("inf")]
        for j, (pop, opt) in enumerate(((fixed, opt_fixed), (plain, opt_plain))):
            out = pop(x, a, states[j], loss_mask=mask)
            opt.zero_grad()
            out.loss.backward()
            if opt.capturable:
                opt.set_lr(lr)
                opt.set_clip(clip)
                opt.clip_grad_norm_()
                opt.step()
            else:
                opt.clip_grad_norm_(clip)
                opt.step(lr)
            states[j] = out.state
        if i == 2:                            # the moments and the step count survive a round trip
            again = PopulationAdam(fixed.parameters(), capturable=True)
            again.load_state_dict(opt_fixed.state_dict())
            again.set_lr(lr)
            opt_fixed = again
    assert opt_fixed.steps == opt_plain.steps == 5
    for p, q in zip(fixed.parameters(), plain.parameters()):
        assert _close(p, q, 1e-12)
    sub = opt_fixed.subset([1], list(fixed.subset([1]).parameters()))
    assert sub.capturable and sub.steps == 5 and float(sub._clip[0]) == float("inf")
    with pytest.raises(ValueError, match="set_lr, then step"):
        opt_fixed.step([1e-3, 1e-3])
    with pytest.raises(ValueError, match="set_clip, then clip_grad_norm_"):
        opt_fixed.clip_grad_norm_([1.0, 1.0])
    with pytest.raises(ValueError, match="set_lr is for capturable=True"):
        opt_plain.set_lr([1e-3, 1e-3])


@pytest.mark.parametrize("landmark", [None, "stimulus"])
def test_population_graph_step_trains_as_an_ordinary_population_loop(landmark):
    """PopulationGraphStep's body (what a GPU captures; eager here) equals an ordinary population (store width
    following the data) trained with the default PopulationAdam: per-member losses, memories and weights, with
    per-member clips, a learning-rate change and world resets; the body reads nothing back to the host."""
    from test_population import _chunks as population_chunks

    from temt_core.graph_step import PopulationGraphStep
    from temt_core.population import PopulationAdam
    fixed, plain = _population_pair(landmark=landmark)
    plain.load_state_dict(fixed.state_dict())
    step = PopulationGraphStep(fixed, PopulationAdam(fixed.parameters(), capturable=True), batch=4, chunk=9)
    opt = PopulationAdam(plain.parameters())
    state, clip = None, [0.05, 10.0]
    step.set_clip(clip)
    for i, (x, a, mask) in enumerate(population_chunks(2, 4, 9, 5, 6)):
        lr = [1e-2, 5e-3] if i < 3 else [2e-3, 2e-3]
        step.set_lr(lr)
        probe = _HostReads()
        with probe:
            losses = step(x, a, mask.double()).clone()
        assert probe.hits == [], probe.hits
        out = plain(x, a, state, loss_mask=mask)
        opt.zero_grad()
        out.loss.backward()
        norms = opt.clip_grad_norm_(clip)
        opt.step(lr)
        state = out.state
        assert _close(losses, out.losses) and _close(step.grad_norm, norms)
        assert _close(step.parts["x_pi"], out.parts["x_pi"])
        for b in (1, 6):                                            # a slot of each member
            for u, v in zip(_memories(step.state.memory, b), _memories(state.memory, b)):
                assert _close(u, v) if u.is_floating_point() else torch.equal(u, v)
    assert float(norms[0]) > clip[0]                                # member 0's clip really acted
    for p, q in zip(fixed.parameters(), plain.parameters()):
        assert _close(p, q)


def test_population_graph_step_errors():
    from temt_core.graph_step import PopulationGraphStep
    from temt_core.population import PopulationAdam
    fixed, plain = _population_pair()
    with pytest.raises(ValueError, match="population of capturable members"):
        PopulationGraphStep(plain, PopulationAdam(plain.parameters(), capturable=True), batch=4, chunk=9)
    with pytest.raises(ValueError, match="capturable=True"):
        PopulationGraphStep(fixed, PopulationAdam(fixed.parameters()), batch=4, chunk=9)
    step = PopulationGraphStep(fixed, PopulationAdam(fixed.parameters(), capturable=True), batch=4, chunk=9)
    with pytest.raises(ValueError, match="fixed shape"):
        step(torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="CUDA device"):
        PopulationGraphStep(fixed, PopulationAdam(fixed.parameters(), capturable=True), 4, 9, use_graph=True)
    with pytest.raises(ValueError, match="does not fit"):
        step.set_state(plain(torch.zeros(2, 4, 9, dtype=torch.long), torch.full((2, 4, 9), RESET)).state)
