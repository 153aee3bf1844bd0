"""Training through Accelerate: one script for a CPU process, one GPU with mixed precision, or many processes.

    python -m language train --config configs/language/quick.yaml --out runs/lang/sin          # CPU / one GPU
    python -m language train --out runs/lang/g model.pos=grammar model.structure=joint train.mixed_precision=bf16
    accelerate launch --num_processes 8 -m language train --config configs/language/full.yaml --out runs/lang/g
    python -m language train --resume runs/lang/g                        # continues from the last saved state

As in Accelerate's examples: `prepare` the model, optimiser, scheduler and loaders; `accelerator.backward`;
`gather_for_metrics` for dev sums; TensorBoard through `log_with`; progress bars on the main process only. The
state for resume is not Accelerate's `save_state` (which pickles, and unpickles on load): language.state writes
the same state as tensors and JSON into the shared run directory (temt_core.rundir).

A run directory holds config.yaml (resolved, vocabulary sizes filled in), run.json (seed, commit, versions),
words.json / actions.json / tree_labels.json (vocabularies, built from train only), metrics.jsonl (one line per dev
evaluation: the learning curve), best/ (the best-on-dev weights: safetensors + JSON with checksums, atomic),
checkpoints/step-N/ + LATEST (the state for resume, verified before LATEST moves), run.lock, tb/ (TensorBoard) and
train.json (summary).

Early stopping on dev (joint perplexity for structure-predicting models, word perplexity otherwise); the test
split is never read here.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from temt_core.checkpoint import load_checkpoint, save_checkpoint
from temt_core.config import ConfigError, to_dict
from temt_core.rundir import RunDir, RunDirError, changed_keys, non_finite, with_defaults
from temt_core.rundir import load_run_config as _load_run_config
from temt_core.validation import NonFiniteError

from .data import DataConfig, make_loader, prepare
from .evaluate import ppl, score_loader
from .model import LanguageModel, ModelConfig
from .state import load_model_tensors, load_training_state, model_tensors, save_training_state


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
    save_state_every: int = 0        # save the state for resume every N steps (0 = at each dev evaluation)
    progress: bool = True
    processes: int = 0               # the number of processes this run must have (0 = whatever it is launched with)

    def __post_init__(self):
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.log_with not in ("tensorboard", "none"):
            raise ValueError(f"log_with must be tensorboard or none, got {self.log_with!r}")
        for name in ("steps", "max_tokens", "eval_every", "patience", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1 (got {getattr(self, name)})")
        rules = {"lr": (0 < self.lr < math.inf, "a finite number > 0"),
                 "min_lr_frac": (0 <= self.min_lr_frac <= 1, "in [0, 1]"),
                 "weight_decay": (0 <= self.weight_decay < math.inf, "a finite number >= 0"),
                 "beta2": (0 <= self.beta2 < 1, "in [0, 1)"),
                 "grad_clip": (0 <= self.grad_clip, ">= 0 (0 = no clipping): a negative clip flips the gradient"),
                 "warmup": (self.warmup >= 0, ">= 0"), "save_state_every": (self.save_state_every >= 0, ">= 0"),
                 "seed": (self.seed >= 0, ">= 0"), "threads": (self.threads >= 0, ">= 0 (0 = torch's default)")}
        for name, (ok, want) in rules.items():      # NaN fails every rule: comparisons with NaN are False
            if not ok:
                raise ValueError(f"train.{name} must be {want} (got {getattr(self, name)})")


@dataclass
class EvalConfig:
    beams: tuple[int, ...] = (1, 5, 20, 50)     # beam sizes of the marginal (spec section 6)
    action_top: int = 0              # expand only the top-k actions per hypothesis (0 = all, the exact beam)
    max_tokens: int = 8192           # tokens per batch for the exact / joint / conditional scores
    bootstrap: int = 2000            # bootstrap resamples (of seeds and test sentences) for the intervals
    beam_until: float = 0.0          # then double K past the last beam until the bound moves by less than this
                                     # fraction of its perplexity (0 = only the listed beams)
    beam_max: int = 800              # the largest K beam_until may reach
    proposals: str = "none"          # action sequences added to the beam's candidates: none | parser (data.parser's
                                     # parse of the words) | gold (the treebank's); any set gives a valid bound
    pairs: int = 1000                # agreement minimal pairs scored per language-model run after its test split
                                     # (language/minimal_pairs.py; the first N its vocabulary can score; 0 = none):
                                     # UD EWT test yields 494, so the default scores them all
    pairs_beam: int = 20             # beam K for structure-predicting arms on those pairs (one K for both sentences
                                     # of a pair): on a 100-step quick grammar run K=20 gave K=50's verdict on 349
                                     # of 350 pairs (K=5: 342) for 32 s of CPU against 68 s

    def __post_init__(self):
        if any(k < 1 for k in self.beams):
            raise ValueError(f"eval.beams must be beam sizes >= 1 (got {list(self.beams)})")
        if self.proposals not in ("none", "parser", "gold"):
            raise ValueError(f"eval.proposals must be none, parser or gold (got {self.proposals!r})")
        if not 0 <= self.beam_until < 1:
            raise ValueError(f"eval.beam_until must be in [0, 1) (got {self.beam_until})")
        for name, low in (("action_top", 0), ("max_tokens", 1), ("bootstrap", 1), ("pairs", 0), ("pairs_beam", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"eval.{name} must be >= {low} (got {getattr(self, name)})")


@dataclass
class LanguageConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class TrainState:
    """The trainer's counters, saved and restored with the training state (language.state)."""

    def __init__(self):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best, self.best_step, self.bad_evals, self.stopped = float("inf"), 0, 0, False

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


