"""Command line of the spatial package.

    temt-spatial train --config configs/spatial/quick.yaml --out runs/quick [key=value ...]
    temt-spatial train --resume runs/quick [train.steps=4000]
    temt-spatial train --config configs/spatial/tem.yaml --out runs/tem     (TEM, Whittington et al. 2020)
    temt-spatial analyse runs/quick [steps=6000 sizes=[11,11]]   (grid/band/place cells, report.md)
    temt-spatial sweep configs/spatial/sweeps/quick-seeds.yaml --out runs/quick-seeds [--resume] [--processes 2]
    temt-spatial compare --arm tem=RUN,RUN,RUN --arm temt=RUN,RUN,RUN [--sweep tem=RUN,RUN] --out DIR [--quick]
                                                                 (TEM vs TEM-t learning speed, C6: report.md)
    temt-spatial config [--config FILE] [key=value ...]          (the resolved training config, as YAML)
    temt-spatial config --list                                   (every key with its default and its meaning)
    python -m spatial train ...            (the same)
"""
from __future__ import annotations

import argparse
import sys

from temt_core.checkpoint import CheckpointError, latest_checkpoint
from temt_core.config import ConfigError, load_config, merge_overrides
from temt_core.rundir import show_warnings_plainly
from temt_core.validation import NonFiniteError


def _train(args) -> int:
    from .config import SpatialConfig
    from .train import Trainer, load_run_config
    if args.resume:
        if args.overwrite:
            raise ConfigError("--overwrite starts a new run; it cannot be combined with --resume")
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; give changes as key=value overrides, "
                              "not --config")
        config = merge_overrides(SpatialConfig, load_run_config(args.resume), args.overrides)
        trainer = Trainer(config, args.resume, resume=True, progress=not args.quiet)
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR (where config, logs, checkpoints and metrics go)")
        config = load_config(SpatialConfig, args.config, args.overrides)
        trainer = Trainer(config, args.out, progress=not args.quiet, overwrite=args.overwrite)
    final = trainer.run()
    print(f"final: acc on revisits {final['acc_revisit']:.3f}, zero-shot {final['acc_zero_shot']:.3f}, "
          f"node agent {final['node_agent']:.3f}, edge agent {final['edge_agent']:.3f}, chance "
          f"{final['chance']:.3f}  ({trainer.run_dir}/metrics.json)")
    return 0


def _load_run(args, config_cls):
    """Shared by the commands that read a trained run: threads, the command's own config, the model."""
    import torch

    from .analyse import load_trained
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1 (got {args.threads})")
    torch.set_num_threads(args.threads)
    cfg = load_config(config_cls, args.config, args.overrides)
    return (cfg, *load_trained(args.run_dir))


def _analyse(args) -> int:
    from .analyse import AnalysisConfig, analyse_model
    from .report import write_report
    acfg, model, config, step = _load_run(args, AnalysisConfig)
    analysis = analyse_model(model, config, acfg, step=step)
    out = args.out or f"{args.run_dir}/analysis"
    report = write_report(analysis, out, args.run_dir, config, step, acfg)
    mean = analysis.metrics["mean_over_worlds"]
    print(f"grid cells {mean['frac_grid_of_active']:.3f}, square grids {mean['frac_square_of_active']:.3f}, "
          f"band cells {mean['frac_band_of_active']:.3f} of active units (mean over worlds); memory-neuron "
          f"place metric median {mean['memory_place_metric_median']:.3f}  ({report})")
    return 0


def _scaling(args) -> int:
    import json
    from pathlib import Path

    from temt_core.config import to_dict

    from .scaling import ScalingConfig, memory_scaling, plot_scaling
    cfg, model, config, step = _load_run(args, ScalingConfig)
    if config.model_kind != "temt":
        raise ConfigError(f"scaling measures TEM-t's memory store (memories held, deduplication); {args.run_dir} is "
                          f"a model_kind={config.model_kind} run, whose memory is a fixed-size Hebbian matrix")
    rows = memory_scaling(model, config, cfg)
    out = Path(args.out or f"{args.run_dir}/scaling")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps({"run": str(args.run_dir), "step": step, "config": to_dict(cfg),
                                                  "rows": rows}, indent=1))
    fig, _ = plot_scaling(rows)
    fig.savefig(out / "scaling.png", dpi=110)
    for r in rows:
        print(f"dedup {'on ' if r['dedup'] else 'off'} L={r['walk_length']:6d} memories {r['memories_at_end']:7.0f} "
              f"acc {r['acc_revisit_last_quarter']:.3f} zero-shot {r['acc_zero_shot_last_quarter']:.3f} "
              f"{r['ms_per_step']:.2f} ms/step")
    return 0


