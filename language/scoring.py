"""Scoring a trained language run: a split of its corpus, or any treebank file, with the run's own vocabularies.

    temt-language evaluate RUN [--split dev]                       # a split of the run's corpus (test: once)
    temt-language evaluate RUN1 RUN2 ... --file F.conllu           # any CoNLL-U or bracketed file, side by side

Every score is per sentence: word NLL with the gold actions given, the action NLL (structure-predicting models),
and the word-synchronous beam bounds (evaluate.beam_marginal) for K in eval.beams, grown past them while the bound
still moves (eval.beam_until). A file is read with the run's action settings, encoded with its vocabularies
(words seen fewer than data.min_freq times in its training split are <unk>: the out-of-vocabulary rate is
reported; a subword run, data.vocab=bpe | unigram, is byte-level and has none), and written to
RUN/files/<file name>.json.

Scores are per word for every vocabulary (n_tokens = words + EOS; a subword sentence's NLL sums its pieces), and
record the vocabulary kind (`vocab`) and how many scored events are <unk> (`unk_events`, `unk_rate`): a word-level
model predicts <unk> as one cheap event instead of the word, so its perplexity is optimistic by that much, where a
subword model pays for every word in full.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from temt_core.checkpoint import CheckpointError

from .actions import CONTINUE, ActionVocab, continuation_flags, expand_for_subwords
from .data import SPECIAL_WORDS, UNK, encode_split, load_word_vocab, make_loader, unk_words, vocab_kind
from .evaluate import beam_marginal, ppl, proposal_logp, score_loader

UNK_ID = SPECIAL_WORDS.index(UNK)


def beam_sizes(ecfg, bound: dict[int, float]):
    """The listed beam sizes, then (eval.beam_until > 0) doubling K until the bound's perplexity moved by less
    than beam_until between the last two sizes, or K reached eval.beam_max. `bound` (K -> perplexity) is filled
    by the caller as it goes; any candidate set gives a valid bound, so every K is a valid upper bound."""
    yield from ecfg.beams
    K = max(ecfg.beams)
    while ecfg.beam_until and K * 2 <= ecfg.beam_max:
        change = beam_growth(ecfg, bound)["last_change"]
        if change is not None and change < ecfg.beam_until:
            return
        K *= 2
        yield K


def beam_growth(ecfg, bound: dict[int, float]) -> dict:
    """The largest K scored, the last relative change of the bound, and whether it stopped moving."""
    ks = sorted(bound)
    change = (bound[ks[-2]] - bound[ks[-1]]) / bound[ks[-2]] if len(ks) > 1 else None
    return {"K": ks[-1] if ks else None, "last_change": change,
            "converged": bool(ecfg.beam_until and change is not None and change < ecfg.beam_until)}


def with_eval_overrides(cfg, overrides: list[str] | None):
    """The run's config with `eval.*` key=value overrides (how it is scored may change; what it is may not)."""
    from temt_core.config import ConfigError, merge_overrides

    from .train import LanguageConfig
    if not overrides:
        return cfg
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"evaluate --set takes eval.* keys only (got {bad[0]!r}): a trained run's data, model "
                          "and training settings are fixed")
    return merge_overrides(LanguageConfig, cfg, overrides)


def device_for(cfg) -> str:
    return "cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu"


