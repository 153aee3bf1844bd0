"""The hexagon search's stage-2 rules, applied mechanically to the recorded runs (docs/results/hexagon-search.md,
"Stages (fixed)" and "Controls (fixed)"; the rules were committed before any run and are only read here):

- an arm whose hex fraction rises by at least 5 points from 10k to 20k steps (mean over its seeds) continues to 50k;
- a seed passes if its hex fraction is >= 15% at its last checkpoint and the task is solved there
  (acc_zero_shot_L500 >= 0.5 in the training-time evaluation at that step);
- an arm grows hexagonal grid cells if every one of its (at least 3) seeds passes; the goal is >= 30% in every seed;
- the positive control P+ must pass in at least one seed, or the search can say nothing about TEM-t's hexagons.

    python scripts/hexagon_stage2_decide.py [docs/results/hexagon-search/stage2]   # a markdown table + decisions
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

CHECKPOINTS = (10_000, 20_000)
RISE, PASS, GOAL, SOLVED, MIN_SEEDS = 0.05, 0.15, 0.30, 0.5, 3


def eval_at(member: Path, step: int) -> dict | None:
    """The training-time evaluation record of a member at `step` (metrics.jsonl), or None."""
    for line in (member / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("split") == "eval" and row["step"] == step:
            return row
    return None


def member_rows(folder: Path) -> dict[str, dict[int, dict]]:
    """arm -> seed -> {step: {"hex", "square", "band", "zero_shot_L500"}} for every recorded analysis."""
    arms: dict[str, dict[int, dict]] = defaultdict(dict)
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and "-seed" in p.name):
        arm, seed = d.name.rsplit("-seed", 1)
        by_step = {}
        for step in CHECKPOINTS:
            a = d / f"analysis-{step // 1000}k" / "metrics.json"
            ev = eval_at(d, step) if (d / "metrics.jsonl").exists() else None
            if a.exists() and ev is not None:
                m = json.loads(a.read_text())["mean_over_worlds"]
                by_step[step] = {"hex": m["frac_grid_of_active"], "square": m["frac_square_of_active"],
                                 "band": m["frac_band_of_active"], "zero_shot_L500": ev["acc_zero_shot_L500"]}
        if by_step:
            arms[arm][int(seed)] = by_step
    return arms


def decide(arms: dict[str, dict[int, dict]]) -> dict[str, dict]:
    out = {}
    for arm, seeds in sorted(arms.items()):
        both = [s for s in sorted(seeds) if all(c in seeds[s] for c in CHECKPOINTS)]
        mean = lambda step: sum(seeds[s][step]["hex"] for s in both) / len(both) if both else None  # noqa: E731
        last = {s: seeds[s][max(seeds[s])] for s in sorted(seeds)}
        passed = {s: r["hex"] >= PASS and r["zero_shot_L500"] >= SOLVED for s, r in last.items()}
        complete = len(both) >= MIN_SEEDS
        rise = mean(CHECKPOINTS[1]) - mean(CHECKPOINTS[0]) if both else None
        out[arm] = {"seeds": sorted(seeds), "complete": complete, "hex_10k": mean(CHECKPOINTS[0]),
                    "hex_20k": mean(CHECKPOINTS[1]), "rise": rise,
                    "continues_to_50k": complete and rise is not None and rise >= RISE,
                    "passed": passed, "grows_hexagons": complete and all(passed.values()),
                    "goal": complete and all(r["hex"] >= GOAL and r["zero_shot_L500"] >= SOLVED
                                             for r in last.values()),
                    "last": last}
    return out


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def main(folder: str = "docs/results/hexagon-search/stage2") -> int:
    decisions = decide(member_rows(Path(folder)))
    print("| arm | seeds (10k and 20k analysed) | hex 10k (mean) | hex 20k (mean) | rise | by seed at the last "
          "checkpoint: hex / square / band / zero-shot L500 | seeds passing | decision |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, d in decisions.items():
        by_seed = "; ".join(f"s{s}: {pct(r['hex'])} / {pct(r['square'])} / {pct(r['band'])} / "
                            f"{r['zero_shot_L500']:.2f}" for s, r in d["last"].items())
        if not d["complete"]:
            verdict = f"waits: {len(d['seeds'])} of {MIN_SEEDS} seeds analysed at 10k and 20k"
        elif d["continues_to_50k"]:
            verdict = "continues to 50k"
        else:
            verdict = ("grows hexagonal grid cells" if d["grows_hexagons"] else "stops at 20k: no hexagons by the rule")
        n_pass = sum(d["passed"].values())
        rise = "n/a" if d["rise"] is None else f"{100 * d['rise']:+.1f} pts"
        print(f"| {arm} | {', '.join(map(str, d['seeds']))} | {pct(d['hex_10k'])} | {pct(d['hex_20k'])} | {rise} | "
              f"{by_seed} | {n_pass} of {len(d['passed'])} | {verdict} |")
    p = decisions.get("P+")
    if p:
        ok = any(p["passed"].values())
        print(f"\nPositive control P+: {'passes' if ok else 'does NOT pass'} in "
              f"{sum(p['passed'].values())} of {len(p['passed'])} seeds (needs >= 1 with hex >= {PASS:.0%})."
              + ("" if ok else " The search cannot say anything about TEM-t's ability to grow hexagons: the "
                               "pipeline did not find them even when they were put in."))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
