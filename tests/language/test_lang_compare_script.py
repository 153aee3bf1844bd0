"""scripts/language_compare.py: comparisons of recorded study results (the ladder's rungs use it)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from language_compare import compare  # noqa: E402


def _arm(kind, nll, n):
    key = "exact" if kind == "exact" else "best"
    nll = np.asarray(nll, dtype=float)
    return {"kind": kind, "n_tokens": list(n), "sentence_nll_seeds": {key: nll.tolist()},
            "sentence_nll_mean": {key: nll.mean(0).tolist()}}


def test_known_answers():
    rng = np.random.default_rng(0)
    n = rng.integers(5, 20, size=40)
    a = _arm("joint", rng.uniform(20, 60, size=(3, 40)), n)
    r = compare(a, a)
    assert r["ratio"] == pytest.approx(1.0) and r["ratio_ci95"][0] <= 1 <= r["ratio_ci95"][1]
    # seeds that agree, and b 0.1 nats per event worse on every sentence: the ratio is exp(-0.1) whatever is
    # resampled (the bootstrap draws each arm's seeds independently, so seeds that differ would move it)
    a = _arm("joint", np.repeat(rng.uniform(20, 60, size=(1, 40)), 3, axis=0), n)
    b = _arm("exact", np.array(a["sentence_nll_seeds"]["best"]) + 0.1 * n, n)
    r = compare(a, b)
    assert r["ratio"] == pytest.approx(math.exp(-0.1)) and r["ratio_ci95"] == pytest.approx([math.exp(-0.1)] * 2)
    with pytest.raises(SystemExit, match="different test events"):
        compare(a, _arm("exact", a["sentence_nll_seeds"]["best"], n + 1))


def test_command_line_names_a_missing_arm(tmp_path):
    n = [3, 4]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"arms": {"rope": _arm("exact", [[5.0, 6.0]], n)}}))
    script = str(ROOT / "scripts" / "language_compare.py")
    ok = subprocess.run([sys.executable, script, str(path), "rope", str(path), "rope"], capture_output=True, text=True)
    assert ok.returncode == 0 and "rope / rope: " in ok.stdout and "= 1.000 [1.000, 1.000]" in ok.stdout
    bad = subprocess.run([sys.executable, script, str(path), "grammar", str(path), "rope"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "no arm 'grammar' (it has rope)" in bad.stderr
