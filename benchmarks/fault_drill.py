"""Fault drill for the run directory: kill -9 at random moments and damage files, then resume; prints JSON.

    python benchmarks/fault_drill.py [--kills 8] [--seed 0] [--out /tmp/drill]

For each package (a tiny spatial run and a tiny language run on a toy treebank written here) it trains once without
interruption, then trains the same config again in rounds: (re)start, SIGKILL at a random moment, then damage the run before the next
resume, in turn: a truncated newest tensor file, a byte flipped in the newest meta.json, a deleted LATEST,
leftover temporary folders, a half-written last log line. A fault "survives"
when the run finishes and its final weights and learning curve equal the uninterrupted run's bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "language"))

SPATIAL = ["model.pos_dim=32", "walks.sizes=[4, 5]", "walks.walk_length=[100, 150]", "train.chunk_length=25",
           "train.steps=800", "train.log_every=10", "train.checkpoint_every=20", "train.keep_checkpoints=3",
           "eval.every=1000", "eval.steps=60", "eval.n_worlds=2", "train.threads=1"]


def language_args(root: Path) -> list[str]:
    from lang_toydata import tiny_overrides
    return tiny_overrides(root, **{"train.steps": 300, "train.eval_every": 10, "train.patience": 100})


def command(package: str, run: Path, args: list[str], resume: bool) -> list[str]:
    prog = [sys.executable, "-m", package, "train"]
    if resume:
        return prog + ["--resume", str(run)] + (["--quiet"] if package == "spatial" else [])
    return prog + ["--out", str(run)] + (["--quiet"] if package == "spatial" else []) + args


def finished(package: str, run: Path) -> bool:
    return (run / ("metrics.json" if package == "spatial" else "train.json")).is_file()


def final_state(package: str, run: Path) -> tuple[dict, list]:
    ckpt = run / (run / "LATEST").read_text().strip()
    tensors = load_file(str(ckpt / "tensors.safetensors"))
    weights = {k: v for k, v in tensors.items() if k.startswith("model.")}
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    drop = ("per_s", "elapsed")
    curve = [{k: v for k, v in r.items() if not any(d in k for d in drop)} for r in rows
             if r.get("split", "train") == "train" or package == "language"]
    return weights, curve


def same(a: tuple[dict, list], b: tuple[dict, list]) -> bool:
    wa, ca = a
    wb, cb = b
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and ca == cb


def damage(run: Path, kind: str, rng: random.Random) -> None:
    ckpts = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir() and "." not in p.name)
    if not ckpts:
        return
    newest = ckpts[-1]
    if kind == "truncate_tensors":
        data = (newest / "tensors.safetensors").read_bytes()
        (newest / "tensors.safetensors").write_bytes(data[: rng.randrange(1, len(data))])
    elif kind == "flip_meta_byte":
        data = bytearray((newest / "meta.json").read_bytes())
        i = rng.randrange(len(data))
        data[i] = (data[i] + 1) % 256
        (newest / "meta.json").write_bytes(bytes(data))
    elif kind == "delete_latest":
        (run / "LATEST").unlink(missing_ok=True)
    elif kind == "leftover_tmp":
        (run / "checkpoints" / f"{newest.name}.tmp-99999").mkdir(exist_ok=True)
        (run / "LATEST.tmp-99999").write_text("garbage")
    elif kind == "partial_log_line":
        with open(run / "metrics.jsonl", "a") as f:
            f.write('{"step": 99999, "spl')


def drill(package: str, args: list[str], out: Path, kills: int, rng: random.Random) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    reference = out / f"{package}-reference"
    t0 = time.time()
    subprocess.run(command(package, reference, args, False), check=True, env=env, capture_output=True)
    duration = time.time() - t0
    run = out / f"{package}-drilled"
    kinds = ["truncate_tensors", "flip_meta_byte", "delete_latest", "leftover_tmp", "partial_log_line"]
    faults, log, resume = 0, [], False
    for i in range(kills):                 # a round: (re)start, SIGKILL at a random moment, then damage a file
        proc = subprocess.Popen(command(package, run, args, resume), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 0.6) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            faults += 1
            log.append(f"kill -9 #{i + 1}")
        _, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGKILL):
            log.append(f"round {i + 1} failed: {err.strip().splitlines()[-1:]}")
        resume = (run / "LATEST").is_file() or any((run / "checkpoints").glob("step-*"))
        if not resume and run.exists():
            shutil.rmtree(run)            # killed before its first checkpoint: nothing to resume, start again
        if finished(package, run):
            break
        if len([c for c in (run / "checkpoints").glob("step-*") if "." not in c.name]) >= 2:
            # damage only where an older valid checkpoint exists: with its only checkpoint damaged a run cannot
            # resume (it says so by name, which the tests check), and the drill measures recovery
            kind = kinds[i % len(kinds)]
            damage(run, kind, rng)
            faults += 1
            log.append(kind)
    result = subprocess.run(command(package, run, args, True), env=env, capture_output=True, text=True)
    ok = result.returncode == 0 and finished(package, run) and same(final_state(package, reference),
                                                                     final_state(package, run))
    survived = faults if ok else 0        # every fault survived only if the end state is bit-exact
    return {"faults": faults, "survived": survived, "bit_exact": ok, "faults_applied": log,
            "reference_seconds": round(duration, 1), "last_rc": result.returncode,
            "last_stderr": result.stderr.strip().splitlines()[-3:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=8, help="rounds of kill -9 + file damage per package")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/temt-fault-drill")
    a = p.parse_args()
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(a.seed)
    from lang_toydata import write_toy_root
    root = write_toy_root(out / "toydata")
    report = {"spatial": drill("spatial", SPATIAL, out, a.kills, rng),
              "language": drill("language", language_args(root), out, a.kills, rng)}
    report["total"] = {k: sum(report[p][k] for p in ("spatial", "language")) for k in ("faults", "survived")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
