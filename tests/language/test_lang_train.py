"""Training through Accelerate on a toy treebank: files, learning, exact resume, safe saves, test scored once."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lang_toydata import tiny_overrides
from language.data import make_loader, prepare
from language.evaluate import ppl, score_loader
from language.model import LanguageModel
from language.study import evaluate_run
from language.train import LanguageConfig, dev_metric, fill_model_config, load_run_config, load_trained, train
from temt_core.checkpoint import CheckpointError
from temt_core.config import ConfigError, load_config


def cfg_for(root, **extra):
    return load_config(LanguageConfig, None, tiny_overrides(root, **extra))


def test_train_writes_a_run_and_learns(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "grammar", "model.structure": "joint"})
    summary = train(cfg, tmp_path / "g")
    run = tmp_path / "g"
    for name in ("config.yaml", "words.json", "actions.json", "tree_labels.json", "metrics.jsonl", "train.json",
                 "best/tensors.safetensors", "best/meta.json", "run.json", "LATEST", "checkpoints/step-0000040/meta.json"):
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
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(cfg, run)
    assert not any(p.suffix == ".pkl" or p.name.endswith(".bin") for p in run.rglob("*"))   # tensors and JSON only


def test_resume_continues_exactly(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "sinusoidal", "model.dropout": 0.1, "train.steps": 30,
                               "train.eval_every": 10})
    train(cfg, tmp_path / "straight")
    part = train(cfg, tmp_path / "split", stop_after=20)
    assert part == {"steps": 20, "interrupted": True}
    train(load_run_config(tmp_path / "split"), tmp_path / "split", resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000030" / "tensors.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-0000030" / "tensors.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)     # weights, AdamW, RNG streams
    la = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["dev"] for x in la] == [json.loads(x)["dev"] for x in lb]
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, tmp_path / "nothing", resume=True)


def test_corrupt_best_checkpoint_is_a_clear_error(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"train.steps": 20})
    train(cfg, tmp_path / "r")
    (tmp_path / "r" / "best" / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="best/tensors.safetensors: checksum mismatch"):
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


def test_resume_checks_the_config_and_the_number_of_processes(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"train.steps": 20, "train.eval_every": 10})
    train(cfg, tmp_path / "r", stop_after=10)
    from temt_core.config import merge_overrides
    changed = merge_overrides(LanguageConfig, load_run_config(tmp_path / "r"), ["model.d_ff=128"])
    with pytest.raises(ConfigError, match=r"model.d_ff differ"):
        train(changed, tmp_path / "r", resume=True)
    changed = merge_overrides(LanguageConfig, load_run_config(tmp_path / "r"), ["data.actions.max_up=3"])
    with pytest.raises(ConfigError, match=r"data.actions.max_up differ"):
        train(changed, tmp_path / "r", resume=True)
    longer = merge_overrides(LanguageConfig, load_run_config(tmp_path / "r"), ["train.steps=30"])
    assert train(longer, tmp_path / "r", resume=True)["steps"] == 30            # a longer run is allowed


def test_an_empty_training_split_is_an_error_and_leaves_no_run_behind(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"data.max_words": 1})         # every toy sentence is longer: nothing left
    with pytest.raises(ConfigError, match=r"the train split .* has no sentences .*data.max_words=1"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_non_finite_weights_fail_loudly_instead_of_stopping_early(toy_root, tmp_path, monkeypatch, capsys):
    from language.cli import main
    original = torch.optim.AdamW.step

    def poisoned(self, *a, **k):
        out = original(self, *a, **k)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        return out
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    code = main(["train", "--out", str(tmp_path / "r")] + tiny_overrides(toy_root))
    assert code == 2
    err = capsys.readouterr().err
    assert "perplexity is nan at step 20: the weights are not finite" in err
    assert not (tmp_path / "r" / "best").exists() and not (tmp_path / "r" / "checkpoints").exists()


def test_a_damaged_state_falls_back_to_the_one_before(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"train.steps": 30, "train.eval_every": 10})
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "r", stop_after=20)
    (tmp_path / "r" / "checkpoints" / "step-0000020" / "tensors.safetensors").write_bytes(b"trunc")
    with pytest.warns(UserWarning, match="skipped damaged checkpoint .*step-0000020"):
        train(load_run_config(tmp_path / "r"), tmp_path / "r", resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000030" / "tensors.safetensors"))
    b = load_file(str(tmp_path / "r" / "checkpoints" / "step-0000030" / "tensors.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [10, 20, 30]                                # the step-20 row is not counted twice


def test_evaluate_any_file_with_the_runs_vocabularies(toy_root, tmp_path, capsys):
    """A file scores as the split it is a copy of; unknown words are counted as out of vocabulary."""
    from language.cli import main
    from language.scoring import evaluate_file, headline
    cfg = cfg_for(toy_root, **{"model.pos": "grammar", "model.structure": "joint", "train.steps": 20,
                               "eval.beams": [1, 2]})
    train(cfg, tmp_path / "g")
    train(cfg_for(toy_root, **{"train.steps": 20}), tmp_path / "s")
    dev_file = toy_root / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
    as_file = evaluate_file(tmp_path / "g", dev_file, log=lambda *_: None)
    as_split = evaluate_run(tmp_path / "g", "dev", log=lambda *_: None)
    assert as_file["metric"] == "best bound" and as_file["oov_rate"] == 0          # the toy words are all known
    assert as_file["ppl"] == pytest.approx(headline(load_run_config(tmp_path / "g"), as_split)[1], rel=1e-9)
    new = tmp_path / "new.conllu"
    new.write_text("1\tthe\tthe\tX\tX\t_\t2\tdet\t_\t_\n2\tzebra\tzebra\tX\tX\t_\t3\tnsubj\t_\t_\n"
                   "3\tsees\tsees\tX\tX\t_\t0\troot\t_\t_\n4\tunicorns\tu\tX\tX\t_\t3\tobj\t_\t_\n\n")
    assert main(["evaluate", str(tmp_path / "g"), str(tmp_path / "s"), "--file", str(new)]) == 0
    out = capsys.readouterr().out
    assert "new.conllu: 1 sentences" in out and out.count(" 50.00  ") == 2        # 2 of 4 words unknown
    assert json.loads((tmp_path / "s" / "files" / "new.conllu.json").read_text())["metric"] == "exact"


def test_gold_proposals_tighten_the_bound_below_both_joint_and_beam(toy_root, tmp_path):
    cfg = cfg_for(toy_root, **{"model.pos": "grammar", "model.structure": "joint", "train.steps": 20,
                               "eval.beams": [1, 2]})
    train(cfg, tmp_path / "g")
    plain = evaluate_run(tmp_path / "g", "dev", log=lambda *_: None)
    gold = evaluate_run(tmp_path / "g", "dev", force=True, log=lambda *_: None, overrides=["eval.proposals=gold"])
    assert plain["proposals"] == "none" and gold["proposals"] == "gold"
    joint = np.array(plain["word_nll"]) + np.array(plain["action_nll"])
    for K in ("1", "2"):
        b, g = np.array(plain["beam"][K]), np.array(gold["beam"][K])         # per-sentence -log p bounds
        assert np.all(g <= b + 1e-5) and np.all(g <= joint + 1e-4)
        assert np.any(g < np.minimum(b, joint) - 1e-4)                       # the union beats the better of the two
    with pytest.raises(ConfigError, match="eval.\\* keys only"):
        evaluate_run(tmp_path / "g", "dev", force=True, overrides=["model.d_ff=8"])
