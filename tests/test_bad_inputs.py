"""Bad input gets a named error that says what is wrong and where (config key, file, line), never silent
acceptance or a raw traceback (issue 11). Through the command lines: exit code 2 and `error: ...` on stderr."""
import math

import pytest
import torch

from language.trees import TreebankError, read_brackets, read_conllu
from language.train import LanguageConfig
from spatial.config import SpatialConfig
from spatial.worlds import graph_world
from temt_core.checkpoint import save_checkpoint, write_latest
from temt_core.config import ConfigError, load_config, save_config, to_dict
from temt_core.model import RESET, TEMt, TEMtConfig

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- config values that used to be accepted silently ---------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("train.grad_clip=-1", "train.grad_clip"),          # gradient ascent
    ("train.grad_clip=.nan", "train.grad_clip"),
    ("train.lr_max=-1e-3", "train.lr_max"),
    ("train.lr_max=.nan", "train.lr_max"),
    ("train.lr_min=.inf", "train.lr_min"),
    ("train.lr_min=-1e-5", "train.lr_min"),
    ("train.lr_half_life=0", "train.lr_half_life"),
    ("train.lr_half_life=-5", "train.lr_half_life"),
    ("model.w_x_pi=.nan", r"model: .*w_x_pi must be a finite number"),   # TEMtConfig checks its own weights
    ("model.w_g=.inf", r"model: .*w_g must be a finite number"),
    ("model.w_reg_e=-1", r"model: .*w_reg_e"),
    ("train.w_isometry=.inf", "train.w_isometry"),
    ("train.seed=-1", "train.seed"),
    ("eval.seed=-3", "eval.seed"),
    ("train.threads=0", "train.threads"),
    ("train.device=gpu7", "train.device"),
    ("walks.sizes=[1]", r"walks.sizes\[0\] = 1: a square world needs a width >= 2"),
])
def test_spatial_config(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(SpatialConfig, None, [override])


def test_spatial_hex_radius_zero():
    with pytest.raises(ConfigError, match=r"walks.sizes\[1\] = 0: a hexagonal world needs a radius >= 1"):
        load_config(SpatialConfig, None, ["walks.kind=hex", "model.n_actions=7", "walks.sizes=[3, 0]"])


@pytest.mark.parametrize("override, key", [
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.seed=-1", "train.seed"),
    ("train.threads=-1", "train.threads"),
    ("model.dropout=-0.1", "model.dropout"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.action_weight=.nan", "model.action_weight"),
    ("eval.beams=[0, 5]", "eval.beams"),
])
def test_language_config(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(LanguageConfig, None, [override])


def test_language_threads_zero_is_still_the_default():
    assert load_config(LanguageConfig, None, ["train.threads=0"]).train.threads == 0


def test_config_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"train:\n  steps: 5   # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:2: not UTF-8"):
        load_config(SpatialConfig, path)


# -- model inputs and user graphs --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), -1.0])
def test_loss_mask_nan_or_negative(value):
    model = TEMt(TEMtConfig(pos_dim=16))
    x = torch.randint(0, 45, (2, 6))
    a = torch.randint(0, 5, (2, 6))
    a[:, 0] = RESET
    mask = torch.ones(2, 6)
    mask[1, 3] = value
    with pytest.raises(ValueError, match=r"loss_mask\[1, 3\] = (nan|-1.0)"):
        model(x, a, loss_mask=mask)


def test_graph_self_loop():
    with pytest.raises(ValueError, match=r"edge \(1, 1\) labelled 'a' is a self-loop"):
        graph_world([(0, 1, "a"), (1, 0, "b"), (1, 1, "a")])


def test_graph_nan_coordinates():
    with pytest.raises(ValueError, match="node 1 has a non-finite position"):
        graph_world([(0, 1, "a"), (1, 0, "b")], coords={0: (0.0, 0.0), 1: (math.nan, 1.0)})


# -- the spatial command line --------------------------------------------------------------------------------

def _spatial(argv, capsys):
    from spatial.cli import main
    rc = main(argv)
    return rc, capsys.readouterr().err


def _spatial_run(path, nan: bool = False):
    """A run directory with a checkpoint of an untrained (or NaN) model: what analyse/scaling read."""
    cfg = load_config(SpatialConfig, None, ["model.pos_dim=16", "walks.sizes=[5]"])
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    weights = TEMt(cfg.model).state_dict()
    if nan:
        weights["positions.e_init"] = torch.full_like(weights["positions.e_init"], math.nan)
    save_checkpoint(path / "checkpoints" / "step-0000010", {f"model.{k}": v for k, v in weights.items()},
                    {"step": 10, "config": to_dict(cfg)})
    write_latest(path, "checkpoints/step-0000010")
    return path


@pytest.mark.parametrize("override, message", [
    ("walks.kind=graph", "walks.kind='graph' needs the worlds themselves"),
    ("walks.sizes=[8, 1]", r"walks.sizes\[1\] = 1"),
    ("train.grad_clip=-2", "train.grad_clip must be > 0"),
])
def test_spatial_train_cli(tmp_path, capsys, override, message):
    rc, err = _spatial(["train", "--quiet", "--out", str(tmp_path / "r"), override], capsys)
    assert rc == 2 and "temt-spatial: error:" in err
    assert re_search(message, err), err
    assert not (tmp_path / "r").exists()                 # refused before anything was written


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_spatial_cuda_without_a_gpu(tmp_path, capsys):
    rc, err = _spatial(["train", "--out", str(tmp_path / "r"), "train.device=cuda"], capsys)
    assert rc == 2 and "train.device=cuda: no CUDA device is available" in err


@pytest.mark.parametrize("command, args", [("analyse", ["--threads", "0"]), ("scaling", ["--threads", "-1"])])
def test_spatial_threads(tmp_path, capsys, command, args):
    rc, err = _spatial([command, str(_spatial_run(tmp_path / "run")), *args], capsys)
    assert rc == 2 and "--threads must be >= 1" in err


@pytest.mark.parametrize("command, override, message", [("analyse", "sizes=[1]", r"analysis.sizes\[0\] = 1"),
                                                          ("scaling", "size=1", "scaling.size = 1")])
def test_spatial_analysis_world_size(tmp_path, capsys, command, override, message):
    rc, err = _spatial([command, str(_spatial_run(tmp_path / "run")), override], capsys)
    assert rc == 2 and re_search(message, err), err


@pytest.mark.parametrize("command", ["analyse", "scaling"])
def test_spatial_nan_weights(tmp_path, capsys, command):
    run = _spatial_run(tmp_path / "run", nan=True)
    rc, err = _spatial([command, str(run)], capsys)
    assert rc == 2, err
    assert f"{run}/checkpoints/step-0000010: the run's weights are not finite (positions.e_init" in err


def test_spatial_reproduce_relative_out(tmp_path, monkeypatch):
    """A relative --out is the caller's: the arms (run as subprocesses in the repository root) get it absolute,
    and the analysis finds what training wrote."""
    import json
    from pathlib import Path

    from spatial import reproduce
    calls = []

    def fake_run(cmd, log):                          # stands for subprocess.run(cmd, cwd=ROOT)
        calls.append(cmd)
        if cmd[3] == "train":
            out = Path(cmd[cmd.index("--out") + 1])
            assert out.is_absolute(), cmd            # a relative path would land in the repository
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps(
                {"step": 2, "acc_revisit": 0.5, "acc_zero_shot": 0.1, "node_agent": 0.4, "edge_agent": 0.3,
                 "chance": 0.02}))
        return 0
    monkeypatch.setattr(reproduce, "_run", fake_run)
    monkeypatch.chdir(tmp_path)
    report = reproduce.reproduce("rel/out", quick=True, jobs=1, arms=["relu"])
    assert report == tmp_path / "rel" / "out" / "report.md" and report.is_file()
    analyse = [c for c in calls if c[3] == "analyse"]
    assert analyse and analyse[0][4] == str(tmp_path / "rel" / "out" / "relu")
    assert any(c[3] == "scaling" for c in calls)


# -- treebanks and the language command line -----------------------------------------------------------------

def test_conllu_not_utf8(tmp_path):
    path = tmp_path / "latin1.conllu"
    path.write_bytes(b"1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n\n1\tB\xe9\tb\tX\tX\t_\t0\troot\t_\t_\n")
    with pytest.raises(TreebankError, match=r"latin1.conllu:3: not UTF-8 text \(byte 0xe9 at column 4\)"):
        read_conllu(path)


def test_brackets_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"(S (NP (DT The) (NN cat)) (VP (VBZ sits)))\n(S (NP (NN caf\xe9)) (VP (VBZ is)))\n")
    with pytest.raises(TreebankError, match=r"latin1.txt:2: not UTF-8"):
        read_brackets(path)


