"""The speed paths of the grammar model compute what the definition does, and the throughput benchmark times what
it says it times.

The grammar model trains through temt_core's fused recurrence (a hand-written backward); the plain per-step loop
is the definition. benchmarks/language_speed.py compares the grammar model's training tokens/s with the
sinusoidal model's; its schedule decides whether a shared machine's changing load hits both models alike.
"""
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from language.model import LanguageModel, ModelConfig

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("language_speed", ROOT / "benchmarks" / "language_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _batch(B=5, T=9, vocab=40, n_actions=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T - 1, (B,), generator=g)
    ids = torch.randint(4, vocab, (B, T + 1), generator=g)
    ids[:, 0] = 2
    ids[torch.arange(B), lengths + 1] = 3
    mask = torch.arange(T)[None, :] < (lengths + 1)[:, None]
    ids[:, 1:][~mask] = 0
    actions = torch.randint(2, n_actions, (B, T), generator=g)
    actions[torch.arange(B), lengths] = 1
    return {"ids": ids, "actions": actions, "mask": mask}


def _float64_loss(out, b):
    """The model's training objective recomputed in float64 from its logits (the model casts its logits to
    float32 for the cross-entropy, which would cap the gradients' precision at float32's)."""
    x_nll = F.cross_entropy(out.logits.flatten(0, 1), b["ids"][:, 1:].flatten(), reduction="none")
    total = x_nll.view(b["mask"].shape)[b["mask"]].sum()
    if out.action_logits is not None:
        a_nll = F.cross_entropy(out.action_logits.flatten(0, 1), b["actions"].flatten(), reduction="none")
        total = total + a_nll.view(b["mask"].shape)[b["mask"]].sum()
    return total / b["mask"].sum()


@pytest.mark.parametrize("structure", ["joint", "given"])
def test_fused_grammar_model_equals_the_plain_loop_in_float64(structure):
    """Word and action logits and every parameter's gradient of the fused path equal those of temt_core's plain
    loop (the definition) in float64; the model's own (float32) losses agree to float32 precision."""
    cfg = ModelConfig(pos="grammar", structure=structure, vocab_size=40, n_actions=7, d_model=16, n_layer=2,
                      n_head=4, n_pos_head=2, d_ff=24, pos_dim=8, dropout=0.0, pos_method="fused")
    torch.manual_seed(0)
    fused = LanguageModel(cfg).double()
    loop = LanguageModel(dataclasses.replace(cfg, pos_method="loop")).double()
    loop.load_state_dict(fused.state_dict())
    b = _batch()
    outs = {}
    for name, m in (("fused", fused), ("loop", loop)):
        out = m(**b, return_logits=True)
        _float64_loss(out, b).backward()
        outs[name] = out
    f, lp = outs["fused"], outs["loop"]
    assert f.logits.dtype == torch.float64
    torch.testing.assert_close(f.logits, lp.logits, rtol=1e-12, atol=1e-12)
    if structure == "joint":
        torch.testing.assert_close(f.action_logits, lp.action_logits, rtol=1e-12, atol=1e-12)
    else:
        assert f.action_logits is None
    for field in ("loss", "word_nll", "action_nll"):
        torch.testing.assert_close(getattr(f, field), getattr(lp, field), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_float64_loss(f, b).float(), f.loss, rtol=1e-6, atol=1e-6)  # the same objective
    grads_f, grads_l = dict(fused.named_parameters()), dict(loop.named_parameters())
    assert grads_f["enc.rec.U"].grad.abs().sum() > 0             # the recurrence gets a gradient at all
    for name, p in grads_f.items():
        torch.testing.assert_close(p.grad, grads_l[name].grad, rtol=1e-10, atol=1e-12, msg=name)


class _Counting(torch.nn.Module):
    """A stand-in model that records the order of its training steps (names in a shared log)."""

    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, ids, actions=None, mask=None):
        self.log.append(self.name)
        return type("Out", (), {"loss": (self.w * ids.float().mean()).sum()})()


@pytest.mark.parametrize("schedule, order", [("steps", "sgsgsg"), ("blocks", "sssggg")])
def test_benchmark_schedules_alternate_as_documented(schedule, order):
    bench = _benchmark()
    log = []
    models = {"s": _Counting("s", log), "g": _Counting("g", log)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    data = [_batch(seed=i) for i in range(2)]
    rates = bench.time_models(models, opts, data, steps=2, warmup=1, amp=None, device=torch.device("cpu"),
                              schedule=schedule)
    assert "".join(log) == order
    assert set(rates) == {"s", "g"} and all(w > 0 and c > 0 for w, c in rates.values())


def test_benchmark_reports_wall_and_cpu_ratios_against_the_issue_target(tmp_path):
    """A tiny end-to-end run: the JSON keys the docs quote are there and the ratios are what the rates say."""
    bench = _benchmark()
    res = bench.main(["--size", "quick", "--vocab", "30", "--steps", "1", "--repeats", "1", "--warmup", "0",
                      "--no-loop", "--out", str(tmp_path / "speed.json")])
    for key in ("tokens_per_s", "tokens_per_s_repeats", "params", "ratio_grammar_vs_sinusoidal", "target_ratio",
                "meets_target", "cpu_tokens_per_s", "ratio_cpu_grammar_vs_sinusoidal", "schedule"):
        assert key in res, key
    assert res["target_ratio"] == 0.9 and res["schedule"] == "steps"
    tps, cps = res["tokens_per_s"], res["cpu_tokens_per_s"]
    assert res["ratio_grammar_vs_sinusoidal"] == pytest.approx(tps["grammar"] / tps["sinusoidal"], abs=2e-3)
    assert res["ratio_cpu_grammar_vs_sinusoidal"] == pytest.approx(cps["grammar"] / cps["sinusoidal"], abs=2e-3)
    assert res["meets_target"] == (res["ratio_grammar_vs_sinusoidal"] >= 0.9)
    assert abs(res["params"]["grammar"] - res["params"]["sinusoidal"]) < 0.01 * res["params"]["grammar"]
    assert (tmp_path / "speed.json").read_text().startswith("{")


def test_benchmark_rejects_empty_timings(capsys):
    with pytest.raises(SystemExit):
        _benchmark().main(["--steps", "0"])
    assert "--steps must be >= 1 (got 0)" in capsys.readouterr().err
