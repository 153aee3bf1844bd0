"""Command line of the language package: `temt-language ...` (the same as `python -m language ...`).

    temt-language train --config configs/language/quick.yaml --out runs/lang/g model.pos=grammar \
        model.structure=joint
    temt-language train --resume runs/lang/g [train.steps=4000]
    temt-language evaluate runs/lang/g [--split dev]          # test is scored once per run
    temt-language evaluate runs/lang/g runs/lang/s --file my.conllu   # any treebank file, runs side by side
    temt-language pairs runs/lang/g runs/lang/s [--limit 300]  # agreement minimal pairs (EWT test) -> RUN/pairs.json
    temt-language study --quick                               # = scripts/language.sh --quick
    temt-language actions ../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu [--labels] [--show 3]
    temt-language actions --spacy en_core_web_sm "Any raw text."   # needs that pipeline installed
    temt-language export runs/lang/sin/seed0 hf_out           # Hugging Face save_pretrained
    temt-language parser --out parsers/ud-ewt                 # a UD-label spaCy parser for raw text (offline)
    temt-language config [--config FILE] [key=value ...]      # the resolved config, as YAML
    temt-language config --list                               # every key with its default and its meaning
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from temt_core.checkpoint import CheckpointError
from temt_core.config import ConfigError, load_config, merge_overrides
from temt_core.rundir import show_warnings_plainly
from temt_core.validation import NonFiniteError

from .trees import TreebankError

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "language"


def _train(args) -> int:
    from .train import LanguageConfig, load_run_config, train
    if args.resume:
        if args.overwrite:
            raise ConfigError("--overwrite starts a new run; it cannot be combined with --resume")
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; give changes as key=value overrides")
        cfg = merge_overrides(LanguageConfig, load_run_config(args.resume), args.overrides)
        summary = train(cfg, args.resume, resume=True)
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR")
        cfg = load_config(LanguageConfig, args.config, args.overrides)
        summary = train(cfg, args.out, overwrite=args.overwrite)
    print(f"best dev {summary['best_dev']:.2f} at step {summary['best_step']} of {summary['steps']} "
          f"({summary['tokens_per_s']:.0f} tokens/s)")
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from .evaluate import ppl
    from .study import evaluate_run
    if args.file:
        return _evaluate_file(args)
    if args.proposal_bound:
        return _proposal_bound(args)
    if len(args.run_dirs) != 1:
        raise ConfigError("evaluate takes one run for a split; several runs side by side need --file F")
    res = evaluate_run(args.run_dirs[0], args.split, force=args.force, overrides=args.set, parser=args.parser)
    n = np.array(res["n_tokens"])
    w, a = np.array(res["word_nll"]), np.array(res["action_nll"])
    print(f"{args.split}: word ppl (exact, or conditional on gold actions) {ppl(w, n):.2f}; joint {ppl(w + a, n):.2f}")
    for K, v in res.get("beam", {}).items():
        print(f"  beam {K}: {math.exp(sum(v) / n.sum()):.2f}")
    return 0


def _proposal_bound(args) -> int:
    from .scoring import headline
    from .study import add_proposal_bound
    from .train import load_run_config
    if not args.parser:
        raise ConfigError("--proposal-bound needs --parser PIPELINE (`temt-language parser` builds a UD-label one)")
    for run in args.run_dirs:
        res = add_proposal_bound(run, args.parser, args.split)
        name, value = headline(load_run_config(run), res)
        print(f"{run}: {name} {value:.2f}")
    return 0


def _evaluate_file(args) -> int:
    from .scoring import evaluate_file
    rows = []
    for run in args.run_dirs:
        res = evaluate_file(run, args.file, args.format, args.parser, log=lambda *_: None, overrides=args.set)
        rows.append((run, res["metric"], res["ppl"], 100 * res["oov_rate"], res["sentences"]))
    print(f"{args.file}: {rows[0][4]} sentences")
    print(f"{'run':40s} {'perplexity':>10s}  {'OOV %':>6s}  metric")
    for run, metric, value, oov, _ in rows:
        print(f"{str(run):40s} {value:10.2f}  {oov:6.2f}  {metric}")
    return 0


def _pairs(args) -> int:
    from .minimal_pairs import CATEGORIES, score_run
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0 = every pair), got {args.limit}")
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be >= 1, got {args.beam}")
    results = [(run, score_run(run, args.file, args.lexicon, args.limit, args.beam, args.force, log=lambda *_: None))
               for run in args.run_dirs]
    first = results[0][1]
    print(f"{first['file']}: {first['built']['pairs']} agreement pairs built; chance 50%")
    print(f"{'run':40s} {'scored by':10s} {'pairs':>5s} {'acc %':>6s}  " +
          "  ".join(f"{c:>9s}" for c in CATEGORIES) + "  skipped")
    for run, res in results:
        cats = "  ".join(f"{_pct(res['by_category'][c]):>9s}" for c in CATEGORIES)
        how = f"beam {res['K']}" if res["metric"] == "beam" else "exact"
        skipped = ", ".join(f"{k} {v}" for k, v in res["skipped"].items()) or "none"
        acc = "-" if res["accuracy"] is None else f"{100 * res['accuracy']:.1f}"
        print(f"{str(run):40s} {how:10s} {res['scored']:5d} {acc:>6s}  {cats}  {skipped}")
    return 0


def _pct(cat: dict) -> str:
    return "-" if not cat["n"] else f"{100 * cat['accuracy']:.1f} ({cat['n']})"


def _study(args) -> int:
    from .study import ARMS, QUICK_ARMS, run_study
    from .train import LanguageConfig
    config = args.config or str(CONFIGS / ("quick.yaml" if args.quick else "full.yaml"))
    base = load_config(LanguageConfig, config, args.overrides)
    out = args.out or ("runs/language-quick" if args.quick else "runs/language")
    arms = args.arms.split(",") if args.arms else (QUICK_ARMS if args.quick else list(ARMS))
    seeds = [int(s) for s in args.seeds.split(",")]
    command = "scripts/language.sh " + " ".join(sys.argv[2:])
    report = args.report or str(Path(out) / "report.md")       # docs/results/ only when asked (language.sh)
    run_study(base, out, arms, seeds, report, command=command.strip())
    return 0


def _actions(args) -> int:
    from .actions import ActionConfig, action_names, pair_coverage
    from .trees import from_spacy, load_spacy, read_brackets, read_conllu
    cfg = ActionConfig(labels=args.labels)
    if args.spacy:
        nlp = load_spacy(args.spacy)            # an installed pipeline; nothing is downloaded here
        trees = from_spacy(nlp(" ".join(args.inputs)))
    else:
        trees = []
        for path in args.inputs:
            fmt = args.format or ("conllu" if path.endswith(".conllu") else "brackets")
            t, stats = (read_conllu if fmt == "conllu" else read_brackets)(path, on_error=args.on_error)
            trees.extend(t)
            print(f"{path}: {stats.sentences} sentences, {stats.words} words, skipped {stats.skipped}, "
                  f"multiword ranges {stats.multiword_ranges}, empty nodes {stats.empty_nodes}, traces "
                  f"{stats.traces}")
    print(pair_coverage(trees, cfg.max_up, cfg.max_down))
    for t in trees[: args.show]:
        print(" ".join(f"{w}" for w in t.words))
        print("  " + " ".join(action_names(t, cfg)))
    return 0


def _config(args) -> int:
    from temt_core.config import config_text

    from .train import LanguageConfig
    print(config_text(LanguageConfig, args.config, args.overrides, listing=args.list), end="")
    return 0


def _parser(args) -> int:
    from .parser import build_parser
    best = build_parser(args.out, args.train, args.dev, steps=args.steps, seed=args.seed, gpu=args.gpu)
    print(f"saved {best}: parse raw text with `temt-language actions --spacy {best} \"Some text.\"`")
    return 0


def _export(args) -> int:
    from .hf import export_run
    path = export_run(args.run_dir, args.out)
    print(f"saved {path} (load with transformers.AutoModelForCausalLM.from_pretrained after `import language.hf`)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="temt-language", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one model")
    t.add_argument("--config", metavar="FILE", help="YAML file overriding the defaults (configs/language/*.yaml)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory to create (config, vocabularies, metrics, "
                   "best/ weights, state/ for resume)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last saved state "
                   "(its own config.yaml; changes as key=value)")
    t.add_argument("--overwrite", action="store_true",
                   help="delete what --out holds and start again (without it, a non-empty --out is refused)")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.steps=500 (every key: temt-language config --list)")
    t.set_defaults(fn=_train)
    e = sub.add_parser("evaluate", help="score a run on a split (test: once), or runs side by side on any file")
    e.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    e.add_argument("--split", default="test", choices=["dev", "test"])
    e.add_argument("--file", help="score this CoNLL-U or bracketed treebank file instead (any number of runs); "
                   "writes RUN_DIR/files/<name>.json")
    e.add_argument("--format", choices=["conllu", "brackets", "text"],
                   help="of --file (default by extension: .conllu, .txt = raw text, else brackets)")
    e.add_argument("--parser", help="spaCy pipeline that parses a raw-text --file (default: the run's data.parser)")
    e.add_argument("--set", action="append", metavar="eval.KEY=VALUE",
                   help="how to score, e.g. --set eval.proposals=gold --set eval.beam_until=0.002 (eval.* only)")
    e.add_argument("--force", action="store_true", help="recompute an existing score (never to tune on test)")
    e.add_argument("--proposal-bound", action="store_true",
                   help="add --parser's parses as one more bound to the runs' scored --split (-log p(words, parse); "
                   "the beams are not redone)")
    e.set_defaults(fn=_evaluate)
    q = sub.add_parser("pairs", help="subject-verb agreement minimal pairs: accuracy per run and category")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="language-model runs (conditional arms refused)")
    q.add_argument("--file", help="CoNLL-U file to build pairs from (default: UD EWT test under the run's data "
                   "root; never the train split); other files write RUN_DIR/files/<name>.pairs.json")
    q.add_argument("--lexicon", help="CoNLL-U file of verb forms to flip to (default: UD EWT train)")
    q.add_argument("--limit", type=int, help="score the first N pairs the run's vocabulary can score (0 = all; "
                   "default: the run's eval.pairs)")
    q.add_argument("--beam", type=int, metavar="K", help="beam size for structure-predicting runs (default: the "
                   "run's eval.pairs_beam)")
    q.add_argument("--force", action="store_true", help="recompute an existing RUN_DIR/pairs.json")
    q.set_defaults(fn=_pairs)
    s = sub.add_parser("study", help="the whole study: arms x seeds, report")
    s.add_argument("--quick", action="store_true", help="small version for a 2-core CPU (run time: README.md)")
    s.add_argument("--config")
    s.add_argument("--out")
    s.add_argument("--report", metavar="PATH", help="where to write the report (default OUT/report.md; "
                   "scripts/language.sh writes docs/results/language.md)")
    s.add_argument("--arms", help="comma-separated subset of the arms")
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(fn=_study)
    a = sub.add_parser("actions", help="show action sequences and (up, down) coverage of treebank files")
    a.add_argument("inputs", nargs="+", help="files (or, with --spacy, the text)")
    a.add_argument("--format", choices=["conllu", "brackets"])
    a.add_argument("--labels", action="store_true")
    a.add_argument("--show", type=int, default=2)
    a.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    a.add_argument("--spacy", metavar="PIPELINE", help="parse the text with this installed spaCy pipeline")
    a.set_defaults(fn=_actions)
    r = sub.add_parser("parser", help="train a UD-label dependency parser for raw text (spaCy's training, offline)")
    r.add_argument("--out", required=True, help="directory for the pipeline (OUT/model-best)")
    r.add_argument("--train", help="CoNLL-U training file (default: UD EWT train from the shared data)")
    r.add_argument("--dev", help="CoNLL-U dev file (default: UD EWT dev)")
    r.add_argument("--steps", type=int, default=20_000, help="spaCy training steps (default 20000)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--gpu", type=int, default=-1, help="GPU id for spaCy (default -1: CPU)")
    r.set_defaults(fn=_parser)
    x = sub.add_parser("export", help="save a run as a Hugging Face model (save_pretrained)")
    x.add_argument("run_dir")
    x.add_argument("out")
    x.set_defaults(fn=_export)
    c = sub.add_parser("config", help="print the resolved config as YAML, or (--list) every key and its meaning")
    c.add_argument("--config", metavar="FILE", help="YAML file overriding the defaults (configs/language/*.yaml)")
    c.add_argument("--list", action="store_true",
                   help="every key with its value (the default, unless --config or key=value change it) and its "
                        "meaning")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    c.set_defaults(fn=_config)
    # key=value overrides may also come between or after options (argparse alone stops collecting a positional
    # list at the first option): leftover key=value words join the subcommand's overrides, anything else is refused
    args, extra = p.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        p.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    show_warnings_plainly()
    os.environ.setdefault("MPLBACKEND", "Agg")     # figures go to files only (library code never picks a backend)
    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, TreebankError, FileNotFoundError, NonFiniteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
