"""Command line of the spatial package.

    temt-spatial train --config configs/spatial/quick.yaml --out runs/quick [key=value ...]
    temt-spatial train --resume runs/quick [train.steps=4000]
    python -m spatial train ...            (the same)
"""
from __future__ import annotations

import argparse
import sys

from temt_core.checkpoint import CheckpointError, latest_checkpoint
from temt_core.config import ConfigError, load_config
from temt_core.validation import NonFiniteError


def _train(args) -> int:
    from .config import SpatialConfig
    from .train import Trainer, load_run_config, _merge_overrides
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; give changes as key=value overrides, "
                              "not --config")
        config = _merge_overrides(load_run_config(args.resume), args.overrides)
        trainer = Trainer(config, args.resume, resume=True, progress=not args.quiet)
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR (where config, logs, checkpoints and metrics go)")
        config = load_config(SpatialConfig, args.config, args.overrides)
        trainer = Trainer(config, args.out, progress=not args.quiet)
    final = trainer.run()
    print(f"final: acc on revisits {final['acc_revisit']:.3f}, zero-shot {final['acc_zero_shot']:.3f}, "
          f"node agent {final['node_agent']:.3f}, edge agent {final['edge_agent']:.3f}, chance "
          f"{final['chance']:.3f}  ({trainer.run_dir}/metrics.json)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="temt-spatial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train TEM-t on random walks")
    train.add_argument("--config", help="YAML file overriding the defaults (configs/spatial/*.yaml)")
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=500")
    args = parser.parse_args(argv)
    try:
        return {"train": _train}[args.command](args)
    except (ConfigError, CheckpointError, FileExistsError) as err:
        print(f"temt-spatial: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        run_dir = args.resume or args.out
        last = latest_checkpoint(run_dir) if run_dir else None
        print(f"temt-spatial: training diverged: {err}\nNothing was saved after the divergence; the last good "
              f"checkpoint is {last or 'none (it diverged before the first checkpoint)'}.", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
