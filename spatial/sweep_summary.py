"""A sweep's summary: every member's evaluations (summary.csv / .json) and a per-arm table over seeds (summary.md)."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from .sweep_file import Member

DIVERGED = "diverged.json"
SUMMARY_METRICS = ("acc", "acc_revisit", "acc_zero_shot", "acc_first_visit", "node_agent", "edge_agent", "chance",
                   "n_steps", "n_revisit", "n_zero_shot")


def _arm(m: Member) -> str:
    if m.label is not None:
        return m.label
    return ", ".join(f"{k}={v}" for k, v in m.overrides.items() if k != "train.seed") or "base"


def write_summary(out: Path, members: list[Member]) -> list[dict]:
    """summary.csv / .json / .md from every member's metrics.jsonl (rows: member x evaluation)."""
    rows = []
    for m in members:
        d = out / "members" / m.name
        log = d / "metrics.jsonl"
        if not log.is_file():
            continue
        diverged = json.loads((d / DIVERGED).read_text())["step"] if (d / DIVERGED).is_file() else None
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r["split"] != "eval":
                continue
            rows.append({"member": m.name, "group": m.group, "arm": _arm(m), "seed": m.config.train.seed,
                         **{k: _jsonable(v) for k, v in m.overrides.items() if k != "train.seed"},
                         "step": r["step"], "diverged_at": diverged, **{k: r.get(k) for k in SUMMARY_METRICS}})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    arms = _arm_table(rows)
    diverged = {m.name: json.loads((out / "members" / m.name / DIVERGED).read_text())["step"] for m in members
                if (out / "members" / m.name / DIVERGED).is_file()}
    (out / "summary.json").write_text(json.dumps({"rows": rows, "arms": arms, "diverged": diverged}, indent=1))
    (out / "summary.md").write_text(_markdown(rows, arms, diverged))
    return rows


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _last_rows(rows: list[dict]) -> list[dict]:
    last: dict = {}
    for r in rows:
        if r["member"] not in last or r["step"] >= last[r["member"]]["step"]:
            last[r["member"]] = r
    return list(last.values())


def _arm_table(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each arm's last evaluation (members that diverged left out)."""
    by_arm: dict = {}
    for r in _last_rows(rows):
        if r["diverged_at"] is None:
            by_arm.setdefault(r["arm"], []).append(r)
    table = []
    for arm, rs in by_arm.items():
        entry = {"arm": arm, "seeds": len(rs), "step": min(r["step"] for r in rs)}
        for k in ("acc_revisit", "acc_zero_shot", "acc"):
            vals = [r[k] for r in rs if r[k] is not None and not math.isnan(r[k])]
            entry[f"{k}_mean"] = statistics.fmean(vals) if vals else float("nan")
            entry[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        table.append(entry)
    return table


def _markdown(rows: list[dict], arms: list[dict], diverged: dict) -> str:
    f = lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
    lines = ["# Sweep summary", "", "Last evaluation of every member (fresh worlds; spatial.metrics).", "",
             "| member | group | seed | step | acc revisit | acc zero-shot | acc | node agent | edge agent |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in _last_rows(rows):
        lines.append(f"| {r['member']} | {r['group']} | {r['seed']} | {r['step']} | {f(r['acc_revisit'])} | "
                     f"{f(r['acc_zero_shot'])} | {f(r['acc'])} | {f(r['node_agent'])} | {f(r['edge_agent'])} |")
    lines += ["", "Arms: mean (std) over seeds.", "",
              "| arm | seeds | step | acc revisit | acc zero-shot | acc |", "|---|---|---|---|---|---|"]
    for a in arms:
        lines.append(f"| {a['arm']} | {a['seeds']} | {a['step']} | {f(a['acc_revisit_mean'])} "
                     f"({f(a['acc_revisit_std'])}) | {f(a['acc_zero_shot_mean'])} ({f(a['acc_zero_shot_std'])}) | "
                     f"{f(a['acc_mean'])} ({f(a['acc_std'])}) |")
    if diverged:
        lines += ["", "Diverged (dropped at that step; their rows above are their last evaluation before it; left out "
                      "of the arms):", ""] + [f"- {name}: step {step}" for name, step in diverged.items()]
    lines += ["", "Every evaluation of every member: summary.csv / summary.json.", ""]
    return "\n".join(lines)
