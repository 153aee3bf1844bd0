"""Collect a study's runs into tables, learning curves and a plain-language verdict (docs/results/language.md).

Every number in the report is read from the run directories (test.json, train.json, metrics.jsonl); nothing is
typed in. Means and sds are over seeds; the paired bootstrap resamples test sentences, with each sentence's
negative log-likelihood averaged over seeds first.

Word-perplexity bounds of a structure-predicting model: each beam's sum and the gold path's joint probability
are lower bounds on p(words), so per sentence the largest of them is one too; "best bound" reports that. It is
an upper bound on the model's word perplexity, never an estimate below it.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from temt_core.config import ConfigError

from .arms import ARMS, BASELINE, CONTROLS, REFERENCE, metric_kind
from .evaluate import paired_bootstrap, ppl, seed_sentence_bootstrap
from .minimal_pairs import CATEGORIES
from .scoring import bounds_of


def _load(run: Path) -> dict | None:
    if not (run / "test.json").is_file():
        return None
    test = json.loads((run / "test.json").read_text())
    train = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else {}
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    pairs = json.loads((run / "pairs.json").read_text()) if (run / "pairs.json").is_file() else None
    return {"test": test, "train": train, "curve": curve, "pairs": pairs}     # pairs: None for runs from before


def pairs_summary(per_seed: dict) -> dict | None:
    """One arm's agreement pairs over its seeds (seed -> pairs.json): accuracy per seed overall and per category,
    and the per-pair correctness (seeds, pairs) over the pairs every seed scored, in the first seed's order."""
    per_seed = {s: p for s, p in per_seed.items() if p and p.get("scored")}
    if not per_seed:
        return None
    first = per_seed[min(per_seed)]
    common = set.intersection(*({r["id"] for r in p["pairs"]} for p in per_seed.values()))
    ids = [r["id"] for r in first["pairs"] if r["id"] in common]
    correct = [[by_id[i] for i in ids] for by_id in
               ({r["id"]: bool(r["correct"]) for r in p["pairs"]} for p in per_seed.values())]
    return {"metric": first["metric"], "K": first.get("K"), "action_top": first.get("action_top"),
            "file": first.get("file"), "built": first.get("built", {}).get("pairs"), "skipped": first.get("skipped"),
            "seeds": list(per_seed), "n": [p["scored"] for p in per_seed.values()],
            "accuracy": [p["accuracy"] for p in per_seed.values()],
            "by_category": {c: {"n": first["by_category"][c]["n"],
                                "accuracy": [p["by_category"][c]["accuracy"] for p in per_seed.values()]}
                            for c in first["by_category"]},
            "frequency": first.get("frequency_baseline"), "ids": ids, "correct": correct}


def per_sentence(test: dict, kind: str) -> dict[str, np.ndarray]:
    """-log p per sentence under every metric the run has."""
    w, a = np.array(test["word_nll"]), np.array(test["action_nll"])
    out = {}
    if kind == "exact":
        out["exact"] = w
    elif kind == "conditional":
        out["conditional"] = w
    else:
        out["joint"] = w + a
        out["conditional"] = w
        for K, v in test.get("beam", {}).items():
            out[f"beam{K}"] = np.array(v)
        bounds = bounds_of(test)
        if test.get("proposal_nll") is not None:            # a parser's parse: -log p(words, parse), listed last
            out["parser"] = bounds[-1]
        out["best"] = np.min(np.stack(bounds), 0)
    return out