# keys that may change when a run is resumed (how long, how it is logged and scored); anything else would make the
# resumed run a different experiment
RESUMABLE_CHANGES = ({f"train.{k}" for k in ("steps", "threads", "progress", "log_every", "log_with",
                                              "save_state_every", "cpu")}
                     | {f"eval.{f.name}" for f in dataclasses.fields(EvalConfig)})


def load_run_config(run_dir: str | Path) -> LanguageConfig:
    return _load_run_config(LanguageConfig, run_dir)


def load_trained(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LanguageModel:
    """The model of a run directory with its best-on-dev (or 'last') weights."""
    cfg = load_run_config(run_dir)
    tensors, meta = load_checkpoint(Path(run_dir) / which, require=("config",))
    # the vocabularies and the model were made with the saved data and model settings; config.yaml edited since
    # (action settings, say) would score with actions the model never learned
    saved, now = with_defaults(LanguageConfig, meta["config"], str(Path(run_dir) / which)), to_dict(cfg)
    edited = [f"{part}.{k}" for part in ("data", "model") for k in changed_keys(saved[part], now[part])]
    if edited:
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'}: {', '.join(edited[:6])} changed after training "
                          f"(the run was trained with other values, see {Path(run_dir) / which / 'meta.json'})")
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


@dataclass
class _Session:
    """What the steps of `train` share (instead of a closure that mutates its enclosing function's variables)."""
    cfg: LanguageConfig
    run_dir: Path
    run: RunDir | None               # the run directory, open on the main process only (it alone writes)
    accelerator: object
    model: object
    opt: object
    sched: object
    dev_dl: object
    state: TrainState
    bar: object
    t_start: float = field(default_factory=time.time)


