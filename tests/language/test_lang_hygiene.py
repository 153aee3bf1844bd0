"""What importing or calling the language package does to the rest of the process: nothing it should not."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HF = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def _run(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in HF}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_package_sets_no_hf_variable():
    code = ("import os, language.data, language.study, language.cli; "
            "print([k for k in os.environ if k.startswith('HF_')])")
    assert _run(code) == "[]"


def test_encode_split_is_offline_only_while_it_runs(toy_root, monkeypatch):
    from language.data import DataConfig, prepare
    for k in HF:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")               # a value the user set stays as it is
    data = prepare(DataConfig(root=str(toy_root), train_limit=20), splits=("dev",))
    assert len(data.splits["dev"]) > 0
    assert "HF_DATASETS_OFFLINE" not in os.environ and os.environ["HF_HUB_OFFLINE"] == "0"


@pytest.mark.parametrize("first", ["language.report", "language.study", "language.arms"])
def test_report_and_study_import_without_a_cycle(first):
    """report reads the arm registry from language.arms, never from study (which imports report)."""
    assert _run(f"import sys, {first}; print('language.study' in sys.modules)") == str(first == "language.study")
    imports = {}
    for name in ("report", "arms"):
        tree = ast.parse((ROOT / "language" / f"{name}.py").read_text())
        imports[name] = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "study" not in imports["report"] and not imports["arms"] - {None}


def test_no_library_module_picks_the_matplotlib_backend():
    hits = [str(p.relative_to(ROOT)) for pkg in ("temt_core", "spatial", "language") for p in (ROOT / pkg).rglob("*.py")
            if "matplotlib.use(" in p.read_text()]
    assert hits == []
