"""The study: every arm x every seed, trained with early stopping on dev, then the test split scored once.

    scripts/language.sh --quick                      # small real version on a 2-core CPU (run time: README.md)
    scripts/language.sh                              # the GPU-sized default (configs/language/full.yaml)
    python -m language study --config configs/language/quick.yaml --out runs/language-quick \
        --report docs/results/language.md [--arms grammar,sinusoidal] [--seeds 0,1,2] [key=value ...]

Arms (spec section 6): baselines with exact word perplexity; the grammar model that predicts its own actions
(joint perplexity and beam marginals); controls (one 'next' action, shuffled actions, fixed Shiv & Quirk
push/pop matrices, actions as token embeddings in a sinusoidal model, action prediction as an auxiliary loss
only); and conditional diagnostics with the gold tree given free (their own table).

Parameter counts are matched: every arm's MLP width is set so that its trainable parameters come closest to the
grammar arm's (`model.match_d_ff`). Token budget and optimiser are the same for all. A re-run skips finished
runs and resumes unfinished ones; a run's test split is scored once (test.json) and never re-scored. Then every
language-model run scores the agreement minimal pairs once (pairs.json; eval.pairs=0 turns them off).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from temt_core.config import ConfigError
from temt_core.rundir import atomic_write_text, cpu_name

from .arms import ARMS, QUICK_ARMS, REFERENCE, Arm  # noqa: F401 (QUICK_ARMS re-exported for the CLI)
from .data import prepare
from .evaluate import ppl
from .model import count_params, match_d_ff
from .report import collect, write_report
from .scoring import device_for, proposal_scores, proposals_for, score_dataset, with_eval_overrides
from .train import LanguageConfig, fill_model_config, load_run_config, load_trained, train


def arm_config(base: LanguageConfig, arm: Arm, seed: int) -> LanguageConfig:
    model = dataclasses.replace(base.model, pos=arm.pos, structure=arm.structure)
    data = dataclasses.replace(base.data, transform=arm.transform)
    train_cfg = dataclasses.replace(base.train, seed=seed)
    return dataclasses.replace(base, model=model, data=data, train=train_cfg)


def matched_configs(base: LanguageConfig, arms: list[Arm], log=print) -> dict[str, LanguageConfig]:
    """Per arm (seed 0), the config with vocabulary sizes filled in and d_ff matched to the reference arm."""
    filled = {}
    cache = {}
    for arm in arms + ([ARMS[REFERENCE]] if REFERENCE not in [a.name for a in arms] else []):
        cfg = arm_config(base, arm, 0)
        key = cfg.data.transform
        if key not in cache:
            cache[key] = prepare(cfg.data, splits=())
        filled[arm.name] = fill_model_config(cfg, cache[key])
    target = count_params(filled[REFERENCE].model)
    out = {}
    for arm in arms:
        cfg = filled[arm.name]
        m = match_d_ff(cfg.model, target) if arm.name != REFERENCE else cfg.model
        out[arm.name] = dataclasses.replace(cfg, model=m)
        log(f"  {arm.name:16s} d_ff {m.d_ff:5d}  params {count_params(m):9d}  (reference {target})")
    return out


def evaluate_run(run_dir: str | Path, split: str = "test", force: bool = False, log=print,
                 overrides: list[str] | None = None, parser: str | None = None) -> dict:
    """Score a trained run on `split` once: per-sentence word/action NLL with gold actions, and beam marginals
    for structure-predicting models. Writes run_dir/<split>.json. Refuses to re-score the test split."""
    run_dir = Path(run_dir)
    out_path = run_dir / f"{split}.json"
    if out_path.exists() and not force:
        if split == "test":
            raise ConfigError(f"{out_path} exists: the test split of this run was already scored (test is touched "
                              "once; pass --force only to recompute the same numbers, never to tune)")
    cfg, model, data, device = _load_for_scoring(run_dir, split, overrides)
    ds = data.splits[split]
    props = proposals_for(cfg, ds, data.trees[split], data.actions, parser) if cfg.model.predicts_structure \
        else None
    res = score_dataset(model, cfg, ds, data.actions, device, log, props)
    atomic_write_text(out_path, json.dumps(res))
    return res


def _load_for_scoring(run_dir: Path, split: str, overrides: list[str] | None):
    """A run's config (eval.* overrides applied), its best model on the scoring device, and `split` encoded with the
    run's own vocabularies."""
    cfg = with_eval_overrides(load_run_config(run_dir), overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device_for(cfg)
    model = load_trained(run_dir, device=device)
    data = prepare(cfg.data, shuffle_seed=cfg.train.seed, splits=(split,), vocab_dir=run_dir)
    return cfg, model, data, device


def add_proposal_bound(run_dir: str | Path, parser: str, split: str = "test", log=print) -> dict:
    """Add a parser's parses as one more bound to a scored split of a structure-predicting run, without redoing
    its beams: -log p(words, parse) per sentence (scoring.proposal_scores), which the best bound then includes.
    Changes nothing else in RUN/<split>.json: the same model, one more valid upper bound, nothing tuned."""
    run_dir = Path(run_dir)
    path = run_dir / f"{split}.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: score the split first (temt-language evaluate {run_dir})")
    saved = load_run_config(run_dir)
    if not saved.model.predicts_structure:
        raise ConfigError(f"{run_dir}: model.structure={saved.model.structure!r} predicts no actions, so a parse "
                          "gives it no bound (its score is exact or conditional already)")
    res = json.loads(path.read_text())
    cfg, model, data, _ = _load_for_scoring(run_dir, split, ["eval.proposals=parser"])
    ds = data.splits[split]
    if len(ds) != len(res["word_nll"]):
        raise ConfigError(f"{path} holds {len(res['word_nll'])} sentences but the split now has {len(ds)}: the data "
                          "changed since it was scored")
    props = proposals_for(cfg, ds, data.trees[split], data.actions, parser)
    res.update(proposal_scores(model, ds["ids"], props, f"parser {parser}"))
    atomic_write_text(path, json.dumps(res))
    missing = sum(v is None for v in res["proposal_nll"])
    log(f"{run_dir}: parser bound added ({len(props) - missing} of {len(props)} sentences parsed as one tree)")
    return res