def proposals_for(cfg, ds, trees, actions: ActionVocab, parser: str | None = None) -> list | None:
    """eval.proposals as per-sentence action ids: the encoded gold actions, or the parse of each sentence's words
    by a spaCy pipeline (None for a sentence the parser splits in two). Unknown labels map to the overflow action
    without touching the vocabulary's coverage counts."""
    kind = cfg.eval.proposals
    if kind == "none":
        return None
    if kind == "gold":
        return list(ds["actions"])
    from spacy.tokens import Doc

    from temt_core.config import ConfigError

    from .actions import action_names
    from .trees import from_spacy, load_spacy
    name = parser or cfg.data.parser
    if not name:
        raise ConfigError("eval.proposals=parser needs data.parser (a spaCy pipeline; `temt-language parser` "
                          "builds a UD-label one)")
    nlp = load_spacy(name)
    pieces = ds["pieces"] if "pieces" in ds.column_names else [None] * len(trees)
    out = []
    for t, k in zip(trees, pieces):
        doc = Doc(nlp.vocab, words=list(t.words))
        for tok in doc[1:]:                 # the words are one sentence: the parser must not split them
            tok.is_sent_start = False
        parsed = from_spacy(nlp(doc))
        ids = [actions.index.get(a, 0) for a in action_names(parsed[0], cfg.data.actions)] if len(parsed) == 1 \
            else None
        out.append(expand_for_subwords(ids, k, fill=actions.index[CONTINUE]) if ids is not None and k is not None
                   else ids)                                     # subword rows: CONTINUE inside every word
    return out


def continuation_for(ds) -> list | None:
    """Per sentence the beam's continuation flags (subword datasets), or None (word level)."""
    if "pieces" not in ds.column_names:
        return None
    return [continuation_flags(k) for k in ds["pieces"]]


def unk_summary(ds, kind: str) -> dict:
    """The vocabulary kind (data.vocab) and the <unk> words among the scored events (words + EOS; EOS is never
    <unk>)."""
    rows = ds.select_columns([c for c in ("ids", "pieces") if c in ds.column_names]).to_list()
    unk = sum(unk_words(r) for r in rows)
    events = int(sum(ds["n_words"])) + len(rows)
    return {"vocab": kind, "unk_events": int(unk), "events": events,
            "unk_rate": unk / max(events, 1)}


def score_dataset(model, cfg, ds, actions: ActionVocab, device: str, log=print, proposals=None) -> dict:
    """Per-sentence scores of an encoded dataset (see the module docstring), plus action coverage counts, the
    vocabulary kind and the <unk> rate of the scored events (unk_summary).
    proposals: per-sentence action sequences added to every beam's candidates (proposals_for)."""
    loader = make_loader(ds, cfg.eval.max_tokens, shuffle=False)
    t0 = time.time()
    scores = score_loader(model, (_to(b, device) for b in loader))
    res = {k: v.tolist() for k, v in scores.items()}
    res["seconds_score"] = time.time() - t0
    res["unseen_actions"] = sum(actions.unseen.values())
    res["overflow_actions"] = int(actions.overflow_total)
    res["actions_total"] = int(actions.encoded_total)
    res.update(unk_summary(ds, cfg.data.vocab))
    if cfg.model.predicts_structure:
        sents = ds["ids"]
        cont = continuation_for(ds)
        res["beam"], bound = {}, {}
        n_events = sum(res["n_tokens"])
        for K in beam_sizes(cfg.eval, bound):
            t0 = time.time()
            lp = beam_marginal(model, sents, K, action_top=cfg.eval.action_top, proposals=proposals,
                               continuation=cont)
            res["beam"][str(K)] = (-lp).tolist()           # per-sentence -log p_beam(words)
            bound[K] = math.exp(-lp.sum() / n_events)
            log(f"    beam {K:3d}: ppl {bound[K]:9.2f}  ({time.time() - t0:.0f} s)")
        res["beam_growth"] = beam_growth(cfg.eval, bound)
        res["proposals"] = cfg.eval.proposals if proposals is not None else "none"
        if proposals is not None:
            res.update(proposal_scores(model, sents, proposals, cfg.eval.proposals))
    res["eval"] = {"action_top": cfg.eval.action_top, "beam_until": cfg.eval.beam_until,
                   "beam_max": cfg.eval.beam_max}                  # how these bounds were computed (the report)
    return res


def proposal_scores(model, sents, proposals, source: str) -> dict:
    """The proposals' own bound per sentence: -log p(words, proposal) (None where a sentence has none; JSON has
    no infinity), and where the proposals came from. `headline` and the report take it into the best bound."""
    nll = -proposal_logp(model, sents, proposals)
    return {"proposal_nll": [float(v) if math.isfinite(v) else None for v in nll], "proposal_source": source}


