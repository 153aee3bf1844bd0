"""The hexagon search's advancement rule, applied mechanically to the recorded screen (docs/results/hexagon-search.md,
"Stages (fixed)"): every non-control arm whose hex fraction averaged over its two seeds is at least 5% advances; if
fewer than three do, the three non-control arms with the highest averaged hex fraction (ties: the higher median G60
of active units, averaged the same way); P+ always advances. Also checks the controls' screen conditions.

    python scripts/hexagon_advance.py [docs/results/hexagon-search]      # prints a markdown table and the decision
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

CONTROLS = {"P+", "P2", "P3", "N0", "N1"}   # P2, P3: amendment A3, positive controls that never advance
SEEDS = (0, 1)


def arm_table(folder: Path) -> dict[str, dict]:
    runs = defaultdict(dict)
    for d in sorted(p for p in folder.iterdir() if (p / "analysis" / "metrics.json").is_file()):
        arm, seed = d.name.rsplit("-seed", 1)
        mean = json.loads((d / "analysis" / "metrics.json").read_text())["mean_over_worlds"]
        runs[arm][int(seed)] = mean
    table = {}
    for arm, seeds in runs.items():
        done = [s for s in SEEDS if s in seeds]
        avg = lambda k: sum(seeds[s][k] for s in done) / len(done)
        table[arm] = {"seeds": done, "hex": avg("frac_grid_of_active"), "g60_median": avg("g60_median"),
                      "hex_by_seed": [seeds[s]["frac_grid_of_active"] for s in done]}
    return table


def advance(table: dict[str, dict]) -> list[str]:
    arms = [a for a in table if a not in CONTROLS]
    ranked = sorted(arms, key=lambda a: (table[a]["hex"], table[a]["g60_median"]), reverse=True)
    chosen = [a for a in ranked if table[a]["hex"] >= 0.05]
    if len(chosen) < 3:
        chosen = ranked[:3]
    return chosen + (["P+"] if "P+" in table else [])


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/hexagon-search")
    table = arm_table(folder)
    missing = [f"{a}-seed{s}" for a, t in table.items() for s in SEEDS if s not in t["seeds"]]
    print("| arm | seeds | hex fraction (mean) | by seed | median G60 of active units (mean) |")
    print("|---|---|---|---|---|")
    for arm in sorted(table, key=lambda a: (-table[a]["hex"], -table[a]["g60_median"])):
        t = table[arm]
        print(f"| {arm} | {len(t['seeds'])} | {t['hex']:.3f} | {', '.join(f'{h:.3f}' for h in t['hex_by_seed'])} | "
              f"{t['g60_median']:.3f} |")
    if missing:
        print(f"\nnot decided: missing {', '.join(missing)}")
        return
    print(f"\nadvance to stage 2: {', '.join(advance(table))}")
    n_bad = [a for a in ("N0", "N1") if a in table and max(table[a]["hex_by_seed"]) >= 0.05]
    print(f"negative controls below 5% in every seed: {'yes' if not n_bad else 'NO: ' + ', '.join(n_bad)}")


if __name__ == "__main__":
    main()
