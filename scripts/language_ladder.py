"""The language data-scale ladder's pre-registered summary (docs/results/language-ladder.md), from the recorded
study results only: docs/results/language-ladder/N{N}.json, the `results.json` each rung's study wrote (copied there
by scripts/language_ladder.sh, since run directories do not outlive a machine).

    python scripts/language_ladder.py [docs/results/language-ladder]      # prints markdown, writes summary.json

Per rung: PPL(grammar's best bound) / PPL(baseline exact) for sinusoidal and rope, with the 95% interval of the
seed-and-sentence bootstrap the study reports (language.evaluate.seed_sentence_bootstrap, 2,000 resamples, seed 0).
The trend: the least-squares slope of log(ratio) against log(N) over the rungs, with a 95% interval from resampling
the seeds within each rung (2,000 resamples; the test sentences are the same 200 in every rung and are not
resampled here: the question is how the gap moves with data, and the seed spread is what differs between rungs).
Reading (fixed before any result): interval below 0 = "the gap closes with data in grammar's favour", above 0 =
"the gap widens against grammar", else "no trend detected at this scale".
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from language_compare import compare, seed_nll  # noqa: E402  (scripts/, beside this file)

GRAMMAR = "grammar"
BASELINES = ("sinusoidal", "rope")
N_BOOT = 2000


def load_rungs(folder: Path) -> dict[int, dict]:
    rungs = {}
    for path in sorted(folder.glob("N*.json")):
        m = re.fullmatch(r"N(\d+)\.json", path.name)
        if m:
            rungs[int(m.group(1))] = json.loads(path.read_text())
    return dict(sorted(rungs.items()))


def rung_ratio(res: dict, baseline: str) -> dict:
    arms = res["arms"]
    return compare(arms[GRAMMAR], arms[baseline], n_boot=N_BOOT)


def slope(log_n: np.ndarray, log_ratio: np.ndarray) -> float:
    x = log_n - log_n.mean()
    return float((x * (log_ratio - log_ratio.mean())).sum() / (x * x).sum())


def trend(rungs: dict[int, dict], baseline: str, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Slope of log(ratio) on log(N); interval from resampling each arm's seeds within each rung."""
    rng = np.random.default_rng(seed)
    log_n = np.log(np.array(list(rungs), dtype=np.float64))
    sums, totals = [], []
    for res in rungs.values():
        arms = res["arms"]
        sums.append((seed_nll(arms[GRAMMAR]).sum(1), seed_nll(arms[baseline]).sum(1)))    # per-seed total NLL
        totals.append(float(np.sum(arms[GRAMMAR]["n_tokens"])))
    point = np.array([(g.mean() - b.mean()) / t for (g, b), t in zip(sums, totals)])
    slopes = np.empty(n_boot)
    for r in range(n_boot):
        lr = [(rng.choice(g, len(g)).mean() - rng.choice(b, len(b)).mean()) / t for (g, b), t in zip(sums, totals)]
        slopes[r] = slope(log_n, np.array(lr))
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    reading = ("the gap closes with data in grammar's favour" if hi < 0 else
               "the gap widens against grammar" if lo > 0 else "no trend detected at this scale")
    return {"baseline": baseline, "slope": slope(log_n, point), "slope_ci95": [float(lo), float(hi)],
            "reading": reading, "rungs": list(rungs), "resamples": n_boot}


def main(folder: Path) -> None:
    rungs = load_rungs(folder)
    if not rungs:
        raise SystemExit(f"no N*.json study results in {folder}: run scripts/language_ladder.sh first")
    missing = [n for n, r in rungs.items() if not {GRAMMAR, *BASELINES} <= set(r["arms"])]
    if missing:
        raise SystemExit(f"rungs {missing} lack one of the arms {GRAMMAR}, {', '.join(BASELINES)}")
    rows, summary = [], {"rungs": {}, "trend": {}}
    for n, res in rungs.items():
        g = res["arms"][GRAMMAR]
        cells, entry = [], {"grammar_best": g["ppl"]["best"]}
        for b in BASELINES:
            c = rung_ratio(res, b)
            entry[b] = {"ppl": res["arms"][b]["ppl"]["exact"], **c}
            cells.append(f"{c['ratio']:.3f} [{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}]")
        summary["rungs"][n] = entry
        growth = g.get("beam_growth", [])           # per seed: largest K scored and the bound's last change
        kmax = ", ".join(f"{x['K']} ({100 * x['last_change']:.2f}%)" for x in growth) if growth else "-"
        rows.append(f"| {n:,} | {g['ppl']['best']['mean']:.2f} ± {g['ppl']['best']['sd']:.2f} | "
                    f"{entry['sinusoidal']['ppl']['mean']:.2f} ± {entry['sinusoidal']['ppl']['sd']:.2f} | "
                    f"{entry['rope']['ppl']['mean']:.2f} ± {entry['rope']['ppl']['sd']:.2f} | "
                    f"{cells[0]} | {cells[1]} | {kmax} |")
    print("| N train sentences | grammar (best bound) | sinusoidal | rope | grammar / sinusoidal [95%] | "
          "grammar / rope [95%] | grammar's largest K per seed (last change) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    if len(rungs) >= 2:
        for b in BASELINES:
            t = trend(rungs, b)
            summary["trend"][b] = t
            print(f"- against {b}: slope of log(ratio) on log(N) {t['slope']:+.4f}, 95% interval "
                  f"[{t['slope_ci95'][0]:+.4f}, {t['slope_ci95'][1]:+.4f}] over rungs {t['rungs']}: "
                  f"**{t['reading']}**.")
    else:
        print("- trend: needs at least two rungs.")
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/results/language-ladder")
