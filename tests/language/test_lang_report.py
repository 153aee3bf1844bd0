"""The study report from a results dict (no training): its sections, and eval.bootstrap reaching the bootstrap."""
import numpy as np
import pytest

import language.report as report
from language.train import EvalConfig, LanguageConfig


def _arm(kind: str, nll: np.ndarray) -> dict:
    key = {"exact": "exact"}.get(kind, "best")
    metrics = {key: {"mean": 10.0, "sd": 0.5, "seeds": [10.0]}}
    if kind == "joint":
        metrics["joint"] = metrics["conditional"] = {"mean": 11.0, "sd": 0.5, "seeds": [11.0]}
    return {"what": f"a {kind} arm", "kind": kind, "params": 1000, "ppl": metrics,
            "sentence_nll_mean": {key: nll.tolist()}, "n_tokens": [5] * len(nll), "train": {},
            "curves": {"0": [{"step": 10, "dev": 12.0}]},
            "unseen_actions": [0], "overflow_actions": [0], "actions_total": [0]}


def _results():
    rng = np.random.default_rng(0)
    nll = rng.uniform(5, 15, size=40)
    return {"seeds": [0], "arms": {"grammar": _arm("joint", nll), "sinusoidal": _arm("exact", nll + 1.0)}}


def test_report_sections_and_bootstrap_resamples_from_the_config(tmp_path, monkeypatch):
    seen = []
    real = report.paired_bootstrap

    def spy(*args, n_boot, **kw):
        seen.append(n_boot)
        return real(*args, n_boot=n_boot, **kw)

    monkeypatch.setattr(report, "paired_bootstrap", spy)
    cfg = LanguageConfig(eval=EvalConfig(beams=(1,), bootstrap=37))
    text = report.write_report(_results(), cfg, tmp_path / "r.md", tmp_path).read_text()
    assert seen == [37]                                    # one comparison (sinusoidal), 37 resamples
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Language study: grammar-derived positions against standard encodings (claim C10)", "## Verdict",
        "## Language-model perplexities on test (mean ± sd over seeds)",
        "## Conditional diagnostic: gold structure given free (NOT language-model perplexities)",
        "## Bootstrap over seeds and test sentences (grammar arm against each arm)",
        "## Leak and sanity checks on the trained models",
        "## Learning curves (dev metric, mean over seeds; joint perplexity for structure-predicting arms)",
        "## Training", "## Data and vocabularies"]
    assert "**Supported on this data.**" in text           # grammar is 1 nat/word better on every sentence
    assert "| grammar (best) vs sinusoidal (exact) |" in text


def test_a_bootstrap_of_no_resamples_is_refused():
    from temt_core.config import ConfigError
    with pytest.raises(ConfigError, match="eval.bootstrap must be >= 1"):
        report.comparisons(_results(), n_boot=0)


def test_study_writes_its_report_into_out_unless_told_otherwise(tmp_path, monkeypatch):
    import language.study
    from language.cli import main
    seen = []
    monkeypatch.setattr(language.study, "run_study", lambda base, out, arms, seeds, report, **kw: seen.append(report))
    assert main(["study", "--out", str(tmp_path / "s"), "--arms", "sinusoidal"]) == 0
    assert main(["study", "--out", str(tmp_path / "s"), "--report", str(tmp_path / "r.md")]) == 0
    assert seen == [str(tmp_path / "s" / "report.md"), str(tmp_path / "r.md")]


def test_language_sh_keeps_writing_the_tracked_report():
    import os
    import subprocess
    from pathlib import Path
    script = Path(__file__).resolve().parents[2] / "scripts" / "language.sh"

    def args(*a):
        env = dict(os.environ, PYTHON="echo")
        return subprocess.run([str(script), *a], env=env, capture_output=True, text=True, check=True).stdout.split()

    assert args("--quick")[-2:] == ["--report", "docs/results/language.md"]
    assert args("--quick", "--report", "elsewhere.md").count("--report") == 1


def test_the_seed_and_sentence_bootstrap_carries_the_spread_between_seeds():
    """Identical seeds: the same interval as resampling sentences alone. Seeds that disagree (per-seed ratios
    0.965 and 1.018, as measured in the 2026-11 quick study): a wider interval, which then includes 1."""
    from language.evaluate import paired_bootstrap, seed_sentence_bootstrap
    rng = np.random.default_rng(0)
    n = rng.integers(5, 30, size=400).astype(float)
    base = n * 4.4 + rng.normal(0, 3, size=400)            # per-sentence NLL of the baseline (ppl about 80)
    other = base - 0.004 * n + rng.normal(0, 1, size=400)
    same = seed_sentence_bootstrap(np.stack([other, other]), np.stack([base, base]), n, n_boot=2000)
    alone = paired_bootstrap(other, base, n, n_boot=2000)
    assert same["ratio"] == pytest.approx(alone["ratio"], rel=1e-12)
    assert same["ratio_ci95"] == pytest.approx(alone["ratio_ci95"], abs=2e-3)
    spread = np.stack([other + np.log(0.965) * n, other + np.log(1.018) * n])
    wide = seed_sentence_bootstrap(spread, np.stack([base, base]), n, n_boot=2000)
    narrow = paired_bootstrap(spread.mean(0), base, n, n_boot=2000)
    assert wide["ratio"] == pytest.approx(narrow["ratio"], rel=1e-12)
    width = lambda r: r["ratio_ci95"][1] - r["ratio_ci95"][0]
    assert width(wide) > 3 * width(narrow) and wide["ratio_ci95"][0] < 1 < wide["ratio_ci95"][1]
    assert wide["resampled"] == "seeds and sentences" and (wide["seeds_a"], wide["seeds_b"]) == (2, 2)
    with pytest.raises(ValueError, match=r"expected \(seeds, sentences\) arrays"):
        seed_sentence_bootstrap(other, base, n)


def test_beam_grows_until_the_bound_stops_moving():
    from language.scoring import beam_growth, beam_sizes
    from language.train import EvalConfig
    truth = {1: 100.0, 5: 90.0, 20: 85.0, 50: 83.0, 100: 82.0, 200: 81.9, 400: 81.89}
    ecfg = EvalConfig(beams=(1, 5, 20, 50), beam_until=0.005, beam_max=800)
    bound = {}
    for K in beam_sizes(ecfg, bound):
        bound[K] = truth[K]
    assert sorted(bound) == [1, 5, 20, 50, 100, 200]        # 82.0 -> 81.9 moved 0.12% < 0.5%: stop at 200
    growth = beam_growth(ecfg, bound)
    assert growth["K"] == 200 and growth["converged"] and growth["last_change"] == pytest.approx(0.1 / 82.0)
    capped = EvalConfig(beams=(1, 5), beam_until=1e-6, beam_max=20)
    bound = {}
    for K in beam_sizes(capped, bound):
        bound[K] = {**truth, 10: 87.0}[K]
    assert sorted(bound) == [1, 5, 10, 20] and not beam_growth(capped, bound)["converged"]    # stopped by beam_max
    off = EvalConfig(beams=(1, 5))
    assert list(beam_sizes(off, {})) == [1, 5]
