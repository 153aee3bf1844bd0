"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically, with a format version.

Layout of one checkpoint (a directory):
    tensors.safetensors   model weights, optimizer moments, RNG states, carried model state ...
    meta.json             {"format_version": 2, "sha256": {"tensors.safetensors": ...}, "meta_sha256": ..., ...}:
                          config, step, anything JSON can hold, and the checksums that `load_checkpoint` verifies

A checkpoint is written to `<name>.tmp-<pid>`, its files fsynced, and renamed into place only when complete (the
parent directory is fsynced after the rename), so a crash while saving never leaves a half-written checkpoint under
a real name and never touches the previous one. `LATEST` (a one-line file, replaced atomically) names the newest
complete checkpoint of a run. A file that was damaged afterwards (a bad disk, a partial copy, an edit) fails its
checksum and is reported by name. Version-1 checkpoints (before checksums, 2026-11) are still read, unverified.

Nested state (an optimizer's state_dict, say) goes through `flatten` / `unflatten`: every tensor is moved into
the tensor file under a dotted key and replaced in the JSON by {"__tensor__": key}.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)      # 1: no checksums
TENSORS, META, LATEST = "tensors.safetensors", "meta.json", "LATEST"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, of another format version, or of another config."""


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors inside nested dicts/lists by references, collecting them into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:   # keys keep their type (optimizer state is keyed by int)
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    return obj


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _meta_digest(meta: dict) -> str:
    """Checksum of meta.json's content (without the checksum itself), independent of formatting."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write a checkpoint directory atomically; returns its path. An existing checkpoint at `path` is replaced
    only after the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    _fsync(tmp / TENSORS)
    body = {"format_version": FORMAT_VERSION, **meta, "sha256": {TENSORS: sha256_file(tmp / TENSORS)}}
    body["meta_sha256"] = _meta_digest(body)
    with open(tmp / META, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, path)
    _fsync(path.parent)
    return path


def read_meta(path: str | Path) -> dict:
    """meta.json of a checkpoint, checked (format version, its own checksum) but without reading the tensors."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a directory)")
    for name in (TENSORS, META):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: {name} is missing")
    try:
        meta = json.loads((path / META).read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path / META}: corrupt JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / META}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this temt reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 2:
        if not isinstance(meta.get("sha256"), dict) or TENSORS not in meta["sha256"] or "meta_sha256" not in meta:
            raise CheckpointError(f"{path / META}: the checksums are missing (a version-{version} checkpoint "
                                  "always has them): the file was edited or damaged")
        if meta["meta_sha256"] != _meta_digest(meta):
            raise CheckpointError(f"{path / META}: its checksum does not match its content (the file was edited "
                                  "or damaged)")
    return meta


def verify_checkpoint(path: str | Path) -> dict:
    """Check a checkpoint without loading its tensors: complete, readable meta, checksums match. Returns meta."""
    meta = read_meta(path)
    if meta["format_version"] >= 2:
        digest = sha256_file(Path(path) / TENSORS)
        if digest != meta["sha256"][TENSORS]:
            raise CheckpointError(f"{Path(path) / TENSORS}: checksum mismatch (sha256 {digest[:12]}..., meta.json "
                                  f"says {meta['sha256'][TENSORS][:12]}...): the file is damaged")
    return meta


def load_checkpoint(path: str | Path, require: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint directory written by save_checkpoint; clear errors for every way it can be wrong.
    require: meta keys the caller needs (a missing one is named)."""
    path = Path(path)
    meta = verify_checkpoint(path)
    missing = [k for k in require if k not in meta]
    if missing:
        raise CheckpointError(f"{path / META}: missing key(s) {', '.join(missing)}")
    try:
        tensors = load_file(str(path / TENSORS))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path / TENSORS}: corrupt tensor file ({err})") from None
    return tensors, meta


def write_latest(run_dir: str | Path, name: str) -> None:
    """Point <run_dir>/LATEST at checkpoint `name` (atomic replace)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f"{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, run_dir / LATEST)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    target = Path(run_dir) / pointer.read_text().strip()
    return target if target.is_dir() else None
