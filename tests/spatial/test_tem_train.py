"""TEM (temt_core/tem.py) through the spatial pipeline: a tiny run through the CLI, exact resume, the same walks as
TEM-t, analysis, and the named errors for mixing up the two models' keys, checkpoints and commands."""
import json

import numpy as np
import pytest
import torch

from spatial.cli import main
from spatial.config import SpatialConfig
from spatial.rollout import run_rollout
from spatial.train import TIMING_KEYS, Trainer, evaluate
from temt_core.checkpoint import CheckpointError, load_checkpoint
from temt_core.config import ConfigError, load_config
from temt_core.tem import TEM, TEMState, schedule

# a small TEM (g 12 units, p 40) on small worlds: a training step costs milliseconds
TINY_TEM = ["model_kind=tem", "tem.g_modules=[6, 6]", "tem.g_memory=[2, 2]", "tem.f_initial=[0.9, 0.3]",
            "tem.c_star_hidden=20", "tem.transition_hidden=8", "walks.sizes=[4, 5]", "walks.walk_length=[40, 60]",
            "train.batch_size=4", "train.chunk_length=10", "eval.steps=30", "eval.n_worlds=2"]
WALKS = ["walks.sizes=[4, 5]", "walks.walk_length=[40, 60]", "train.batch_size=4", "train.chunk_length=10",
         "eval.steps=30", "eval.n_worlds=2"]


def _config(*extra):
    return load_config(SpatialConfig, None, TINY_TEM + list(extra))