def collect(out: str | Path, arm_names: list[str], seeds: list[int]) -> dict:
    out = Path(out)
    res = {"arms": {}, "seeds": list(seeds)}
    for name in arm_names:
        arm = ARMS[name]
        kind = metric_kind(arm)
        runs = {s: _load(out / name / f"seed{s}") for s in seeds}
        runs = {s: r for s, r in runs.items() if r is not None}
        if not runs:
            continue
        metrics, sentence_nll = {}, {}
        n_tok = None
        for s, r in runs.items():
            ps = per_sentence(r["test"], kind)
            n_tok = np.array(r["test"]["n_tokens"])
            for m, v in ps.items():
                metrics.setdefault(m, []).append(ppl(v, n_tok))
                sentence_nll.setdefault(m, []).append(v)
        res["arms"][name] = {
            "what": arm.what, "kind": kind, "pos": arm.pos, "structure": arm.structure, "transform": arm.transform,
            "params": runs[min(runs)]["train"].get("params"),
            "ppl": {m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                        "seeds": v} for m, v in metrics.items()},
            "sentence_nll_mean": {m: np.mean(np.stack(v), 0).tolist() for m, v in sentence_nll.items()},
            "sentence_nll_seeds": {m: np.stack(v).tolist() for m, v in sentence_nll.items()},     # (seeds, N)
            "n_tokens": n_tok.tolist(),
            "train": {s: r["train"] for s, r in runs.items()},
            "curves": {s: r["curve"] for s, r in runs.items()},
            "unseen_actions": [r["test"].get("unseen_actions", 0) for r in runs.values()],
            "overflow_actions": [r["test"].get("overflow_actions", 0) for r in runs.values()],
            "actions_total": [r["test"].get("actions_total", 0) for r in runs.values()],
            "beam_growth": [r["test"]["beam_growth"] for r in runs.values() if r["test"].get("beam_growth")],
            "action_top": sorted({r["test"]["eval"]["action_top"] for r in runs.values() if "eval" in r["test"]}),
            "proposal_source": sorted({r["test"]["proposal_source"] for r in runs.values()
                                       if r["test"].get("proposal_source")}),
            "vocab": sorted({r["test"].get("vocab", "word") for r in runs.values()}),
            "unk_rate": [r["test"]["unk_rate"] for r in runs.values() if "unk_rate" in r["test"]],
            "pairs": pairs_summary({s: r.get("pairs") for s, r in runs.items()}),
        }
    return res


def headline(arm: dict) -> tuple[str, np.ndarray]:
    """The metric an arm is judged by: exact PPL, or the best word-PPL bound of a structure-predicting model."""
    key = {"exact": "exact", "conditional": "conditional"}.get(arm["kind"], "best")
    return key, np.array(arm["sentence_nll_mean"][key])


def _seed_nll(arm: dict, key: str) -> np.ndarray | None:
    seeds = arm.get("sentence_nll_seeds", {}).get(key)
    return None if seeds is None else np.array(seeds)


def comparisons(res: dict, n_boot: int = 2000) -> list[dict]:
    """The reference arm against every language-model arm: `n_boot` resamples (the study passes
    `eval.bootstrap`) of the test sentences and, where both arms have several seeds, of the seeds too
    (evaluate.seed_sentence_bootstrap); results from before per-seed NLLs were kept resample sentences only."""
    if n_boot < 1:
        raise ConfigError(f"eval.bootstrap must be >= 1 resample (got {n_boot})")
    arms = res["arms"]
    out = []
    if REFERENCE not in arms:
        return out
    ref_key, ref = headline(arms[REFERENCE])
    n = np.array(arms[REFERENCE]["n_tokens"])
    for name, arm in arms.items():
        if name == REFERENCE or arm["kind"] == "conditional":
            continue
        key, other = headline(arm)
        seeds_a, seeds_b = _seed_nll(arms[REFERENCE], ref_key), _seed_nll(arm, key)
        if seeds_a is not None and seeds_b is not None and min(len(seeds_a), len(seeds_b)) > 1:
            bs = seed_sentence_bootstrap(seeds_a, seeds_b, n, n_boot=n_boot, seed=0)
        else:
            bs = paired_bootstrap(ref, other, n, n_boot=n_boot, seed=0)
        out.append({"a": f"{REFERENCE} ({ref_key})", "b": f"{name} ({key})", "name": name, **bs})
    return out


def _fmt(d: dict | None, digits: int = 1) -> str:
    if not d:
        return "-"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"


