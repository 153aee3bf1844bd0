"""Figures and report.md for one analysed run (spatial.analyse), and the accuracy figures from its logs.

Every plot function takes optional fig/ax and returns (fig, ax). `write_report` writes, into the output
directory: report.md (figures embedded, numbers in tables, config and seed), metrics.json and the PNGs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from temt_core.config import to_dict

from . import plots
from .analyse import Analysis, save_metrics
from .analysis import as_geometry


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def plot_accuracy_curves(log: list[dict], fig=None, ax=None):
    """Evaluation accuracy on fresh worlds against training step, with the two reference agents."""
    if ax is None:
        fig = fig or plots.new_figure((4.5, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    ev = [r for r in log if r["split"] == "eval"]
    if ev:
        steps = [r["step"] for r in ev]
        ax.plot(steps, [r["acc_revisit"] for r in ev], "o-", label="TEM-t, revisits")
        ax.plot(steps, [r["acc_zero_shot"] for r in ev], "s-", label="TEM-t, zero-shot")
        ax.axhline(1.0, color="k", lw=0.8, ls="--", label="node agent (revisits)")
        ax.axhline(ev[-1]["chance"], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_ylim(0, 1.05)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6)
    return ax.figure, ax


def plot_accuracy_by_coverage(rows: list[dict], fig=None, ax=None):
    """Accuracy against the fraction of the world's nodes visited so far: model, node agent, edge agent (all
    steps), and the model on revisits and zero-shot steps where the rows have them (accuracy_by_coverage with
    new_edge)."""
    if ax is None:
        fig = fig or plots.new_figure((4.5, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    used = [r for r in rows if r["n"]]
    mid = [(r["coverage_lo"] + r["coverage_hi"]) / 2 for r in used]
    lines = [("model", "o-", "model"), ("revisit", "s-", "model, revisits"), ("zero_shot", "^-", "model, zero-shot"),
             ("node_agent", "k--", "node agent"), ("edge_agent", "k:", "edge agent")]
    for key, style, label in lines:
        if used and key in used[0]:
            ax.plot(mid, [r[key] for r in used], style, label=label)
    ax.set_xlabel("fraction of nodes visited")
    ax.set_ylabel("accuracy (agents: all steps)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    return ax.figure, ax


def _maps_figure(world, maps, scores, label, max_units=32):
    w = as_geometry(world)
    if w.kind == "square":
        return plots.plot_rate_maps(w.grid(maps), scores=scores, score_label=label, max_units=max_units)[0]
    order = np.argsort(np.where(np.isfinite(scores), -scores, np.inf), kind="stable")[:min(max_units, 16)]
    fig = plots.new_figure((1.6 * 8, 1.7 * int(np.ceil(len(order) / 8))))
    axs = fig.subplots(int(np.ceil(len(order) / 8)), 8, squeeze=False).ravel()
    for a, u in zip(axs, order):
        plots.plot_hex_map(maps[u], w.coords, title=f"#{u} {label} {scores[u]:.2f}", ax=a)
    for a in axs[len(order):]:
        a.set_axis_off()
    return fig


def write_report(analysis: Analysis, out_dir: str | Path, run_dir: str | Path | None = None, config=None,
                 step: int | None = None, analysis_config=None, title: str = "TEM-t spatial analysis") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = []

    def save(fig, name, caption):
        fig.savefig(out / name, dpi=110)
        figures.append((name, caption))

    log = read_log(run_dir) if run_dir else []
    final_eval = None
    if run_dir and (Path(run_dir) / "metrics.json").exists():
        final_eval = json.loads((Path(run_dir) / "metrics.json").read_text())
    if log:
        save(plot_accuracy_curves(log)[0], "accuracy.png", "Accuracy on fresh worlds during training.")
    if final_eval and final_eval.get("by_coverage"):
        save(plot_accuracy_by_coverage(final_eval["by_coverage"])[0], "accuracy_by_coverage.png",
             "Accuracy against the fraction of nodes visited (final evaluation), with the node agent (upper "
             "bound) and the edge agent (lower bound).")
    _diagnostic_figures(analysis.metrics, (final_eval or {}).get("diagnostics"), save)
    pw = analysis.per_world
    w0 = pw[0]
    save(_maps_figure(w0["world"], w0["maps"], w0["grid"]["g60"], "G60"), "rate_maps_g60.png",
         f"Position units in {w0['world'].name}, sorted by G60, with their autocorrelograms.")
    save(_maps_figure(w0["world"], w0["maps"], w0["grid"]["g90"], "G90"), "rate_maps_g90.png",
         f"Position units in {w0['world'].name}, sorted by G90.")
    fig = plots.new_figure((9, 3))
    axs = fig.subplots(1, 3)
    sn = w0["grid"]["shift_null"]
    for a, key in zip(axs, ("g60", "g90", "band")):
        plots.plot_score_histogram(w0["grid"][key] if key != "band" else w0["band"]["band"], sn.null[key],
                                   label={"g60": "G60", "g90": "G90", "band": "band score"}[key], ax=a)
        a.set_title(f"{key.upper()} of units vs circular-shift null", fontsize=8)
    save(fig, "scores.png", "Unit scores (bars) against the pooled circular-shift null of the same units.")
    mem = w0["memory"]
    if mem["ids"].size:
        save(_maps_figure(w0["world"], mem["maps"], mem["place_metric"], "place"), "memory_neurons.png",
             "Memory neurons (softmax weight on one stored memory) in world 1, sorted by the place metric.")
    if analysis.remap and len(pw) > 1 and pw[0]["world"].kind == "square":
        w1 = pw[1]
        common = np.intersect1d(w0["memory"]["ids"], w1["memory"]["ids"])[:8]
        if common.size:
            ma = w0["memory"]["maps"][np.searchsorted(w0["memory"]["ids"], common)]
            mb = w1["memory"]["maps"][np.searchsorted(w1["memory"]["ids"], common)]
            wa = as_geometry(w0["world"])
            fig, _ = plots.plot_remapping(wa.grid(ma), wa.grid(mb), pair=analysis.remap.get("_memory_pair"))
            save(fig, "memory_remapping.png", "The same memory neurons (storage slots) in two worlds, and the "
                 "correlation of every pair of memory neurons in world 1 against world 2.")
        g = w0["grid"]
        units = np.flatnonzero((g["is_grid"] | g["is_square_grid"]) & g["active"])
        if units.size == 0:
            units = np.argsort(-np.nan_to_num(g["g60"]))[:8]
        wa = as_geometry(w0["world"])
        fig, _ = plots.plot_remapping(wa.grid(w0["maps"][units[:8]]), wa.grid(w1["maps"][units[:8]]),
                                      pair=analysis.remap.get("_position_pair"))
        save(fig, "position_remapping.png", "Position units (grid cells if any, else the highest G60) in two "
             "worlds, and their pair structure.")
    save_metrics(analysis.metrics, out / "metrics.json")
    (out / "report.md").write_text(_markdown(analysis, figures, config, step, analysis_config, title, final_eval))
    return out / "report.md"


def _diagnostic_figures(metrics: dict, final_diag: dict | None, save) -> None:
    """Figures of spatial.diagnostics: where a curve says more than a table (drift against lag, accuracy against
    walk length and coverage, ||e|| along the walk). The final training evaluation is drawn beside the analysis
    walks where the run has it."""
    diag = metrics.get("diagnostics")
    if not diag:
        return
    if metrics.get("accuracy_by_coverage"):
        save(plot_accuracy_by_coverage(metrics["accuracy_by_coverage"])[0], "accuracy_by_coverage_analysis.png",
             "Accuracy against the fraction of nodes visited on the analysis walks: all steps, revisits and zero-shot "
             "steps, with the node agent (upper bound) and the edge agent (lower bound) on all steps.")
    save(plots.plot_accuracy_by_length(diag["accuracy_by_length"])[0], "accuracy_by_length.png",
         "Accuracy on the first L steps of the analysis walks (one walk, read at several lengths: the model is "
         "causal), with the node and edge agents.")
    fig, ax = plots.plot_drift_by_lag(diag["drift_curve"], label="analysis walks")
    if final_diag and final_diag.get("drift_curve"):
        plots.plot_drift_by_lag(final_diag["drift_curve"], label="final evaluation", ax=ax)
    save(fig, "drift.png", "Drift: cosine between the position code at a revisit and at the first visit of the "
         "same node, against the steps in between (1 = the code came back to where it was).")
    fig, ax = plots.plot_norm_by_quarter(diag["norm_by_quarter"], label="analysis walks")
    if final_diag and final_diag.get("norm_by_quarter"):
        plots.plot_norm_by_quarter(final_diag["norm_by_quarter"], label="final evaluation", ax=ax)
    save(fig, "e_norm_by_quarter.png", "Mean norm of the position code in each quarter of the walks.")


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.3f}"
    return str(v)


def _accuracy_rows(diag: dict, source: str) -> list[str]:
    rows = [(f"first {a['steps']} steps", a) for a in diag["accuracy_by_length"].values()]
    split = diag["accuracy_by_coverage_split"]
    pct = round(100 * split["split"])
    rows += [(f"coverage < {pct}%", split["before"]), (f"coverage >= {pct}%", split["after"])]
    return [f"| {source} | {name} | {_fmt(a['acc'])} | {_fmt(a['acc_revisit'])} | {_fmt(a['acc_zero_shot'])} | "
            f"{_fmt(a['node_agent'])} | {_fmt(a['edge_agent'])} |" for name, a in rows]


def _code_rows(diag: dict) -> list[tuple[str, str]]:
    """(diagnostic, value) rows of one diagnostics dict, in the report's order."""
    rows = []
    for r in diag["drift"]:
        span = f"lag >= {r['lag_lo']}" if r["lag_hi"] is None else \
            (f"lag < {r['lag_hi']}" if r["lag_lo"] == 0 else f"{r['lag_lo']} <= lag < {r['lag_hi']}")
        rows.append((f"drift: cosine at revisit vs first visit, {span}", f"{_fmt(r['cos'])} (n={r['n']})"))
    split = diag["accuracy_by_coverage_split"]
    rows.append((f"revisits after {round(100 * split['split'])}% coverage (fraction)",
                 _fmt(split["frac_revisits_after"])))
    t = diag["transitions"]
    rows.append(("transitions: inverse error, mean over opposite moves",
                 _fmt(t["inverse_mean"]) + "".join(f"; {k} {_fmt(v)}" for k, v in t["inverse"].items())))
    rows.append(("transitions: commutator, mean over move directions", _fmt(t["commutator_mean"])))
    rows.append(("fraction of e at the clamp", _fmt(diag["saturation"]["frac_at_bound"])))
    rows.append(("fraction of e at zero", _fmt(diag["saturation"]["frac_at_zero"])))
    rows.append(("mean norm of e by quarter of the walk", " / ".join(_fmt(v) for v in diag["norm_by_quarter"])))
    loc = diag["locations"]
    rows.append(("locations per active unit (nodes per world)",
                 f"{_fmt(loc['mean'])} ({_fmt(loc['nodes_per_world'])})"))
    lobe = diag["side_lobe"]
    rows.append(("attention side-lobe ratio: all queries / revisits",
                 f"{_fmt(lobe['all'])} / {_fmt(lobe['revisit'])}"))
    return rows


