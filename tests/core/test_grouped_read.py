"""grouped_read: the explicit read with the stored memories' padding skipped equals the full read (values and
gradients in float64), its plan covers every column a slot holds, and whole models give the same numbers with it
on and off."""
import pytest
import torch

from temt_core.attention import Keys, explicit_read
from temt_core.grouped_read import grouped_read, plan_groups, runs, saving
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET

N_X = 6


def _store(B=7, M=40, T=5, E=4, seed=0):
    """Stored keys whose valid columns take every shape the store's layouts give: a prefix and the newest columns
    (after a re-pack and appends), the newest only (a new world), all, none, scattered holes (de-duplication);
    queries of slot 3 may not read the store from step 2 on (a new world inside the chunk)."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.zeros(B, M, dtype=torch.bool)
    valid[0, :12] = valid[0, 30:] = True
    valid[1, 25:] = True
    valid[2] = True
    valid[4, :3] = valid[4, 33:] = True
    valid[5] = torch.rand(M, generator=g) > 0.5
    valid[6, 10:20] = True                                     # slot 3 holds nothing
    rows = torch.ones(B, T, dtype=torch.bool)
    rows[3, 2:] = False
    z = torch.randn(B, M, E, generator=g, dtype=torch.double)
    x = torch.randint(0, N_X, (B, M), generator=g)
    chunk_mask = torch.ones(T, T, dtype=torch.bool).tril(-1).expand(B, T, T).clone()
    chunk_mask[6] = False                                      # slot 6 stores nothing in the chunk
    q = torch.randn(B, T, E, generator=g, dtype=torch.double, requires_grad=True)
    zc = torch.randn(B, T, E, generator=g, dtype=torch.double, requires_grad=True)
    keys = [Keys(z, x, valid.unsqueeze(1), rows=rows), Keys(zc, torch.randint(0, N_X, (B, T), generator=g), chunk_mask)]
    n = sum(k.count() for k in keys).expand(B, T, 1)
    return q, zc, n, keys


@pytest.mark.parametrize("groups,max_gap", [(2, 32), (3, 1), (7, 1), (7, 0)])
def test_grouped_read_equals_the_full_read(groups, max_gap):
    q, zc, n, keys = _store()
    full = explicit_read(q, n, keys, N_X, False)[0]
    got = grouped_read(q, n, keys, N_X, lambda q_, n_, k: explicit_read(q_, n_, k, N_X, False)[0], groups=groups,
                       min_saving=0.0, max_gap=max_gap)
    assert got is not None
    if max_gap <= 1:                 # groups read several runs of columns (a prefix and the newest, holes)
        assert max(len(cols) for _, cols in plan_groups(keys[0].mask[:, 0], groups, max_gap)) >= 2
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(full)
    want = torch.autograd.grad((full * probe).sum(), [q, zc])
    have = torch.autograd.grad((got * probe).sum(), [q, zc])
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert (full[3, 2:].sum(-1) > 0.99).all() and (full[6].sum(-1) > 0.99).all()    # rows that read something
    assert torch.equal(full[3, 0] == 0, got[3, 0] == 0)


def test_the_plan_covers_every_held_column_and_skips_padding():
    _, _, _, keys = _store()
    valid = keys[0].mask[:, 0]
    plan = plan_groups(valid, groups=3, max_gap=2)
    assert sorted(b for idx, _ in plan for b in idx) == list(range(7))
    for idx, cols in plan:
        covered = torch.zeros(valid.shape[1], dtype=torch.bool)
        for a, b in cols:
            covered[a:b] = True
        assert not (valid[idx] & ~covered).any()                  # nothing a slot holds is left out
    assert 0 < saving(plan, *valid.shape) < 1
    assert runs(torch.tensor([0, 1, 1, 0, 0, 0, 1, 0, 1], dtype=torch.bool), max_gap=1) == [(1, 3), (6, 9)]
    assert runs(torch.tensor([0, 1, 1, 0, 0, 0, 1], dtype=torch.bool), max_gap=2) == [(1, 3), (6, 7)]
    assert runs(torch.zeros(4, dtype=torch.bool)) == []


def test_no_grouping_when_it_saves_too_little():
    q, _, n, keys = _store()
    full_store = Keys(keys[0].z, keys[0].x, torch.ones_like(keys[0].mask), keys[0].rows)
    read = lambda q_, n_, k: explicit_read(q_, n_, k, N_X, False)[0]
    assert grouped_read(q, n, [full_store, keys[1]], N_X, read, min_saving=0.1) is None
    assert grouped_read(q, n, keys, N_X, read, min_saving=0.99) is None


@pytest.mark.parametrize("landmark", [None, "stimulus"])
def test_models_give_the_same_numbers_with_the_grouped_read(landmark):
    """Whole chunks with out-of-phase world resets (the store's padding the grouped read skips): losses and
    gradients with the grouped read equal the full read's in float64; the grouped read really ran."""
    import temt_core.attention as attention
    torch.manual_seed(0)
    cfg = TEMtConfig(n_actions=5, n_stimuli=N_X, pos_dim=8, dedup_threshold=0.9, transition_init_std=0.3,
                     landmark=landmark)
    a, b = TEMt(cfg).double(), TEMt(cfg).double()
    b.load_state_dict(a.state_dict())
    b.attention.grouped = False
    g = torch.Generator().manual_seed(1)
    B, T = 6, 10
    x = torch.randint(0, N_X, (B, 8 * T), generator=g)
    act = torch.randint(0, 5, (B, 8 * T), generator=g)
    act[:, 0] = RESET
    for s in range(B):                                            # slot s starts new worlds out of phase
        act[s, 7 * s + 5::25] = RESET
    calls = []
    real = attention.grouped_read
    attention.grouped_read = lambda *args, **kw: calls.append(r := real(*args, **kw)) or r
    try:
        states = [None, None]
        for i in range(8):
            xs, acts = x[:, i * T:(i + 1) * T], act[:, i * T:(i + 1) * T]
            outs = [m(xs, acts, st) for m, st in zip((a, b), states)]
            torch.testing.assert_close(outs[0].loss, outs[1].loss, rtol=1e-12, atol=1e-12)
            ga = torch.autograd.grad(outs[0].loss, list(a.parameters()))
            gb = torch.autograd.grad(outs[1].loss, list(b.parameters()))
            for u, v in zip(ga, gb):
                torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
            states = [o.state for o in outs]
    finally:
        attention.grouped_read = real
    assert any(c is not None for c in calls), "the grouped read never ran: the test proves nothing"
