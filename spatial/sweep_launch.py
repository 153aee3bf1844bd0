"""`temt-spatial sweep FILE --out DIR --processes N`: the sweep in N processes, started by Accelerate's launcher.

The same as typing

    accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no --dynamo_backend no \
        --main_process_port PORT -m spatial sweep FILE --out DIR

(`--multi_gpu` is how Accelerate starts several processes without MPI; on CPUs they meet over gloo, see
spatial/sweep.py) with a free port, so that two sweeps on one machine do not collide on Accelerate's default.
Each rank trains members r, r + N, ... of every group as its own population. On the project's 2-core CPU, two
processes of one thread each trained 8 members of the reference config at 1.8x the walk-steps/s of one process
(docs/results/engine-2026-12-04.md).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from temt_core.config import ConfigError


def under_launcher() -> int:
    """The number of processes of the launch this process belongs to (1 when it was started alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_command(processes: int, sweep_file: str, out: str, resume: bool, quiet: bool, port: int) -> list[str]:
    """The `accelerate launch` command line that runs the sweep in `processes` processes."""
    launcher = Path(sys.executable).parent / "accelerate"           # the console script of this environment
    cmd = [str(launcher) if launcher.exists() else "accelerate", "launch", "--multi_gpu",
           "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "spatial", "sweep", str(sweep_file), "--out", str(out)]
    return cmd + (["--resume"] if resume else []) + (["--quiet"] if quiet else [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_processes(processes: int) -> None:
    """--processes must be >= 1, and inside a launch it must say what the launch already is."""
    if processes < 1:
        raise ConfigError(f"--processes must be >= 1 (got {processes})")
    world = under_launcher()
    if world > 1 and processes not in (1, world):
        raise ConfigError(f"--processes {processes} inside a launch of {world} processes: drop --processes when "
                          "starting the sweep with accelerate launch yourself")


def run_in_processes(processes: int, sweep_file: str, out: str, resume: bool, quiet: bool) -> int:
    """Start the sweep in `processes` processes and wait for them; returns the launcher's exit status.
    What the ranks would refuse at once (a bad sweep file, an --out that holds a sweep, a resume with another
    number of processes) is refused here first, once, before any process starts."""
    from .sweep import check_out, load_sweep
    check_out(Path(out), load_sweep(sweep_file), resume, processes)   # ConfigError naming the file and key, ...
    return _launch(launch_command(processes, sweep_file, out, resume, quiet, free_port()))


def _launch(cmd: list[str]) -> int:
    return subprocess.run(cmd).returncode
