"""Training through Accelerate: one script for a CPU process, one GPU with mixed precision, or many processes.

    python -m language train --config configs/language/quick.yaml --out runs/lang/sin          # CPU / one GPU
    python -m language train --out runs/lang/g model.pos=grammar model.structure=joint train.mixed_precision=bf16
    accelerate launch --num_processes 8 -m language train --config configs/language/full.yaml --out runs/lang/g
    python -m language train --resume runs/lang/g                        # continues from the last saved state

As in Accelerate's examples: `prepare` the model, optimiser, scheduler and loaders; `accelerator.backward`;
`gather_for_metrics` for dev sums; `save_state` / `load_state` (plus the trainer's own counters through
`register_for_checkpointing`) for resume; TensorBoard through `log_with`; progress bars on the main process only.

A run directory holds config.yaml (resolved, vocabulary sizes filled in), words.json / actions.json /
tree_labels.json (vocabularies, built from train only), metrics.jsonl (one line per dev evaluation: the learning
curve), best/ (the best-on-dev weights, temt_core checkpoint: safetensors + JSON, written atomically), state/
(Accelerate state for resume, written to state.tmp and swapped in only when complete, so a crash while saving
never replaces the last good state), tb/ (TensorBoard) and train.json (summary).

Early stopping on dev (joint perplexity for structure-predicting models, word perplexity otherwise); the test
split is never read here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from temt_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from temt_core.config import ConfigError, from_dict, load_config, parse_overrides, save_config, to_dict, _merge
from temt_core.validation import NonFiniteError

from .data import DataConfig, make_loader, prepare
from .evaluate import ppl, score_loader
from .model import LanguageModel, ModelConfig


@dataclass
class TrainConfig:
    steps: int = 20_000              # optimiser steps (the same token budget for every arm: max_tokens x steps)
    max_tokens: int = 8192           # padded tokens per batch per process
    lr: float = 1e-3                 # AdamW peak; small models tolerate it (nanoGPT's small configs use 1e-3)
    min_lr_frac: float = 0.1         # cosine decay to lr * min_lr_frac
    warmup: int = 500
    weight_decay: float = 0.1        # on matrices only (not biases, norms, position e_init)
    beta2: float = 0.98
    grad_clip: float = 1.0
    eval_every: int = 500
    patience: int = 6                # dev evaluations without improvement before stopping early
    seed: int = 0
    threads: int = 0                 # torch CPU threads (0 = torch's default); 1 for many small jobs on few cores
    mixed_precision: str = "no"      # no | fp16 | bf16 (Accelerate; GPU)
    cpu: bool = False                # stay on CPU even where a GPU is visible
    log_with: str = "tensorboard"    # tensorboard | none
    log_every: int = 50
    save_state_every: int = 0        # Accelerate save_state for resume every N steps (0 = at each dev evaluation)
    progress: bool = True

    def __post_init__(self):
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.log_with not in ("tensorboard", "none"):
            raise ValueError(f"log_with must be tensorboard or none, got {self.log_with!r}")
        for name in ("steps", "max_tokens", "eval_every", "patience", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")


@dataclass
class EvalConfig:
    beams: tuple[int, ...] = (1, 5, 20, 50)     # beam sizes of the marginal (spec section 6)
    action_top: int = 0              # expand only the top-k actions per hypothesis (0 = all, the exact beam)
    max_tokens: int = 8192           # tokens per batch for the exact / joint / conditional scores
    bootstrap: int = 2000            # paired-bootstrap resamples over test sentences


@dataclass
class LanguageConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class TrainState:
    """The trainer's counters, saved and restored with Accelerate's state (register_for_checkpointing)."""

    def __init__(self):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best, self.best_step, self.bad_evals, self.stopped = float("inf"), 0, 0, False

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


# --------------------------------------------------------------------------------------------------------------
# model weights <-> checkpoint (tied weights are stored once)

def model_tensors(model: LanguageModel) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("head.weight", None)
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in sd.items()}


def load_model_tensors(model: LanguageModel, tensors: dict[str, torch.Tensor], where: str = "") -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (k == "head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not fit this model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")


def load_run_config(run_dir: str | Path) -> LanguageConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (not a run directory)")
    return load_config(LanguageConfig, path)


def load_trained(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LanguageModel:
    """The model of a run directory with its best-on-dev (or 'last') weights."""
    cfg = load_run_config(run_dir)
    tensors, meta = load_checkpoint(Path(run_dir) / which)
    model = LanguageModel(cfg.model)
    load_model_tensors(model, tensors, str(Path(run_dir) / which))
    return model.to(device).eval()


def fill_model_config(cfg: LanguageConfig, data) -> LanguageConfig:
    """Vocabulary sizes and action names come from the data (saved with the model)."""
    model = dataclasses.replace(cfg.model, vocab_size=data.words.get_vocab_size(), n_actions=len(data.actions),
                                action_names=list(data.actions.names), n_tree_actions=len(data.tree_vocab),
                                tree_action_names=list(data.tree_vocab.names))
    return dataclasses.replace(cfg, model=model)


def dev_metric(cfg: ModelConfig, scores: dict) -> float:
    """What early stopping watches: joint perplexity if the model pays for actions, word perplexity otherwise."""
    if cfg.predicts_structure:
        return ppl(scores["word_nll"] + scores["action_nll"], scores["n_tokens"])
    return ppl(scores["word_nll"], scores["n_tokens"])


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "e_init" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _atomic_save_state(accelerator, run_dir: Path) -> None:
    """save_state into state.tmp, then swap it in: the previous state stays until the new one is complete."""
    tmp, final, old = run_dir / "state.tmp", run_dir / "state", run_dir / "state.old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    quiet = logging.getLogger("accelerate.utils.other")     # the tied output layer is dropped on purpose; it is
    level = quiet.level                                     # re-tied on load, so its warning is noise here
    quiet.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(tmp))
    finally:
        quiet.setLevel(level)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _last_state(run_dir: Path) -> Path | None:
    for name in ("state", "state.old"):        # state.old exists only if a crash hit the swap itself
        if (run_dir / name).is_dir():
            return run_dir / name
    return None


def train(cfg: LanguageConfig, run_dir: str | Path, resume: bool = False, accelerator=None,
          stop_after: int | None = None) -> dict:
    """Train one model; returns the summary also written to run_dir/train.json.

    stop_after: leave after this many steps (state saved), as a time-limited job would; `resume=True` then
    continues exactly where it stopped (tests check the weights equal those of an uninterrupted run)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if accelerator is None:
        accelerator = Accelerator(cpu=tc.cpu, mixed_precision=tc.mixed_precision,
                                  log_with=None if tc.log_with == "none" else tc.log_with,
                                  project_dir=str(run_dir))
    if resume:
        if _last_state(run_dir) is None:
            raise CheckpointError(f"{run_dir}: nothing to resume (no state/ directory)")
    elif accelerator.is_main_process:
        if (run_dir / "config.yaml").exists():
            raise ConfigError(f"{run_dir} already holds a run: use --resume, or another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(tc.seed)

    data = prepare(cfg.data, shuffle_seed=tc.seed, splits=("train", "dev"), vocab_dir=run_dir if resume else None)
    cfg = fill_model_config(cfg, data)
    if accelerator.is_main_process and not resume:
        data.save_vocab(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    if data.actions.warning():                           # train actions are all known: these come from dev
        accelerator.print(f"warning: dev: {data.actions.warning()}")

    model = LanguageModel(cfg.model)
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, tc.beta2),
                            fused=False)

    def lr_lambda(step):
        if step < tc.warmup:
            return (step + 1) / tc.warmup
        t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
        return tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    train_dl = make_loader(data.splits["train"], tc.max_tokens, shuffle=True, seed=tc.seed)
    dev_dl = make_loader(data.splits["dev"], cfg.eval.max_tokens, shuffle=False)
    sampler = train_dl.batch_sampler
    model, opt, train_dl, dev_dl, sched = accelerator.prepare(model, opt, train_dl, dev_dl, sched)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if resume:
        accelerator.load_state(str(_last_state(run_dir)))
        accelerator.print(f"resumed {run_dir} at step {state.step} (epoch {state.epoch}, batch "
                          f"{state.batch_in_epoch})")
    if tc.log_with != "none":
        flat = {"pos": cfg.model.pos, "structure": cfg.model.structure, "transform": cfg.data.transform,
                "seed": tc.seed, "d_model": cfg.model.d_model, "d_ff": cfg.model.d_ff, "lr": tc.lr}
        accelerator.init_trackers("tb", config=flat)

    n_params = accelerator.unwrap_model(model).n_params()
    bar = tqdm(total=tc.steps, initial=state.step, disable=not (accelerator.is_local_main_process and tc.progress),
               desc=f"{cfg.model.pos}/{cfg.model.structure}/{cfg.data.transform} s{tc.seed}", leave=False)
    t_start, tokens = time.time(), 0
    model.train()

    def evaluate_dev():
        scores = score_loader(model, dev_dl, accelerator)
        metric = dev_metric(cfg.model, scores)
        row = {"step": state.step, "dev": metric, "dev_word_ppl": ppl(scores["word_nll"], scores["n_tokens"]),
               "dev_action_nll": float(scores["action_nll"].sum() / scores["n_tokens"].sum()),
               "elapsed_s": time.time() - t_start}
        improved = metric < state.best - 1e-6
        if improved:
            state.best, state.best_step, state.bad_evals = metric, state.step, 0
            if accelerator.is_main_process:
                save_checkpoint(run_dir / "best", model_tensors(accelerator.unwrap_model(model)),
                                {"step": state.step, "dev": metric, "config": to_dict(cfg)})
        else:
            state.bad_evals += 1
            state.stopped = state.bad_evals >= tc.patience
        if accelerator.is_main_process:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        accelerator.log({"dev/metric": metric, "dev/word_ppl": row["dev_word_ppl"]}, step=state.step)
        bar.set_postfix(dev=f"{metric:.1f}", best=f"{state.best:.1f}")

    while state.step < tc.steps and not state.stopped:
        sampler.use_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_dl, state.batch_in_epoch) if state.batch_in_epoch else train_dl
        for batch in loader:
            out = model(**batch)
            accelerator.backward(out.loss)
            if tc.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.batch_in_epoch += 1
            tokens += int(batch["mask"].sum())
            bar.update(1)
            if state.step % tc.log_every == 0:
                loss = out.loss.item()
                if not math.isfinite(loss):
                    raise NonFiniteError(f"training loss is {loss} at step {state.step}; the last good state is "
                                         f"{_last_state(run_dir)} (lower train.lr, or keep "
                                         "model.pos_check_finite=true to find where positions blow up)")
                accelerator.log({"train/loss": loss, "train/lr": sched.get_last_lr()[0]}, step=state.step)
            if state.step % tc.eval_every == 0 or state.step == tc.steps:
                evaluate_dev()
                model.train()
                if not tc.save_state_every:
                    _atomic_save_state(accelerator, run_dir)
            if tc.save_state_every and state.step % tc.save_state_every == 0:
                _atomic_save_state(accelerator, run_dir)
            if state.step >= tc.steps or state.stopped or (stop_after and state.step >= stop_after):
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
            continue
        if stop_after and state.step >= stop_after and state.step < tc.steps and not state.stopped:
            _atomic_save_state(accelerator, run_dir)
            bar.close()
            accelerator.end_training()
            return {"steps": state.step, "interrupted": True}
    if not (run_dir / "best").is_dir():     # e.g. resumed a finished run: nothing new to evaluate
        evaluate_dev()
    bar.close()
    _atomic_save_state(accelerator, run_dir)
    elapsed = time.time() - t_start
    summary = {"steps": state.step, "best_step": state.best_step, "best_dev": state.best, "stopped_early":
               bool(state.stopped), "params": n_params, "train_tokens_seen": tokens * accelerator.num_processes,
               "seconds": elapsed, "tokens_per_s": tokens * accelerator.num_processes / max(elapsed, 1e-9),
               "processes": accelerator.num_processes, "device": str(accelerator.device)}
    if accelerator.is_main_process:
        (run_dir / "train.json").write_text(json.dumps(summary, indent=1))
    accelerator.end_training()
    return summary


def merge_overrides(cfg: LanguageConfig, overrides: list[str]) -> LanguageConfig:
    if not overrides:
        return cfg
    try:
        return from_dict(LanguageConfig, _merge(to_dict(cfg), parse_overrides(overrides)))
    except ConfigError as err:
        raise ConfigError(f"command-line override: {err}") from None