def _diagnostics_section(diag: dict | None, final_eval: dict | None) -> list[str]:
    if not diag:
        return []
    final_diag = (final_eval or {}).get("diagnostics")
    lines = ["## Diagnostics", "",
             "What limits the accuracy (spatial/diagnostics.py). Accuracy on the first L steps of each walk and "
             "before/after 90% of the nodes were visited separates how fast a world is inferred from how well the "
             "code holds up over a long walk (the model is causal: the first L steps of one walk are a walk of "
             "length L).", "",
             "| walks | steps | all | revisits | zero-shot | node agent | edge agent |", "|---|---|---|---|---|---|---|"]
    lines += _accuracy_rows(diag, "analysis")
    if final_diag:
        lines += _accuracy_rows(final_diag, "final evaluation")
    ours = _code_rows(diag)
    theirs = dict(_code_rows(final_diag)) if final_diag else {}
    header = "| diagnostic | analysis walks |" + (f" final evaluation (step {final_eval['step']}) |" if final_diag else "")
    lines += ["", header, "|---|---|" + ("---|" if final_diag else "")]
    for name, value in ours:
        lines.append(f"| {name} | {value} |" + (f" {theirs.get(name, 'n/a')} |" if final_diag else ""))
    lines += ["", "Drift: cosine between e at a revisit and e at the first visit of the same node (stay moves "
              "left out), by the steps in between; a path integrator that returns to where it was stays at 1. "
              "Inverse error: (||W_a W_b - I|| + ||W_b W_a - I||) / (2 ||I||) for opposite moves a, b (Frobenius "
              "norms); commutator: ||W_i W_j - W_j W_i|| / ||I|| for two move directions; both 0 for a consistent "
              "integrator. Clamp: |e| >= bound - 1e-6; zero: |e| < 1e-6. Locations per unit: nodes at which a unit's "
              "mean activity exceeds the middle of its range across nodes, over units with a range. Side-lobe "
              "ratio: the fraction of the prediction's memory weight on memories stored neither at the true node "
              "nor at a neighbour of it.", ""]
    return lines


