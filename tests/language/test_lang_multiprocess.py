"""Training under several processes (Accelerate, 2 CPU processes over gloo) equals what one process computes:
the gathered dev perplexity is a single-process score of the same weights, and the learning-rate schedule is the
single-process one (not compressed N-fold). A launch that asked for 2 processes and got 1 is refused."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lang_toydata import tiny_overrides
from language.data import make_loader, prepare
from language.evaluate import score_loader
from language.train import LanguageConfig, dev_metric, load_run_config, load_trained, train
from temt_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {"model.pos": "grammar", "model.structure": "joint", "train.steps": 20, "train.eval_every": 10,
             "train.warmup": 8, "eval.max_tokens": 60}   # several dev batches of unequal sizes per process


def _launch(launcher_args: list[str], train_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", *launcher_args, "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "language", "train", *train_args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={"PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(ROOT / "tests" / "language"), "HOME": str(tmp_path)})


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_gather_dev_exactly_and_keep_the_schedule(toy_root, tmp_path):
    two = tmp_path / "two"
    overrides = tiny_overrides(toy_root, **OVERRIDES)
    done = _launch(["--multi_gpu", "--num_processes", "2"], ["--out", str(two), *overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((two / "train.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 20
    # the dev perplexity the two processes gathered = one process scoring the same weights on the whole dev split
    cfg = load_run_config(two)
    data = prepare(cfg.data, splits=("dev",), vocab_dir=two)
    dev = make_loader(data.splits["dev"], cfg.eval.max_tokens, shuffle=False)
    single = dev_metric(cfg.model, score_loader(load_trained(two), dev))
    best = [r for r in _rows(two) if r["step"] == summary["best_step"]][0]
    assert best["dev"] == pytest.approx(single, rel=1e-5)
    # the schedule counts optimiser steps: the same learning rate at each evaluation as a one-process run
    one = tmp_path / "one"
    train(load_config(LanguageConfig, None, overrides), one)
    assert [r["step"] for r in _rows(two)] == [r["step"] for r in _rows(one)] == [10, 20]
    assert [r["lr"] for r in _rows(two)] == pytest.approx([r["lr"] for r in _rows(one)], rel=1e-12)
    assert _rows(one)[0]["lr"] > 0.9 * cfg.train.lr          # warm-up (8 steps) is over by step 10, not at 80


@pytest.mark.slow
def test_a_launch_that_got_fewer_processes_is_refused(toy_root, tmp_path):
    done = _launch(["--cpu", "--num_processes", "2"], ["--out", str(tmp_path / "r"), *tiny_overrides(toy_root, **OVERRIDES)],
                   tmp_path)
    assert done.returncode != 0                               # (accelerate launch turns the exit code 2 into 1)
    assert "asked for 2 processes (accelerate launch --num_processes) but has 1" in done.stderr
    assert not (tmp_path / "r").exists()