def _reproduce(args) -> int:
    from .reproduce import ARMS, PARTS, reproduce
    unknown = [a for a in (args.arms or []) if a not in ARMS and a not in PARTS]
    if unknown:
        raise ConfigError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}, parts {', '.join(PARTS)}")
    out = args.out or ("runs/spatial-quick" if args.quick else "runs/spatial")
    reproduce(out, args.quick, args.jobs, args.overrides, args.arms)
    return 0


def _sweep(args) -> int:
    import json
    from pathlib import Path

    from .sweep import run_sweep
    from .sweep_launch import check_processes, run_in_processes, under_launcher
    if args.overrides:
        raise ConfigError(f"sweep takes no key=value overrides (got {' '.join(args.overrides)}); put them under "
                          "base: in the sweep file")
    if not args.out:
        raise ConfigError("sweep needs --out DIR (where the members, checkpoints and summary go)")
    check_processes(args.processes)
    if args.processes > 1 and under_launcher() == 1:        # start the ranks; each runs this function again
        return run_in_processes(args.processes, args.sweep_file, args.out, args.resume, args.quiet)
    try:
        rows = run_sweep(args.sweep_file, args.out, resume=args.resume, progress=not args.quiet)
    except NonFiniteError as err:
        groups = sorted(str(p.parent) for p in Path(args.out).glob("groups/*/LATEST"))
        print(f"temt-spatial: sweep training diverged: {err}\nNothing was saved after the divergence; the groups' "
              f"last good checkpoints are in {', '.join(groups) or 'none (it diverged before the first checkpoint)'}.",
              file=sys.stderr)
        return 3
    if rows is not None:                      # rank 0 (the only process of a plain run) writes the summary
        members = len(json.loads((Path(args.out) / "plan.json").read_text())["members"])
        diverged = json.loads((Path(args.out) / "summary.json").read_text())["diverged"]
        note = f" ({len(diverged)} diverged and were dropped: {', '.join(diverged)})" if diverged else ""
        print(f"sweep: {members} members trained{note}; summary in {args.out}/summary.md (and .csv, .json)")
    return 0


def parse_runs(values: list[str] | None, flag: str) -> dict[str, list[str]]:
    """`--arm NAME=RUN,RUN,...` values (repeated) -> {NAME: [RUN, ...]}; a value without NAME=, without runs, or a
    NAME given twice is a ConfigError naming it."""
    out: dict[str, list[str]] = {}
    for value in values or []:
        name, sep, runs = value.partition("=")
        name = name.strip()
        paths = [r.strip() for r in runs.split(",") if r.strip()]
        if not sep or not name or not paths:
            raise ConfigError(f"{flag} {value!r}: expected NAME=RUN_DIR,RUN_DIR,... (for example {flag} "
                              "tem=runs/c/tem/seed0,runs/c/tem/seed1)")
        if name in out:
            raise ConfigError(f"{flag} {name} is given twice; give each {flag[2:]} once, with all its runs")
        out[name] = paths
    return out


def _compare(args) -> int:
    import json
    import time

    from .compare import write_comparison
    if args.overrides:
        raise ConfigError(f"compare takes no key=value overrides (got {' '.join(args.overrides)}); give runs as "
                          "--arm NAME=RUN,RUN")
    arms = parse_runs(args.arm, "--arm")
    if not arms:
        raise ConfigError("compare needs at least one --arm NAME=RUN_DIR,RUN_DIR,...")
    if not args.out:
        raise ConfigError("compare needs --out DIR (where report.md, comparison.json and the figures go)")
    started = time.perf_counter()
    report = write_comparison(arms, args.out, sweeps=parse_runs(args.sweep, "--sweep") or None, title=args.title,
                              quick=args.quick)
    result = json.loads((report.parent / "comparison.json").read_text())
    num = lambda v, fmt: "n/a" if v is None else format(v, fmt)             # noqa: E731
    for a in result["arms"].values():
        full = a["criterion"]["full"]
        print(f"{a['arm']} ({a['model_kind']}, {len(a['seeds'])} seeds): final zero-shot "
              f"{num(a['final_zero_shot']['mean'], '.3f')}, criterion on the whole walk reached by {full['reached']} "
              f"of {full['of']} seeds, {num(a['ms_per_step'], '.2f')} ms per step")
    for r in result["ratios"]:
        print(f"{r['arm']} vs {r['against']}: {r['steps']['full']['text']}; {r['time_per_step']['text']}")
    print(f"comparison written in {time.perf_counter() - started:.1f} s: {report}")
    return 0


