"""Compare two arms of recorded study results (results.json files) on the same test sentences, with the
seed-and-sentence bootstrap the study reports (language.evaluate.seed_sentence_bootstrap, 2,000 resamples, seed 0).
Each arm is scored by its headline metric: exact perplexity, or a structure-predicting arm's best bound.

    python scripts/language_compare.py A/results.json grammar B/results.json action_tokens     # PPL(a) / PPL(b)

Run directories do not outlive a machine; the study's results.json (copied into docs/results/) holds every seed's
per-sentence NLL, which is all a comparison needs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from language.evaluate import seed_sentence_bootstrap  # noqa: E402
from language.report import headline  # noqa: E402

N_BOOT = 2000


def seed_nll(arm: dict) -> np.ndarray:
    """(seeds, sentences) NLL of the arm's headline metric (exact, or the best bound)."""
    key, _ = headline(arm)
    return np.array(arm["sentence_nll_seeds"][key], dtype=np.float64)


def compare(arm_a: dict, arm_b: dict, n_boot: int = N_BOOT) -> dict:
    """PPL(a) / PPL(b) with its 95% interval; the two arms must have scored the same test events."""
    if list(arm_a["n_tokens"]) != list(arm_b["n_tokens"]):
        raise SystemExit("the two arms scored different test events: they are not comparable sentence by sentence")
    n = np.array(arm_a["n_tokens"], dtype=np.float64)
    return seed_sentence_bootstrap(seed_nll(arm_a), seed_nll(arm_b), n, n_boot=n_boot, seed=0)


def arm_of(path: str, arm: str) -> dict:
    arms = json.loads(Path(path).read_text())["arms"]
    if arm not in arms:
        raise SystemExit(f"{path}: no arm {arm!r} (it has {', '.join(arms)})")
    return arms[arm]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_a")
    ap.add_argument("arm_a")
    ap.add_argument("results_b")
    ap.add_argument("arm_b")
    args = ap.parse_args()
    r = compare(arm_of(args.results_a, args.arm_a), arm_of(args.results_b, args.arm_b))
    print(json.dumps(r, indent=1))
    print(f"{args.arm_a} / {args.arm_b}: {r['ppl_a']:.2f} / {r['ppl_b']:.2f} = {r['ratio']:.3f} "
          f"[{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]")


if __name__ == "__main__":
    main()