def train(cfg: LanguageConfig, run_dir: str | Path, resume: bool = False, accelerator=None,
          stop_after: int | None = None, overwrite: bool = False) -> dict:
    """Train one model; returns the summary also written to run_dir/train.json.

    stop_after: leave after this many steps (state saved), as a time-limited job would; `resume=True` then
    continues exactly where it stopped (tests check the weights equal those of an uninterrupted run).
    overwrite: a new run may replace what run_dir holds (without it a non-empty run_dir is refused)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(run_dir)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if accelerator is None:
        # cpu=True where there is no GPU: without it a multi-process launch on CPUs falls back to one process each
        # (DistributedType.NO) instead of joining a gloo group
        accelerator = Accelerator(cpu=tc.cpu or not torch.cuda.is_available(), mixed_precision=tc.mixed_precision,
                                  log_with=None if tc.log_with == "none" else tc.log_with,
                                  project_dir=str(run_dir))
    if tc.mixed_precision != "no" and accelerator.device.type == "cpu" and not accelerator.native_amp:
        raise ConfigError(f"train.mixed_precision={tc.mixed_precision} needs a GPU: this run is on the CPU "
                          f"({'train.cpu=true' if tc.cpu else 'no CUDA device is available'}), where Accelerate "
                          "would record it but train in float32; use train.mixed_precision=no (or bf16)")
    asked = tc.processes or _launched_processes()
    if asked and asked != accelerator.num_processes:
        where = "train.processes" if tc.processes else "accelerate launch --num_processes"
        raise ConfigError(f"this run was asked for {asked} processes ({where}) but has {accelerator.num_processes}: "
                          "on CPUs `accelerate launch --cpu --num_processes N` starts one process; use `accelerate "
                          "launch --multi_gpu --num_processes N` (gloo on CPUs)")
    fresh = not resume and not run_dir.exists()
    run = _open_run(accelerator, run_dir, resume, overwrite)
    try:
        set_seed(tc.seed)
        session, train_dl, sampler = _set_up(cfg, run_dir, run, resume, accelerator)
    except BaseException:
        if run is not None:
            run.close()
            if fresh:                       # failed before training: leave no half-made run directory behind
                shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        return _train_loop(session, train_dl, sampler, stop_after)
    finally:
        if run is not None:
            run.close()


def _launched_processes() -> int | None:
    """The --num_processes of an `accelerate launch` that started this process, read from the parent's command line
    (Linux; None elsewhere or when not launched so). Accelerate's single-process launcher ignores the number."""
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    if "launch" not in args or not any(Path(a).name == "accelerate" or a.endswith("accelerate.commands.launch")
                                       for a in args[:3]):
        return None
    for i, a in enumerate(args):
        if a in ("--num_processes", "--num-processes") and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if a.startswith(("--num_processes=", "--num-processes=")) and a.split("=", 1)[1].isdigit():
            return int(a.split("=", 1)[1])
    return None


def _open_run(accelerator, run_dir: Path, resume: bool, overwrite: bool) -> RunDir | None:
    """The main process opens (resume) or creates the run directory; every process checks first, so that a
    refusal stops all of them rather than leaving the others waiting."""
    if resume:
        if (run_dir / "state").is_dir() and not RunDir(run_dir).checkpoints():
            raise RunDirError(f"{run_dir} was saved by an older temt in Accelerate's pickle format (state/), which "
                              "is not loaded because a pickle can run code: its best/ weights are still usable, "
                              "but it cannot be resumed")
        if RunDir(run_dir).latest() is None and not RunDir(run_dir).checkpoints():
            raise RunDirError(f"{run_dir}: nothing to resume (no checkpoint: it stopped before its first save, "
                              "or it is not a run; start it again with --overwrite)")
    else:
        RunDir.check_new(run_dir, overwrite)
    accelerator.wait_for_everyone()
    run = None
    if accelerator.is_main_process:
        run = RunDir.open(run_dir) if resume else RunDir.create(run_dir, overwrite=overwrite)
    accelerator.wait_for_everyone()
    return run


