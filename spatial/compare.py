"""The learning-speed comparison of claim C6: TEM and TEM-t trained on the same walk streams, their accuracy against
gradient steps and against training wall-clock time, the steps and seconds each needs to reach a criterion, the
cost of a step, peak memory and the spread over seeds, in one report.

    temt-spatial compare --arm tem=runs/c/tem/s0,runs/c/tem/s1,runs/c/tem/s2 \\
                         --arm temt=runs/c/temt/s0,runs/c/temt/s1,runs/c/temt/s2 \\
                         [--sweep tem=runs/c/lr/tem-a,runs/c/lr/tem-b] --out runs/c/report [--quick]

writes DIR/report.md, DIR/comparison.json (every number of the report), DIR/curves.png and
DIR/curves_by_length.png. The library (spatial/reproduce.py drives it):

    load_arm(runs)             [RunCurves]: each run directory's config.yaml, run.json and metrics.jsonl
    check_same_stream(arms)    ConfigError unless every run of every arm saw the same walks (below)
    best_of_sweep(runs)        the run with the highest final zero-shot accuracy (ties: the lower train.lr_max)
    criterion_step(curve, L)   (step, train_seconds) of the first evaluation at >= 90% of the node agent
    write_comparison(arms, out, sweeps=None, title=..., quick=False) -> out/report.md

The same stream. A comparison of learning speed is fair only if both models learn from the same experience. A
run's training walks are fixed by its walks section, train.batch_size and train.seed (spatial.walks.WalkStream),
its truncated-backprop windows by train.chunk_length, the steps that carry a loss by train.loss_on, and the fresh
evaluation worlds by eval.n_worlds, eval.steps and eval.seed. All of these must agree between every run of every
arm, and every arm must hold the same set of seeds (seed s of one arm saw the walks seed s of every other arm saw).
The learning rate, the model and the number of steps may differ. Worlds built in code (walks.kind=graph) are not
in the config and cannot be checked here.

The criterion. "Full performance" is read as accuracy on all steps of the evaluation walks, at walk length L (the
first L steps of each walk: acc_L200, acc_L500; the whole walk: acc), reaching CRITERION = 90% of the node agent's
accuracy on the same steps (node_agent_L200, ...: right on every revisit, at chance on first visits, the most any
model can get). The step reported is that of the first evaluation at or above it, so its resolution is eval.every;
a run that never gets there says so, and a ratio against it is a bound, stated as one.

Time. train_seconds (spatial/train.py) counts the wall seconds of training steps only (walks, forward, backward,
optimizer), not evaluation or checkpointing; ms per step is the median over the logged windows of
(seconds in the window) / (steps in the window). Wall time depends on the machine and what else ran on it: the
report lists each run's device, threads and machine, and says so where they differ between arms.
"""
from __future__ import annotations

import json
import math
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator

from temt_core.config import ConfigError, to_dict
from temt_core.rundir import RunDir, RunDirError

from . import plots
from .config import SpatialConfig
from .train import load_run_config

CRITERION = 0.9                         # fraction of the node agent's accuracy that counts as full performance
LENGTHS = (200, 500, None)              # walk lengths of the criterion and the curves (None: the whole eval walk)
EDGE_MARGIN = 0.02                      # the report warns where the edge agent comes this close to the criterion
GOALS = {"steps": 5.0, "time_per_step": 20.0}   # issue 9: TEM-t at criterion in >= 5x fewer steps, >= 20x less time
STREAM_TRAIN_KEYS = ("batch_size", "chunk_length", "loss_on")
STREAM_EVAL_KEYS = ("n_worlds", "steps", "seed")


# -- one run --------------------------------------------------------------------------------------------------------

@dataclass
class RunCurves:
    """One run directory, read: its resolved config, run.json and the train / eval records of metrics.jsonl (each
    sorted by step)."""
    path: Path
    config: SpatialConfig
    info: dict
    train: list[dict]
    evals: list[dict]

    @property
    def seed(self) -> int:
        return self.config.train.seed

    @property
    def kind(self) -> str:
        return self.config.model_kind

    @property
    def lr_max(self) -> float:
        return self.config.train.lr_max

    @property
    def final(self) -> dict | None:
        """The last evaluation record (the run's final evaluation if it finished)."""
        return self.evals[-1] if self.evals else None

    @property
    def timed(self) -> bool:
        """Whether every record carries train_seconds counted from step 0 (runs logged before timing existed, or
        resumed from a checkpoint older than it, do not)."""
        rows = self.train + self.evals
        return bool(rows) and all("train_seconds" in r and not r.get("train_seconds_from_step") for r in rows)

    def steps(self) -> np.ndarray:
        """(n_evals,) the steps of the evaluations."""
        return np.array([r["step"] for r in self.evals])

    def window_ms(self) -> list[float]:
        """Wall milliseconds per step of each logged training window: the train_seconds added since the previous
        train record, over the steps added. Where train_seconds_from_step changes (a resume from a checkpoint older
        than timing) the count starts again from 0 at that step."""
        rows = [r for r in self.train if "train_seconds" in r]
        start, prev_step, prev_s, out = 0, 0, 0.0, []
        for r in rows:
            if r.get("train_seconds_from_step", 0) != start:
                start = prev_step = r["train_seconds_from_step"]
                prev_s = 0.0
            if r["step"] > prev_step:
                out.append(1000.0 * (r["train_seconds"] - prev_s) / (r["step"] - prev_step))
            prev_step, prev_s = r["step"], r["train_seconds"]
        return out

    def ms_per_step(self) -> float | None:
        """Median of window_ms (a slow first window, or one slowed by other work on the machine, does not move it);
        None if the log has no train_seconds."""
        ms = self.window_ms()
        return statistics.median(ms) if ms else None

    def walk_steps_per_s(self) -> float | None:
        """Walk steps trained per wall second: batch x chunk length per step, at ms_per_step."""
        ms = self.ms_per_step()
        t = self.config.train
        return None if not ms else t.batch_size * t.chunk_length * 1000.0 / ms

    def peak_mem_mb(self) -> float | None:
        vals = [_num(r.get("peak_mem_mb")) for r in self.train + self.evals]
        vals = [v for v in vals if math.isfinite(v)]
        return max(vals) if vals else None

    def command(self) -> str:
        """The command line that made the run (run.json argv)."""
        return command_line(self.info.get("argv") or [])


