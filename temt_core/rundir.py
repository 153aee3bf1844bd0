"""One run directory for both packages: config, provenance, the log, checkpoints with checksums, a lock, resume.

    run = RunDir.create("runs/x")                  # a new run; refuses a directory that already holds anything
    run = RunDir.create("runs/x", overwrite=True)  # ... or deletes what is there, when the user asked for that
    run = RunDir.open("runs/x")                    # an existing run, to resume it
    run.write_config(cfg); run.write_info(seed=0)  # config.yaml, run.json (seed, commit, versions, command line)
    run.log({"step": 100, "loss": 0.5})           # one JSON line in metrics.jsonl
    run.save(100, tensors, meta, keep=2)           # checkpoints/step-0000100, verified, LATEST, older ones pruned
    ckpt, tensors, meta = run.resume_point()       # the newest checkpoint that passes its checksums
    run.truncate_log(meta["step"])                 # drop the rows an interrupted run wrote after that checkpoint
    run.close()                                    # release the lock (the OS releases it if the process dies)

Layout:
    config.yaml  run.json  metrics.jsonl  metrics.json  LATEST  run.lock  checkpoints/step-NNNNNNN/

What it guarantees, and why:
- Nothing a user has is lost by accident: `create` refuses a non-empty directory unless asked to overwrite;
  pruning never deletes the checkpoint just written and verified; a checkpoint that fails its checksum is renamed
  `step-N.corrupt` (kept for inspection), never deleted; a checkpoint whose tensors are not finite is never
  written, so "last good" means good.
- Two trainers never write one run: `run.lock` is held with `flock` while the run is open (a killed process
  releases it, so a kill -9 never leaves a stale lock).
- Resume continues from the newest *valid* checkpoint: `LATEST` is recovered from the checkpoints when it is
  missing or points at a damaged one, and every checkpoint skipped is reported by name (a RunDirWarning).
- The log survives a kill in the middle of a write: a partial last line of metrics.jsonl is dropped on resume; a
  damaged line anywhere else is an error naming the file and line.
- Leftover temporary files of a crashed save (`*.tmp-PID`, `*.old-PID`) are removed when the run is opened.
Only tensors (safetensors) and JSON are ever read back: no pickle, so a run directory from someone else cannot
run code on this machine.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import LATEST, CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint, write_latest
from .config import ConfigError, from_dict, save_config, to_dict
from .validation import NonFiniteError

try:
    import fcntl
except ImportError:                     # not POSIX: no lock (the rest works)
    fcntl = None

CHECKPOINTS, LOCK, LOG, CONFIG, INFO = "checkpoints", "run.lock", "metrics.jsonl", "config.yaml", "run.json"
STEP_DIR = re.compile(r"^step-(\d+)$")
LEFTOVER = re.compile(r"\.(tmp|old)-\d+$")


class RunDirError(CheckpointError):
    """A run directory cannot be used as asked (it exists, is locked, has nothing to resume, ...)."""


class RunDirWarning(UserWarning):
    """Something in a run directory was skipped or repaired (a damaged checkpoint, a lost LATEST)."""


def show_warnings_plainly() -> None:
    """For command-line entry points: print RunDirWarnings as one `warning: ...` line on stderr."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunDirWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    warnings.showwarning = show


def git_commit() -> str:
    """The commit of the code that runs (with -dirty if tracked files changed), or 'unknown'."""
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


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small file so that a crash leaves either the old content or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for k in sorted(set(saved) | set(current)):
        path = f"{prefix}{k}"
        if isinstance(saved.get(k), dict) and isinstance(current.get(k), dict):
            keys += changed_keys(saved[k], current[k], path + ".")
        elif saved.get(k) != current.get(k):
            keys.append(path)
    return keys


def with_defaults(config_cls, saved: dict, where: str = "") -> dict:
    """A saved config dict read through its dataclass: keys added to the config since the run was saved take their
    defaults (which by the project's rule keep the old behaviour), so they never count as changed; a saved key the
    dataclass no longer has is a ConfigError naming it."""
    return to_dict(from_dict(config_cls, saved, where))


def check_resume_config(saved: dict, current: dict, resumable: set[str], where: str, config_cls=None) -> None:
    """A resumed run must be the same experiment: only the keys in `resumable` may differ. With config_cls, keys
    the saved config predates are compared at their defaults (with_defaults)."""
    if config_cls is not None:
        saved = with_defaults(config_cls, saved)
    changed = [k for k in changed_keys(saved, current) if k not in resumable]
    if changed:
        raise ConfigError(f"cannot resume {where} with a different config: {', '.join(changed)} differ (only "
                          f"{', '.join(sorted(resumable))} may change on resume)")


