"""The hexagon search's ladder table, built from the recorded runs only (docs/results/hexagon-search/): one row per
arm and stage, with the levers as the pre-registration states them (its arms table in hexagon-search.md).

    python scripts/hexagon_ladder.py [docs/results/hexagon-search]      # prints a markdown table

Screen rows read MEMBER/analysis/metrics.json and MEMBER/metrics.json (6,000 steps, seeds 0 and 1); stage-2 rows read
stage2/MEMBER/analysis-20k/metrics.json and the evaluation at 20,000 steps in stage2/MEMBER/metrics.jsonl; "C6 run"
rows (amendment A2) read the C6 records next to the search's, c6-landmark/ARM-seedS/analysis/metrics.json and
c6-landmark/ARM-seedS/metrics.json, under the arm names of C6_ARMS. Accuracy
is the pre-registered "task solved" measure, zero-shot accuracy on the first 500 steps of the training-time
evaluation (acc_zero_shot_L500). Fractions are of active units, mean over the two analysis worlds.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path


# amendment A2: the C6 runs (docs/results/c6-landmark.md) analysed as search arms, by their names there
C6_ARMS = {"relu-stimulus": "L0", "linear-stimulus": "L1"}


def levers(prereg: Path) -> dict[str, str]:
    """arm -> its levers cell from the pre-registration's arms table (| arm | levers | worlds | analysis size |)."""
    out = {}
    for line in prereg.read_text().splitlines():
        m = re.match(r"^\| ([A-Z]\d|[A-Z]\+) \| (.+?) \| .+ \| .+ \|$", line)
        if m and m.group(1) not in out:        # the arms table comes first; later tables reuse the arm names
            out[m.group(1)] = re.sub(r"\s*\(`[^`]*`\)", "", m.group(2)).replace("`", "")
    return out


def _eval_at(member: Path, step: int) -> dict | None:
    rows = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
    return next((r for r in rows if r.get("split") == "eval" and r["step"] == step), None)


def collect(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(arm, stage) -> seed -> {steps, hex, square, band, zero_shot_L500}."""
    rows: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    stages = (("screen", folder, "analysis", None), ("stage 2", folder / "stage2", "analysis-20k", 20_000),
              ("C6 run", folder.parent / "c6-landmark", "analysis", None))
    for stage, base, analysis, step in stages:
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if (p / analysis / "metrics.json").is_file()):
            arm, seed = d.name.rsplit("-seed", 1)
            if stage == "C6 run":
                if arm not in C6_ARMS:
                    continue
                arm = C6_ARMS[arm]
            m = json.loads((d / analysis / "metrics.json").read_text())["mean_over_worlds"]
            ev = _eval_at(d, step) if step else json.loads((d / "metrics.json").read_text())
            if ev is None:
                continue
            rows[(arm, stage)][int(seed)] = {"steps": ev["step"], "hex": m["frac_grid_of_active"],
                                             "square": m["frac_square_of_active"], "band": m["frac_band_of_active"],
                                             "zero_shot_L500": ev.get("acc_zero_shot_L500")}
    return rows


def _cell(seeds: dict[int, dict], key: str, pct: bool) -> str:
    vals = [seeds[s][key] for s in sorted(seeds) if seeds[s][key] is not None]
    if not vals:
        return "n/a"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.2f}")      # noqa: E731
    mean = sum(vals) / len(vals)
    return f"{f(mean)} ({', '.join(f(v) for v in vals)})" if len(vals) > 1 else f(mean)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default="docs/results/hexagon-search",
                   help="the search's records; its pre-registration is FOLDER/../hexagon-search.md")
    folder = Path(p.parse_args(argv).folder)
    prereg = folder.parent / "hexagon-search.md"
    if not folder.is_dir() or not prereg.is_file():
        p.error(f"{folder} is not a folder of hexagon-search records next to {prereg.name}")
    lev = levers(prereg)
    rows = collect(folder)
    print("| arm | levers | stage | steps | seeds | zero-shot, first 500 steps | hex grid | square grid | band |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = sorted(rows, key=lambda k: (k[0], k[1] != "screen"))
    for arm, stage in order:
        seeds = rows[(arm, stage)]
        steps = sorted({r["steps"] for r in seeds.values()})
        print(f"| {arm} | {lev.get(arm, '')} | {stage} | {', '.join(f'{s:,}' for s in steps)} | "
              f"{', '.join(map(str, sorted(seeds)))} | {_cell(seeds, 'zero_shot_L500', False)} | "
              f"{_cell(seeds, 'hex', True)} | {_cell(seeds, 'square', True)} | {_cell(seeds, 'band', True)} |")
    print("\nCells: mean over seeds (each seed in brackets, in seed order).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
