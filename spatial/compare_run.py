"""Claim C6 in one command: TEM against TEM-t on identical walk streams, each model at its own best learning rate.

    python -m spatial compare-run --out runs/compare [--quick] [--jobs 2] [key=value ...]
    (scripts/spatial.sh runs it as one part of the reproduction: <out>/compare/)

Arms (configs/spatial/compare/<arm>.yaml; every arm shares SpatialConfig's walks, batch, chunking and evaluation):
    tem             TEM (Whittington et al. 2020) at its public code's sizes and schedules
    temt-landmark   TEM-t with the paper's whole mechanism set (landmark correction, stimulus query)
    temt-best       the best arm of the project's own results (the hexagon screen's H8 on square worlds)

Stages, each a set of `spatial train` runs that resume after a kill (spatial.jobs):
    1. sweep   every arm, seed 0, lr_max in LR_FACTORS x the default, SWEEP_STEPS steps   -> sweep/<arm>-lr<lr>/
    2. choose  spatial.compare.best_of_sweep per arm (highest final zero-shot accuracy; ties: the lower lr)
    3. seeds   every arm at its chosen lr_max, seeds 0..SEEDS-1, STEPS steps                -> <arm>/seed<s>/
    4. TEM's representations: `spatial analyse` of TEM's seed-0 run (g as position cells, p as memory cells)
    5. report  spatial.compare.write_comparison + TEM's representations                    -> report.md
Full: the sweep runs (5k steps) are separate from the seed runs (50k). Quick: the sweep runs as long as the seed
runs, and the chosen sweep run is the arm's seed 0 (the same config and walks; training it again would repeat it
number for number). Seed 0 is then the best of three at seed 0, for every arm alike.

Quick mode (`--quick`, part of `scripts/spatial.sh --quick`): small worlds (5-6 wide, walks of 200-300 steps),
chunks of 25, a small TEM (g 12+12+8, p 110) with its ramps compressed by 300/20,000, and 300-step runs (a 100-step
sweep ranked TEM's rates by zero-shot accuracies of 0.037-0.041, chance 0.022: noise, so the quick sweep runs the
whole 300 steps). It shows how each model starts learning on a 2-core CPU in a few minutes; it is not the paper's comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .jobs import finished_step, run_logged, train_command

ARMS = {"tem": "configs/spatial/compare/tem.yaml",
        "temt-landmark": "configs/spatial/compare/temt-landmark.yaml",
        "temt-best": "configs/spatial/compare/temt-best.yaml"}
DEFAULT_LR = 0.00094              # TrainConfig.lr_max (TEM's); the sweep multiplies it
LR_FACTORS = (0.5, 1.0, 2.0)      # a small sweep around TEM's rate, the same for every arm (lr_min stays 8e-5)
SEEDS = 3                         # the minimum

# Full: TEM's horizon (the paper: TEM takes up to 50k steps, TEM-t under 20k), every arm to the same number of
# steps so that both curves can show where they reach the criterion. A GPU job for TEM: about 68 CPU-hours per seed
# on the project's 2-core machine (docs/results/tem-2026-12-02.md).
FULL = {"steps": 50_000, "sweep_steps": 5_000, "common": ["train.checkpoint_every=2000", "eval.every=2000"],
        "arm": {}}

# Quick: sized for a 2-core CPU (the time it takes: README.md). TEM costs about 1 CPU-s per 75-step chunk even at
# this size (its per-step attractor and Hebbian updates are many small ops), hence chunks of 25 for every arm.
QUICK_TEM = ["tem.g_modules=[12, 12, 8]", "tem.g_memory=[4, 4, 3]", "tem.f_initial=[0.99, 0.3, 0.09]",
             "tem.c_star_hidden=100",
             # TEM's ramps scaled by 300 / 20,000 (eta 16,000 -> 240, the p and g losses 2,000 -> 30, the L1 on p
             # 4,000 -> 60, lambda 200 -> 3): at full length its Hebbian rate would still be near 0 at step 300
             "tem.lambda_ramp_steps=3", "tem.eta_ramp_steps=240", "tem.p_g_ramp_steps=30",
             "tem.reg_p_anneal_steps=60"]
QUICK = {"steps": 300, "sweep_steps": 300,
         "common": ["walks.sizes=[5, 6]", "walks.walk_length=[200, 300]", "train.chunk_length=25",
                    "train.log_every=25", "train.checkpoint_every=100", "eval.every=50", "eval.steps=500",
                    "eval.n_worlds=8"],
         "arm": {"tem": QUICK_TEM}}
ANALYSIS = {False: ["sizes=[11, 11]", "steps=6050"], True: ["sizes=[6, 6]", "steps=1800"]}   # 50 steps per node


def lr_tag(lr: float) -> str:
    return f"lr{lr:.3g}"


def _plan(quick: bool) -> dict:
    return QUICK if quick else FULL


def _train_jobs(runs: list[tuple[Path, str, list[str], int]], extra: list[str], jobs: int, log_dir: Path,
                run: Callable[[list[str], Path], int]) -> dict[Path, int]:
    """Train (or resume, or skip) each (run_dir, config, overrides, steps), `jobs` at a time; exit code per run."""
    def one(item):
        path, config, overrides, steps = item
        cmd = train_command(path, config, overrides, extra, steps)
        if cmd is None:
            return path, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, run(cmd, log_dir / f"{path.parent.name}-{path.name}.log")
    with ThreadPoolExecutor(jobs) as pool:
        return dict(pool.map(one, runs))


def run_comparison(out: str | Path, quick: bool, jobs: int = 2, extra: list[str] | None = None,
                   arms: list[str] | None = None, run: Callable[[list[str], Path], int] = run_logged) -> Path:
    """All five stages; returns out/report.md. `run` executes one logged command (tests pass a fake)."""
    from .compare import best_of_sweep, write_comparison
    out, extra, arms = Path(out).resolve(), list(extra or []), list(arms or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown comparison arm {unknown[0]!r}; arms are {', '.join(ARMS)}")
    plan = _plan(quick)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    common = lambda arm: plan["common"] + plan["arm"].get(arm, [])            # noqa: E731
    lrs = [round(DEFAULT_LR * f, 8) for f in LR_FACTORS]

    # 1. sweep. TEM first: it is the long pole, so it starts while the TEM-t arms fill the other job
    sweep = {arm: [out / "sweep" / f"{arm}-{lr_tag(lr)}" for lr in lrs] for arm in arms}
    todo = [(out / "sweep" / f"{arm}-{lr_tag(lr)}", ARMS[arm], common(arm) + [f"train.lr_max={lr}", "train.seed=0"],
             plan["sweep_steps"]) for arm in arms for lr in lrs]
    print(f"C6 comparison ({'quick' if quick else 'full'}): sweeping lr_max over {lrs} for {', '.join(arms)}; "
          f"logs in {logs}", flush=True)
    failed = [p for p, rc in _train_jobs(todo, extra, jobs, logs, run).items() if rc]

    # 2. choose, from the sweep runs that finished
    chosen = {}
    for arm in arms:
        done = [p for p in sweep[arm] if finished_step(p) == plan["sweep_steps"]]
        if done:
            best = best_of_sweep(done)
            chosen[arm] = lrs[sweep[arm].index(best)]
            print(f"  {arm}: lr_max {chosen[arm]:.3g} (best of {len(done)})", flush=True)
        else:
            print(f"  {arm}: no sweep run finished; the arm is left out (see {logs})", flush=True)
    (out / "chosen_lr.json").write_text(json.dumps(chosen, indent=2) + "\n")

    # 3. seeds at the chosen rates
    # (when the sweep runs as long as the seed runs, the chosen sweep run is seed 0 itself: the same config and
    # walks, so training it again would repeat it number for number)
    reuse = plan["sweep_steps"] == plan["steps"]
    seed_runs = {arm: [out / "sweep" / f"{arm}-{lr_tag(chosen[arm])}" if reuse and s == 0 else out / arm / f"seed{s}"
                       for s in range(SEEDS)] for arm in chosen}
    todo = [(seed_runs[arm][s], ARMS[arm], common(arm) + [f"train.lr_max={chosen[arm]}", f"train.seed={s}"],
             plan["steps"]) for arm in chosen for s in range(SEEDS) if not (reuse and s == 0)]
    failed += [p for p, rc in _train_jobs(todo, extra, jobs, logs, run).items() if rc]
    for p in failed:
        print(f"  FAILED: {p} (log in {logs})", flush=True)

    # 4. the report, over the runs that finished
    # (seed s of every arm shares seed s's walk stream, so the report compares the seeds that every arm finished)
    common_seeds = [s for s in range(SEEDS) if seed_runs and all(finished_step(runs[s]) == plan["steps"]
                                                                 for runs in seed_runs.values())]
    finished = {arm: [runs[s] for s in common_seeds] for arm, runs in seed_runs.items()} if common_seeds else {}
    if len(common_seeds) < SEEDS:
        print(f"  the report compares seeds {common_seeds}: the others did not finish in every arm", flush=True)
    sweeps = {arm: [p for p in sweep[arm] if finished_step(p) == plan["sweep_steps"]] for arm in chosen}

    # 5. TEM's representations, before the report so that it can link them
    tem0 = seed_runs.get("tem", [None])[0]
    if tem0 is not None and tem0 in finished.get("tem", []) and not (tem0 / "analysis" / "metrics.json").exists():
        rc = run([sys.executable, "-m", "spatial", "analyse", str(tem0)] + ANALYSIS[quick], logs / "tem-analysis.log")
        print(f"  TEM's representations: {'done' if rc == 0 else 'FAILED'}", flush=True)
    if not finished:
        raise RuntimeError(f"no comparison run finished; see the logs in {logs}")
    report = write_comparison(finished, out, sweeps=sweeps, quick=quick,
                              title=f"TEM vs TEM-t, claim C6 ({'quick' if quick else 'full'})")
    if tem0 is not None:
        _append_representations(report, tem0)
    print(f"comparison report: {report} ({(time.time() - started) / 60:.1f} min)", flush=True)
    return report


def _append_representations(report: Path, run: Path) -> None:
    """TEM's cells through the same analysis as TEM-t's (its g as position cells, p as memory cells), appended to
    the comparison report with a link to the analysis's own report and figures."""
    metrics = run / "analysis" / "metrics.json"
    if not metrics.exists():
        return
    m = json.loads(metrics.read_text())["mean_over_worlds"]
    link = run.relative_to(report.parent) / "analysis"
    f = lambda k: "n/a" if m.get(k) is None else f"{m[k]:.3f}"             # noqa: E731
    text = ["", "## TEM's representations", "",
            f"TEM's seed-0 run through `temt-spatial analyse` (its inferred g as the position cells, its conjunctive "
            f"p as the memory cells; mean over the analysis worlds): hexagonal grid cells {f('frac_grid_of_active')} "
            f"and square grid cells {f('frac_square_of_active')} of active g units ({f('active_units')} active), band "
            f"cells {f('frac_band_of_active')}; memory cells' place metric median {f('memory_place_metric_median')}, "
            f"single-field fraction {f('memory_frac_single_field')}. Rate maps and the full tables: "
            f"[{link}/report.md]({link}/report.md).", ""]
    report.write_text(report.read_text().rstrip("\n") + "\n" + "\n".join(text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spatial.compare_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="output directory (default runs/compare or runs/compare-quick)")
    p.add_argument("--quick", action="store_true", help="small version for a 2-core CPU")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (default 2: one per CPU core)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), help="a subset of the arms")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every run")
    args = p.parse_args(argv)
    run_comparison(args.out or ("runs/compare-quick" if args.quick else "runs/compare"), args.quick, args.jobs,
                   args.overrides, args.arms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
