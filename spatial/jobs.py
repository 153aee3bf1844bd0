"""Subprocess jobs of the one-command pipelines (spatial.reproduce, spatial.compare_run): a logged command in the
repository root, and the command that trains a run, resumes it, or leaves it alone when it is finished.

A pipeline that is killed and started again must neither lose nor repeat work: a run that reached its steps is
kept, one with a checkpoint resumes from it (exactly: temt_core.rundir), and one that stopped before its first
checkpoint holds nothing to keep, so it starts again.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent     # config paths (configs/spatial/...) are relative to it


def run_logged(cmd: list[str], log: Path) -> int:
    """Run cmd in the repository root, appending the command line and its output to log; the exit code."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def finished_step(run: Path) -> int | None:
    """The step of a run's final evaluation (metrics.json), or None if it has none or no checkpoint."""
    try:
        return int(json.loads((run / "metrics.json").read_text())["step"]) if (run / "LATEST").exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train_command(run: Path, config: str, overrides: list[str], extra: list[str], steps: int) -> list[str] | None:
    """The `spatial train` command that brings `run` to `steps` steps: None when it is there already, a resume when
    it has a checkpoint, a fresh start (over whatever an unfinished first attempt left) otherwise.

    overrides: the pipeline's own keys for this run (saved in its config, so not repeated on resume); extra: the
    user's keys for every run (e.g. train.device=cuda), given on resume too (where only RESUMABLE_CHANGES may
    differ from the saved config: spatial.train)."""
    base = [sys.executable, "-m", "spatial", "train", "--quiet"]
    if finished_step(run) == steps:
        return None
    if (run / "LATEST").exists():
        return base + ["--resume", str(run)] + extra + [f"train.steps={steps}"]
    again = ["--overwrite"] if run.exists() else []
    return base + ["--config", config, "--out", str(run)] + again + overrides + extra + [f"train.steps={steps}"]