def verdict(res: dict, comps: list[dict]) -> str:
    arms = res["arms"]
    if REFERENCE not in arms or BASELINE not in arms:
        return "No verdict: the study did not include both the grammar arm and the sinusoidal baseline."
    c = next(x for x in comps if x["name"] == BASELINE)
    g, s = c["ppl_a"], c["ppl_b"]
    lo, hi = c["ratio_ci95"]
    lines = []
    if hi < 1:
        lines.append(f"**Supported on this data.** The grammar model's word perplexity is at most {g:.1f} (an upper "
                     f"bound from its own beam search, paying for every action it predicts), below the sinusoidal "
                     f"model's exact {s:.1f}; ratio {c['ratio']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] over "
                     f"{_over(c)}.")
    elif lo > 1:
        lines.append(f"**Not supported on this data.** The grammar model's best word-perplexity bound ({g:.1f}) is "
                     f"higher than the sinusoidal model's exact perplexity ({s:.1f}); ratio {c['ratio']:.3f}, 95% CI "
                     f"[{lo:.3f}, {hi:.3f}]. The bound is an upper bound, so the grammar model's true word "
                     "perplexity could be lower, but nothing measured here shows it beating the baseline.")
    else:
        lines.append(f"**Inconclusive on this data.** Grammar bound {g:.1f} vs sinusoidal exact {s:.1f}; ratio "
                     f"{c['ratio']:.3f}, 95% CI over {_over(c)} [{lo:.3f}, {hi:.3f}] includes 1.")
    if "conditional" in arms[REFERENCE]["ppl"]:
        cond = arms[REFERENCE]["ppl"]["conditional"]["mean"]
        lines.append(f"With gold actions given for free the same grammar models score {cond:.1f} (conditional, not a "
                     "language-model perplexity): the gap to the bound above is what the leak would have hidden.")
    base = [x for x in comps if ARMS[x["name"]].structure == "none"]
    if base:
        best = min(base, key=lambda x: x["ppl_b"])
        if best["name"] != BASELINE:
            lo2, hi2 = best["ratio_ci95"]
            side = "below" if hi2 < 1 else "above" if lo2 > 1 else "not reliably different from"
            lines.append(f"The strongest standard baseline here is {best['name']} (exact {best['ppl_b']:.1f}); the "
                         f"grammar bound is {side} it (ratio {best['ratio']:.3f}, 95% CI [{lo2:.3f}, {hi2:.3f}]).")
    ctrl = [x for x in comps if x["name"] in CONTROLS]
    if ctrl:
        better = [x["name"] for x in ctrl if x["ratio_ci95"][1] < 1]
        worse = [x["name"] for x in ctrl if x["ratio_ci95"][0] > 1]
        lines.append("Against the controls, the grammar arm is reliably better than: "
                     f"{', '.join(better) or 'none'}; reliably worse than: {', '.join(worse) or 'none'}; the rest "
                     "are within the bootstrap interval.")
    return " ".join(lines)


