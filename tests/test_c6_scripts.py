"""scripts/c6_landmark.py (the pre-registered C6 verdict) and scripts/hexagon_ladder.py's C6 rows (amendment A2):
known answers, and the verdicts recorded in docs/results/c6-landmark.md reproduced from the committed records."""
import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_rule():
    v = _script("c6_landmark").verdict
    assert v([2000, 4000, 20000]) == "holds"             # the evaluation at 20,000 counts
    assert v([2000, None, 4000]) == "mixed (2 of 3 seeds)"
    assert v([None, None, None]) == "fails"
    assert v([2000, 22000, 4000]) == "mixed (2 of 3 seeds)"   # past 20k is not within it


def test_recorded_verdicts_reproduce(capsys):
    _script("c6_landmark").main([str(ROOT / "docs/results/c6-landmark")])
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and " | 3 of 3 | " in line}
    assert rows["linear-stimulus"].endswith("**holds** |")
    assert rows["relu-stimulus"].endswith("**fails** |")
    assert "4,000, 2,000, 4,000" in rows["linear-stimulus"]
    assert rows["relu-product"].endswith("**fails** |") and rows["linear-product"].endswith("**fails** |")
    assert set(rows) == {"relu-stimulus", "linear-stimulus", "relu-product", "linear-product"}


def test_ladder_reads_c6_runs_under_their_search_names(tmp_path):
    ladder = _script("hexagon_ladder")
    (tmp_path / "hexagon-search").mkdir()
    shutil.copy(ROOT / "docs/results/hexagon-search.md", tmp_path / "hexagon-search.md")
    run = tmp_path / "c6-landmark" / "linear-stimulus-seed1"
    (run / "analysis").mkdir(parents=True)
    (run / "analysis" / "metrics.json").write_text(json.dumps({"mean_over_worlds": {
        "frac_grid_of_active": 0.25, "frac_square_of_active": 0.5, "frac_band_of_active": 0.125}}))
    (run / "metrics.json").write_text(json.dumps({"step": 20000, "acc_zero_shot_L500": 0.75}))
    other = tmp_path / "c6-landmark" / "relu-stimulus-noxcorr-seed0" / "analysis"     # not a search arm: left out
    other.mkdir(parents=True)
    (other / "metrics.json").write_text((run / "analysis" / "metrics.json").read_text())
    rows = ladder.collect(tmp_path / "hexagon-search")
    assert list(rows) == [("L1", "C6 run")]
    assert rows[("L1", "C6 run")][1] == {"steps": 20000, "hex": 0.25, "square": 0.5, "band": 0.125,
                                          "zero_shot_L500": 0.75}
