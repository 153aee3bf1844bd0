"""The shared run directory (temt_core.rundir): nothing lost by accident, no second writer, damaged checkpoints
detected and skipped, non-finite state never saved, a log that survives a kill mid-write, and no pickle loads."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from temt_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
from temt_core.rundir import RunDir, RunDirError, RunDirWarning, changed_keys
from temt_core.validation import NonFiniteError

ROOT = Path(__file__).resolve().parents[2]


def _save_steps(run, steps, keep=3):
    for s in steps:
        run.save(s, {"w": torch.full((3,), float(s))}, {"step": s}, keep=keep)


# -- creating and opening ----------------------------------------------------------------------------------------

def test_create_refuses_a_directory_that_holds_anything(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 1}\n')        # not a complete run, but it holds a user's log
    with pytest.raises(RunDirError, match=r"already holds files \(metrics.jsonl\).*--overwrite"):
        RunDir.create(d)
    assert (d / "metrics.jsonl").read_text() == '{"step": 1}\n'
    RunDir.create(d, overwrite=True).close()
    assert not (d / "metrics.jsonl").exists()
    RunDir.create(tmp_path / "empty").close()               # absent or empty is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir.create(tmp_path / "file")


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    first = RunDir.create(tmp_path / "run")
    with pytest.raises(RunDirError, match=rf"being written by another process \(pid {os.getpid()}"):
        RunDir.open(tmp_path / "run")
    with pytest.raises(RunDirError, match="being written by another process"):
        RunDir.create(tmp_path / "run", overwrite=True)     # and overwrite never deletes a run being written
    first.close()
    RunDir.open(tmp_path / "run").close()


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from temt_core.rundir import RunDir; "
            f"r = RunDir.create({str(tmp_path / 'run')!r}); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
            RunDir.open(tmp_path / "run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    RunDir.open(tmp_path / "run").close()


def test_open_removes_leftovers_of_a_crashed_save(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _save_steps(run, [1])
    run.close()
    for name in ("checkpoints/step-0000002.tmp-4242", "checkpoints/step-0000001.old-4242"):
        (tmp_path / "run" / name).mkdir()
    (tmp_path / "run" / "LATEST.tmp-4242").write_text("x")
    run = RunDir.open(tmp_path / "run")
    left = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert left == ["step-0000001"] and not (tmp_path / "run" / "LATEST.tmp-4242").exists()
    run.close()


# -- checkpoints -------------------------------------------------------------------------------------------------

def test_pruning_keeps_the_newest_and_never_the_one_just_written(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _save_steps(run, [1, 2, 3, 4], keep=2)
    assert [p.name for p in run.checkpoints()] == ["step-0000003", "step-0000004"]
    assert run.latest().name == "step-0000004"
    _save_steps(run, [5], keep=1)
    assert [p.name for p in run.checkpoints()] == ["step-0000005"]


def test_a_damaged_newest_checkpoint_is_reported_kept_and_skipped(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _save_steps(run, [1, 2, 3])
    newest = run.latest()
    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF                                         # one flipped bit in a tensor
    (newest / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.warns(RunDirWarning, match=r"skipped damaged checkpoint .*step-0000003 .*checksum mismatch"):
        ckpt, tensors, meta = run.resume_point()
    assert ckpt.name == "step-0000002" and meta["step"] == 2 and torch.equal(tensors["w"], torch.full((3,), 2.0))
    assert (tmp_path / "run" / "checkpoints" / "step-0000003.corrupt").is_dir()      # kept, for inspection
    assert run.latest() == ckpt                                                      # LATEST repaired


def test_a_lost_latest_is_recovered_from_the_checkpoints(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _save_steps(run, [1, 2])
    (tmp_path / "run" / "LATEST").unlink()
    with pytest.warns(RunDirWarning, match="LATEST was missing"):
        ckpt, _, meta = run.resume_point()
    assert meta["step"] == 2 and (tmp_path / "run" / "LATEST").read_text().strip() == "checkpoints/step-0000002"


def test_nothing_to_resume_is_a_clear_error(tmp_path):
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(RunDirError, match="no checkpoint to resume from"):
        run.resume_point()
    _save_steps(run, [1])
    (run.latest() / "meta.json").write_text("{")
    with pytest.raises(RunDirError, match=r"no valid checkpoint to resume from: step-0000001: .*corrupt JSON"):
        run.resume_point()


def test_non_finite_state_is_never_saved(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _save_steps(run, [1])
    with pytest.raises(NonFiniteError, match=r"step 2: bad is not finite. The last good checkpoint is .*step-0000001"):
        run.save(2, {"good": torch.ones(2), "bad": torch.tensor([1.0, float("nan")])}, {"step": 2})
    assert run.latest().name == "step-0000001" and [p.name for p in run.checkpoints()] == ["step-0000001"]


def test_checksums_catch_edits_and_missing_keys_are_named(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"w": torch.ones(2)}, {"step": 3})
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta["sha256"]) == {"tensors.safetensors"} and verify_checkpoint(path)["step"] == 3
    meta["step"] = 4                                         # an edited number: the meta checksum fails
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="meta.json: its checksum does not match"):
        load_checkpoint(path)
    del meta["sha256"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checksums are missing"):
        load_checkpoint(path)
    path = save_checkpoint(tmp_path / "ck2", {"w": torch.ones(2)}, {"step": 3})
    with pytest.raises(CheckpointError, match=r"meta.json: missing key\(s\) optimizer, config"):
        load_checkpoint(path, require=("step", "optimizer", "config"))
    (path / "meta.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointError, match="meta.json: corrupt JSON"):
        load_checkpoint(path)


def test_version_1_checkpoints_are_still_read(tmp_path):
    from safetensors.torch import save_file
    old = tmp_path / "v1"
    old.mkdir()
    save_file({"w": torch.ones(2)}, str(old / "tensors.safetensors"))
    (old / "meta.json").write_text(json.dumps({"format_version": 1, "step": 7}))
    tensors, meta = load_checkpoint(old)
    assert meta["step"] == 7 and torch.equal(tensors["w"], torch.ones(2))


# -- the log -----------------------------------------------------------------------------------------------------

def test_log_survives_a_partial_last_line_and_names_a_damaged_one(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.start_log()
    for s in (1, 2, 3):
        run.log({"step": s})
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')                              # killed in the middle of a write
    assert [r["step"] for r in run.read_log()] == [1, 2, 3]
    run.truncate_log(2)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(RunDirError, match=r"metrics.jsonl, line 2: not a JSON object"):
        run.read_log()


def test_changed_keys_names_nested_differences():
    assert changed_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "d": 3, "e": 0}) == ["a.c", "e"]


# -- nothing a user received is unpickled ------------------------------------------------------------------------

def test_no_code_path_unpickles_files():
    """Every load of a file goes through safetensors or JSON (a test that fails if a pickle load comes back)."""
    offenders = []
    for folder in ("temt_core", "spatial", "language", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"torch\.load\(|pickle\.loads?\(|load_state\(|weights_only\s*=\s*False", text):
                offenders.append(f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}: {m.group()}")
    assert not offenders, offenders


class _Payload:
    """Unpickling this runs a command that leaves a marker file (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_never_runs_a_planted_pickle(tmp_path):
    """A language run with Accelerate's pickled files planted in it (the old layout, and next to the new one):
    resume refuses the old layout and ignores stray pickles; the payload never runs."""
    pytest.importorskip("accelerate")
    sys.path.insert(0, str(ROOT / "tests" / "language"))
    from lang_toydata import tiny_overrides, write_toy_root

    from language.train import LanguageConfig, load_run_config, train
    from temt_core.config import load_config
    torch.set_num_threads(1)
    marker = tmp_path / "pwned"
    root = write_toy_root(tmp_path / "toy")
    cfg = load_config(LanguageConfig, None, tiny_overrides(root, **{"train.steps": 20, "train.eval_every": 10}))
    run = tmp_path / "run"
    assert train(cfg, run, stop_after=10)["interrupted"]
    # the old layout: state/ holding Accelerate's pickles, and no checkpoints/
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.yaml", "words.json", "actions.json", "tree_labels.json"):
        (old / name).write_bytes((run / name).read_bytes())
    (old / "state").mkdir()
    torch.save(_Payload(marker), old / "state" / "custom_checkpoint_0.pkl")
    torch.save(_Payload(marker), old / "state" / "random_states_0.pkl")
    with pytest.raises(CheckpointError, match="older temt in Accelerate's pickle format"):
        train(load_run_config(old), old, resume=True)
    # stray pickles next to a new-layout state are never read
    for where in (run, run / "checkpoints" / "step-0000010"):
        torch.save(_Payload(marker), where / "custom_checkpoint_0.pkl")
    summary = train(load_run_config(run), run, resume=True)
    assert summary["steps"] == 20
    time.sleep(0.1)
    assert not marker.exists()


def test_resume_config_fills_keys_the_saved_config_predates():
    """A key added to a config after a run was saved takes its default on resume/load, so old runs keep loading;
    a changed value still refuses, and a saved key the dataclass no longer knows is named."""
    from dataclasses import dataclass

    from temt_core.config import ConfigError
    from temt_core.rundir import check_resume_config, with_defaults

    @dataclass
    class Cfg:
        a: int = 1
        new: str = "old-behaviour"

    old_run = {"a": 1}                                     # saved before `new` existed
    assert with_defaults(Cfg, old_run) == {"a": 1, "new": "old-behaviour"}
    check_resume_config(old_run, {"a": 1, "new": "old-behaviour"}, set(), "run", Cfg)
    with pytest.raises(ConfigError, match="new differ"):
        check_resume_config(old_run, {"a": 1, "new": "other"}, set(), "run", Cfg)
    with pytest.raises(ConfigError, match="new differ"):     # without the class the missing key counts as changed
        check_resume_config(old_run, {"a": 1, "new": "old-behaviour"}, set(), "run")
    with pytest.raises(ConfigError, match="'gone'"):
        with_defaults(Cfg, {"a": 1, "gone": 2})


def test_run_json_records_the_commit_and_the_cpu_model(tmp_path):
    """float32 training is bitwise reproducible on one CPU kind, not across kinds: run.json says which ran it."""
    run = RunDir.create(tmp_path / "run")
    info = run.write_info(seed=3)
    run.close()
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())
    assert on_disk == info and on_disk["seed"] == 3
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        name = next(l for l in cpuinfo.read_text().splitlines() if l.startswith("model name")).split(":", 1)[1]
        assert on_disk["cpu"] == name.strip()
    assert on_disk["cpu"] and re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", on_disk["commit"])
