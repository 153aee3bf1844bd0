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


def _load(run: Path) -> dict | None:
    if not (run / "test.json").is_file():
        return None
    test = json.loads((run / "test.json").read_text())
    train = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else {}
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    return {"test": test, "train": train, "curve": curve}


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
        bounds = [w + a]
        for K, v in test.get("beam", {}).items():
            out[f"beam{K}"] = np.array(v)
            bounds.append(np.array(v))
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
    ax.legend(fontsize=7)
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
    pruned = (f" **This study's beam expands only each hypothesis's {action_top} likeliest actions** (eval.action_top,"
              " a speed option): a valid but looser bound than the beam over all actions." if action_top else
              " The beam expands every action of every hypothesis.")
    L = ["## Language-model perplexities on test (mean ± sd over seeds)", "",
         "Exact: word perplexity of a model that needs no structure. Joint: -log p(words, gold actions) per "
         "word, the cost of predicting each action included. Beam K: the word-synchronous beam over the "
         "model's own actions (an upper bound on its word perplexity). Best bound: per sentence the tightest "
         "of these bounds. Every model predicts the same events (words + EOS, one vocabulary)." + pruned, "",
         "| arm | what | params | exact | joint | " + " | ".join(f"beam {k}" for k in beams) + " | best bound |",
         "|---|---|---:|---:|---:|" + "---:|" * len(beams) + "---:|"]
    for name, a in arms.items():
        if a["kind"] == "conditional":
            continue
        p = a["ppl"]
        cells = [_fmt(p.get("exact")), _fmt(p.get("joint"))] + [_fmt(p.get(f"beam{k}")) for k in beams] + \
            [_fmt(p.get("best")) if "best" in p else _fmt(p.get("exact"))]
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
        L.append(f"- Words: {info.get('words', '?')} types in the shared vocabulary (training words seen at least "
                 f"{d.min_freq} times, the rest <unk>); test events scored: {int(np.sum(a['n_tokens']))} "
                 f"(words + EOS) in {len(a['n_tokens'])} sentences.")
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