def _log(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_tem_run_through_the_cli_writes_metrics_and_checkpoints(tmp_path, capsys):
    run = tmp_path / "r"
    args = ["train", "--quiet", "--out", str(run), *TINY_TEM, "train.steps=4", "train.log_every=2",
            "train.checkpoint_every=2", "eval.every=4"]
    assert main(args) == 0
    assert "zero-shot" in capsys.readouterr().out
    log = _log(run)
    train = [r for r in log if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for key in ("loss", "x_gen", "p_g", "reg_p", "grad_norm", "acc", "acc_revisit", "acc_zero_shot", "node_agent"):
        assert key in train[-1] and np.isfinite(train[-1][key]), key
    final = json.loads((run / "metrics.json").read_text())
    assert final["step"] == 4 and 0 <= final["acc_zero_shot"] <= 1 and final["n_revisit"] > 0
    assert final["side_lobe_ratio"] is None or np.isnan(final["side_lobe_ratio"])    # no memory slots in TEM
    assert (run / "LATEST").read_text().strip() == "checkpoints/step-0000004"
    tensors, meta = load_checkpoint(run / "checkpoints" / "step-0000004")
    assert meta["config"]["model_kind"] == "tem"
    assert tensors["state.M_gen"].shape == (4, 40, 40) and "model.path.e_init" in tensors


def _assert_same_run(a: Trainer, b: Trainer) -> None:
    """Bit-equal weights, carried state and training log (speeds aside)."""
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    for k, v in a.state.tensors().items():
        assert torch.equal(v, b.state.tensors()[k]), k
    strip = lambda run: [{k: v for k, v in json.loads(l).items() if k not in TIMING_KEYS}   # noqa: E731
                         for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert strip(a.run_dir) == strip(b.run_dir)


def test_tem_resume_continues_exactly(tmp_path):
    """As tests/spatial/test_train.py's test_resume_continues_exactly, for TEM: stop at 6, resume to 12."""
    base = ["train.log_every=2", "eval.every=1000", "train.checkpoint_every=6"]
    straight = Trainer(_config(*base, "train.steps=12"), tmp_path / "a", progress=False)
    straight.run()
    Trainer(_config(*base, "train.steps=6"), tmp_path / "b", progress=False).run()
    resumed = Trainer(_config(*base, "train.steps=12"), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 6 and isinstance(resumed.state, TEMState)
    resumed.run()
    _assert_same_run(straight, resumed)


def test_tem_resume_after_a_kill_mid_run_continues_exactly(tmp_path, monkeypatch):
    """Killed at step 9 (log rows for steps 8 written after the step-6 checkpoint): resume from step 6 drops those
    rows, retrains them, and ends bit-equal to an uninterrupted run."""
    base = ["train.log_every=2", "eval.every=1000", "train.checkpoint_every=6", "train.steps=12"]
    straight = Trainer(_config(*base), tmp_path / "a", progress=False)
    straight.run()
    original = Trainer.train_step

    def killed(self, chunk):
        if self.step == 9:
            raise KeyboardInterrupt("killed")
        return original(self, chunk)
    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_config(*base), tmp_path / "b", progress=False).run()
    assert max(r["step"] for r in _log(tmp_path / "b")) == 8
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(_config(*base), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 6
    resumed.run()
    _assert_same_run(straight, resumed)


def test_the_same_walk_stream_reaches_tem_and_temt(tmp_path):
    seen = {}
    for kind, args in (("tem", TINY_TEM), ("temt", WALKS + ["model.pos_dim=16"])):
        trainer = Trainer(load_config(SpatialConfig, None, args + ["train.seed=3"]), tmp_path / kind, progress=False)
        forward, calls = trainer.model.forward, []

        def spy(x, a, state=None, loss_mask=None, **kw):
            calls.append((x.clone(), a.clone(), loss_mask.clone(), kw))
            return forward(x, a, state, loss_mask=loss_mask, **kw)
        trainer.model.forward = spy
        for _ in range(3):
            trainer.train_step(trainer.walks.next_chunk(trainer.config.train.chunk_length))
        trainer.rundir.close()
        seen[kind] = calls
    assert [c[3] for c in seen["tem"]] == [{"step": 0}, {"step": 1}, {"step": 2}]   # TEM gets the gradient step
    assert [c[3] for c in seen["temt"]] == [{}, {}, {}]
    for (x, a, m, _), (x2, a2, m2, _) in zip(seen["tem"], seen["temt"]):
        assert torch.equal(x, x2) and torch.equal(a, a2) and torch.equal(m, m2)
    assert any(bool((c[1] == -1).any()) for c in seen["tem"])                        # world starts included


def test_tem_evaluation_runs_at_the_trained_step(tmp_path):
    cfg = _config("train.steps=1")
    torch.manual_seed(0)
    model = TEM(cfg.tem)
    with pytest.raises(ValueError, match="needs step="):
        run_rollout(model, cfg.walks, 2, 20, 0)
    early, late = (evaluate(model, cfg, "cpu", step=s) for s in (0, 20_000))
    assert schedule(0, cfg.tem).eta != schedule(20_000, cfg.tem).eta
    r0, r1 = (run_rollout(model, cfg.walks, 2, 20, 0, record_positions=True, step=s) for s in (0, 20_000))
    assert np.array_equal(r0.x, r1.x) and not np.array_equal(r0.positions, r1.positions)
    assert early["n_steps"] == late["n_steps"] and np.isnan(early["side_lobe_ratio"])


def test_isometry_control_uses_tem_g(tmp_path):
    trainer = Trainer(_config("train.w_isometry=0.5", "train.steps=1"), tmp_path / "iso", progress=False)
    stats = trainer.train_step(trainer.walks.next_chunk(10))
    trainer.rundir.close()
    assert np.isfinite(stats["isometry"]) and stats["isometry"] > 0


@pytest.mark.slow
def test_tem_analyse_uses_g_and_p(tmp_path, capsys):
    """About 17 s on a loaded 2-core machine (the analysis nulls and figures)."""
    run = tmp_path / "r"
    assert main(["train", "--quiet", "--out", str(run), *TINY_TEM, "train.steps=2", "train.checkpoint_every=2",
                 "eval.every=2"]) == 0
    capsys.readouterr()
    assert main(["analyse", str(run), "sizes=[4, 4]", "steps=120", "n_shuffles=3", "n_perm=3"]) == 0
    assert "memory-neuron place metric" in capsys.readouterr().out
    metrics = json.loads((run / "analysis" / "metrics.json").read_text())
    assert metrics["worlds"][0]["units"] == 12                      # g units as the position cells
    assert 0 < metrics["worlds"][0]["memory_neurons"] <= 40         # p units as the memory cells


def test_tem_and_temt_keys_are_not_mixed():
    with pytest.raises(ConfigError, match=r"tem\.eta is a TEM key, but this run trains model_kind=temt"):
        load_config(SpatialConfig, None, ["tem.eta=0.3"])
    with pytest.raises(ConfigError, match=r"model\.pos_dim is a TEM-t key, but this run trains model_kind=tem"):
        load_config(SpatialConfig, None, ["model_kind=tem", "model.pos_dim=64"])
    with pytest.raises(ConfigError, match=r"tem\.n_actions must be 7 for hex worlds"):
        load_config(SpatialConfig, None, ["model_kind=tem", "walks.kind=hex"])
    with pytest.raises(ConfigError, match="model_kind must be one of"):
        load_config(SpatialConfig, None, ["model_kind=TEM"])
    assert load_config(SpatialConfig, "configs/spatial/tem.yaml").tem == SpatialConfig().tem   # defaults, written out


def test_a_tem_checkpoint_is_not_loaded_as_temt(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--quiet", "--out", str(run), *TINY_TEM, "train.steps=2", "train.checkpoint_every=2",
                 "eval.every=2"]) == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert main(["train", "--resume", str(run), "model_kind=temt", "tem.g_modules=[30, 30, 24, 18, 18]",
                 "tem.g_memory=[10, 10, 8, 6, 6]", "tem.f_initial=[0.99, 0.3, 0.09, 0.03, 0.01]",
                 "tem.c_star_hidden=200", "tem.transition_hidden=20"]) == 2
    err = capsys.readouterr().err
    assert "step-0000002 holds a model_kind=tem run" in err and "model_kind=temt" in err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before                                          # nothing written, nothing lost
    assert main(["scaling", str(run)]) == 2                         # TEM-t's memory-store measurement
    assert "model_kind=tem run" in capsys.readouterr().err
    # a config.yaml edited to TEM-t: analyse names the checkpoint instead of a load_state_dict traceback
    cfg = (run / "config.yaml").read_text().replace("model_kind: tem", "model_kind: temt")
    (run / "config.yaml").write_text(load_yaml_default_tem(cfg))
    from spatial.analyse import load_trained
    with pytest.raises(CheckpointError, match=r"step-0000002 holds a model_kind=tem model, but it is being loaded "
                                              r"as model_kind=temt"):
        load_trained(run)
    assert main(["train", "--quiet", "--resume", str(tmp_path / "r"), "model_kind=tem"] + TINY_TEM[1:6]
                + ["train.steps=3"]) == 0                           # the run itself still resumes


def load_yaml_default_tem(text: str) -> str:
    """config.yaml text with its tem section reset to the defaults (a TEM-t config that names no TEM key)."""
    import yaml

    from temt_core.config import to_dict
    data = yaml.safe_load(text)
    data["tem"] = to_dict(SpatialConfig().tem)
    return yaml.safe_dump(data, sort_keys=False)
