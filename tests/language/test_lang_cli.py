"""The command line: train/evaluate/export/actions/study on a toy treebank, and clear errors for bad input."""
import json

import pytest

from lang_toydata import tiny_overrides
from language.cli import main
from language.report import collect


def test_bad_config_key_names_the_key(toy_root, tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path / "r"), *tiny_overrides(toy_root), "model.d_modle=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown config key 'model.d_modle'" in err and "did you mean 'd_model'" in err
    rc = main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_malformed_treebank_reports_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n2\tB\tb\tX\tX\t_\tQ\tdep\t_\t_\n")
    assert main(["actions", str(bad)]) == 2
    assert f"{bad}:2: HEAD 'Q'" in capsys.readouterr().err
    assert main(["actions", str(bad), "--on-error", "skip"]) == 0
    assert "skipped 1" in capsys.readouterr().out


@pytest.mark.slow          # 25 s on a loaded machine: the whole CLI path end to end
def test_train_evaluate_export_and_study(toy_root, tmp_path, capsys):
    run = tmp_path / "s"
    assert main(["train", "--out", str(run), *tiny_overrides(toy_root, **{"train.steps": 20})]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert "test: word ppl" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 2
    assert "touched once" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "words.json").is_file()

    report = tmp_path / "report.md"
    out = tmp_path / "study"
    rc = main(["study", "--out", str(out), "--report", str(report), "--arms", "sinusoidal,grammar,grammar_tree",
               "--seeds", "0,1", *tiny_overrides(toy_root, **{"train.steps": 20})])
    assert rc == 0
    text = report.read_text()
    for heading in ("## Verdict", "## Language-model perplexities on test", "## Conditional diagnostic",
                    "## Bootstrap over seeds and test sentences", "## Learning curves", "| grammar |", "| grammar_tree |"):
        assert heading in text, heading
    res = collect(out, ["sinusoidal", "grammar", "grammar_tree"], [0, 1])
    g = res["arms"]["grammar"]["ppl"]
    assert g["best"]["mean"] <= g["joint"]["mean"] + 1e-6 and len(g["beam5"]["seeds"]) == 2
    assert res["arms"]["grammar"]["params"] == json.loads((out / "grammar" / "seed0" / "train.json").read_text())[
        "params"]
    p_sin = res["arms"]["sinusoidal"]["params"]
    assert abs(p_sin - res["arms"]["grammar"]["params"]) / p_sin < 0.02          # matched parameter counts
    # a second call reuses every finished run and scores nothing twice
    assert main(["study", "--out", str(out), "--report", str(report), "--arms", "sinusoidal", "--seeds", "0",
                 *tiny_overrides(toy_root, **{"train.steps": 20})]) == 0
    assert "trained already" in capsys.readouterr().out
    assert main(["study", "--out", str(out), "--arms", "sinusodial"]) == 2
    assert "unknown arm" in capsys.readouterr().err


def test_report_keeps_notes_added_by_hand(tmp_path):
    from language.report import HAND_NOTES_MARKER, with_hand_notes
    path = tmp_path / "language.md"
    assert with_hand_notes("new tables\n", path) == "new tables\n"
    path.write_text("old tables\n" + HAND_NOTES_MARKER + " ...*\n\n## Disclosures\n- kept\n")
    text = with_hand_notes("new tables\n", path)
    assert text.startswith("new tables\n") and "## Disclosures\n- kept" in text and "old tables" not in text
