"""A language run's training state as tensors (safetensors) and JSON only, kept in the shared run directory.

Accelerate's own `save_state` pickles the optimizer, the scheduler, the RNG states and registered objects, and
its `load_state` unpickles `custom_checkpoint_0.pkl` with `weights_only` switched off: resuming a run directory
received from someone else could run their code. This module saves the same state instead, as `checkpoints/step-N`
of a `temt_core.rundir.RunDir` (checksums, verified before LATEST moves, pruned, never a non-finite tensor):

    model.*            the unwrapped model's weights (the tied output layer once)
    optim.* / sched.*  AdamW's moments and the scheduler's counters (temt_core.checkpoint.flatten)
    scaler.*           the fp16 GradScaler, when there is one
    rng.R.*            process R's torch (and CUDA) generator and numpy's; Python's in meta.json
    meta.json          the trainer's counters, the resolved config, the number of processes

Every process draws its own dropout masks, so every process's streams are gathered to the main process, which
alone writes; on resume every process reads the same checkpoint and takes its own streams back.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from temt_core.checkpoint import CheckpointError, flatten, load_checkpoint, unflatten
from temt_core.config import ConfigError
from temt_core.rundir import RunDir, check_resume_config, non_finite
from temt_core.validation import NonFiniteError

REQUIRED = ("step", "counters", "config", "processes", "optimizer", "scheduler", "rng")


# -- model weights <-> tensors (tied weights are stored once) ---------------------------------------------------

def model_tensors(model) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("head.weight", None)
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in sd.items()}


def load_model_tensors(model, tensors: dict[str, torch.Tensor], where: str = "") -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (k == "head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not fit this model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")


# -- RNG streams ------------------------------------------------------------------------------------------------

def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's generators: tensors, and the JSON part (Python's state is a tuple of ints)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                     "python": [version, list(internal), gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# -- save / load ------------------------------------------------------------------------------------------------

def save_training_state(accelerator, run: RunDir | None, model, optimizer, scheduler, counters: dict,
                        config: dict, keep: int = 2) -> Path | None:
    """Called by every process (it gathers the RNG streams); the main process writes `run`'s checkpoint."""
    from accelerate.utils import gather_object
    streams = gather_object([rng_state()])
    tensors = {f"model.{k}": v for k, v in model_tensors(accelerator.unwrap_model(model)).items()}
    meta = {"step": counters["step"], "counters": counters, "config": config,
            "processes": accelerator.num_processes,
            "optimizer": flatten(optimizer.state_dict(), "optim", tensors),
            "scheduler": flatten(scheduler.state_dict(), "sched", tensors),
            "scaler": flatten(accelerator.scaler.state_dict(), "scaler", tensors) if accelerator.scaler else None,
            "rng": [m for _, m in streams]}
    for rank, (t, _) in enumerate(streams):
        tensors.update({f"rng.{rank}.{k}": v for k, v in t.items()})
    bad = non_finite(tensors)           # the same weights on every process: all of them stop together
    if bad:
        raise NonFiniteError(f"not saving the training state at step {counters['step']}: {', '.join(bad[:5])} "
                             f"not finite. The last good state is {run.latest() if run else 'on the main process'}")
    path = None
    if accelerator.is_main_process:
        path = run.save(counters["step"], tensors, meta, keep=keep)
    accelerator.wait_for_everyone()
    return path


def load_training_state(accelerator, run: RunDir | None, run_dir: Path, model, optimizer, scheduler,
                        config: dict, resumable: set[str], config_cls=None) -> dict:
    """Restore what save_training_state wrote; returns meta (counters, config). The main process picks the newest
    valid checkpoint (repairing LATEST, reporting damaged ones); the others then read the one it picked. The saved
    config must equal `config` except for the `resumable` keys (checked before anything is loaded)."""
    if accelerator.is_main_process:
        ckpt, tensors, meta = run.resume_point(require=REQUIRED)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        ckpt = RunDir(run_dir).latest()
        tensors, meta = load_checkpoint(ckpt, require=REQUIRED)
    check_resume_config(meta["config"], config, resumable, f"{ckpt} (step {meta['step']})", config_cls)
    if meta["processes"] != accelerator.num_processes:
        raise ConfigError(f"{ckpt} was saved by {meta['processes']} process(es); this resume has "
                          f"{accelerator.num_processes}: resume with the same number (each process has its own "
                          "data shard and random streams)")
    load_model_tensors(accelerator.unwrap_model(model),
                       {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(ckpt))
    optimizer.load_state_dict(unflatten(meta["optimizer"], tensors))
    scheduler.load_state_dict(unflatten(meta["scheduler"], tensors))
    if accelerator.scaler is not None and meta.get("scaler") is not None:
        accelerator.scaler.load_state_dict(unflatten(meta["scaler"], tensors))
    rank = accelerator.process_index
    set_rng_state({k[len(f"rng.{rank}."):]: v for k, v in tensors.items() if k.startswith(f"rng.{rank}.")},
                  meta["rng"][rank])
    return meta
