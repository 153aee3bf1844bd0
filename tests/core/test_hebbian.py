"""Claim C4: TEM's Hebbian memory retrieval is attention without the softmax, exactly."""
import torch

from temt_core.hebbian import HebbianMemory, outer_product_memory, unnormalised_attention


def test_one_step_retrieval_equals_unnormalised_attention_float64():
    torch.manual_seed(0)
    B, N, P = 4, 50, 32
    p = torch.randn(B, N, P, dtype=torch.float64)
    q = torch.randn(B, P, dtype=torch.float64)
    mem = HebbianMemory(B, P, decay=1.0, rate=1.0, clamp=None, dtype=torch.float64)
    for t in range(N):                                   # stored one memory at a time, as TEM does
        mem.store(p[:, t])
    torch.testing.assert_close(mem.M, outer_product_memory(p), rtol=1e-13, atol=1e-12)
    retrieved = mem.retrieve(q, iterations=1, kappa=0.0)   # one step, identity activation: q M
    attention = unnormalised_attention(q, keys=p, values=p)
    torch.testing.assert_close(retrieved, attention, rtol=1e-12, atol=1e-12)
    explicit = sum((q * p[:, t]).sum(-1, keepdim=True) * p[:, t] for t in range(N))
    torch.testing.assert_close(retrieved, explicit, rtol=1e-12, atol=1e-12)


def test_softmax_attention_differs_from_hebbian_retrieval():
    """The equivalence is to attention *without* the softmax: with it, the answer changes."""
    torch.manual_seed(1)
    p = torch.randn(1, 10, 8, dtype=torch.float64)
    q = torch.randn(1, 8, dtype=torch.float64)
    soft = (torch.softmax(p[0] @ q[0], 0) @ p[0]).unsqueeze(0)
    assert not torch.allclose(soft, unnormalised_attention(q, p, p))


def test_tem_update_rule_is_error_correcting_and_clamped():
    torch.manual_seed(2)
    mem = HebbianMemory(2, 6, dtype=torch.float64)         # TEM defaults: decay 0.9999, rate 0.5, clamp 1
    p = torch.randn(2, 6, dtype=torch.float64)
    p_hat = torch.randn(2, 6, dtype=torch.float64)
    M0 = torch.randn(2, 6, 6, dtype=torch.float64) * 0.1
    mem.M = M0.clone()
    mem.store(p, p_hat)
    expect = (0.9999 * M0 + 0.5 * (p + p_hat).unsqueeze(2) * (p - p_hat).unsqueeze(1)).clamp(-1, 1)
    torch.testing.assert_close(mem.M, expect)
    # storing a pattern the memory already retrieves perfectly changes nothing but the decay
    mem.M = M0.clone()
    mem.store(p, p)
    torch.testing.assert_close(mem.M, 0.9999 * M0)


def test_attractor_iterates_tem_dynamics():
    torch.manual_seed(3)
    mem = HebbianMemory(1, 5, dtype=torch.float64)
    mem.M = torch.randn(1, 5, 5, dtype=torch.float64) * 0.3
    q = torch.randn(1, 5, dtype=torch.float64)
    f = lambda h: torch.nn.functional.leaky_relu(h.clamp(-1, 1), 0.01)
    h = q
    for _ in range(5):
        h = f(0.8 * h + h @ mem.M[0])
    torch.testing.assert_close(mem.retrieve(q, iterations=5, kappa=0.8, activation=f), h)