def _language(argv, capsys):
    from language.cli import main
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_language_actions_cli_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.conllu"
    path.write_bytes(b"1\tB\xe9\tb\tX\tX\t_\t0\troot\t_\t_\n")
    rc, err = _language(["actions", str(path)], capsys)
    assert rc == 2 and f"error: {path}:1: not UTF-8" in err


def test_missing_spacy_pipeline(capsys):
    rc, err = _language(["actions", "--spacy", "nonexistent_pipeline", "Some text."], capsys)
    assert rc == 2
    assert "spaCy pipeline 'nonexistent_pipeline' is not installed" in err and "nothing is downloaded" in err


def test_language_help_names_the_program(capsys):
    from language.cli import main
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: temt-language")


def _toy_root(root):
    """20 tiny sentences per split (2 to 9 words)."""
    d = root / "ud-english-ewt"
    d.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        lines = []
        for s in range(20):
            n = 2 + s % 8
            lines += [f"{i}\tw{(s + i) % 5}\tw\tX\tX\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"
                      for i in range(1, n + 1)] + [""]
        (d / f"en_ewt-ud-{split}.conllu").write_text("\n".join(lines) + "\n")
    return root


TINY_LM = ["model.d_model=16", "model.n_layer=2", "model.n_head=2", "model.n_pos_head=1", "model.d_ff=16",
           "model.pos_dim=8", "train.steps=2", "train.max_tokens=256", "train.eval_every=2", "train.threads=1",
           "train.log_with=none", "train.progress=false", "eval.beams=[1]", "data.min_freq=1"]


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps one process-wide state; a test that asks for another precision must not leak it."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_fp16_on_cpu(tmp_path, capsys, fresh_accelerate):
    rc, err = _language(["train", "--out", str(tmp_path / "r"), f"data.root={_toy_root(tmp_path / 'data')}",
                         *TINY_LM, "train.mixed_precision=fp16"], capsys)
    assert rc == 2 and "train.mixed_precision=fp16 needs a GPU" in err
    assert not (tmp_path / "r").exists()


