"""End-to-end: a tiny run learns far above chance; resume is exact; the command line reports bad input."""
import json

import pytest
import torch

from spatial.cli import main
from spatial.config import SpatialConfig
from spatial.train import TIMING_KEYS, Trainer
from temt_core.config import load_config

TINY = ["model.pos_dim=64", "walks.sizes=[5, 6]", "walks.walk_length=[150, 250]", "train.chunk_length=50",
        "eval.steps=250", "eval.n_worlds=8"]


def test_tiny_run_learns_far_above_chance(tmp_path):
    cfg = load_config(SpatialConfig, None, TINY + ["train.steps=300", "train.log_every=100", "eval.every=300"])
    final = Trainer(cfg, tmp_path / "run", progress=False).run()
    chance = 1 / 45
    assert final["acc_revisit"] > 0.3, final           # chance is 0.022; a 300-step run reaches 0.6-0.85
    assert final["acc_zero_shot"] > 10 * chance, final
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    for name in ("config.yaml", "run.json", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()


@pytest.mark.slow
def test_tiny_run_with_landmark_correction_learns(tmp_path):
    """The paper's whole mechanism set (landmark correction, product query) trains through the fused path."""
    cfg = load_config(SpatialConfig, None, TINY + ["train.steps=200", "train.log_every=100", "eval.every=200",
                                                   "model.landmark=product"])
    final = Trainer(cfg, tmp_path / "run", progress=False).run()
    assert final["acc_revisit"] > 0.3, final           # chance is 0.022; 200 steps reach about 0.7
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"]
    assert train[-1]["x_corr"] < train[0]["x_corr"] and train[-1]["g"] > 0


def _assert_same_run(a: Trainer, b: Trainer) -> None:
    """Bit-equal weights and the same training log (speeds aside)."""
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    strip = lambda run: [{k: v for k, v in json.loads(l).items() if k not in TIMING_KEYS}
                         for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert strip(a.run_dir) == strip(b.run_dir)


def test_resume_continues_exactly(tmp_path):
    base = TINY + ["train.log_every=10", "eval.every=1000", "train.checkpoint_every=20", "eval.steps=100"]
    straight = Trainer(load_config(SpatialConfig, None, base + ["train.steps=40"]), tmp_path / "a", progress=False)
    straight.run()
    first = Trainer(load_config(SpatialConfig, None, base + ["train.steps=20"]), tmp_path / "b", progress=False)
    first.run()
    resumed = Trainer(load_config(SpatialConfig, None, base + ["train.steps=40"]), tmp_path / "b", resume=True,
                      progress=False)
    assert resumed.step == 20
    resumed.run()
    _assert_same_run(straight, resumed)


def test_cli_reports_bad_config(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "model.pos_dimm=8"]) == 2
    assert "unknown config key 'model.pos_dimm' (did you mean 'pos_dim'?)" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "walks.policy=levy"]) == 2
    assert "policy must be one of" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_resume_with_another_config_is_refused(tmp_path, capsys):
    args = ["train", "--quiet", "--out", str(tmp_path / "r")] + TINY + ["train.steps=5", "eval.every=5",
                                                                        "eval.steps=50"]
    assert main(args) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "model.activation=linear"]) == 2
    assert "model.activation differ" in capsys.readouterr().err
    assert main(["train", "--quiet", "--resume", str(tmp_path / "r"), "train.steps=8"]) == 0   # allowed change
    assert main(["train", "--out", str(tmp_path / "r")] + TINY) == 2                           # would overwrite
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("step_kind", ["ordinary", "capturable", "graph"])
def test_divergence_is_reported_and_the_last_checkpoint_kept(tmp_path, capsys, monkeypatch, step_kind):
    """An ordinary step stops when the positions stop being finite; a capturable one (which checks nothing on the
    way, with or without train.graph) when its loss, read after the step, is not finite."""
    extra = {"ordinary": [], "capturable": ["model.capturable=true", "model.max_memories=60"],
             "graph": ["model.capturable=true", "model.max_memories=60", "train.graph=eager"]}[step_kind]
    args = ["train", "--quiet", "--out", str(tmp_path / "r")] + TINY + [
        "train.steps=10", "train.checkpoint_every=5", "eval.every=100", "eval.steps=50",
        "model.bound=null", "model.activation=linear"] + extra
    from spatial import train as train_module
    original = train_module.Trainer.train_step

    def exploding(self, chunk):            # blow the transitions up after the first checkpoint
        if self.step == 7:
            with torch.no_grad():
                self.model.positions.U.mul_(0).add_(50.0)
        return original(self, chunk)
    monkeypatch.setattr(train_module.Trainer, "train_step", exploding)
    assert main(args) == 3
    err = capsys.readouterr().err
    said = "positions e became non-finite" if step_kind == "ordinary" else "the loss became non-finite at step 8"
    assert f"training diverged: {said}" in err and "step-0000005" in err