def _config(args) -> int:
    from temt_core.config import config_text

    from .config import SpatialConfig
    print(config_text(SpatialConfig, args.config, args.overrides, listing=args.list), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="temt-spatial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train TEM-t (or TEM: model_kind=tem) on random walks")
    train.add_argument("--config", help="YAML file overriding the defaults (configs/spatial/*.yaml)")
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="delete what --out holds and start again (without it, a non-empty --out is refused)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=500")
    analyse = sub.add_parser("analyse", help="grid, band and place cells of a trained run; writes report.md")
    analyse.add_argument("run_dir")
    analyse.add_argument("--config", help="YAML file with AnalysisConfig fields")
    analyse.add_argument("--out", help="output directory (default RUN_DIR/analysis)")
    analyse.add_argument("--threads", type=int, default=1)
    analyse.add_argument("overrides", nargs="*", metavar="key=value", help="AnalysisConfig overrides, e.g. steps=8000")
    scaling = sub.add_parser("scaling", help="accuracy and cost against walk length / memory size (C7)")
    scaling.add_argument("run_dir")
    scaling.add_argument("--config", help="YAML file with ScalingConfig fields")
    scaling.add_argument("--out", help="output directory (default RUN_DIR/scaling)")
    scaling.add_argument("--threads", type=int, default=1)
    scaling.add_argument("overrides", nargs="*", metavar="key=value")
    rep = sub.add_parser("reproduce", help="train, analyse and report every arm (what scripts/spatial.sh runs)")
    rep.add_argument("--quick", action="store_true", help="small version for a 2-core CPU")
    rep.add_argument("--out", help="output directory (default runs/spatial or runs/spatial-quick)")
    rep.add_argument("--jobs", type=int, default=2, help="arms trained at once (default 2: one per CPU core)")
    rep.add_argument("--arms", nargs="+", help="a subset of the arms (relu, linear, hex) and parts (compare: TEM vs "
                     "TEM-t, C6; conjunctions: two stimulus streams, C8); default all")
    rep.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every arm")
    sw = sub.add_parser("sweep", help="train arms x seeds as populations (many models in one run); summary table")
    sw.add_argument("sweep_file", help="sweep YAML: base_config/base, grid, members, seeds (see spatial/sweep.py)")
    sw.add_argument("--out", help="output directory of the sweep")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out from its checkpoints")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--processes", type=int, default=1,
                    help="train the members in N processes through accelerate launch (default 1; on a 2-core CPU, "
                         "2 trains about 1.8x as many walk-steps per second; resume with the same N)")
    sw.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    cp = sub.add_parser("compare", help="TEM vs TEM-t on the same walks (C6): accuracy against steps and wall-clock "
                        "time, steps and seconds to criterion, time per step, memory; report.md")
    cp.add_argument("--arm", action="append", metavar="NAME=RUN,RUN,...",
                    help="an arm: its name and its run directories (one per seed); repeat for every arm")
    cp.add_argument("--sweep", action="append", metavar="NAME=RUN,RUN,...",
                    help="a learning-rate sweep's run directories, for the sweep table (repeatable)")
    cp.add_argument("--out", help="output directory (report.md, comparison.json, curves.png, curves_by_length.png)")
    cp.add_argument("--title", default="TEM vs TEM-t", help="the report's title")
    cp.add_argument("--quick", action="store_true", help="mark the report as the quick version")
    cp.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    cf = sub.add_parser("config", help="print the resolved training config as YAML, or (--list) every key and its "
                        "meaning")
    cf.add_argument("--config", help="YAML file overriding the defaults (configs/spatial/*.yaml)")
    cf.add_argument("--list", action="store_true", help="every key with its value (the default, unless --config or "
                    "key=value change it) and its meaning")
    cf.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    # key=value overrides may come anywhere (argparse alone stops collecting positionals after an option)
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + extra
    show_warnings_plainly()
    try:
        return {"train": _train, "analyse": _analyse, "scaling": _scaling, "reproduce": _reproduce,
                "sweep": _sweep, "compare": _compare, "config": _config}[args.command](args)
    except (ConfigError, CheckpointError, FileExistsError) as err:
        print(f"temt-spatial: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        if args.command != "train":           # analyse / scaling / reproduce: no training run to point at
            print(f"temt-spatial: error: {err}", file=sys.stderr)
            return 2
        run_dir = args.resume or args.out
        last = latest_checkpoint(run_dir) if run_dir else None
        print(f"temt-spatial: training diverged: {err}\nNothing was saved after the divergence; the last good "
              f"checkpoint is {last or 'none (it diverged before the first checkpoint)'}.", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
