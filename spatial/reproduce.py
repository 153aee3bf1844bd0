"""The spatial reproduction in one command (scripts/spatial.sh wraps it).

    python -m spatial reproduce --quick --out runs/spatial-quick   # 2-core CPU (run time: README.md)
    python -m spatial reproduce --out runs/spatial                  # full: 20k steps per arm

Arms (configs/spatial/<arm>.yaml):
    relu     square worlds, ReLU recurrence          C1 grid cells, C2 band cells, C3 memory neurons
    linear   square worlds, linear recurrence        C1, C2 with sigma linear
    hex      hexagonal worlds, ReLU recurrence       C9
then memory scaling with the linear model (C7; the relu one if linear is not run), two more parts:
    compare       TEM against TEM-t on identical walks (C6; spatial.compare_run)     -> <out>/compare/report.md
    conjunctions  TEM-t with a second stimulus stream (C8; spatial.conjunctions)     -> <out>/conjunctions/
and one combined report (<out>/report.md) that states, claim by claim, what reproduced and what did not, with the
numbers. Arms train in parallel (`--jobs`, default 2: one per core of the 2-core CPU, one thread each). An arm whose
run directory already has a finished run is not trained again, and an interrupted one resumes from its last
checkpoint. `--arms` picks a subset of the arms and parts.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .jobs import run_logged

ARMS = {"relu": "configs/spatial/relu.yaml", "linear": "configs/spatial/linear.yaml",
        "hex": "configs/spatial/hex.yaml"}
PARTS = ("compare", "conjunctions")                 # after the arms; each writes its own report

# The quick version: the same arms, small worlds (8-9 wide; hex radius 3-4) and 8k/5k steps instead of 20k, sized
# for a 2-core CPU, two arms at a time (its measured run time: README.md). A smaller version of the study, not
# the study.
QUICK = {
    "relu": ["train.steps=8000", "walks.sizes=[8, 9]", "walks.walk_length=[300, 600]", "train.checkpoint_every=2000",
             "eval.every=2000", "eval.steps=600"],
    "linear": ["train.steps=8000", "walks.sizes=[8, 9]", "walks.walk_length=[300, 600]",
               "train.checkpoint_every=2000", "eval.every=2000", "eval.steps=600"],
    "hex": ["train.steps=5000", "walks.sizes=[3, 4]", "walks.walk_length=[300, 600]", "train.checkpoint_every=2000",
            "eval.every=2000", "eval.steps=600"],
}
ANALYSIS = {"square": ["sizes=[11, 11]", "steps=6000"], "hex": ["sizes=[5, 5]", "steps=6000"]}
ANALYSIS_QUICK = {"square": ["sizes=[9, 9]", "steps=2500"], "hex": ["sizes=[4, 4]", "steps=2500"]}
SCALING_QUICK = ["lengths=[100, 300, 1000]", "size=12", "n_worlds=4"]

CONJUNCTIONS = {True: [], False: ["--steps", "4000"]}      # quick: its default, 1,000 steps (about 75 CPU-s)


def _run(cmd: list[str], log: Path) -> int:
    return run_logged(cmd, log)


def _train_arm(arm: str, out: Path, quick: bool, extra: list[str]) -> tuple[str, int]:
    run = out / arm
    log = out / f"{arm}.log"
    base = [sys.executable, "-m", "spatial", "train", "--quiet"]
    if (run / "metrics.json").exists() and (run / "LATEST").exists():
        return arm, 0                                   # finished earlier
    if (run / "LATEST").exists():
        cmd = base + ["--resume", str(run)] + extra
    else:
        # an arm that stopped before its first checkpoint holds nothing to keep: start it again
        again = ["--overwrite"] if run.exists() else []
        cmd = base + ["--config", ARMS[arm], "--out", str(run)] + again + (QUICK[arm] if quick else []) + extra
    return arm, _run(cmd, log)


def _analyse_arm(arm: str, out: Path, quick: bool) -> tuple[str, int]:
    kind = "hex" if arm == "hex" else "square"
    args = (ANALYSIS_QUICK if quick else ANALYSIS)[kind]
    return arm, _run([sys.executable, "-m", "spatial", "analyse", str(out / arm)] + args, out / f"{arm}.log")


def reproduce(out: str | Path, quick: bool, jobs: int = 2, extra: list[str] | None = None,
              arms: list[str] | None = None) -> Path:
    """arms: a subset of ARMS and PARTS (default: all of both)."""
    # The arms run as subprocesses in the repository root (ARMS' config paths are relative to it), so `out` is made
    # absolute here, against the caller's working directory: a relative --out must not land inside the repository
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    selected = arms or list(ARMS) + list(PARTS)
    arms, parts = [a for a in selected if a in ARMS], [a for a in selected if a in PARTS]
    extra = extra or []
    started = time.time()
    if arms:
        print(f"training {', '.join(arms)} ({'quick' if quick else 'full'}), {jobs} at a time; logs in "
              f"{out}/<arm>.log", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        for arm, rc in pool.map(lambda a: _train_arm(a, out, quick, extra), arms):
            print(f"  {arm}: {'done' if rc == 0 else f'FAILED (exit {rc}), see {out}/{arm}.log'}", flush=True)
    done = [a for a in arms if (out / a / "metrics.json").exists()]
    with ThreadPoolExecutor(jobs) as pool:
        for arm, rc in pool.map(lambda a: _analyse_arm(a, out, quick), done):
            print(f"  analysis {arm}: {'done' if rc == 0 else f'FAILED (exit {rc})'}", flush=True)
    scaling_arm = next((a for a in ("linear", "relu") if a in done), None)   # linear: the better path integrator
    if scaling_arm:
        cmd = [sys.executable, "-m", "spatial", "scaling", str(out / scaling_arm), "--out", str(out / "scaling")]
        rc = _run(cmd + (SCALING_QUICK if quick else []), out / "scaling.log")
        print(f"  memory scaling: {'done' if rc == 0 else 'FAILED'}", flush=True)
    if "conjunctions" in parts and not (out / "conjunctions" / "conjunctions.json").exists():
        cmd = [sys.executable, "-m", "spatial.conjunctions", "--out", str(out / "conjunctions")]
        rc = _run(cmd + CONJUNCTIONS[quick], out / "conjunctions.log")
        print(f"  two stimulus streams (C8): {'done' if rc == 0 else 'FAILED'}", flush=True)
    if "compare" in parts:
        from .compare_run import run_comparison
        try:
            run_comparison(out / "compare", quick, jobs, extra, run=_run)
        except RuntimeError as err:                 # no comparison run finished: the rest of the report stands
            print(f"  comparison FAILED: {err}", flush=True)
    report = write_combined_report(out, arms + parts, quick, time.time() - started)
    print(f"report: {report}", flush=True)
    return report


# -- the combined report -----------------------------------------------------------------------------------------

def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _f(v, digits=3):
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


# The verdict rules: the one place their numbers live. `_verdicts` applies them and `verdict_rules()` states them
# in the report, both from this table.
THRESHOLDS = {
    "grid_frac": 0.15,      # C1/C9: least fraction of active position units passing spec 5.3's grid-cell test
    "null_rate": 0.05,      #   the false-positive rate of each null (the 95th percentile), stated beside it
    "band_frac": 0.15,      # C2: least fraction of active position units passing spec 5.4's band-cell test
    "place_median": 0.8,    # C3: least median place metric of the memory neurons
    "remap_r": 0.1,         # C3: largest |r| of the memory neurons' pair structure across worlds (random remapping)
    "kept_r": 0.5,          # C3: least r of the position units' pair structure across worlds (structure kept)
}


def verdict_rules() -> str:
    """The rules of `_verdicts` in words, with the numbers of `THRESHOLDS`."""
    t = THRESHOLDS
    return (f"Rules: an arm reproduces C1/C9 if at least {t['grid_frac']:.0%} of its active position units "
            f"({t['grid_frac'] / t['null_rate']:g} times the {t['null_rate']:.0%} false-positive rate of each null) "
            "pass spec 5.3's grid-cell test (beat both the circular-shift and the node-permutation null, hexagonal "
            "Fourier signature, not band-like, active), averaged over analysis worlds (\"square grids only\" when the "
            "same holds for square grid cells but not for hexagonal ones); C2 likewise (at least "
            f"{t['band_frac']:.0%}) with spec 5.4's band-cell test; C3 if memory neurons have a median place metric "
            f">= {t['place_median']}, their pair structure across worlds is near zero (|r| < {t['remap_r']}: random "
            f"remapping) and the position units' is kept (r > {t['kept_r']}).")


def _verdicts(arms: dict) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) rows, computed from the numbers alone by the rules of THRESHOLDS."""
    t = THRESHOLDS
    rows = []
    for arm, claim in (("relu", "C1 grid cells, ReLU"), ("linear", "C1 grid cells, linear"), ("hex", "C9 hex worlds")):
        a = arms.get(arm)
        if not a:
            rows.append((claim, "not run", ""))
            continue
        m = a["mean_over_worlds"]
        hexg, sq = m.get("frac_grid_of_active"), m.get("frac_square_of_active")
        verdict = "reproduced" if (hexg or 0) >= t["grid_frac"] else (
            "square grids only" if (sq or 0) >= t["grid_frac"] else "NOT reproduced")
        rows.append((claim, verdict, f"hexagonal grid cells {_f(hexg)} and square grid cells {_f(sq)} of active "
                                     f"units (beat both nulls: G60 {_f(m.get('frac_beat_both_nulls_g60'))}, "
                                     f"G90 {_f(m.get('frac_beat_both_nulls_g90'))}); Fourier classes of active units "
                                     f"in world 1: {a['worlds'][0]['lattice_counts']}"))
    for arm in ("relu", "linear", "hex"):
        a = arms.get(arm)
        if a:
            b = a["mean_over_worlds"].get("frac_band_of_active")
            rows.append((f"C2 band cells, {arm}", "reproduced" if (b or 0) >= t["band_frac"] else "NOT reproduced",
                         f"band cells {_f(b)} of active units"))
    for arm in ("relu", "linear", "hex"):
        a = arms.get(arm)
        if not a:
            continue
        m, r = a["mean_over_worlds"], a.get("remapping", {})
        place, single = m.get("memory_place_metric_median"), m.get("memory_frac_single_field")
        mem_r, pos_r = r.get("memory_pair_r"), r.get("position_pair_r")
        placelike = place is not None and place >= t["place_median"]
        remaps = mem_r is not None and abs(mem_r) < t["remap_r"]
        kept = pos_r is not None and pos_r > t["kept_r"]
        held = [x for x, ok in (("place-like", placelike), ("remap randomly", remaps),
                                ("position structure kept", kept)) if ok]
        verdict = "reproduced" if len(held) == 3 else ("partly: " + ", ".join(held) if held else "NOT reproduced")
        rows.append((f"C3 memory neurons, {arm}", verdict,
                     f"memory-neuron place metric median {_f(place)}, single-field fraction {_f(single)}; "
                     f"pair structure across worlds: memory neurons r = {_f(mem_r)}, position units r = "
                     f"{_f(pos_r)} ({r.get('pair_structure_units', 'n/a')}); gridAtPlace r = "
                     f"{_f(r.get('grid_at_place_r'))} (null p95 {_f(r.get('grid_at_place_null_p95'))})"))
    return rows


