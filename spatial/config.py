"""The spatial experiment's config: model + walks + training + evaluation, one typed tree.

Defaults are TEM's where the spec gives them (batch 16, chunks of 75 steps, Adam with TEM's learning-rate decay,
gradient-norm clip 2, TEM's world widths, n_x = 45); configs/spatial/*.yaml override them, and `key=value`
arguments override the file (for example `model.activation=linear train.steps=500`).

Two models train on the same walks: `model_kind: temt` (TEM-t, configured by `model:`) and `model_kind: tem` (TEM,
Whittington et al. 2020, temt_core/tem.py, configured by `tem:`; configs/spatial/tem.yaml). Both sections are
always listed with their defaults; the section of the model that is not trained must stay at its defaults, so that
a key meant for one model is never silently ignored by the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from temt_core.config import to_dict
from temt_core.model import TEMtConfig
from temt_core.tem import TEMConfig

from .walks import WalkConfig


@dataclass
class TrainConfig:
    steps: int = 20_000                  # gradient steps (TEM-t: full performance in < 20k)
    batch_size: int = 16                 # one world per slot (TEM)
    chunk_length: int = 75               # truncated-backprop window (TEM: 20-75)
    lr_max: float = 9.4e-4               # TEM: lr = max(8e-5, 8e-5 + (9.4e-4 - 8e-5) * 0.5^(step / 4000))
    lr_min: float = 8e-5
    lr_half_life: float = 4000.0
    grad_clip: float = 2.0               # TEM's gradient-norm clip
    loss_on: str = "revisit"             # 'revisit' (TEM: only arrivals at visited nodes) | 'all'
    w_isometry: float = 0.0              # positive control (spatial/isometry.py): weight of the conformal-isometry
    isometry_scale: float = 1.0          #   loss on true displacements, and its scale s (||de|| = s ||dx||);
                                         #   0 = off, as in TEM-t, which never sees coordinates
    seed: int = 0
    threads: int = 1                     # torch threads; small models run faster single-threaded on 2 cores
    keep_freed_memory: bool | Literal["auto"] = "auto"  # CPU: malloc keeps freed buffers for the
                                                        # next step instead of returning them to the kernel
                                                        # (temt_core/cpu_memory.py; no number changes). 'auto':
                                                        # on for populations of >= 2 members, whose > 32 MB
                                                        # tensors otherwise fault in fresh pages every step
                                                        # (P = 8: 18-19k faults per step -> 1, steps 15-17%
                                                        # faster); off for one model, which has no faults to
                                                        # save (docs/results/engine-2026-12-03b.md); true/false:
                                                        # always/never
    device: str = "cpu"
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    graph: str = "off"                   # 'cuda': each step replayed as a CUDA graph (temt_core/graph_step.py; needs
                                         # model.capturable=true and a CUDA device); 'eager': the same fixed-buffer
                                         # step run eagerly (what 'cuda' captures; any device); 'off': ordinary steps

    def __post_init__(self):
        if self.graph not in ("off", "eager", "cuda"):
            raise ValueError(f"train.graph must be 'off', 'eager' or 'cuda' (got {self.graph!r})")
        if self.loss_on not in ("revisit", "all"):
            raise ValueError(f"loss_on must be 'revisit' or 'all' (got {self.loss_on!r})")
        if not (self.w_isometry >= 0 and self.isometry_scale > 0):
            raise ValueError(f"w_isometry must be >= 0 and isometry_scale > 0 (got {self.w_isometry}, "
                             f"{self.isometry_scale})")
        for name in ("steps", "batch_size", "chunk_length", "log_every", "checkpoint_every", "threads",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1 (got {getattr(self, name)})")
        check_numbers("train", self, {
            "lr_max": (self.lr_max > 0 and math.isfinite(self.lr_max), "a finite number > 0"),
            "lr_min": (self.lr_min >= 0 and math.isfinite(self.lr_min), "a finite number >= 0"),
            "lr_half_life": (self.lr_half_life > 0, "> 0 (steps; .inf for no decay)"),
            "grad_clip": (self.grad_clip > 0, "> 0 (the gradient-norm clip; .inf for none): a negative clip "
                                              "flips the gradient, 0 stops learning"),
            "w_isometry": (math.isfinite(self.w_isometry), "finite"),
            "isometry_scale": (math.isfinite(self.isometry_scale), "finite"),
            "seed": (self.seed >= 0, ">= 0"),
        })
        check_device(self.device, "train.device", need_available=False)


@dataclass
class EvalConfig:
    every: int = 1000                    # evaluate on fresh worlds every this many steps (and at the end)
    n_worlds: int = 16
    steps: int = 1500                    # walk length per evaluation world
    seed: int = 12345                    # the same evaluation worlds every time

    def __post_init__(self):
        for name in ("every", "n_worlds", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1 (got {getattr(self, name)})")
        check_numbers("eval", self, {"seed": (self.seed >= 0, ">= 0")})


MODEL_KINDS = ("temt", "tem")


@dataclass
class SpatialConfig:
    model_kind: str = "temt"             # 'temt': TEM-t (the `model` section) | 'tem': TEM, Whittington et al. 2020
                                         # (the `tem` section; temt_core/tem.py)
    model: TEMtConfig = field(default_factory=TEMtConfig)
    tem: TEMConfig = field(default_factory=TEMConfig)
    walks: WalkConfig = field(default_factory=WalkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS} (got {self.model_kind!r})")
        self._check_unused_section()
        section = self.model_section
        if section.n_stimuli != self.walks.n_stimuli:
            raise ValueError(f"{self.section_name}.n_stimuli ({section.n_stimuli}) must equal walks.n_stimuli "
                             f"({self.walks.n_stimuli})")
        if self.model_kind == "temt" and self.model.n_stimuli_2:
            raise ValueError(f"model.n_stimuli_2={self.model.n_stimuli_2}: spatial training feeds one stimulus "
                             "stream; the two-stream model (claim C8) is shown by python -m spatial.conjunctions")
        if self.train.graph != "off":
            problems = [p for p, bad in (
                (f"model_kind=temt (got {self.model_kind!r})", self.model_kind != "temt"),
                ("model.capturable=true (and model.max_memories)",
                 self.model_kind == "temt" and not self.model.capturable),
                (f"train.w_isometry=0 (got {self.train.w_isometry})", self.train.w_isometry != 0),
                (f"train.device=cuda... (got {self.train.device!r})",
                 self.train.graph == "cuda" and not self.train.device.startswith("cuda"))) if bad]
            if problems:
                raise ValueError(f"train.graph={self.train.graph!r} needs " + " and ".join(problems))
        n_actions = {"hex": 7, "square": 5}.get(self.walks.kind)     # graph worlds: checked against the worlds
        if n_actions is not None and section.n_actions != n_actions:
            raise ValueError(f"{self.section_name}.n_actions must be {n_actions} for {self.walks.kind} worlds "
                             f"(got {section.n_actions})")

    @property
    def section_name(self) -> str:
        """The config section of the trained model: 'model' (TEM-t) or 'tem'."""
        return "tem" if self.model_kind == "tem" else "model"

    @property
    def model_section(self):
        """The trained model's config: a TEMtConfig or a TEMConfig."""
        return self.tem if self.model_kind == "tem" else self.model

    def _check_unused_section(self) -> None:
        """The section of the model that is not trained must hold its defaults: a TEM key given to a TEM-t run (or
        the reverse) would otherwise be ignored without a word."""
        unused, cls = ("model", TEMtConfig) if self.model_kind == "tem" else ("tem", TEMConfig)
        default, given = to_dict(cls()), to_dict(getattr(self, unused))
        changed = [f"{unused}.{k}" for k in given if given[k] != default[k]]
        if changed:
            owner = "TEM-t" if unused == "model" else "TEM"
            raise ValueError(f"{', '.join(changed)} {'is a' if len(changed) == 1 else 'are'} {owner} key"
                             f"{'' if len(changed) == 1 else 's'}, but this run trains model_kind="
                             f"{self.model_kind}, which does not read the {unused!r} section (set model_kind="
                             f"{'temt' if unused == 'model' else 'tem'} or remove the key)")


def check_numbers(section: str, cfg, rules: dict[str, tuple[bool, str]]) -> None:
    """rules: {field: (ok, what it must be)}; the first field that is not ok raises, naming `section.field`.
    Written so that NaN fails every rule (every comparison with NaN is False)."""
    for name, (ok, want) in rules.items():
        if not ok:
            raise ValueError(f"{section}.{name} must be {want} (got {getattr(cfg, name)})")


def check_device(device: str, key: str = "train.device", need_available: bool = True) -> None:
    """A device name torch understands (cpu, cuda, cuda:1, mps, ...) and, with need_available, one this machine
    has: checked before any work starts, so a typo never surfaces as a traceback from the middle of a run."""
    import torch
    from temt_core.config import ConfigError
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{key}: {device!r} is not a device name (cpu, cuda, cuda:0, mps, ...)") from None
    if not need_available:
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={device}: no CUDA device is available here (use {key}=cpu)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{key}={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={device}: the MPS backend is not available here (use {key}=cpu)")