def bounds_of(res: dict) -> list[np.ndarray]:
    """Every per-sentence upper bound on -log p(words) a structure-predicting run's scores hold: the gold actions'
    joint NLL, each beam, and the proposals' own NLL (inf where a sentence had none)."""
    w, a = np.array(res["word_nll"]), np.array(res["action_nll"])
    out = [w + a] + [np.array(v) for v in res.get("beam", {}).values()]
    if res.get("proposal_nll") is not None:
        out.append(np.array([math.inf if v is None else v for v in res["proposal_nll"]]))
    return out


def headline(cfg, res: dict) -> tuple[str, float]:
    """The number a run is judged by on these scores: exact word perplexity, the best word-perplexity bound of a
    structure-predicting model, or (structure given) the conditional number, labelled so."""
    n, w = np.array(res["n_tokens"]), np.array(res["word_nll"])
    if cfg.model.predicts_structure:
        return "best bound", ppl(np.min(np.stack(bounds_of(res)), 0), n)
    if cfg.model.structure == "given" or cfg.model.kind == "tree":
        return "conditional (gold structure given)", ppl(w, n)
    return "exact", ppl(w, n)


def evaluate_file(run_dir: str | Path, path: str | Path, fmt: str | None = None, parser: str | None = None,
                  log=print, overrides: list[str] | None = None) -> dict:
    """Score a CoNLL-U or bracketed treebank file, or raw text parsed on the fly (fmt: 'conllu' | 'brackets' |
    'text', default by extension: .conllu, .txt, anything else brackets; text needs `parser`, a spaCy pipeline,
    or the run's own data.parser) with the run's model and vocabularies; returns and writes
    RUN/files/<name>.json with the out-of-vocabulary rate."""
    from temt_core.config import ConfigError

    from .data import read_text
    from .train import load_run_config, load_trained
    from .trees import load_spacy, read_brackets, read_conllu
    run_dir, path = Path(run_dir), Path(path)
    cfg = with_eval_overrides(load_run_config(run_dir), overrides)
    fmt = fmt or {".conllu": "conllu", ".txt": "text"}.get(path.suffix, "brackets")
    if fmt == "text":
        parser = parser or cfg.data.parser
        if not parser:
            raise ConfigError(f"{path}: raw text needs a parser (--parser PIPELINE; `temt-language parser` builds "
                              "a UD-label one)")
        trees, stats = read_text(path, load_spacy(parser), cfg.data.raw_format)
    else:
        trees, stats = (read_conllu if fmt == "conllu" else read_brackets)(path, on_error=cfg.data.on_error)
    words = load_word_vocab(run_dir / "words.json")
    actions = ActionVocab.load(run_dir / "actions.json")
    tree_vocab = ActionVocab.load(run_dir / "tree_labels.json")
    ds = encode_split(trees, words, actions, cfg.data.actions, tree_vocab, cfg.data.transform, cfg.train.seed)
    n_words = int(sum(ds["n_words"]))
    if vocab_kind(words) != cfg.data.vocab:
        raise CheckpointError(f"{run_dir / 'words.json'} is a {vocab_kind(words)} vocabulary, but the run's "
                              f"data.vocab={cfg.data.vocab}")
    oov = unk_summary(ds, cfg.data.vocab)["unk_events"]         # words that are (or hold) <unk>
    device = device_for(cfg)
    props = proposals_for(cfg, ds, trees, actions, parser) if cfg.model.predicts_structure else None
    res = score_dataset(load_trained(run_dir, device=device), cfg, ds, actions, device, log, props)
    kind, value = headline(cfg, res)
    res.update({"file": str(path), "format": fmt, "parser": parser if fmt == "text" else None,
                "sentences": len(trees), "words": n_words, "oov_words": oov,
                "oov_rate": oov / max(n_words, 1), "read": vars(stats), "metric": kind, "ppl": value})
    out = run_dir / "files" / f"{path.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res))
    return res


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