def _markdown(analysis, figures, config, step, acfg, title, final_eval) -> str:
    m = analysis.metrics
    lines = [f"# {title}", ""]
    if step is not None:
        lines += [f"Model after {step} training steps. Analysis: {len(analysis.worlds)} fresh worlds "
                  f"({', '.join(w.name for w in analysis.worlds)}), {acfg.steps if acfg else '?'} steps each, "
                  f"seed {acfg.seed if acfg else '?'}.", ""]
    acc = m["accuracy"]
    lines += ["## Accuracy on the analysis walks", "",
              "| revisits | zero-shot | first visits | node agent (all steps) | edge agent (all steps) | chance |",
              "|---|---|---|---|---|---|",
              f"| {_fmt(acc['acc_revisit'])} | {_fmt(acc['acc_zero_shot'])} | {_fmt(acc['acc_first_visit'])} | "
              f"{_fmt(acc['node_agent'])} | {_fmt(acc['edge_agent'])} | {_fmt(acc['chance'])} |", ""]
    if final_eval:
        lines += [f"Final evaluation during training (step {final_eval['step']}): revisits "
                  f"{_fmt(final_eval['acc_revisit'])}, zero-shot {_fmt(final_eval['acc_zero_shot'])}.", ""]
    lines += _diagnostics_section(m.get("diagnostics"), final_eval)
    keys = ["active_units", "grid_cells", "square_grid_cells", "band_cells", "frac_grid_of_active",
            "frac_square_of_active", "frac_band_of_active", "frac_beat_both_nulls_g60", "frac_beat_both_nulls_g90",
            "g60_median", "g60_p90", "g90_median", "g90_p90", "translation_invariance", "memory_neurons",
            "memory_place_metric_median", "memory_frac_single_field", "memory_information_median",
            "memory_sparsity_median"]
    lines += ["## Position units and memory neurons, per world", "",
              "| metric | " + " | ".join(w["world"] for w in m["worlds"]) + " |",
              "|---|" + "---|" * len(m["worlds"])]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_fmt(w[k]) for w in m["worlds"]) + " |")
    lines.append("| Fourier classes (active units) | " +
                 " | ".join(", ".join(f"{c} {n}" for c, n in w["lattice_counts"].items()) for w in m["worlds"]) + " |")
    lines += ["", "A unit is a grid cell only if its G60 beats the 95th percentile of both its circular-shift null "
              "and its node-permutation null, it has the hexagonal Fourier signature, it is not band-like and it is "
              "active (spec 5.3); square grid cells likewise with G90 and the square signature. The 5% false-"
              "positive rate of each null is the level to compare the fractions with.", ""]
    if m["remapping"]:
        lines += ["## Remapping between the first two worlds", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in m["remapping"].items() if not k.startswith("_")]
        lines += ["", "Pair structure: correlation of the unit-by-unit rate-map correlations in world 1 and world 2 "
                  "(near 1: relationships kept; near 0: random remapping), with a unit-permutation null.", ""]
    lines += ["## Figures", ""]
    for name, caption in figures:
        lines += [f"![{caption}]({name})", "", caption, ""]
    if config is not None:
        lines += ["## Config", "", "```yaml", yaml.safe_dump(to_dict(config), sort_keys=False).strip(), "```", ""]
    if acfg is not None:
        lines += ["Analysis config:", "", "```yaml", yaml.safe_dump(to_dict(acfg), sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)
