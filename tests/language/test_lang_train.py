"""Training through Accelerate on a toy treebank: files, learning, exact resume, safe saves, test scored once."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lang_toydata import tiny_overrides
from language.data import make_loader, prepare
from language.evaluate import ppl, score_loader
from language.model import LanguageModel
from language.study import evaluate_run
from language.train import (LanguageConfig, _atomic_save_state, _last_state, dev_metric, fill_model_config,
                            load_run_config, load_trained, train)
from temt_core.checkpoint import CheckpointError
from temt_core.config import ConfigError, load_config


def cfg_for(root, **extra):
    return load_config(LanguageConfig, None, tiny_overrides(root, **extra))


def test_train_writes_a_run_and_learns(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "grammar", "model.structure": "joint"})
    summary = train(cfg, tmp_path / "g")
    run = tmp_path / "g"
    for name in ("config.yaml", "words.json", "actions.json", "tree_labels.json", "metrics.jsonl", "train.json",
                 "best/tensors.safetensors", "best/meta.json", "state/model.safetensors"):
        assert (run / name).is_file(), name
    saved = load_run_config(run)
    assert saved.model.n_actions == len(json.loads((run / "actions.json").read_text())["names"])
    curve = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [20, 40]
    # the trained model beats the same architecture untrained, on dev, by a wide margin
    data = prepare(saved.data, splits=("dev",), vocab_dir=run)
    dl = make_loader(data.splits["dev"], 512, shuffle=False)
    torch.manual_seed(0)
    untrained = dev_metric(saved.model, score_loader(LanguageModel(saved.model), dl))
    assert summary["best_dev"] < 0.5 * untrained
    model = load_trained(run)
    assert dev_metric(saved.model, score_loader(model, dl)) == pytest.approx(summary["best_dev"], rel=1e-4)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, run)


def test_resume_continues_exactly(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "sinusoidal", "model.dropout": 0.1, "train.steps": 30,
                               "train.eval_every": 10})
    train(cfg, tmp_path / "straight")
    part = train(cfg, tmp_path / "split", stop_after=20)
    assert part == {"steps": 20, "interrupted": True}
    train(load_run_config(tmp_path / "split"), tmp_path / "split", resume=True)
    a = load_file(str(tmp_path / "straight" / "state" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "state" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["dev"] for x in la] == [json.loads(x)["dev"] for x in lb]
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, tmp_path / "nothing", resume=True)


class _FailingAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        os.makedirs(path)
        with open(os.path.join(path, "model.safetensors"), "w") as f:
            f.write("half a file")
        raise OSError("disk full")


def test_a_failed_save_never_replaces_the_last_good_state(tmp_path):
    good = tmp_path / "state"
    good.mkdir()
    (good / "model.safetensors").write_text("good")
    with pytest.raises(OSError, match="disk full"):
        _atomic_save_state(_FailingAccelerator(), tmp_path)
    assert (good / "model.safetensors").read_text() == "good"
    assert _last_state(tmp_path) == good


def test_corrupt_best_checkpoint_is_a_clear_error(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"train.steps": 20})
    train(cfg, tmp_path / "r")
    (tmp_path / "r" / "best" / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt tensor file"):
        load_trained(tmp_path / "r")


def test_evaluate_scores_test_once_with_beams(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "grammar", "model.structure": "joint", "train.steps": 40})
    train(cfg, tmp_path / "g")
    res = evaluate_run(tmp_path / "g", "test", log=lambda *_: None)
    n, w, a = (np.array(res[k]) for k in ("n_tokens", "word_nll", "action_nll"))
    assert len(n) == 40 and set(res["beam"]) == {"1", "5"}
    b1, b5 = np.array(res["beam"]["1"]), np.array(res["beam"]["5"])
    # per sentence: beam-5 keeps at least beam-1's mass and never beats the exact marginal's upper end (words)
    assert np.all(b5 <= b1 + 1e-4) and ppl(b5, n) <= ppl(w + a, n) * 1.05
    assert ppl(w, n) < ppl(b5, n)                 # gold actions given free look better: the leak, not a result
    with pytest.raises(ConfigError, match="test is touched once"):
        evaluate_run(tmp_path / "g", "test")
    evaluate_run(tmp_path / "g", "dev", log=lambda *_: None)
    evaluate_run(tmp_path / "g", "dev", log=lambda *_: None)          # dev may be re-scored


def test_fill_model_config_from_data(toy_root):
    cfg = cfg_for(toy_root)
    data = prepare(cfg.data, splits=())
    filled = fill_model_config(cfg, data)
    assert filled.model.vocab_size == data.words.get_vocab_size() and filled.model.action_names[0] == "<overflow>"