def test_training_on_your_own_graph(tmp_path):
    """A ring of 12 nodes with 'cw'/'ccw' moves and a stay action, built with networkx."""
    import networkx as nx
    import numpy as np

    from spatial.worlds import graph_world
    g = nx.DiGraph()
    for i in range(12):
        g.add_edge(i, (i + 1) % 12, action="cw")
        g.add_edge((i + 1) % 12, i, action="ccw")
    coords = {i: (np.cos(i / 12 * 2 * np.pi), np.sin(i / 12 * 2 * np.pi)) for i in range(12)}
    ring = graph_world(g, coords=coords, stay=True, name="ring12")
    cfg = load_config(SpatialConfig, None, ["walks.kind=graph", "model.n_actions=3", "model.pos_dim=32",
                                            "train.steps=60", "train.chunk_length=25", "eval.every=60",
                                            "eval.steps=100", "eval.n_worlds=4", "walks.walk_length=[60, 100]"])
    final = Trainer(cfg, tmp_path / "ring", progress=False, worlds=[ring]).run()
    assert final["n_revisit"] > 0 and 0 <= final["acc_revisit"] <= 1
    with pytest.raises(ValueError, match="different number of actions"):
        Trainer(load_config(SpatialConfig, None, ["walks.kind=graph"]), tmp_path / "x", worlds=[ring])


def test_resume_falls_back_past_a_damaged_checkpoint_and_still_continues_exactly(tmp_path, capsys):
    """Damage the newest checkpoint and leave a half-written log line: resume reports the damage, continues from
    the one before, and ends with the weights and log of an uninterrupted run."""
    base = TINY + ["train.log_every=10", "eval.every=1000", "train.checkpoint_every=10", "train.keep_checkpoints=3",
                   "eval.steps=100", "train.steps=40"]
    straight = Trainer(load_config(SpatialConfig, None, base), tmp_path / "a", progress=False)
    straight.run()
    part = Trainer(load_config(SpatialConfig, None, base[:-1] + ["train.steps=30"]), tmp_path / "b", progress=False)
    part.run()
    (tmp_path / "b" / "checkpoints" / "step-0000030" / "tensors.safetensors").write_bytes(b"truncated")
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "split": "tr')               # a kill in the middle of a log write
    assert main(["train", "--quiet", "--resume", str(tmp_path / "b"), "train.steps=40"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped damaged checkpoint" in err and "step-0000030" in err and "resuming from" in err
    resumed = Trainer(load_config(SpatialConfig, None, base), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 40
    _assert_same_run(straight, resumed)


def test_out_onto_a_non_empty_directory_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 5}\n')       # e.g. a run whose LATEST was lost
    args = ["train", "--quiet", "--out", str(out)] + TINY + ["train.steps=2", "eval.every=2", "eval.steps=50"]
    assert main(args) == 2
    assert "already holds files (metrics.jsonl)" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"step": 5}\n'
    assert main(args + ["--overwrite"]) == 0 and (out / "LATEST").is_file()
    assert main(["train", "--resume", str(out), "--overwrite"]) == 2


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    cfg = load_config(SpatialConfig, None, TINY + ["train.steps=4", "train.checkpoint_every=2", "eval.every=100",
                                                   "eval.steps=50"])
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    trainer.run()
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    trainer.step = 6
    from temt_core.validation import NonFiniteError
    with pytest.raises(NonFiniteError, match=r"not saving a checkpoint at step 6: model\..* not finite"):
        trainer.save()
    assert (tmp_path / "r" / "LATEST").read_text().strip() == "checkpoints/step-0000004"


def test_graph_step_training_equals_ordinary_training_and_resumes_exactly(tmp_path):
    """train.graph=eager (the fixed-buffer step a GPU captures) logs what the ordinary step logs for the same
    capturable model, and a run resumed from its checkpoint continues bit for bit (its buffers reloaded)."""
    base = TINY + ["train.log_every=10", "eval.every=1000", "train.checkpoint_every=20", "eval.steps=100",
                   "model.capturable=true", "model.max_memories=120"]
    plain = Trainer(load_config(SpatialConfig, None, base + ["train.steps=40"]), tmp_path / "a", progress=False)
    plain.run()
    graph = Trainer(load_config(SpatialConfig, None, base + ["train.steps=40", "train.graph=eager"]), tmp_path / "b",
                    progress=False)
    graph.run()
    log = lambda run: [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    for r, s in zip(log(plain.run_dir), log(graph.run_dir)):
        for k in ("loss", "x_pi", "grad_norm", "acc_revisit"):
            assert abs(r[k] - s[k]) <= 1e-5 * max(1.0, abs(r[k])), (k, r[k], s[k])
    first = Trainer(load_config(SpatialConfig, None, base + ["train.steps=20", "train.graph=eager"]), tmp_path / "c",
                    progress=False)
    first.run()
    resumed = Trainer(load_config(SpatialConfig, None, base + ["train.steps=40", "train.graph=eager"]),
                      tmp_path / "c", resume=True, progress=False)
    resumed.run()
    _assert_same_run(graph, resumed)


@pytest.mark.parametrize("extra,match", [
    (["train.graph=eager"], "model.capturable=true"),
    (["train.graph=cuda", "model.capturable=true", "model.max_memories=50"], "train.device=cuda"),
    (["train.graph=fast"], "train.graph must be"),
])
def test_graph_step_config_errors_name_the_key(extra, match):
    with pytest.raises(ValueError, match=match):
        load_config(SpatialConfig, None, TINY + extra)
