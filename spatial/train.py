"""Train TEM-t on random walks in graph worlds, with periodic evaluation on fresh worlds.

    temt-spatial train --config configs/spatial/quick.yaml --out runs/quick train.steps=500
    python -m spatial train --config configs/spatial/quick.yaml --out runs/quick
    temt-spatial train --resume runs/quick train.steps=2000       # continue exactly where it stopped

A run directory holds:
    config.yaml       the resolved config (defaults <- YAML <- key=value)
    run.json          seed, git commit, versions, command line
    metrics.jsonl     one JSON object per log line: {"step", "split": "train" | "eval", ...}
    metrics.json      the final evaluation
    tb/               TensorBoard logs (if tensorboard is installed)
    checkpoints/      step-NNNNNNN/ (safetensors + JSON, atomic), LATEST names the newest
A checkpoint holds the model, the optimizer, the walk generator (worlds, positions, RNG) and the model's carried
state (positions and memories), so a resumed run continues with exactly the numbers an uninterrupted run gets.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from temt_core.checkpoint import (CheckpointError, flatten, latest_checkpoint, load_checkpoint, save_checkpoint,
                                  unflatten, write_latest)
from temt_core.config import ConfigError, from_dict, save_config, to_dict
from temt_core.model import TEMt, TEMtState

from .config import SpatialConfig
from .diagnostics import diagnose, flat_diagnostics
from .isometry import isometry_loss, node_coordinates
from .metrics import accuracy_by_coverage, accuracy_summary
from .rollout import run_rollout
from .walks import WalkStream

# keys that may change when a run is resumed; anything else would make the resumed run a different experiment
RESUMABLE_CHANGES = {"train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.threads", "train.device", "eval.every"}


def learning_rate(step: int, cfg) -> float:
    """TEM's schedule: lr_min + (lr_max - lr_min) * 0.5^(step / half_life), never below lr_min."""
    return max(cfg.lr_min, cfg.lr_min + (cfg.lr_max - cfg.lr_min) * 0.5 ** (step / cfg.lr_half_life))


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return "unknown"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        path = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _flat_diff(a[k], b[k], path + ".")
        elif a.get(k) != b.get(k):
            keys.append(path)
    return keys