def load_run_config(config_cls, run_dir: str | Path):
    """The resolved config a run directory was trained with."""
    import yaml
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} is missing")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable YAML file ({err})") from None
    return from_dict(config_cls, data or {}, "")


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf: one device sync when all is well."""
    floats = [(k, t) for k, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in floats])
    if bool(ok.all()):
        return []
    return [k for (k, _), good in zip(floats, ok.tolist()) if not good]


class RunDir:
    """A run directory opened for writing by this process (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> "RunDir":
        """A new run in `path`: an absent or empty directory, or (overwrite=True) one whose contents are deleted."""
        held = cls.check_new(path, overwrite)
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock()
        for name in held:                   # only after the lock: never delete a run another trainer is writing
            target = run.path / name.rstrip("/")
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        return run

    @staticmethod
    def check_new(path: str | Path, overwrite: bool = False) -> list[str]:
        """What `create` checks, without touching anything: raises unless `path` may become a new run; returns
        the names it holds (which overwrite=True would delete)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path} exists and is not a directory")
        held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()) if path.exists() else []
        held = [h for h in held if h != LOCK]
        if held and not overwrite:
            shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
            what = "a run" if (path / CONFIG).is_file() else "files"
            raise RunDirError(f"{path} already holds {what} ({shown}): resume it with --resume {path}, choose "
                              "another --out, or pass --overwrite to delete what is there")
        return held

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run, to resume: locked, leftovers of crashed saves removed."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} is not a run directory (it does not exist)")
        run.lock()
        run._remove_leftovers()
        return run

    def lock(self) -> None:
        """Hold run.lock (flock) until close(): a second writer of this directory is refused by name."""
        if fcntl is None:
            return
        f = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirError(f"{self.path} is being written by another process ({holder}); wait for it to finish "
                              "or stop it, then try again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        f.flush()
        self._lock_file = f

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()         # closing releases the flock
            self._lock_file = None

    def _remove_leftovers(self) -> None:
        for folder in (self.path, self.path / CHECKPOINTS):
            if folder.is_dir():
                for p in folder.iterdir():
                    if LEFTOVER.search(p.name):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()

    # -- small files ---------------------------------------------------------------------------------------------

    def write_config(self, config) -> None:
        tmp = self.path / f"{CONFIG}.tmp-{os.getpid()}"
        save_config(config, tmp)
        os.replace(tmp, self.path / CONFIG)

    def write_info(self, **extra: Any) -> dict:
        """run.json: commit, versions, machine and CPU model, command line, start time, plus `extra` (seed,
        parameters, ...). The CPU model is there because float32 training is not bitwise reproducible across CPU
        kinds (their BLAS kernels round differently), while it is on one kind."""
        info = {**extra, "commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "cpu": cpu_name(), "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(self.path / INFO, json.dumps(info, indent=1))
        return info

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=1))

    # -- the log -------------------------------------------------------------------------------------------------

    def start_log(self, name: str = LOG) -> None:
        atomic_write_text(self.path / name, "")

    def log(self, record: dict, name: str = LOG) -> None:
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self, name: str = LOG) -> list[dict]:
        """The rows of metrics.jsonl (or another log); a partial last line (a kill during a write) is dropped."""
        path = self.path / name
        if not path.is_file():
            return []
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines):         # the last line, without its newline: an interrupted write
                    continue
                raise RunDirError(f"{path}, line {i}: not a JSON object ({line[:60]!r})") from None
        return rows

    def truncate_log(self, step: int, name: str = LOG) -> None:
        """Keep only the rows up to `step` (a resumed run writes the later ones again, so none is counted twice)."""
        rows = [r for r in self.read_log(name) if r.get("step", 0) <= step]
        atomic_write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """Checkpoint directories, oldest first (by step)."""
        folder = self.path / CHECKPOINTS
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int = 2) -> Path:
        """Write checkpoints/step-N (refused if any tensor is not finite), verify it, point LATEST at it, and
        prune to the `keep` newest (never the one just written)."""
        bad = non_finite(tensors)
        if bad:
            last = self.latest()
            raise NonFiniteError(f"not saving a checkpoint at step {step}: {', '.join(bad[:5])} "
                                 f"{'is' if len(bad) == 1 else 'are'} not finite. The last good checkpoint is "
                                 f"{last or 'none'}")
        name = f"step-{step:07d}"
        path = save_checkpoint(self.path / CHECKPOINTS / name, tensors, meta)
        verify_checkpoint(path)             # read back: a checkpoint is only "latest" once it is known good
        write_latest(self.path, f"{CHECKPOINTS}/{name}")
        older = [p for p in self.checkpoints() if p != path]
        for old in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(old)
        return path

    def latest(self) -> Path | None:
        """The checkpoint LATEST names, if it exists (not verified)."""
        pointer = self.path / LATEST
        if not pointer.is_file():
            return None
        target = self.path / pointer.read_text(errors="replace").strip()
        return target if target.is_dir() else None

    def resume_point(self, require: tuple[str, ...] = ("step",)) -> tuple[Path, dict[str, torch.Tensor], dict]:
        """The newest checkpoint that passes its checksums and holds the `require`d meta keys. Newer ones that
        fail are renamed step-N.corrupt and reported; LATEST is repaired to point at the one returned."""
        named = self.latest()
        candidates = list(reversed(self.checkpoints()))
        if named is not None and named not in candidates:
            candidates.insert(0, named)
        failures = []
        for ckpt in candidates:
            try:
                tensors, meta = load_checkpoint(ckpt, require=require)
            except CheckpointError as err:
                failures.append((ckpt, str(err)))
                continue
            for bad, why in failures:
                kept = bad.with_name(bad.name + ".corrupt")
                if bad.is_dir() and not kept.exists():
                    os.rename(bad, kept)
                warnings.warn(f"skipped damaged checkpoint {bad} ({why}); kept as {kept.name}; resuming from "
                              f"{ckpt}", RunDirWarning, stacklevel=2)
            if named != ckpt:
                if named is None:
                    warnings.warn(f"{self.path / LATEST} was missing or pointed nowhere; recovered it from the "
                                  f"newest valid checkpoint, {ckpt.name}", RunDirWarning, stacklevel=2)
                write_latest(self.path, str(ckpt.relative_to(self.path)))
            return ckpt, tensors, meta
        if not failures:
            raise RunDirError(f"{self.path} has no checkpoint to resume from (it stopped before its first one: "
                              "start it again with --overwrite)")
        raise RunDirError(f"{self.path}: no valid checkpoint to resume from: "
                          + "; ".join(f"{p.name}: {why}" for p, why in failures))

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
