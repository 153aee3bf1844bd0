"""The fused prediction read (temt_core/memory_read.py) against TEMtAttention's explicit read."""
import torch

from temt_core.attention import Keys, TEMtAttention, zscore
from temt_core.memory_read import memory_read
from temt_core.model import TEMt, TEMtConfig
from temt_core.positions import RESET


def _explicit_p_x(q, keys, n_x):
    """The explicit read's p(x): concatenated masked scores, softmax, empty rows zeroed, scatter onto stimuli."""
    B, T, _ = q.shape
    scores = torch.cat([k.scores(q) for k in keys], -1)
    probs = torch.softmax(scores, -1)
    n = sum(k.count() for k in keys).expand(B, T, 1)
    probs = probs.masked_fill(n == 0, 0.0)
    x_all = torch.cat([k.x for k in keys], 1)
    return probs.new_zeros(B, T, n_x).scatter_add(2, x_all.unsqueeze(1).expand_as(probs), probs), n


def _case(dtype=torch.float64, scale=1.0, seed=0, B=3, T=6, M=7, n_x=5, E=4):
    """Stored group (B, 1, M mask, rows) and chunk group (B, T, T strictly-earlier mask), with: a slot whose rows
    stop reading the store part-way (a new world), a slot with no valid stored memory, and empty rows."""
    g = torch.Generator().manual_seed(seed)
    q = (scale * torch.randn(B, T, E, generator=g, dtype=dtype)).requires_grad_()
    z_m = torch.randn(B, M, E, generator=g, dtype=dtype)
    z_c = torch.randn(B, T, E, generator=g, dtype=dtype).requires_grad_()
    x_m, x_c = torch.randint(0, n_x, (B, M), generator=g), torch.randint(0, n_x, (B, T), generator=g)
    valid = torch.rand(B, 1, M, generator=g) > 0.3
    valid[-1] = False                                          # the last slot: nothing stored
    rows = torch.ones(B, T, dtype=torch.bool)
    rows[0, 3:] = False                                        # slot 0 starts a new world at step 3
    chunk = torch.ones(T, T, dtype=torch.bool).tril(-1).expand(B, T, T).clone()
    chunk[0, 3:, :3] = False
    chunk[1] &= torch.rand(T, T, generator=g) > 0.3
    keys = [Keys(z_m, x_m, valid, rows=rows), Keys(z_c, x_c, chunk)]
    return q, z_c, keys, n_x


def test_fused_read_equals_explicit_values_and_gradients():
    for seed in range(3):
        q, z_c, keys, n_x = _case(seed=seed)
        ref, n = _explicit_p_x(q, keys, n_x)
        got = memory_read(q, n, keys, n_x)
        assert bool((n == 0).any()) and bool((n > 0).any())    # the case has empty and non-empty rows
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
        w = torch.randn(ref.shape, dtype=ref.dtype)
        g_ref = torch.autograd.grad((ref * w).sum(), (q, z_c))
        g_got = torch.autograd.grad((got * w).sum(), (q, z_c))
        for a, b in zip(g_got, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_read_is_stable_where_scores_are_large():
    """Scores of several hundred in float32 (exp would overflow without the per-group maximum)."""
    q, z_c, keys, n_x = _case(dtype=torch.float32, scale=60.0)
    got = memory_read(q, sum(k.count() for k in keys).expand(*q.shape[:2], 1), keys, n_x)
    q64 = q.detach().double().requires_grad_()
    keys64 = [k._replace(z=k.z.detach().double()) for k in keys]
    ref, _ = _explicit_p_x(q64, keys64, n_x)
    assert float(q.detach().abs().max()) > 100
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    got.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(z_c.grad).all()


def test_fused_read_gradcheck():
    q, z_c, keys, n_x = _case(B=2, T=4, M=3, n_x=3, E=3)       # slot 0 changes world, slot 1 has no store
    stored, chunk = keys
    n = sum(k.count() for k in keys).expand(2, 4, 1)

    def f(q_, zc_):
        return memory_read(q_, n, [stored, chunk._replace(z=zc_)], n_x)
    assert torch.autograd.gradcheck(f, (q.detach().requires_grad_(), z_c.detach().requires_grad_()))


def test_attention_backends_agree():
    """TEMtAttention's fused backend (an option without memory neurons) equals the explicit one."""
    torch.manual_seed(1)
    att = TEMtAttention(4, 5).double()
    q, z_c, keys, n_x = _case(E=4)
    z_q = zscore(q.detach()).requires_grad_()
    a, _ = att(z_q, keys, backend="explicit")
    b, w = att(z_q, keys, need_weights=False, backend="fused")
    assert w is None
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    ga = torch.autograd.grad(a.square().sum(), [z_q, z_c] + list(att.parameters()))
    gb = torch.autograd.grad(b.square().sum(), [z_q, z_c] + list(att.parameters()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_model_with_fused_read_equals_explicit():
    """Whole TEMt chunks (parallel path and landmark correction, across a world reset and a second chunk) give the
    same losses and gradients with either read, in float64."""
    g = torch.Generator().manual_seed(3)
    chunks = []
    for _ in range(2):
        x, a = torch.randint(0, 6, (3, 9), generator=g), torch.randint(0, 5, (3, 9), generator=g)
        chunks.append((x, a))
    chunks[1][1][0, 4] = RESET                                 # slot 0 starts a new world
    for landmark in (None, "stimulus", "product"):
        results = {}
        for backend in ("explicit", "fused"):
            torch.manual_seed(0)
            model = TEMt(TEMtConfig(pos_dim=8, n_stimuli=6, landmark=landmark, dedup_threshold=None)).double()
            model.attention_backend = backend
            state, losses = None, []
            for x, a in chunks:
                out = model(x, a, state)
                losses.append(out.loss)
                state = out.state
            results[backend] = (torch.stack(losses), torch.autograd.grad(out.loss, list(model.parameters())))
        torch.testing.assert_close(results["fused"][0], results["explicit"][0], rtol=1e-12, atol=1e-12)
        for a, b in zip(results["fused"][1], results["explicit"][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
