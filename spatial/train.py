"""Train TEM-t (or TEM: model_kind=tem) on random walks in graph worlds, with periodic evaluation on fresh worlds.

    temt-spatial train --config configs/spatial/quick.yaml --out runs/quick train.steps=500
    python -m spatial train --config configs/spatial/quick.yaml --out runs/quick
    temt-spatial train --resume runs/quick train.steps=2000       # continue exactly where it stopped

A run directory (temt_core.rundir, shared with the language package) holds:
    config.yaml       the resolved config (defaults <- YAML <- key=value)
    run.json          seed, git commit, versions, command line
    metrics.jsonl     one JSON object per log line: {"step", "split": "train" | "eval", ...}
    metrics.json      the final evaluation
    tb/               TensorBoard logs (if tensorboard is installed)
    checkpoints/      step-NNNNNNN/ (safetensors + JSON with checksums, atomic), LATEST names the newest
    run.lock          held while a trainer writes the run
A checkpoint holds the model, the optimizer, the walk generator (worlds, positions, RNG) and the model's carried
state (positions and memories), so a resumed run continues with exactly the numbers an uninterrupted run gets.

Time and memory (what spatial.compare reads to put models on a wall-clock axis), in every train and eval record:
    train_seconds     wall seconds spent in training steps since step 0 (drawing the chunk of walks, forward,
                      backward, optimizer step), not in evaluation, logging or checkpointing; carried in the
                      checkpoint, so it survives a resume (the steps an interrupted run took after its last
                      checkpoint are taken again and counted once). A checkpoint written before this key existed
                      resumes with 0.0 for the time before it, and its records then also carry
                      train_seconds_from_step (the step from which the seconds were counted), so no record claims a
                      total it does not have.
    peak_mem_mb       peak memory of this process so far, in MiB (CUDA: torch.cuda.max_memory_allocated of the
                      run's device; otherwise the peak resident set, getrusage ru_maxrss: Python and torch included)
These, with steps_per_s and walk_steps_per_s, measure the machine, not the run (TIMING_KEYS): a resumed run and an
uninterrupted one agree on every other key, exactly.

TEM (model_kind=tem, temt_core/tem.py) trains through the same loop on the same walks: its forward gets the gradient
step (its Hebbian rates and loss weights follow a schedule in the step), its `logits` are the prediction x_gt made
before x_t is seen (zero-shot accuracy as for TEM-t), its inferred g stands in for TEM-t's positions e (isometry
control, evaluation diagnostics) and its conjunctive cells p for the memory neurons (spatial.rollout).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from temt_core.checkpoint import CheckpointError, flatten, unflatten
from temt_core.config import to_dict
from temt_core.cpu_memory import keep_freed_memory
from temt_core.graph_step import GraphTrainStep
from temt_core.rundir import RunDir, check_resume_config
from temt_core.rundir import load_run_config as _load_run_config
from temt_core.model import TEMt, TEMtState
from temt_core.tem import TEM, TEMOutput, TEMState
from temt_core.validation import NonFiniteError

from .config import SpatialConfig, check_device
from .diagnostics import diagnose, flat_diagnostics
from .isometry import isometry_loss, node_coordinates
from .metrics import accuracy_by_coverage, accuracy_summary
from .rollout import run_rollout
from .walks import WalkStream

# keys that may change when a run is resumed; anything else would make the resumed run a different experiment
RESUMABLE_CHANGES = {"train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.threads", "train.device", "eval.every"}

# log keys that measure the machine (speed, wall time, memory), not the run: everything else in a resumed run's log
# equals an uninterrupted run's log
TIMING_KEYS = ("steps_per_s", "walk_steps_per_s", "train_seconds", "train_seconds_from_step", "peak_mem_mb")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB. CUDA: the peak of tensors allocated on `device` (model, optimizer,
    activations, memories; not the CUDA context). Otherwise: the peak resident set of the whole process (Python,
    torch, the walks, evaluation included), the only peak the OS keeps; NaN where the OS does not report it."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
    except ImportError:                        # not POSIX
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024     # macOS: bytes; Linux: KiB


def learning_rate(step: int, cfg) -> float:
    """TEM's schedule: lr_min + (lr_max - lr_min) * 0.5^(step / half_life), never below lr_min."""
    return max(cfg.lr_min, cfg.lr_min + (cfg.lr_max - cfg.lr_min) * 0.5 ** (step / cfg.lr_half_life))