def _curves_table(res: dict) -> list[str]:
    arms = res["arms"]
    steps = sorted({row["step"] for a in arms.values() for c in a["curves"].values() for row in c})
    if not steps:
        return []
    names = list(arms)
    lines = ["| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for st in steps:
        cells = []
        for n in names:
            vals = [row["dev"] for c in arms[n]["curves"].values() for row in c if row["step"] == st]
            cells.append(f"{np.mean(vals):.1f}" if vals else "")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(res: dict, path: str | Path) -> None:
    import matplotlib.pyplot as plt          # no matplotlib.use here: the backend is the caller's choice
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, arm in res["arms"].items():
        rows = {}
        for c in arm["curves"].values():
            for row in c:
                rows.setdefault(row["step"], []).append(row["dev"])
        if rows:
            st = sorted(rows)
            ax.plot(st, [np.mean(rows[s]) for s in st], marker=".", label=f"{name} ({arm['kind']})")
    ax.set_xlabel("step")
    ax.set_ylabel("dev perplexity (joint for structure-predicting arms)")
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:      # no arm has curves (e.g. a report of scores only): no legend
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training curves recorded", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _vocab_info(run: Path) -> dict:
    info = {}
    try:
        words = json.loads((run / "words.json").read_text())
        info["words"] = len(words["model"]["vocab"])
        acts = json.loads((run / "actions.json").read_text())
        info["actions"] = len(acts["names"])
        info["coverage"] = acts["meta"].get("coverage", float("nan"))
    except (OSError, KeyError, json.JSONDecodeError):
        pass
    return info


HAND_NOTES_MARKER = "*Everything above this line was written by `language/report.py`"


def write_report(res: dict, base_cfg, path: str | Path, out_dir: str | Path) -> Path:
    """The study's report at `path` (hand notes below the marker kept), the learning-curve figure in `out_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir)
    comps = comparisons(res, n_boot=base_cfg.eval.bootstrap)
    plot_curves(res, out_dir / "learning_curves.png")
    beams = [str(k) for k in base_cfg.eval.beams]
    sections = [
        _header(res, base_cfg, out_dir),
        ["## Verdict", "", verdict(res, comps), ""],
        _lm_table(res["arms"], beams, base_cfg.eval.action_top),
        _conditional_table(res["arms"]),
        _bootstrap_table(comps),
        _pairs_section(res["arms"], base_cfg.eval.bootstrap),
        _sanity_checks(res["arms"], beams),
        _curves_section(res, out_dir),
        _training_table(res["arms"]),
        _data_section(res, base_cfg.data, out_dir),
    ]
    text = "\n".join(line for section in sections for line in section) + "\n"
    path.write_text(with_hand_notes(text, path))
    return path


def _header(res: dict, base_cfg, out_dir: Path) -> list[str]:
    d, m, t = base_cfg.data, base_cfg.model, base_cfg.train
    return [
        "# Language study: grammar-derived positions against standard encodings (claim C10)",
        "",
        f"Generated by `{res.get('command') or 'python -m language study'}` on {datetime.date.today()} "
        f"({res.get('machine', '')}), wall time {res.get('wall_seconds', 0) / 60:.1f} min. Seeds "
        f"{res['seeds']}. Corpus {d.corpus} (train limit {d.train_limit or 'all'}, dev {d.dev_limit or 'all'}, "
        f"test {d.test_limit or 'all'}, max words {d.max_words or 'none'}); model d_model "
        f"{m.d_model}, {m.n_layer} layers, {m.n_head} heads ({m.n_pos_head} TEM-t heads in grammar arms), "
        f"position dim {m.pos_dim}; {t.steps} steps max of {t.max_tokens} tokens, early stopping on dev "
        f"(patience {t.patience} evaluations every {t.eval_every} steps). Run directories: `{out_dir}`.",
        "",
    ]


def _lm_table(arms: dict, beams: list[str], action_top: int = 0) -> list[str]:
    # how the bounds were computed: the scores record it (a re-scored run may differ from the study's config)
    tops = sorted({t for a in arms.values() for t in a.get("action_top", [])}) or [action_top]
    pruned = (f" **This study's beam expands only each hypothesis's {tops[0]} likeliest actions** (eval.action_top,"
              " a speed option): a valid but looser bound than the beam over all actions." if tops == [tops[0]] and
              tops[0] else " The beam expands every action of every hypothesis." if tops == [0] else
              f" **The runs' beams differ in pruning (eval.action_top {tops}; 0 = every action)**.")
    sources = sorted({src for a in arms.values() for src in a.get("proposal_source", [])})
    parser = any("parser" in a["ppl"] for a in arms.values())
    if parser:
        pruned += (f" Parser: -log p(words, the parse of {', '.join(sources)}) per word, one more valid bound (any "
                   "action sequence gives one); the best bound includes it.")
    L = ["## Language-model perplexities on test (mean ± sd over seeds)", "",
         "Exact: word perplexity of a model that needs no structure. Joint: -log p(words, gold actions) per "
         "word, the cost of predicting each action included. Beam K: the word-synchronous beam over the "
         "model's own actions (an upper bound on its word perplexity). Best bound: per sentence the tightest "
         "of these bounds. Every model predicts the same events (words + EOS, one vocabulary)." + pruned, "",
         "| arm | what | params | exact | joint | " + " | ".join(f"beam {k}" for k in beams) +
         (" | parser" if parser else "") + " | best bound |",
         "|---|---|---:|---:|---:|" + "---:|" * (len(beams) + parser) + "---:|"]
    for name, a in arms.items():
        if a["kind"] == "conditional":
            continue
        p = a["ppl"]
        cells = [_fmt(p.get("exact")), _fmt(p.get("joint"))] + [_fmt(p.get(f"beam{k}")) for k in beams] + \
            ([_fmt(p.get("parser"))] if parser else []) + [_fmt(p.get("best")) if "best" in p else _fmt(p.get("exact"))]
        L.append(f"| {name} | {a['what']} | {a['params']} | " + " | ".join(cells) + " |")
    notes = [_growth_note(name, a["beam_growth"]) for name, a in arms.items() if a.get("beam_growth")]
    return L + [""] + [n for n in notes if n] + ([""] if any(notes) else [])


def _growth_note(name: str, growth: list[dict]) -> str:
    """Where the beam stopped: the largest K and how much the bound still moved at the last doubling."""
    rows = [g for g in growth if g.get("last_change") is not None]
    if not rows:
        return ""
    ks = sorted({g["K"] for g in rows})
    changes = [100 * g["last_change"] for g in rows]
    done = sum(g["converged"] for g in rows)
    return (f"- {name}: beam grown to K = {', '.join(map(str, ks))}; the bound's perplexity moved "
            f"{min(changes):.2f}-{max(changes):.2f}% at the last step (stopped moving in {done} of {len(rows)} "
            "seeds); the best bound above includes every K scored.")


def _conditional_table(arms: dict) -> list[str]:
    L = ["## Conditional diagnostic: gold structure given free (NOT language-model perplexities)", "",
         "These models are handed the gold actions (or the whole gold tree) of the sentence they predict, "
         "which describe the words being predicted: the numbers are not comparable with the table above.", "",
         "| arm | what | params | conditional perplexity |", "|---|---|---:|---:|"]
    for name, a in arms.items():
        if "conditional" in a["ppl"] and a["kind"] != "exact":
            L.append(f"| {name} | {a['what'] if a['kind'] == 'conditional' else 'gold actions given to: ' + a['what']}"
                     f" | {a['params']} | {_fmt(a['ppl']['conditional'])} |")
    return L + [""]


def _over(c: dict) -> str:
    if c.get("resampled") == "seeds and sentences":
        return f"training seeds ({c['seeds_a']} and {c['seeds_b']}) and test sentences"
    return "test sentences (one set of seeds)"


def _bootstrap_table(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    L = ["## Bootstrap over seeds and test sentences (grammar arm against each arm)", "",
         "Each resample draws the test sentences (the same for both arms) and each arm's seeds with replacement; "
         "the grammar arm is scored by its best bound. ratio = PPL(grammar) / PPL(other): below 1 favours grammar. "
         "p = fraction of resamples in which grammar is not better.", "",
         "| comparison | PPL grammar | PPL other | ratio | 95% CI | resampled | p |",
         "|---|---:|---:|---:|---:|---|---:|"]
    for c in comps:
        L.append(f"| {c['a']} vs {c['b']} | {c['ppl_a']:.2f} | {c['ppl_b']:.2f} | {c['ratio']:.3f} | "
                 f"[{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}] | {_over(c)} | "
                 f"{c['p_a_not_better']:.3f} |")
    return L + [""]


def pairs_bootstrap(ca: np.ndarray, cb: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of arm a minus arm b on the same minimal pairs. ca (Sa, N), cb (Sb, N): per-seed, per-pair
    correctness (0/1). The point estimate averages each pair's correctness over seeds; each resample draws the
    pairs (the same for both arms) and, independently for each arm, its seeds with replacement (as
    evaluate.seed_sentence_bootstrap does for perplexity). p = fraction of resamples where a is not better."""
    ca, cb = np.asarray(ca, dtype=np.float64), np.asarray(cb, dtype=np.float64)
    if ca.ndim != 2 or cb.ndim != 2 or ca.shape[1] != cb.shape[1] or not ca.shape[1]:
        raise ValueError(f"expected (seeds, pairs) arrays over the same pairs, got {ca.shape} and {cb.shape}")
    rng = np.random.default_rng(seed)
    N = ca.shape[1]
    idx = rng.integers(0, N, size=(n_boot, N))
    acc_a = np.take_along_axis(ca[:, idx].mean(-1).T, rng.integers(0, len(ca), (n_boot, len(ca))), 1).mean(1)
    acc_b = np.take_along_axis(cb[:, idx].mean(-1).T, rng.integers(0, len(cb), (n_boot, len(cb))), 1).mean(1)
    diff = acc_a - acc_b
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"acc_a": float(ca.mean()), "acc_b": float(cb.mean()), "diff": float(ca.mean() - cb.mean()),
            "diff_ci95": [float(lo), float(hi)], "p_a_not_better": float(np.mean(diff <= 0)), "pairs": int(N),
            "seeds_a": int(len(ca)), "seeds_b": int(len(cb)), "resamples": int(n_boot)}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _pct_sd(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return f"{100 * np.mean(v):.1f} ± {100 * sd:.1f}"


def _correct_on(p: dict, ids: list[str]) -> np.ndarray:
    """(seeds, len(ids)) correctness of one arm's pairs summary on the pairs `ids`."""
    where = {i: k for k, i in enumerate(p["ids"])}
    return np.array(p["correct"])[:, [where[i] for i in ids]]


def _pairs_section(arms: dict, n_boot: int) -> list[str]:
    """Agreement minimal pairs per arm; nothing for a study whose runs have no pairs.json (older runs)."""
    have = {n: a["pairs"] for n, a in arms.items() if a.get("pairs")}
    if not have:
        return []
    any_p = next(iter(have.values()))
    L = ["## Agreement minimal pairs", "",
         f"Each pair is a sentence of `{Path(any_p['file'] or '?').name}` and the same sentence with its finite "
         "verb's number flipped (is/are, was/were, has/have, does/do, a lexical verb's VBZ/VBP form; "
         "`language/minimal_pairs.py`); the tree is unchanged. A pair is right when the model gives the grammatical "
         "sentence the lower whole-sentence NLL: chance is 50%. Exact arms are scored by their exact NLL; "
         "structure-predicting arms by the word-synchronous beam bound at one K for both sentences, so their rows "
         "compare two upper bounds: an approximation (the beam may be tighter for one sentence of a pair than for "
         "the other). Categories: the verb (be, have/do, lexical), and attractor (a noun of the opposite number "
         "between subject and verb), which overlaps them. Accuracy in %, mean ± sd over seeds; n = pairs scored "
         f"(built: {any_p['built']}; not scored by the first arm's runs: "
         f"{', '.join(f'{k} {v}' for k, v in (any_p['skipped'] or {}).items()) or 'none'}).", "",
         "| arm | scored by | n | accuracy | " + " | ".join(CATEGORIES) + " |",
         "|---|---|---:|---:|" + "---:|" * len(CATEGORIES)]
    for name, p in have.items():
        how = f"beam K={p['K']}" + (f", top {p['action_top']} actions" if p.get("action_top") else "") \
            if p["metric"] == "beam" else "exact"
        cells = [f"{_pct_sd(p['by_category'][c]['accuracy'])} ({p['by_category'][c]['n']})" for c in CATEGORIES]
        L.append(f"| {name} | {how} | {p['n'][0]} | {_pct_sd(p['accuracy'])} | " + " | ".join(cells) + " |")
    freq = any_p.get("frequency")
    if freq:
        cells = [f"{_pct(freq['by_category'][c]['accuracy'])} ({freq['by_category'][c]['n']})" for c in CATEGORIES]
        L.append(f"| *train frequency* | no model: the form more frequent in the training split | {freq['scored']} "
                 f"| {_pct(freq['accuracy'])} | " + " | ".join(cells) + " |")
    L += ["", "Chance: 50.0 (a pair has two sentences; ties count as wrong). Category cells: accuracy (n pairs). The "
          "train-frequency row (pairs of the first arm's runs) is what preferring the commoner form gets: a model "
          "near it is not yet using its subject.", ""]
    if REFERENCE in have and BASELINE in have:
        a, b = have[REFERENCE], have[BASELINE]
        in_b = set(b["ids"])
        common = [i for i in a["ids"] if i in in_b]
        if common:
            c = pairs_bootstrap(_correct_on(a, common), _correct_on(b, common), n_boot=n_boot, seed=0)
            L += [f"Paired comparison, {REFERENCE} against {BASELINE} on the same {c['pairs']} pairs (per-pair "
                  f"correctness averaged over seeds; {n_boot} resamples of the pairs and of each arm's seeds, "
                  f"{c['seeds_a']} and {c['seeds_b']}): accuracy {100 * c['acc_a']:.1f}% against "
                  f"{100 * c['acc_b']:.1f}%, difference {100 * c['diff']:+.1f} points, 95% CI "
                  f"[{100 * c['diff_ci95'][0]:+.1f}, {100 * c['diff_ci95'][1]:+.1f}]; p ({REFERENCE} not better) "
                  f"= {c['p_a_not_better']:.3f}.", ""]
    return L


def _sanity_checks(arms: dict, beams: list[str]) -> list[str]:
    L = ["## Leak and sanity checks on the trained models", ""]
    for name, a in arms.items():
        if a["kind"] != "joint":
            continue
        p = a["ppl"]
        ks = [k for k in beams if f"beam{k}" in p]
        mono = all(p[f"beam{ks[i]}"]["seeds"][j] >= p[f"beam{ks[i + 1]}"]["seeds"][j] - 1e-9
                   for i in range(len(ks) - 1) for j in range(len(p[f"beam{ks[0]}"]["seeds"])))
        below = all(b <= jn + 1e-9 for b, jn in zip(p[f"beam{ks[-1]}"]["seeds"], p["joint"]["seeds"])) if ks else True
        L.append(f"- {name}: beam perplexity non-increasing in K on every seed: {'yes' if mono else 'NO'}; "
                 f"beam-{ks[-1] if ks else '-'} <= joint on every seed: {'yes' if below else 'NO'}.")
    L.append("- exact <= beam <= joint by enumeration of every action sequence, beam monotone in K, and "
             "\"corrupting actions after t never changes word log-probabilities up to t\" are unit tests "
             "(`tests/language/test_lang_leaks.py`), run on tiny sentences where enumeration is feasible.")
    return L + [""]


def _curves_section(res: dict, out_dir: Path) -> list[str]:
    return ["## Learning curves (dev metric, mean over seeds; joint perplexity for structure-predicting arms)", "",
            *_curves_table(res), "",
            f"Figure: `{out_dir / 'learning_curves.png'}` (in the run directory, not committed).", ""]


def _training_table(arms: dict) -> list[str]:
    L = ["## Training", "", "| arm | seed | steps | best step | stopped early | tokens/s | seconds |",
         "|---|---:|---:|---:|---|---:|---:|"]
    for name, a in arms.items():
        for s, t in a["train"].items():
            L.append(f"| {name} | {s} | {t.get('steps')} | {t.get('best_step')} | {t.get('stopped_early')} | "
                     f"{t.get('tokens_per_s', 0):.0f} | {t.get('seconds', 0):.0f} |")
    return L + [""]


def _data_section(res: dict, d, out_dir: Path) -> list[str]:
    arms = res["arms"]
    L = ["## Data and vocabularies", ""]
    ref = next((n for n in (REFERENCE, *arms) if n in arms), None)
    if ref is not None:
        info = _vocab_info(out_dir / ref / f"seed{res['seeds'][0]}")
        a = arms[ref]
        events = f"test events scored: {int(np.sum(a['n_tokens']))} (words + EOS) in {len(a['n_tokens'])} sentences"
        if d.vocab != "word":
            L.append(f"- Words: {d.vocab} pieces, {info.get('words', '?')} in the vocabulary (byte-level fallback: no "
                     f"test word is <unk>); {events}, each word's NLL summed over its pieces.")
        else:
            unk = a.get("unk_rate") or []
            share = (f"; {100 * float(np.mean(unk)):.1f}% of them are <unk>, one class for every rare word, which "
                     "makes these perplexities optimistic against an open vocabulary") if unk else ""
            L.append(f"- Words: {info.get('words', '?')} types in the shared vocabulary (training words seen at least "
                     f"{d.min_freq} times, the rest <unk>); {events}{share}.")
        L.append(f"- Actions ({ref}): {info.get('actions', '?')} in the vocabulary built from training (caps up "
                 f"{d.actions.max_up}, down {d.actions.max_down}, labels {'on' if d.actions.labels else 'off'}); "
                 f"training coverage inside the caps {info.get('coverage', float('nan')):.4f}; test actions mapped "
                 f"to the overflow action: {a['overflow_actions'][0]} of {a['actions_total'][0]}, of which "
                 f"{a['unseen_actions'][0]} never occurred in training.")
    return L + [""]


def with_hand_notes(text: str, path: Path) -> str:
    """`text` plus whatever an existing report at `path` holds from the hand-notes marker on: provenance,
    benchmarks and disclosures added by hand survive a re-run of the study."""
    if path.exists():
        old = path.read_text()
        at = old.find(HAND_NOTES_MARKER)
        if at >= 0:
            return text + "\n" + old[at:]
    return text
