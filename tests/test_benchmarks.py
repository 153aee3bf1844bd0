"""The benchmark scripts run and print JSON, on the CPU with tiny sizes (their numbers are not checked here: speed is
measured by running them, never in tests).

A GPU session has 15 minutes of device time, and benchmarks/gpu_session.sh spends them on these scripts; one that
fails on its arguments or on a renamed import wastes the window. Each is run as gpu_session.sh runs it (from the
repository root with PYTHONPATH, or from benchmarks/), with arguments that take a few seconds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (working directory, script and arguments, keys the JSON must have)
RUNS = [
    (".", ["benchmarks/core_speed.py", "--chunks", "2", "--plain-chunks", "1", "--warmup", "1"], ["runs"]),
    (".", ["benchmarks/long_memory.py", "--steps", "300", "--batch", "2"], []),
    (".", ["benchmarks/population_speed.py", "--members", "2", "--warmup", "1", "--timed", "2", "--pos-dim", "16",
           "--walk", "100"], ["runs"]),
    ("benchmarks", ["landmark_speed.py", "--warmup", "1", "--chunks", "1", "--slow-chunks", "1", "--batch", "4"],
     ["ratios"]),
    ("benchmarks", ["landmark_speed.py", "--interleaved", "--warmup", "1", "--chunks", "2"], ["cpu_ratios"]),
    ("benchmarks", ["graph_step_speed.py", "--members", "2", "--warmup", "2", "--chunks", "2"], []),
    ("benchmarks", ["grouped_read_ab.py", "--warmup", "1", "--steps", "2", "--members", "2"],
     ["grouped_speedup", "population"]),
    ("benchmarks", ["transition_products_ab.py", "--warmup", "1", "--steps", "2", "--members", "2"],
     ["blocks_speedup", "population"]),
    ("benchmarks", ["transition_products_speed.py", "--calls", "20"], ["cases"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("cwd,argv,keys", RUNS, ids=[" ".join(r[1][:2]) for r in RUNS])
def test_benchmark_runs_and_prints_json(cwd, argv, keys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT / cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for key in keys:
        assert key in result, f"{argv[0]}: no {key!r} in its JSON"