class Trainer:
    def __init__(self, config: SpatialConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 worlds: list | None = None):
        """worlds: your own worlds (spatial.worlds.graph_world, ...) to train and evaluate on instead of the
        config's square/hex family; give them again when resuming."""
        self.config, self.run_dir, self.progress, self.worlds = config, Path(run_dir), progress, worlds
        if worlds is not None:
            wrong = [w.name for w in worlds if w.n_actions != config.model.n_actions]
            if wrong:
                raise ValueError(f"world(s) {', '.join(wrong)} have a different number of actions than "
                                 f"model.n_actions={config.model.n_actions}")
        t = config.train
        torch.set_num_threads(t.threads)
        self.device = torch.device(t.device)
        torch.manual_seed(t.seed)
        self.model = TEMt(config.model).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate(0, t))
        self.walks = WalkStream(config.walks, t.batch_size, seed=t.seed, worlds=worlds)
        self.state: TEMtState | None = None
        self.step = 0
        self.tb = None
        if resume:
            self._resume()
        else:
            self._start()

    # -- run directory ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        if (self.run_dir / "checkpoints").exists() and latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already holds a run with checkpoints: resume it with "
                                  f"--resume {self.run_dir}, or choose another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        (self.run_dir / "metrics.jsonl").write_text("")
        info = {"seed": self.config.train.seed, "commit": git_commit(), "torch": torch.__version__,
                "python": platform.python_version(), "machine": platform.machine(), "argv": sys.argv,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parameters": self.model.num_parameters()}
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=1))

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise CheckpointError(f"{self.run_dir} has no complete checkpoint to resume from")
        tensors, meta = load_checkpoint(ckpt)
        changed = [k for k in _flat_diff(meta["config"], to_dict(self.config)) if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(f"cannot resume {ckpt} with a different config: {', '.join(changed)} differ "
                              f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume)")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.optimizer.load_state_dict(unflatten(meta["optimizer"], tensors))
        self.walks.load_state_dict({"arrays": {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("walks.")},
                                    "rng": meta["walk_rng"]})
        self.state = TEMtState.from_tensors({k[6:]: v.to(self.device) for k, v in tensors.items()
                                             if k.startswith("state.")})
        self.step = meta["step"]
        torch.set_rng_state(tensors["rng.torch"])
        save_config(self.config, self.run_dir / "config.yaml")
        # drop log lines written after this checkpoint by the interrupted run, so none is counted twice
        log = self.run_dir / "metrics.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        log.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= self.step))

    def save(self) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.state is not None:
            tensors.update({f"state.{k}": v for k, v in self.state.tensors().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        optimizer = flatten(self.optimizer.state_dict(), "optim", tensors)
        walks = self.walks.state_dict()
        tensors.update({f"walks.{k}": torch.from_numpy(v) for k, v in walks["arrays"].items()})
        meta = {"step": self.step, "config": to_dict(self.config), "optimizer": optimizer, "walk_rng": walks["rng"]}
        name = f"step-{self.step:07d}"
        path = save_checkpoint(self.run_dir / "checkpoints" / name, tensors, meta)
        write_latest(self.run_dir, f"checkpoints/{name}")
        kept = sorted(p for p in (self.run_dir / "checkpoints").glob("step-*") if p.is_dir() and "." not in p.name)
        for old in kept[:-self.config.train.keep_checkpoints]:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        return path

    def log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            split = record["split"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, record["step"])

    # -- training ----------------------------------------------------------------------------------------------

    def train_step(self, chunk: dict) -> dict:
        t = self.config.train
        x = torch.from_numpy(chunk["x"]).to(self.device)
        a = torch.from_numpy(chunk["actions"]).to(self.device)
        revisit = torch.from_numpy(chunk["revisit"]).to(self.device)
        mask = revisit if t.loss_on == "revisit" else None
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, t)
        out = self.model(x, a, self.state, loss_mask=mask)
        loss, extra = out.loss, {}
        if t.w_isometry:                   # the positive control: true displacements enter the loss
            xy = node_coordinates(self.walks.world_pool, chunk["world_index"], chunk["nodes"])
            world = torch.from_numpy(chunk["world"]).to(self.device)
            iso = isometry_loss(out.e, torch.from_numpy(xy).to(out.e), world, scale=t.isometry_scale)
            loss, extra = loss + t.w_isometry * iso, {"isometry": iso.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.state = out.state
        self.step += 1
        correct = (out.logits.detach().argmax(-1) == x).cpu().numpy()
        return {"loss": loss.item(), **{k: v.item() for k, v in out.parts.items()}, **extra,
                "grad_norm": float(grad_norm), "correct": correct}

    def evaluate(self) -> dict:
        return evaluate(self.model, self.config, self.device, self.worlds)

    def run(self) -> dict:
        t, e = self.config.train, self.config.eval
        self._open_tensorboard()
        window: list[dict] = []
        chunks: list[dict] = []
        bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        started, start_step = time.perf_counter(), self.step
        final = None
        while self.step < t.steps:
            chunk = self.walks.next_chunk(t.chunk_length)
            stats = self.train_step(chunk)
            window.append(stats)
            chunks.append(chunk)
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.steps:
                record = self._train_record(window, chunks, started, start_step)
                self.log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc_revisit=f"{record['acc_revisit']:.3f}")
                window, chunks = [], []
            if self.step % e.every == 0 or self.step == t.steps:
                final = {"step": self.step, "split": "eval", **self.evaluate()}
                self.log({k: v for k, v in final.items() if not isinstance(v, (dict, list))})   # scalars only
                bar.write(f"step {self.step}: eval acc_revisit {final['acc_revisit']:.3f}, zero-shot "
                          f"{final['acc_zero_shot']:.3f} (node agent {final['node_agent']:.3f}, edge agent "
                          f"{final['edge_agent']:.3f}, chance {final['chance']:.3f})")
            if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                self.save()
        bar.close()
        if final is None:                      # resumed at the end: evaluate once more for the summary
            final = {"step": self.step, "split": "eval", **self.evaluate()}
        (self.run_dir / "metrics.json").write_text(json.dumps(final, indent=1))
        if self.tb is not None:
            self.tb.close()
        return final

    def _train_record(self, window, chunks, started, start_step) -> dict:
        correct = np.concatenate([w["correct"] for w in window], 1)
        cat = lambda k: np.concatenate([c[k] for c in chunks], 1)
        acc = accuracy_summary(correct, cat("revisit"), cat("new_edge"), cat("edge_seen"), cat("actions"),
                               self.config.walks.n_stimuli)
        elapsed = time.perf_counter() - started
        steps_per_s = (self.step - start_step) / max(elapsed, 1e-9)
        record = {"step": self.step, "split": "train", "lr": learning_rate(self.step, self.config.train),
                  "steps_per_s": steps_per_s,
                  "walk_steps_per_s": steps_per_s * self.config.train.batch_size * self.config.train.chunk_length}
        for k in window[0]:
            if k != "correct":
                record[k] = float(np.mean([w[k] for w in window]))
        record.update({k: acc[k] for k in ("acc", "acc_revisit", "acc_zero_shot", "node_agent", "edge_agent")})
        return record

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.tb = SummaryWriter(str(self.run_dir / "tb"))


def evaluate(model: TEMt, config: SpatialConfig, device, worlds: list | None = None) -> dict:
    """Accuracy on fresh worlds, and the diagnostics that explain it (spatial.diagnostics): flat scalar keys
    (logged to metrics.jsonl) plus the nested `by_coverage` rows and `diagnostics` dict (metrics.json).
    Single runs and sweep members are evaluated by this one function."""
    e = config.eval
    r = run_rollout(model, config.walks, e.n_worlds, e.steps, e.seed, chunk_length=config.train.chunk_length,
                    device=device, worlds=worlds, record_positions=True, record_side_lobe=True)
    summary = accuracy_summary(r.correct, r.revisit, r.new_edge, r.edge_seen, r.actions, r.n_stimuli)
    summary["by_coverage"] = accuracy_by_coverage(r.correct, r.revisit, r.edge_seen, r.actions, r.n_visited,
                                                  r.n_nodes, r.n_stimuli, new_edge=r.new_edge)
    diagnostics = diagnose(r, model)
    summary.update(flat_diagnostics(diagnostics))
    summary["diagnostics"] = diagnostics
    return summary


def load_run_config(run_dir: str | Path) -> SpatialConfig:
    import yaml
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} is missing")
    return from_dict(SpatialConfig, yaml.safe_load(path.read_text()), "")


def _merge_overrides(config: SpatialConfig, overrides: list[str]) -> SpatialConfig:
    """Apply key=value overrides on top of an existing config (used on resume)."""
    from temt_core.config import _merge, parse_overrides
    if not overrides:
        return config
    try:
        return from_dict(SpatialConfig, _merge(to_dict(config), parse_overrides(overrides)))
    except ConfigError as err:
        raise ConfigError(f"command-line override: {err}") from None