def test_sentence_longer_than_learned_positions(tmp_path, capsys):
    rc, err = _language(["train", "--out", str(tmp_path / "r"), f"data.root={_toy_root(tmp_path / 'data')}",
                         *TINY_LM, "model.pos=learned", "model.max_len=6"], capsys)
    assert rc == 2, err
    assert re_search(r"sentence \d+ of its split has \d+ words .* more than model.max_len=6 learned positions", err)
    assert "data.max_words=5" in err


def test_sentence_longer_than_max_tokens(tmp_path, capsys):
    rc, err = _language(["train", "--out", str(tmp_path / "r"), f"data.root={_toy_root(tmp_path / 'data')}",
                         *TINY_LM, "train.max_tokens=8"], capsys)
    assert rc == 2 and re_search(r"max_tokens=8 is smaller than the longest sentence \(sentence \d+", err), err


def re_search(pattern, text):
    import re
    return re.search(pattern, text) is not None


# -- a trained language run whose files were damaged or edited afterwards --------------------------------------

@pytest.fixture
def trained_lm(tmp_path, capsys):
    run = tmp_path / "r"
    rc, err = _language(["train", "--out", str(run), f"data.root={_toy_root(tmp_path / 'data')}", *TINY_LM], capsys)
    assert rc == 0, err
    return run


def test_truncated_actions_json(trained_lm, capsys):
    text = (trained_lm / "actions.json").read_text()
    (trained_lm / "actions.json").write_text(text[: len(text) // 2])
    rc, err = _language(["evaluate", str(trained_lm), "--split", "dev"], capsys)
    assert rc == 2 and "actions.json: not an action vocabulary, or truncated" in err


def test_action_settings_changed_after_training(trained_lm, capsys):
    import yaml
    cfg = yaml.safe_load((trained_lm / "config.yaml").read_text())
    cfg["data"]["actions"]["max_up"] += 1
    (trained_lm / "config.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = _language(["evaluate", str(trained_lm), "--split", "dev"], capsys)
    assert rc == 2 and "config.yaml: data.actions.max_up changed after training" in err


def test_truncated_language_state_file(trained_lm, capsys):
    """The only state: resume names the damaged file instead of a traceback from safetensors."""
    (ckpt,) = (trained_lm / "checkpoints").iterdir()
    (ckpt / "tensors.safetensors").write_bytes((ckpt / "tensors.safetensors").read_bytes()[:100])
    rc, err = _language(["train", "--resume", str(trained_lm), "train.steps=4"], capsys)
    assert rc == 2 and "no valid checkpoint to resume from" in err and "tensors.safetensors: checksum mismatch" in err