def _set_up(cfg: LanguageConfig, run_dir: Path, run: RunDir | None, resume: bool, accelerator):
    """Data, model, optimiser, schedule and loaders, prepared by Accelerate; on resume the saved state."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_with_min_lr_schedule_with_warmup
    tc = cfg.train
    data = prepare(cfg.data, shuffle_seed=tc.seed, splits=("train", "dev"), vocab_dir=run_dir if resume else None)
    for split in ("train", "dev"):          # an empty split would make the epoch loop spin forever
        if len(data.splits[split]) == 0:
            limit = getattr(cfg.data, f"{split}_limit")
            raise ConfigError(f"data: the {split} split of corpus {cfg.data.corpus!r} has no sentences after "
                              f"reading and filtering (data.max_words={cfg.data.max_words}, data.{split}_limit="
                              f"{limit}): nothing to {'train on' if split == 'train' else 'stop early on'}")
    cfg = fill_model_config(cfg, data)
    if run is not None and not resume:
        data.save_vocab(run_dir)
        run.write_config(cfg)
        run.write_info(seed=tc.seed, processes=accelerator.num_processes)
        run.start_log()
    if data.actions.warning():                           # train actions are all known: these come from dev
        accelerator.print(f"warning: dev: {data.actions.warning()}")

    model = LanguageModel(cfg.model)
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, tc.beta2),
                            fused=False)
    # transformers' schedule: linear warm-up from 0 over tc.warmup steps, then cosine to lr * min_lr_frac at tc.steps
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, num_warmup_steps=tc.warmup, num_training_steps=tc.steps,
                                                        min_lr_rate=tc.min_lr_frac)
    train_dl = make_loader(data.splits["train"], tc.max_tokens, shuffle=True, seed=tc.seed)
    dev_dl = make_loader(data.splits["dev"], cfg.eval.max_tokens, shuffle=False)
    sampler = train_dl.batch_sampler
    # the scheduler is not prepared: a prepared one steps once per process per optimiser step, which would end the
    # warm-up N times too early under N processes; unprepared, every process steps its own copy once per step
    model, opt, train_dl, dev_dl = accelerator.prepare(model, opt, train_dl, dev_dl)
    state = TrainState()
    if resume:
        meta = load_training_state(accelerator, run, run_dir, model, opt, sched, to_dict(cfg), RESUMABLE_CHANGES,
                                   config_cls=LanguageConfig)
        state.load_state_dict(meta["counters"])
        if run is not None:
            run.write_config(cfg)
            run.truncate_log(state.step)    # rows the interrupted run wrote after this state come again
        accelerator.print(f"resumed {run_dir} at step {state.step} (epoch {state.epoch}, batch "
                          f"{state.batch_in_epoch})")
    if tc.log_with != "none":
        flat = {"pos": cfg.model.pos, "structure": cfg.model.structure, "transform": cfg.data.transform,
                "seed": tc.seed, "d_model": cfg.model.d_model, "d_ff": cfg.model.d_ff, "lr": tc.lr}
        accelerator.init_trackers("tb", config=flat)
    bar = tqdm(total=tc.steps, initial=state.step, disable=not (accelerator.is_local_main_process and tc.progress),
               desc=f"{cfg.model.pos}/{cfg.model.structure}/{cfg.data.transform} s{tc.seed}", leave=False)
    return _Session(cfg, run_dir, run, accelerator, model, opt, sched, dev_dl, state, bar), train_dl, sampler


def _train_loop(s: _Session, train_dl, sampler, stop_after: int | None) -> dict:
    tc, state, accelerator = s.cfg.train, s.state, s.accelerator
    tokens = 0
    s.model.train()
    while state.step < tc.steps and not state.stopped:
        sampler.use_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_dl, state.batch_in_epoch) if state.batch_in_epoch else train_dl
        for batch in loader:
            out = s.model(**batch)
            accelerator.backward(out.loss)
            if tc.grad_clip:
                accelerator.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
            s.opt.step()
            s.sched.step()
            s.opt.zero_grad(set_to_none=True)
            state.step += 1
            state.batch_in_epoch += 1
            tokens += int(batch["mask"].sum())
            s.bar.update(1)
            if state.step % tc.log_every == 0:
                loss = out.loss.item()
                if not math.isfinite(loss):
                    raise NonFiniteError(f"training loss is {loss} at step {state.step}; the last good state is "
                                         f"{_last_good(s)} (lower train.lr, or keep model.pos_check_finite=true "
                                         "to find where positions blow up)")
                accelerator.log({"train/loss": loss, "train/lr": s.sched.get_last_lr()[0]}, step=state.step)
            if state.step % tc.eval_every == 0 or state.step == tc.steps:
                _evaluate_dev(s)
                s.model.train()
                if not tc.save_state_every:
                    _save(s)
            if tc.save_state_every and state.step % tc.save_state_every == 0:
                _save(s)
            if state.step >= tc.steps or state.stopped or (stop_after and state.step >= stop_after):
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
            continue
        if stop_after and state.step >= stop_after and state.step < tc.steps and not state.stopped:
            _save(s)
            s.bar.close()
            accelerator.end_training()
            return {"steps": state.step, "interrupted": True}
    if not (s.run_dir / "best").is_dir():     # e.g. resumed a finished run: nothing new to evaluate
        _evaluate_dev(s)
    s.bar.close()
    _save(s)
    elapsed = time.time() - s.t_start
    summary = {"steps": state.step, "best_step": state.best_step, "best_dev": state.best, "stopped_early":
               bool(state.stopped), "params": accelerator.unwrap_model(s.model).n_params(),
               "train_tokens_seen": tokens * accelerator.num_processes, "seconds": elapsed,
               "tokens_per_s": tokens * accelerator.num_processes / max(elapsed, 1e-9),
               "processes": accelerator.num_processes, "device": str(accelerator.device)}
    if s.run is not None:
        s.run.write_json("train.json", summary)
    accelerator.end_training()
    return summary


def _last_good(s: _Session) -> str:
    return str(s.run.latest() or "none") if s.run is not None else "(see the main process)"


def _save(s: _Session) -> None:
    save_training_state(s.accelerator, s.run, s.model, s.opt, s.sched, s.state.state_dict(), to_dict(s.cfg))


def _evaluate_dev(s: _Session) -> None:
    """Score dev, keep the best weights (best/), log the row, update early stopping."""
    state, accelerator = s.state, s.accelerator
    scores = score_loader(s.model, s.dev_dl, accelerator)
    metric = dev_metric(s.cfg.model, scores)
    if not math.isfinite(metric):
        raise NonFiniteError(f"dev {'joint' if s.cfg.model.predicts_structure else 'word'} perplexity is {metric} "
                             f"at step {state.step}: the weights are not finite; the last good state is "
                             f"{_last_good(s)}")
    row = {"step": state.step, "dev": metric, "dev_word_ppl": ppl(scores["word_nll"], scores["n_tokens"]),
           "dev_action_nll": float(scores["action_nll"].sum() / scores["n_tokens"].sum()),
           "lr": s.sched.get_last_lr()[0], "elapsed_s": time.time() - s.t_start}
    if metric < state.best - 1e-6:
        state.best, state.best_step, state.bad_evals = metric, state.step, 0
        if s.run is not None:
            weights = model_tensors(accelerator.unwrap_model(s.model))
            if non_finite(weights):
                raise NonFiniteError(f"not saving best/ at step {state.step}: {', '.join(non_finite(weights)[:5])} "
                                     "not finite")
            save_checkpoint(s.run_dir / "best", weights, {"step": state.step, "dev": metric, "config": to_dict(s.cfg)})
    else:
        state.bad_evals += 1
        state.stopped = state.bad_evals >= s.cfg.train.patience
    if s.run is not None:
        s.run.log(row)
    accelerator.log({"dev/metric": metric, "dev/word_ppl": row["dev_word_ppl"]}, step=state.step)
    s.bar.set_postfix(dev=f"{metric:.1f}", best=f"{state.best:.1f}")