def build_model(config: SpatialConfig) -> TEMt | TEM:
    """The model that config.model_kind names, from its config section (uses the torch RNG: seed first)."""
    return TEM(config.tem) if config.model_kind == "tem" else TEMt(config.model)


def model_kind_of(meta_config: dict) -> str:
    """model_kind of a saved config dict (checkpoint meta or config.yaml); runs saved before TEM was added are
    TEM-t runs."""
    return meta_config.get("model_kind", "temt") if isinstance(meta_config, dict) else "temt"


def load_model_weights(model, tensors: dict, where, kind: str, saved_kind: str) -> None:
    """The checkpoint's `model.*` tensors into `model`; a checkpoint of the other model kind, or one whose tensors
    do not fit, is a CheckpointError naming the file (never a load_state_dict traceback)."""
    if saved_kind != kind:
        raise CheckpointError(f"{where} holds a model_kind={saved_kind} model, but it is being loaded as "
                              f"model_kind={kind}; nothing was changed")
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or extra or wrong:
        detail = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in
                           (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{where}: its model tensors do not fit a model_kind={kind} model with this config "
                              f"({detail}); nothing was changed")
    model.load_state_dict(weights)


def state_from_tensors(tensors: dict, kind: str, device, where) -> TEMtState | TEMState | None:
    """The carried model state of a checkpoint (`state.*` tensors): TEMState for TEM, TEMtState for TEM-t."""
    state = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("state.")}
    if not state:
        return None
    try:
        return TEMState.from_tensors(state) if kind == "tem" else TEMtState.from_tensors(state)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: its carried state does not fit a model_kind={kind} model "
                              f"({type(err).__name__}: {err}); nothing was changed") from None


def apply_keep_freed_memory(t, members: int) -> None:
    """train.keep_freed_memory for a process that trains `members` models (TrainConfig): true always, 'auto' for a
    population of two or more, false never; CPU only (the setting is glibc's, not the GPU's)."""
    keep = t.keep_freed_memory
    if (keep is True or (keep == "auto" and members > 1)) and t.device == "cpu":
        keep_freed_memory()


