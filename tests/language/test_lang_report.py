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
        "## Paired bootstrap over test sentences (grammar arm against each arm)",
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