def command_line(argv: list[str]) -> str:
    """argv as a shell command, the package's entry point spelled as one types it (python -m spatial, temt-spatial)."""
    if not argv:
        return "n/a"
    argv = list(argv)
    head = str(argv[0]).replace("\\", "/")
    if head.endswith("spatial/__main__.py"):
        argv[:1] = ["python", "-m", "spatial"]
    elif head.endswith("temt-spatial"):
        argv[0] = "temt-spatial"
    return shlex.join(str(a) for a in argv)


def _num(v) -> float:
    """A log value as a float: NaN for null, a missing key or anything that is not a number."""
    return float(v) if isinstance(v, (int, float)) else float("nan")


def load_run(path: str | Path) -> RunCurves:
    """One run directory (config.yaml, run.json, metrics.jsonl); anything missing or unreadable is a ConfigError
    naming the file."""
    path = Path(path)
    if not path.is_dir():
        why = "it does not exist" if not path.exists() else "not a directory"
        raise ConfigError(f"{path} is not a run directory ({why})")
    missing = [n for n in ("config.yaml", "run.json", "metrics.jsonl") if not (path / n).is_file()]
    if missing:
        raise ConfigError(f"{path} is not a run directory: {', '.join(missing)} missing")
    try:
        config = load_run_config(path)
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"{path / 'config.yaml'}: {err}") from None
    try:
        info = json.loads((path / "run.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path / 'run.json'}: not a JSON file ({err})") from None
    try:
        rows = RunDir(path).read_log()
    except RunDirError as err:
        raise ConfigError(str(err)) from None
    bad = next((i for i, r in enumerate(rows, 1) if not (isinstance(r, dict) and isinstance(r.get("step"), int))),
               None)
    if bad is not None:
        raise ConfigError(f"{path / 'metrics.jsonl'}, record {bad}: not a log record (no integer 'step')")
    by_step = lambda split: sorted((r for r in rows if r.get("split") == split), key=lambda r: r["step"])  # noqa: E731
    return RunCurves(path, config, info if isinstance(info, dict) else {}, by_step("train"), by_step("eval"))


def load_arm(runs: list[Path]) -> list[RunCurves]:
    """Every run directory of one arm (seeds of one model and learning rate), read."""
    return [load_run(r) for r in runs]


# -- checks -----------------------------------------------------------------------------------------------------------

def stream_keys(config: SpatialConfig) -> dict:
    """The dotted config keys that fix the walk stream and the evaluation walks (module docstring), with values."""
    walks = {f"walks.{k}": v for k, v in to_dict(config.walks).items()}
    train = {f"train.{k}": getattr(config.train, k) for k in STREAM_TRAIN_KEYS}
    ev = {f"eval.{k}": getattr(config.eval, k) for k in STREAM_EVAL_KEYS}
    return {**walks, **train, **ev}


def _stream_difference(a: RunCurves, b: RunCurves) -> tuple[str, object, object] | None:
    ka, kb = stream_keys(a.config), stream_keys(b.config)
    for key in ka:
        if ka[key] != kb.get(key):
            return key, ka[key], kb.get(key)
    return None


def _require_evals(what: str, curves: list[RunCurves]) -> None:
    """`what`: how the error names the runs' group ("arm 'tem'", "sweep")."""
    for c in curves:
        if not c.evals:
            raise ConfigError(f"{what}, run {c.path}: metrics.jsonl has no evaluation records (the run stopped "
                              "before its first evaluation): nothing to compare")


def check_same_stream(arms: dict[str, list[RunCurves]]) -> None:
    """ConfigError, naming the arm, the run and the key, unless every run of every arm saw the same walk stream,
    chunking and evaluation walks, every arm holds the same seeds (each once), and every run has evaluations."""
    if not arms:
        raise ConfigError("no arms to compare")
    for arm, curves in arms.items():
        if not curves:
            raise ConfigError(f"arm {arm!r} has no runs")
        _require_evals(f"arm {arm!r}", curves)
        seen: dict[int, Path] = {}
        for c in curves:
            if c.seed in seen:
                raise ConfigError(f"arm {arm!r}: runs {seen[c.seed]} and {c.path} both have train.seed={c.seed} (an "
                                  "arm holds each seed once)")
            seen[c.seed] = c.path
    ref_arm = next(iter(arms))
    ref = arms[ref_arm][0]
    for arm, curves in arms.items():
        for c in curves:
            diff = _stream_difference(c, ref)
            if diff is not None:
                key, mine, theirs = diff
                raise ConfigError(f"arm {arm!r}, run {c.path}: {key}={mine!r} differs from arm {ref_arm!r}, run "
                                  f"{ref.path} ({key}={theirs!r}); the arms must train on the same walk stream and be "
                                  "evaluated on the same walks")
    ref_seeds = sorted(c.seed for c in arms[ref_arm])
    for arm, curves in arms.items():
        seeds = sorted(c.seed for c in curves)
        if seeds != ref_seeds:
            raise ConfigError(f"arm {arm!r} has train.seed {seeds} but arm {ref_arm!r} has {ref_seeds}: every arm "
                              "needs the same seeds (seed s of every arm sees seed s's walk stream)")


def _final_zero_shot(c: RunCurves) -> float:
    v = _num(c.final.get("acc_zero_shot")) if c.final else float("nan")
    return v if math.isfinite(v) else -math.inf


def _sweep_choice(curves: list[RunCurves]) -> int:
    """Index of best_of_sweep's choice among loaded sweep runs (see there)."""
    if not curves:
        raise ConfigError("a learning-rate sweep needs at least one run")
    _require_evals("sweep", curves)
    for c in curves[1:]:
        diff = _stream_difference(c, curves[0])
        if diff is not None:
            raise ConfigError(f"sweep run {c.path}: {diff[0]}={diff[1]!r} differs from sweep run {curves[0].path} "
                              f"({diff[0]}={diff[2]!r}); a sweep compares learning rates on one walk stream")
    last = max(c.final["step"] for c in curves)
    finished = [i for i, c in enumerate(curves) if c.final["step"] == last]
    return min(finished, key=lambda i: (-_final_zero_shot(curves[i]), curves[i].lr_max, i))


def best_of_sweep(runs: list[Path]) -> Path:
    """The run of a learning-rate sweep with the highest final-evaluation acc_zero_shot; ties go to the lower
    train.lr_max (the safer rate), then to the run given first. Only runs whose last evaluation is at the sweep's
    last step compete (one that diverged or stopped early is not a candidate); the runs must share a walk stream."""
    curves = load_arm(runs)
    return Path(runs[_sweep_choice(curves)])


def _keys_at(length: int | None) -> tuple[str, str]:
    return ("acc", "node_agent") if length is None else (f"acc_L{length}", f"node_agent_L{length}")


def criterion_step(curve: RunCurves, length: int | None) -> tuple[int | None, float | None]:
    """(step, train_seconds) of the first evaluation whose accuracy on all steps at walk length `length` (acc_L200,
    acc_L500; None: the whole eval walk, acc) is >= CRITERION x the node agent's at the same length; (None, None) if
    no evaluation gets there. The seconds are None when the run's log does not time it from step 0 (RunCurves.timed).
    An evaluation record without the keys is a ConfigError naming the run and the key."""
    acc_key, node_key = _keys_at(length)
    for r in curve.evals:
        for key in (acc_key, node_key):
            if key not in r:
                raise ConfigError(f"{curve.path / 'metrics.jsonl'}: the evaluation at step {r['step']} has no {key!r} "
                                  "(walk lengths are logged as acc_L200, acc_L500, acc_L1500 by spatial.diagnostics)")
        acc, node = _num(r[acc_key]), _num(r[node_key])
        if math.isfinite(acc) and math.isfinite(node) and acc >= CRITERION * node:
            return r["step"], (float(r["train_seconds"]) if curve.timed else None)
    return None, None


# -- numbers of an arm -----------------------------------------------------------------------------------------------

def _label(length: int | None) -> str:
    return "full" if length is None else f"L{length}"


def effective_length(length: int | None, eval_steps: int) -> int:
    """The steps a length really covers: accuracy_by_length clips L to the evaluation walk."""
    return eval_steps if length is None else min(length, eval_steps)


def shown_lengths(eval_steps: int) -> list[int | None]:
    """The LENGTHS that differ from the whole evaluation walk (a length clipped to it repeats the whole walk's
    numbers), then the whole walk (None)."""
    return [L for L in LENGTHS if L is None or L < eval_steps]


def _spread(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def run_row(c: RunCurves) -> dict:
    """One run's numbers for the report and comparison.json."""
    crit = {}
    for L in LENGTHS:
        step, seconds = criterion_step(c, L)
        crit[_label(L)] = {"step": step, "seconds": seconds}
    final = c.final
    t = c.config.train
    return {"path": str(c.path), "seed": c.seed, "model_kind": c.kind, "lr_max": c.lr_max, "step": final["step"],
            "acc_zero_shot": _num(final.get("acc_zero_shot")), "acc": _num(final.get("acc")),
            "train_seconds": _num(final.get("train_seconds")) if c.timed else None, "timed": c.timed,
            "criterion": crit, "ms_per_step": c.ms_per_step(), "walk_steps_per_s": c.walk_steps_per_s(),
            "peak_mem_mb": c.peak_mem_mb(), "parameters": c.info.get("parameters"),
            "commit": c.info.get("commit", "unknown"), "command": c.command(), "config": str(c.path / "config.yaml"),
            "device": t.device, "threads": t.threads, "machine": c.info.get("machine", "unknown"),
            "torch": c.info.get("torch", "unknown")}


def arm_summary(name: str, curves: list[RunCurves]) -> dict:
    """An arm's numbers over its seeds: final zero-shot (mean, min, max), steps and seconds to criterion at each
    length (mean over the seeds that reached it, and how many did), ms per step (median over every logged window
    of every seed), walk-steps/s, peak memory (the largest over seeds), parameters."""
    rows = [run_row(c) for c in curves]
    crit = {}
    for L in LENGTHS:
        lab = _label(L)
        steps = [r["criterion"][lab]["step"] for r in rows]
        secs = [r["criterion"][lab]["seconds"] for r in rows]
        crit[lab] = {"steps": _spread([s for s in steps if s is not None]),
                     "seconds": _spread([s for s in secs if s is not None]),
                     "reached": sum(s is not None for s in steps), "of": len(rows)}
    windows = [ms for c in curves for ms in c.window_ms()]
    ms = statistics.median(windows) if windows else None
    t = curves[0].config.train
    peaks = [r["peak_mem_mb"] for r in rows if r["peak_mem_mb"] is not None]
    params = sorted({r["parameters"] for r in rows if r["parameters"] is not None})
    return {"arm": name, "model_kind": curves[0].kind, "seeds": [r["seed"] for r in rows],
            "lr_max": sorted({r["lr_max"] for r in rows}), "steps": [r["step"] for r in rows],
            "last_step": max(r["step"] for r in rows),
            "last_seconds": max((r["train_seconds"] for r in rows if r["train_seconds"] is not None), default=None),
            "final_zero_shot": _spread([r["acc_zero_shot"] for r in rows]), "criterion": crit,
            "ms_per_step": ms, "walk_steps_per_s": None if not ms else t.batch_size * t.chunk_length * 1000.0 / ms,
            "peak_mem_mb": max(peaks) if peaks else None, "parameters": params, "runs": rows}


# -- ratios -----------------------------------------------------------------------------------------------------------

def censored_mean(reached: list, limits: list) -> tuple[float | None, bool]:
    """The mean over seeds of the steps (or seconds) to criterion, with a seed that never reached it counted at its
    last step (its limit): (mean, True) when every seed reached it; (a lower bound of the mean, False) when some did
    not; (None, False) when a seed's value and limit are both unknown (an untimed log)."""
    vals = [v if v is not None else lim for v, lim in zip(reached, limits)]
    if not vals or any(v is None for v in vals):
        return None, False
    return statistics.fmean(vals), all(v is not None for v in reached)


def _ratio(ref: list[dict], other: list[dict], lab: str, unit: str, ref_name: str, name: str) -> dict:
    """How many times fewer steps (unit "steps") or training seconds ("seconds") arm `name` needed than `ref_name`
    to reach criterion at length label `lab`, from the arms' run rows (run_row). A seed that never reached criterion
    is counted at its end (censored_mean), so the ratio is exact (every seed of both arms reached it), a lower bound
    ("at_least": only the reference has seeds that did not), an upper bound ("at_most": only `name` has), or none
    (both have, or a log is untimed)."""
    key, limit = ("step", "step") if unit == "steps" else ("seconds", "train_seconds")
    fmt = (lambda v: f"{v:,.0f}") if unit == "steps" else (lambda v: f"{v:,.1f} s")     # noqa: E731

    def mean(rows):
        return censored_mean([r["criterion"][lab][key] for r in rows], [r[limit] for r in rows])

    def shortfall(rows, arm):
        hit = sum(r["criterion"][lab][key] is not None for r in rows)
        end = fmt(max(r[limit] for r in rows))
        return f"{arm} never reached criterion within {end}" if hit == 0 else \
            f"{arm} reached it in only {hit} of {len(rows)} seeds within {end}"

    (a, a_all), (b, b_all) = mean(ref), mean(other)
    if a is None or b is None:
        return {"ratio": None, "bound": "none", "text": f"no {unit} to criterion: a log without train_seconds"}
    if not a_all and not b_all:
        return {"ratio": None, "bound": "none", "text": f"no ratio: {shortfall(ref, ref_name)}, "
                f"{shortfall(other, name)}"}
    r = a / b
    if a_all and b_all:
        how = f"{r:.1f}x fewer" if r >= 1 else f"{1 / r:.1f}x more"
        return {"ratio": r, "bound": "exact", "text": f"{name} reached criterion in {how} {unit} than {ref_name} "
                f"({fmt(b)} vs {fmt(a)}, means over seeds)"}
    if b_all:
        return {"ratio": r, "bound": "at_least", "text": f"{shortfall(ref, ref_name)}; counting its seeds at their "
                f"end, {name} reached criterion in at least {r:.1f}x fewer {unit} ({fmt(b)} vs more than {fmt(a)})"}
    return {"ratio": r, "bound": "at_most", "text": f"{shortfall(other, name)}; counting its seeds at their end, "
            f"{name} reached criterion in at most {r:.1f}x fewer {unit} than {ref_name} (more than {fmt(b)} vs "
            f"{fmt(a)})"}


def _goal(ratio: dict, goal: float) -> str:
    r, bound = ratio.get("ratio"), ratio.get("bound")
    if r is None:
        return "unknown"
    if bound in ("exact", "at_least") and r >= goal:
        return "met"
    if bound in ("exact", "at_most") and r < goal:
        return "not met"
    return "unknown"


def reference_arm(summaries: dict[str, dict]) -> str | None:
    """The arm the ratios are taken against: the one named 'tem' if it is a TEM arm, else the first TEM arm."""
    tem = [a for a, s in summaries.items() if s["model_kind"] == "tem"]
    return "tem" if "tem" in tem else (tem[0] if tem else None)


def ratios(summaries: dict[str, dict]) -> list[dict]:
    """Each TEM-t arm against the reference TEM arm: steps and seconds to criterion at every length, and the time
    per step, as measured (bounds where an arm never reached criterion), with issue 9's goals met or not."""
    ref = reference_arm(summaries)
    if ref is None:
        return []
    s_ref, out = summaries[ref], []
    for name, s in summaries.items():
        if s["model_kind"] == "tem":
            continue
        entry = {"arm": name, "against": ref, "steps": {}, "seconds": {}}
        for L in LENGTHS:
            lab = _label(L)
            entry["steps"][lab] = _ratio(s_ref["runs"], s["runs"], lab, "steps", ref, name)
            entry["steps"][lab]["goal"] = _goal(entry["steps"][lab], GOALS["steps"])
            entry["seconds"][lab] = _ratio(s_ref["runs"], s["runs"], lab, "seconds", ref, name)
        a, b = s_ref["ms_per_step"], s["ms_per_step"]
        if a and b:
            r = a / b
            how = f"{r:.1f}x less" if r >= 1 else f"{1 / r:.1f}x more"
            entry["time_per_step"] = {"ratio": r, "bound": "exact", "goal": _goal({"ratio": r, "bound": "exact"},
                                                                                    GOALS["time_per_step"]),
                                      "text": f"a training step of {name} took {how} wall time than one of {ref} "
                                              f"({b:.2f} vs {a:.2f} ms, medians over the logged windows)"}
        else:
            entry["time_per_step"] = {"ratio": None, "bound": "none", "goal": "unknown",
                                      "text": "no time per step: a log without train_seconds"}
        out.append(entry)
    return out


# -- figures ----------------------------------------------------------------------------------------------------------

def _aligned(curves: list[RunCurves], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The eval steps present in every run of an arm, and (n_runs, n_steps) values of `key` at them."""
    by_step = [{r["step"]: r for r in c.evals} for c in curves]
    common = sorted(set.intersection(*(set(b) for b in by_step)))
    values = np.array([[_num(b[s].get(key)) for s in common] for b in by_step], dtype=float)
    return np.array(common), values.reshape(len(curves), len(common))


def _band(ax, x, values, colour, label):
    """Mean over seeds as a line, the min-max over seeds as a band (NaN-safe: a step where every seed has NaN is a
    gap, without numpy's all-NaN warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
    ax.plot(x, mean, "o-", color=colour, ms=3, label=label)
    if values.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)


def _agents(ax, ref: RunCurves, suffix: str = "", criterion: bool = False) -> None:
    """The node and edge agents on the evaluation walks (the same walks for every run) as dashed lines."""
    final = ref.final
    node, edge = _num(final.get(f"node_agent{suffix}")), _num(final.get(f"edge_agent{suffix}"))
    ax.axhline(node, color="k", ls="--", lw=0.9, label="node agent (all steps)")
    ax.axhline(edge, color="0.5", ls="--", lw=0.9, label="edge agent (all steps)")
    if criterion:
        ax.axhline(CRITERION * node, color="k", ls=":", lw=0.8, label=f"criterion ({CRITERION:.0%} of node agent)")


def _panels(fig, ax, n: int, figsize):
    """n axes in a row: the given ones (ax, an array of n), else new ones on `fig` (or a new Agg figure)."""
    if ax is not None:
        axs = np.asarray(ax).ravel()
        return axs[0].figure, axs
    fig = fig or plots.new_figure(figsize)
    return fig, np.asarray(fig.subplots(1, n, squeeze=False)).ravel()


# gradient-step axes: 2,000 / 20k instead of matplotlib's 20000, which run together at five ticks per panel
STEP_TICKS = FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 10_000 else f"{v:,.0f}")


def plot_curves(arms: dict[str, list[RunCurves]], fig=None, ax=None):
    """Zero-shot accuracy on the evaluation walks against gradient steps (left) and training wall-clock seconds
    (right, log scale): one colour per arm, the mean over seeds with the min-max band; node and edge agents dashed.
    Arms whose logs have no train_seconds are left out of the right panel."""
    fig, axs = _panels(fig, ax, 2, (10, 3.6))
    ref = next(iter(arms.values()))[0]
    spans = []                                 # the wall seconds drawn, for the log axis' labels
    for i, (name, curves) in enumerate(arms.items()):
        colour = f"C{i}"
        steps, acc = _aligned(curves, "acc_zero_shot")
        _band(axs[0], steps, acc, colour, f"{name} ({curves[0].kind}, {len(curves)} seeds)")
        if all(c.timed for c in curves) and steps.size:
            _, secs = _aligned(curves, "train_seconds")
            _band(axs[1], secs.mean(0), acc, colour, name)
            spans += [float(np.nanmin(secs.mean(0))), float(np.nanmax(secs.mean(0)))]
    for a in axs:
        _agents(a, ref)
        a.set_ylim(0, 1.05)
        a.set_ylabel("zero-shot accuracy")
    axs[0].set_xlabel("gradient steps")
    axs[0].xaxis.set_major_formatter(STEP_TICKS)
    timed = bool(spans)
    if timed:                                  # evaluations come after step 0: every x is > 0
        axs[1].set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")         # 0.2, 0.5, 1, 2, 5, ...: short labels
        axs[1].xaxis.set_major_formatter(plain)
        if max(spans) < 1e3 * min(spans):                    # up to 3 decades: 2 and 5 labelled too
            axs[1].xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            axs[1].xaxis.set_minor_formatter(plain)
    axs[1].set_xlabel("training wall-clock seconds (mean over seeds; log scale)" if timed else
                      "training wall-clock seconds (no arm's log has train_seconds)")
    axs[0].legend(fontsize=6)
    return fig, axs


def plot_curves_by_length(arms: dict[str, list[RunCurves]], fig=None, ax=None):
    """Accuracy on all steps of the first L evaluation steps (L = 200, 500 and the whole walk; lengths not shorter
    than the walk are the whole walk, drawn once) against gradient steps, per arm (mean, min-max over seeds), with
    the node and edge agents at the same length and the criterion."""
    ref = next(iter(arms.values()))[0]
    eval_steps = ref.config.eval.steps
    lengths = shown_lengths(eval_steps)
    fig, axs = _panels(fig, ax, len(lengths), (4.2 * len(lengths), 3.4))
    for a, L in zip(axs, lengths):
        acc_key, _ = _keys_at(L)
        for i, (name, curves) in enumerate(arms.items()):
            steps, acc = _aligned(curves, acc_key)
            _band(a, steps, acc, f"C{i}", name)
        _agents(a, ref, "" if L is None else f"_L{L}", criterion=True)
        a.set_title(f"whole evaluation walk ({eval_steps} steps)" if L is None else f"first {L} steps", fontsize=8)
        a.set_xlabel("gradient steps")
        a.xaxis.set_major_formatter(STEP_TICKS)
        a.set_ylabel("accuracy, all steps")
        a.set_ylim(0, 1.05)
    axs[0].legend(fontsize=6)
    return fig, axs


# -- the report -------------------------------------------------------------------------------------------------------

def _parse_arms(arms: dict[str, list], what: str = "arm") -> dict[str, list[RunCurves]]:
    """Load every arm; an arm without runs, a run given twice (in one arm or two), or an arm mixing TEM and TEM-t
    runs is a ConfigError naming it."""
    if not arms:
        raise ConfigError(f"no {what}s to compare")
    where: dict[Path, str] = {}
    loaded = {}
    for name, runs in arms.items():
        if not runs:
            raise ConfigError(f"{what} {name!r} has no runs")
        for r in runs:
            key = Path(r).resolve()
            if key in where:
                raise ConfigError(f"run {r} is given twice ({what} {where[key]!r} and {what} {name!r})")
            where[key] = name
        curves = load_arm([Path(r) for r in runs])
        kinds = sorted({c.kind for c in curves})
        if len(kinds) > 1:
            raise ConfigError(f"{what} {name!r} mixes model_kind {' and '.join(kinds)} runs: an arm is one model")
        loaded[name] = curves
    return loaded


def _check_out(out: Path, runs: list[RunCurves]) -> None:
    """The report goes into a directory of its own: never into a run directory (it would mix with its files)."""
    if (out / "config.yaml").exists() or any(out.resolve() == c.path.resolve() for c in runs):
        raise ConfigError(f"{out} is a run directory; write the comparison into a directory of its own (--out)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")


def _clean(obj):
    """JSON-safe: NaN and inf become null, Paths strings, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def _crit_cell(entry: dict, unit: str) -> str:
    s = entry[unit]
    got = f"{entry['reached']} of {entry['of']}"
    if not s["n"]:
        return f"never ({got})" if unit == "steps" or entry["reached"] == 0 else f"n/a ({got}; not timed)"
    digits = 0 if unit == "steps" else 1
    spread = f", {_f(float(s['min']), digits)}-{_f(float(s['max']), digits)}" if s["n"] > 1 else ""
    return f"{_f(float(s['mean']), digits)} ({got}{spread})"


def write_comparison(arms: dict[str, list[Path]], out: Path, sweeps: dict[str, list[Path]] | None = None,
                     title: str = "TEM vs TEM-t", quick: bool = False) -> Path:
    """The comparison report of `arms` ({name: run directories, one per seed}) into `out`: report.md,
    comparison.json, curves.png, curves_by_length.png (only these files; rewritten if they exist). sweeps: {name:
    run directories of a learning-rate sweep} for the sweep table (the chosen run is best_of_sweep's). Every check
    (run directories, the same stream, the sweeps) passes before anything is written. Returns out/report.md."""
    started = time.perf_counter()
    out = Path(out)
    loaded = _parse_arms(arms)
    check_same_stream(loaded)
    swept = _parse_arms(sweeps, "sweep") if sweeps else {}
    chosen = {name: _sweep_choice(curves) for name, curves in swept.items()}
    _check_out(out, [c for cs in list(loaded.values()) + list(swept.values()) for c in cs])
    summaries = {name: arm_summary(name, curves) for name, curves in loaded.items()}
    rel = ratios(summaries)
    sweep_rows = {name: [{**run_row(c), "chosen": i == chosen[name]} for i, c in enumerate(curves)]
                  for name, curves in swept.items()}
    ref = next(iter(loaded.values()))[0]
    out.mkdir(parents=True, exist_ok=True)
    fig, _ = plot_curves(loaded)
    fig.savefig(out / "curves.png", dpi=110)
    fig, _ = plot_curves_by_length(loaded)
    fig.savefig(out / "curves_by_length.png", dpi=110)
    lengths = {_label(L): effective_length(L, ref.config.eval.steps) for L in LENGTHS}
    result = {"title": title, "quick": quick, "criterion": CRITERION, "lengths": lengths, "agents": agents(ref),
              "goals": GOALS,
              "stream": stream_keys(ref.config), "reference_arm": reference_arm(summaries), "arms": summaries,
              "ratios": rel, "sweeps": sweep_rows, "seconds": time.perf_counter() - started}
    (out / "comparison.json").write_text(json.dumps(_clean(result), indent=1))
    path = out / "report.md"
    path.write_text(_markdown(result, loaded))
    return path


def agents(ref: RunCurves) -> dict:
    """The node and edge agents' accuracy on all steps at each length, and the criterion, from one run's last
    evaluation (every run is evaluated on the same walks)."""
    out = {}
    for L in LENGTHS:
        node_key = _keys_at(L)[1]
        node, edge = _num(ref.final.get(node_key)), _num(ref.final.get(node_key.replace("node", "edge")))
        out[_label(L)] = {"node_agent": node, "edge_agent": edge, "criterion": CRITERION * node}
    return out


def _conditions(loaded: dict[str, list[RunCurves]]) -> list[str]:
    """Where the wall times come from, and a warning where they were measured under different conditions."""
    seen = {(c.config.train.device, c.config.train.threads, c.info.get("machine", "?"), c.info.get("torch", "?"))
            for cs in loaded.values() for c in cs}
    text = "; ".join(f"device {d}, {t} thread{'s' if t != 1 else ''}, {m}, torch {v}" for d, t, m, v in sorted(seen))
    lines = [f"Wall times were measured with {text}."]
    if len(seen) > 1:
        lines.append("**The runs were timed under different conditions**, so the time ratios compare those "
                     "conditions as well as the models.")
    untimed = [str(c.path) for cs in loaded.values() for c in cs if not c.timed]
    if untimed:
        lines.append(f"Not timed from step 0 (no train_seconds, or resumed from a checkpoint older than it), left out "
                     f"of the seconds: {', '.join(untimed)}.")
    lines.append("Wall-clock time also depends on what else the machine ran at the time (it is not recorded).")
    return lines


def _markdown(result: dict, loaded: dict[str, list[RunCurves]]) -> str:
    arms, lengths, crit = result["arms"], result["lengths"], result["criterion"]
    labs = [_label(L) for L in shown_lengths(lengths["full"])]
    name_len = lambda lab: f"L={lengths[lab]}" + (" (whole walk)" if lab == "full" else "")   # noqa: E731
    lines = [f"# {result['title']}", ""]
    if result["quick"]:
        lines += ["**Quick mode**: short runs on small worlds. They exercise the comparison end to end on a CPU; "
                  "whether either model reaches full performance in them says little about claim C6.", ""]
    s = result["stream"]
    lines += ["## What was compared", "",
              f"{len(arms)} arms, seeds {', '.join(map(str, next(iter(arms.values()))['seeds']))} each, trained on "
              f"the same walk stream: {s['walks.kind']} worlds of sizes {s['walks.sizes']}, walks of "
              f"{s['walks.walk_length']} steps ({s['walks.policy']} policy), batch {s['train.batch_size']}, chunks of "
              f"{s['train.chunk_length']} steps, loss on {s['train.loss_on']} steps; evaluated every eval.every steps "
              f"on the same {s['eval.n_worlds']} fresh worlds (eval.seed {s['eval.seed']}), walks of "
              f"{s['eval.steps']} steps.", ""]
    lines += _conditions(loaded) + [""]
    lines += ["## Result", "",
              f"Criterion: accuracy on all steps of the first L evaluation steps >= {crit:.0%} of the node agent's on "
              "the same steps (first evaluation at or above it; resolution eval.every).", ""]
    for lab in labs:
        ag = result["agents"][lab]
        if ag["edge_agent"] is not None and ag["criterion"] is not None and \
                ag["edge_agent"] >= ag["criterion"] - EDGE_MARGIN:
            lines += [f"**At {name_len(lab)} the criterion ({ag['criterion']:.3f}) is within {EDGE_MARGIN} of the edge "
                      f"agent "
                      f"({ag['edge_agent']:.3f}) or below it**: a model that only remembers the edges it took, with no "
                      "link inference, all but reaches it there; zero-shot accuracy (the curves) is the test of "
                      "inference.", ""]
    if not result["ratios"]:
        lines += ["No TEM arm (model_kind=tem) was given, so there are no TEM-t / TEM ratios.", ""]
    for r in result["ratios"]:
        lines.append(f"**{r['arm']} against {r['against']}**")
        lines.append("")
        for lab in labs:
            st, sc = r["steps"][lab], r["seconds"][lab]
            lines.append(f"- {name_len(lab)}: {st['text']} (goal >= {GOALS['steps']:.0f}x: {st['goal']}); in wall "
                         f"time: {sc['text']}.")
        tp = r["time_per_step"]
        lines.append(f"- Time per step: {tp['text']} (goal >= {GOALS['time_per_step']:.0f}x: {tp['goal']}).")
        lines.append("")
    lines += ["## Curves", "", "![zero-shot accuracy against steps and wall-clock time](curves.png)", "",
              "Zero-shot accuracy on the evaluation walks against gradient steps (left) and training wall-clock "
              "seconds (right): mean over seeds, band from the lowest to the highest seed; node and edge agents "
              "(their accuracy on all steps) dashed.", "",
              "![accuracy at walk lengths](curves_by_length.png)", "",
              "Accuracy on all steps at each walk length, with the node and edge agents on the same steps and the "
              "criterion (dotted).", ""]
    lines += ["## Table", "",
              "Final zero-shot: the last evaluation, mean over seeds (lowest-highest). ms per step: median over every "
              "logged window of every seed; walk-steps/s = batch x chunk length / time per step. Peak memory: the "
              "largest over seeds (CPU: the process's peak resident set, Python and torch included; CUDA: peak "
              "allocated tensors).", "",
              "| arm | model | seeds | lr_max | steps | final zero-shot | ms per step | walk-steps/s | peak memory MB "
              "| parameters |", "|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms.values():
        fz = a["final_zero_shot"]
        lines.append(f"| {a['arm']} | {a['model_kind']} | {len(a['seeds'])} | "
                     f"{', '.join(f'{v:g}' for v in a['lr_max'])} | {_f(a['last_step'])} | "
                     f"{_f(fz['mean'])} ({_f(fz['min'])}-{_f(fz['max'])}) | {_f(a['ms_per_step'], 2)} | "
                     f"{_f(a['walk_steps_per_s'], 0)} | {_f(a['peak_mem_mb'], 0)} | "
                     f"{', '.join(f'{p:,}' for p in a['parameters']) or 'n/a'} |")
    lines += ["", "Steps and training seconds to criterion: mean over the seeds that reached it (k of n seeds, "
              "lowest-highest).", "",
              "| arm | walk length | steps to criterion | seconds to criterion |", "|---|---|---|---|"]
    for a in arms.values():
        for lab in labs:
            lines.append(f"| {a['arm']} | {name_len(lab)} | {_crit_cell(a['criterion'][lab], 'steps')} | "
                         f"{_crit_cell(a['criterion'][lab], 'seconds')} |")
    lines.append("")
    if result["sweeps"]:
        lines += ["## Learning-rate sweeps", "",
                  "Each model's learning rate is the sweep run with the highest final zero-shot accuracy (ties: the "
                  "lower lr_max; only runs that reached the sweep's last step compete).", "",
                  "| sweep | run | seed | lr_max | steps | final zero-shot | chosen |", "|---|---|---|---|---|---|---|"]
        for name, rows in result["sweeps"].items():
            for r in rows:
                lines.append(f"| {name} | {r['path']} | {r['seed']} | {r['lr_max']:g} | {_f(r['step'])} | "
                             f"{_f(r['acc_zero_shot'])} | {'**chosen**' if r['chosen'] else ''} |")
            pick = next(r for r in rows if r["chosen"])
            if name in arms and pick["lr_max"] not in arms[name]["lr_max"]:
                lines += ["", f"**Arm {name!r} was trained with lr_max {', '.join(map(str, arms[name]['lr_max']))}, "
                          f"not the sweep's choice ({pick['lr_max']:g}).**"]
        lines.append("")
    lines += ["## Runs", "", "How every run was made (run.json, config.yaml).", ""]
    for a in arms.values():
        lines += [f"### {a['arm']}", "",
                  "| seed | steps | final zero-shot | " + " | ".join(f"criterion step, {name_len(l)}" for l in labs)
                  + " | ms per step | peak MB | commit | config | command |", "|" + "---|" * (8 + len(labs))]
        for r in a["runs"]:
            lines.append(f"| {r['seed']} | {_f(r['step'])} | {_f(r['acc_zero_shot'])} | "
                         + " | ".join(_f(r["criterion"][l]["step"]) if r["criterion"][l]["step"] is not None
                                      else "never" for l in labs)
                         + f" | {_f(r['ms_per_step'], 2)} | {_f(r['peak_mem_mb'], 0)} | {r['commit']} | "
                         f"{r['config']} | `{r['command']}` |")
        lines.append("")
    lines += [f"Written by `{command_line(sys.argv)}` "
              f"(spatial/compare.py) in {result['seconds']:.1f} s; every number is also in comparison.json.", ""]
    return "\n".join(lines)