class Trainer:
    def __init__(self, config: SpatialConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 worlds: list | None = None, overwrite: bool = False):
        """worlds: your own worlds (spatial.worlds.graph_world, ...) to train and evaluate on instead of the
        config's square/hex family; give them again when resuming. A new run refuses a directory that holds
        anything unless overwrite=True (which deletes it)."""
        self.config, self.run_dir, self.progress, self.worlds = config, Path(run_dir), progress, worlds
        if worlds is not None:
            n_actions = config.model_section.n_actions
            wrong = [w.name for w in worlds if w.n_actions != n_actions]
            if wrong:
                raise ValueError(f"world(s) {', '.join(wrong)} have a different number of actions than "
                                 f"{config.section_name}.n_actions={n_actions}")
        t = config.train
        check_device(t.device)                  # a GPU that is not there: a named error, before any work
        torch.set_num_threads(t.threads)
        apply_keep_freed_memory(t, members=1)
        self.device = torch.device(t.device)
        torch.manual_seed(t.seed)
        self.kind = config.model_kind
        self.model = build_model(config).to(self.device)
        self.graph_step = None
        if t.graph == "cuda":     # a graph reads the learning rate from device memory: a tensor, set in place
            self.optimizer = torch.optim.Adam(self.model.parameters(), capturable=True,
                                              lr=torch.tensor(learning_rate(0, t), device=self.device))
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate(0, t))
        if t.graph != "off":
            self.graph_step = GraphTrainStep(self.model, self.optimizer, t.batch_size, t.chunk_length,
                                             clip=t.grad_clip, use_graph=t.graph == "cuda")
        self.walks = WalkStream(config.walks, t.batch_size, seed=t.seed, worlds=worlds)
        self.state: TEMtState | TEMState | None = None
        self.step = 0
        self.train_seconds = 0.0               # wall seconds in training steps since step `timed_from`
        self.timed_from = 0
        self.tb = None
        self.overwrite = overwrite
        if resume:
            self._resume()
        else:
            self._start()

    # -- run directory ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self.rundir = RunDir.create(self.run_dir, overwrite=self.overwrite)
        self.rundir.write_config(self.config)
        self.rundir.start_log()
        self.rundir.write_info(seed=self.config.train.seed, parameters=self.model.num_parameters())

    def _resume(self) -> None:
        self.rundir = RunDir.open(self.run_dir)
        try:                                   # every check before anything in the run directory is rewritten
            ckpt, tensors, meta = self.rundir.resume_point(require=("step", "config", "optimizer", "walk_rng"))
            saved_kind = model_kind_of(meta["config"])
            if saved_kind != self.kind:
                raise CheckpointError(f"{ckpt} holds a model_kind={saved_kind} run, but the config to resume it "
                                      f"with says model_kind={self.kind}; nothing was changed")
            check_resume_config(meta["config"], to_dict(self.config), RESUMABLE_CHANGES, str(ckpt),
                                type(self.config))
            load_model_weights(self.model, tensors, ckpt, self.kind, saved_kind)
            state = state_from_tensors(tensors, self.kind, self.device, ckpt)
        except BaseException:
            self.rundir.close()                # release run.lock: a failed resume leaves the run as it was
            raise
        self.optimizer.load_state_dict(unflatten(meta["optimizer"], tensors))
        self.walks.load_state_dict({"arrays": {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("walks.")},
                                    "rng": meta["walk_rng"]})
        self.state = state
        if self.graph_step is not None and state is not None:
            self.graph_step.set_state(state)
        self.step = meta["step"]
        if "train_seconds" in meta:
            self.train_seconds = float(meta["train_seconds"])
            self.timed_from = int(meta.get("train_seconds_from_step", 0))
        else:                                  # a checkpoint from before timing: the seconds count from here
            self.train_seconds, self.timed_from = 0.0, self.step
        torch.set_rng_state(tensors["rng.torch"])
        self.rundir.write_config(self.config)
        self.rundir.truncate_log(self.step)    # rows the interrupted run wrote after this checkpoint come again

    def save(self) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.state is not None:
            tensors.update({f"state.{k}": v for k, v in self.state.tensors().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        optimizer = flatten(self.optimizer.state_dict(), "optim", tensors)
        walks = self.walks.state_dict()
        tensors.update({f"walks.{k}": torch.from_numpy(v) for k, v in walks["arrays"].items()})
        meta = {"step": self.step, "config": to_dict(self.config), "optimizer": optimizer, "walk_rng": walks["rng"],
                "train_seconds": self.train_seconds, "train_seconds_from_step": self.timed_from}
        return self.rundir.save(self.step, tensors, meta, keep=self.config.train.keep_checkpoints)

    def log(self, record: dict) -> None:
        self.rundir.log(record)
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
        if self.graph_step is not None:
            return self._graph_train_step(x, a, mask)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, t)
        # TEM's Hebbian rates and loss weights follow the gradient step (temt_core.tem.schedule)
        out = self.model(x, a, self.state, loss_mask=mask, **({"step": self.step} if self.kind == "tem" else {}))
        loss, extra = out.loss, {}
        if t.w_isometry:                   # the positive control: true displacements enter the loss
            xy = node_coordinates(self.walks.world_pool, chunk["world_index"], chunk["nodes"])
            world = torch.from_numpy(chunk["world"]).to(self.device)
            e = positions_of(out)
            iso = isometry_loss(e, torch.from_numpy(xy).to(e), world, scale=t.isometry_scale)
            loss, extra = loss + t.w_isometry * iso, {"isometry": iso.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.state = out.state
        self.step += 1
        correct = (out.logits.detach().argmax(-1) == x).cpu().numpy()
        loss_value = loss.item()
        if getattr(getattr(self.model, "config", None), "capturable", False):
            self._raise_if_loss_not_finite(loss_value)
        return {"loss": loss_value, **{k: v.item() for k, v in out.parts.items()}, **extra,
                "grad_norm": float(grad_norm), "correct": correct}

    def _raise_if_loss_not_finite(self, loss: float) -> None:
        """A capturable model checks nothing during its step (no host reads); its loss is read after the step
        anyway, for the log, and a loss that is not finite ends the run as a diverging ordinary run ends."""
        if not math.isfinite(loss):
            raise NonFiniteError(f"the loss became non-finite at step {self.step} (a capturable step: read after "
                                 "the step); lower the learning rate or bound the positions")

    def _graph_train_step(self, x, a, mask) -> dict:
        """train_step through GraphTrainStep (train.graph): the same step on fixed buffers, the records read from
        them (one host read per step, after the whole step has run)."""
        gs = self.graph_step
        gs.set_lr(learning_rate(self.step, self.config.train))
        gs(x, a, None if mask is None else mask.to(gs.loss_mask.dtype))
        self.state = gs.state
        self.step += 1
        correct = (gs.logits.argmax(-1) == x).cpu().numpy()
        loss_value = gs.loss.item()
        self._raise_if_loss_not_finite(loss_value)
        return {"loss": loss_value, **{k: v.item() for k, v in gs.parts.items()},
                "grad_norm": float(gs.grad_norm), "correct": correct}

    def evaluate(self) -> dict:
        return evaluate(self.model, self.config, self.device, self.worlds, step=self.step)

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.rundir.close()

    def _run(self) -> dict:
        t, e = self.config.train, self.config.eval
        self._open_tensorboard()
        window: list[dict] = []
        chunks: list[dict] = []
        bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        started, start_step = time.perf_counter(), self.step
        final = None
        while self.step < t.steps:
            tick = time.perf_counter()
            chunk = self.walks.next_chunk(t.chunk_length)
            stats = self.train_step(chunk)         # ends in .item() / .cpu(): the device's work is done here
            self.train_seconds += time.perf_counter() - tick
            window.append(stats)
            chunks.append(chunk)
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.steps:
                record = self._train_record(window, chunks, started, start_step)
                self.log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc_revisit=f"{record['acc_revisit']:.3f}")
                window, chunks = [], []
            if self.step % e.every == 0 or self.step == t.steps:
                final = {"step": self.step, "split": "eval", **self.evaluate(), **self.clock()}
                self.log({k: v for k, v in final.items() if not isinstance(v, (dict, list))})   # scalars only
                bar.write(f"step {self.step}: eval acc_revisit {final['acc_revisit']:.3f}, zero-shot "
                          f"{final['acc_zero_shot']:.3f} (node agent {final['node_agent']:.3f}, edge agent "
                          f"{final['edge_agent']:.3f}, chance {final['chance']:.3f})")
            if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                self.save()
        bar.close()
        if final is None:                      # resumed at the end: evaluate once more for the summary
            final = {"step": self.step, "split": "eval", **self.evaluate(), **self.clock()}
        self.rundir.write_json("metrics.json", final)
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
        record.update(self.clock())
        return record

    def clock(self) -> dict:
        """train_seconds and peak_mem_mb for a log record (module docstring); train_seconds_from_step only where
        the seconds before some step are unknown (a resume from a checkpoint older than timing)."""
        out = {"train_seconds": self.train_seconds, "peak_mem_mb": peak_memory_mb(self.device)}
        if self.timed_from:
            out["train_seconds_from_step"] = self.timed_from
        return out

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.tb = SummaryWriter(str(self.run_dir / "tb"))


def positions_of(out) -> torch.Tensor:
    """The position code of a forward's output: TEM-t's e, TEM's inferred g."""
    return out.g if isinstance(out, TEMOutput) else out.e


def evaluate(model: TEMt | TEM, config: SpatialConfig, device, worlds: list | None = None,
             step: int | None = None) -> dict:
    """Accuracy on fresh worlds, and the diagnostics that explain it (spatial.diagnostics): flat scalar keys
    (logged to metrics.jsonl) plus the nested `by_coverage` rows and `diagnostics` dict (metrics.json).
    Single runs and sweep members are evaluated by this one function. step: the gradient step the model was
    trained to (TEM only: its memory rates follow it; see spatial.rollout.run_rollout)."""
    e = config.eval
    r = run_rollout(model, config.walks, e.n_worlds, e.steps, e.seed, chunk_length=config.train.chunk_length,
                    device=device, worlds=worlds, record_positions=True, record_side_lobe=True, step=step)
    summary = accuracy_summary(r.correct, r.revisit, r.new_edge, r.edge_seen, r.actions, r.n_stimuli)
    summary["by_coverage"] = accuracy_by_coverage(r.correct, r.revisit, r.edge_seen, r.actions, r.n_visited,
                                                  r.n_nodes, r.n_stimuli, new_edge=r.new_edge)
    diagnostics = diagnose(r, model)
    summary.update(flat_diagnostics(diagnostics))
    summary["diagnostics"] = diagnostics
    return summary


def load_run_config(run_dir: str | Path) -> SpatialConfig:
    return _load_run_config(SpatialConfig, run_dir)