def write_combined_report(out: Path, arms: list[str], quick: bool, seconds: float) -> Path:
    analyses = {a: _load(out / a / "analysis" / "metrics.json") for a in arms}
    analyses = {a: v for a, v in analyses.items() if v}
    finals = {a: _load(out / a / "metrics.json") for a in arms}
    scaling = _load(out / "scaling" / "scaling.json")
    lines = [f"# TEM-t spatial reproduction ({'quick' if quick else 'full'})", "",
             f"Produced by `scripts/spatial.sh{' --quick' if quick else ''}` in {seconds / 60:.1f} minutes. Each arm's "
             "run directory holds its config, seed, commit (run.json), logs and checkpoints; its analysis/ folder "
             "holds its own report with every figure.", ""]
    if quick:
        lines += ["**Quick mode** trains each arm for a few thousand steps on small worlds: it exercises the whole "
                  "pipeline on a CPU and shows learning, not the paper's representations. Verdicts below are "
                  "computed all the same, and say what this short run shows.", ""]
    lines += ["## Verdicts", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c} | {v} | {e} |" for c, v, e in _verdicts(analyses)]
    lines += ["", verdict_rules(), ""]
    lines += ["## Accuracy", "", "| arm | steps | revisits | zero-shot | node agent (all steps) | edge agent | chance |",
              "|---|---|---|---|---|---|---|"]
    for a in arms:
        f = finals.get(a)
        if f:
            lines.append(f"| {a} | {f['step']} | {_f(f['acc_revisit'])} | {_f(f['acc_zero_shot'])} | "
                         f"{_f(f['node_agent'])} | {_f(f['edge_agent'])} | {_f(f['chance'])} |")
    lines += ["", "## Representations (mean over analysis worlds)", ""]
    keys = ["active_units", "frac_grid_of_active", "frac_square_of_active", "frac_band_of_active",
            "frac_beat_both_nulls_g60", "frac_beat_both_nulls_g90", "g60_p90", "g90_p90", "translation_invariance",
            "memory_place_metric_median", "memory_frac_single_field"]
    lines += ["| metric | " + " | ".join(analyses) + " |", "|---|" + "---|" * len(analyses)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_f(analyses[a]["mean_over_worlds"].get(k)) for a in analyses) + " |")
    for a in analyses:
        lines += ["", f"### {a}", "", f"Full report: [{a}/analysis/report.md]({a}/analysis/report.md)", "",
                  f"![{a}: accuracy]({a}/analysis/accuracy.png)",
                  f"![{a}: units sorted by G60]({a}/analysis/rate_maps_g60.png)",
                  f"![{a}: units sorted by G90]({a}/analysis/rate_maps_g90.png)"]
        if (out / a / "analysis" / "memory_remapping.png").exists():
            lines.append(f"![{a}: memory neurons in two worlds]({a}/analysis/memory_remapping.png)")
    if scaling:
        lines += ["", "## Memory scaling (C7)", "", "| de-duplication | walk length | memories at end | revisits "
                  "(last quarter) | zero-shot | ms per step |", "|---|---|---|---|---|---|"]
        for r in scaling["rows"]:
            lines.append(f"| {'on' if r['dedup'] else 'off'} | {r['walk_length']} | {_f(r['memories_at_end'], 0)} | "
                         f"{_f(r['acc_revisit_last_quarter'])} | {_f(r['acc_zero_shot_last_quarter'])} | "
                         f"{_f(r['ms_per_step'], 2)} |")
        lines += ["", "![memory scaling](scaling/scaling.png)", ""]
    lines += _comparison_section(out)
    conjunctions = out / "conjunctions" / "conjunctions.md"        # written by spatial.conjunctions, heading included
    if conjunctions.exists():
        lines += ["", conjunctions.read_text().rstrip(), "",
                  "Run directory: [conjunctions/](conjunctions/conjunctions.json)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _comparison_section(out: Path) -> list[str]:
    """C6 in the combined report: the comparison's headline ratios and figure, with a link to its own report."""
    comparison = _load(out / "compare" / "comparison.json")
    if not comparison:
        return []
    lines = ["", "## TEM vs TEM-t (C6)", "",
             "Both models on identical walk streams, each at the best learning rate of its own sweep, 3 seeds per "
             "arm; criterion: accuracy at 90% of the node agent's. Full report, with every run's command: "
             "[compare/report.md](compare/report.md).", ""]
    for r in comparison.get("ratios", []):
        for lab, ratio in r.get("steps", {}).items():
            lines.append(f"- {lab}: {ratio['text']}.")
        if r.get("time_per_step"):
            lines.append(f"- {r['time_per_step']['text']}.")
    lines += ["", "![C6: zero-shot accuracy against steps and seconds](compare/curves.png)"]
    return lines