def _score_pairs(run_dir: Path, ecfg, log=print) -> None:
    """Agreement minimal pairs (language.minimal_pairs) once per language-model run, after its test split; the
    study's eval.pairs / eval.pairs_beam decide how many and the beam K (eval.pairs=0: none). A data root without
    the UD EWT files (raw text, say) has no pairs to build: logged, not an error."""
    from .minimal_pairs import score_run
    try:
        score_run(run_dir, limit=ecfg.pairs, K=ecfg.pairs_beam, log=log)
    except FileNotFoundError as err:
        log(f"  pairs: not scored ({err})")


def run_study(base: LanguageConfig, out: str | Path, arm_names: list[str], seeds: list[int],
              report: str | Path | None, command: str = "", log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [a for a in arm_names if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; options: {', '.join(ARMS)}")
    arms = [ARMS[a] for a in arm_names]
    t_study = time.time()
    log(f"study: {len(arms)} arms x {len(seeds)} seeds -> {out}")
    log("matching parameter counts to the grammar arm:")
    configs = matched_configs(base, arms, log)
    for arm in arms:
        for seed in seeds:
            run_dir = out / arm.name / f"seed{seed}"
            cfg = dataclasses.replace(configs[arm.name],
                                      train=dataclasses.replace(configs[arm.name].train, seed=seed))
            t0 = time.time()
            if (run_dir / "train.json").is_file():
                log(f"{arm.name} seed {seed}: trained already")
            else:
                # resume an interrupted run; one that stopped before its first checkpoint starts again
                resume = (run_dir / "LATEST").is_file()
                summary = train(load_run_config(run_dir) if resume else cfg, run_dir, resume=resume,
                                overwrite=run_dir.exists() and not resume)
                log(f"{arm.name} seed {seed}: {summary['steps']} steps, best dev {summary['best_dev']:.2f} at step "
                    f"{summary['best_step']}, {summary['tokens_per_s']:.0f} tok/s, {summary['seconds']:.0f} s")
            if not (run_dir / "test.json").is_file():
                res = evaluate_run(run_dir, "test", log=log)
                log(f"  test scored: word|gold ppl {ppl(np.array(res['word_nll']), np.array(res['n_tokens'])):.2f} "
                    f"({time.time() - t0:.0f} s for this run)")
            if base.eval.pairs and arm.table != "conditional" and not (run_dir / "pairs.json").is_file():
                _score_pairs(run_dir, base.eval, log)
    results = collect(out, arm_names, seeds)
    results["wall_seconds"] = time.time() - t_study
    results["command"] = command
    results["machine"] = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), " \
                         f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if report:
        write_report(results, base, report, out)
        log(f"report: {report}")
    return results
