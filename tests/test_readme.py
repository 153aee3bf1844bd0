"""The examples the documentation shows run as shown: README.md's Python snippets, and the command lines in
spatial/analyse.py's docstring (parsed by the real command line and resolved into the config they claim)."""
import re
import shlex
from pathlib import Path

import pytest
import torch

import spatial.analyse
import spatial.cli
from spatial.analyse import AnalysisConfig
from temt_core.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_snippets_run():
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no ```python block"
    for code in blocks:
        torch.manual_seed(0)
        namespace = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), namespace)
        if "out" in namespace:                       # the core snippet: a finite loss with gradients
            assert torch.isfinite(namespace["out"].loss)


def _analyse_examples() -> list[list[str]]:
    examples = []
    for line in spatial.analyse.__doc__.splitlines():
        if not re.match(r"\s*(temt-spatial|python -m spatial) analyse ", line):
            continue
        words = shlex.split(line.split("#")[0])
        for prefix in (["temt-spatial"], ["python", "-m", "spatial"]):
            if words[:len(prefix) + 1] == prefix + ["analyse"]:
                examples.append(words[len(prefix):])
    return examples


@pytest.mark.parametrize("argv", _analyse_examples(), ids=" ".join)
def test_analyse_docstring_examples_parse_into_the_config_they_show(argv, monkeypatch):
    seen = {}

    def resolve(args):
        seen["config"] = load_config(AnalysisConfig, args.config, args.overrides)
        seen["run_dir"] = args.run_dir
        return 0

    monkeypatch.setattr(spatial.cli, "_analyse", resolve)
    assert spatial.cli.main(argv) == 0
    cfg = seen["config"]
    for item in argv[2:]:                            # every key=value shown is a field, with the value shown
        key, value = item.split("=", 1)
        shown = load_config(AnalysisConfig, None, [item])
        assert getattr(cfg, key) == getattr(shown, key) != getattr(AnalysisConfig(), key), item
    assert seen["run_dir"] == argv[1]


def test_the_analyse_docstring_has_an_example_with_overrides():
    assert any(len(argv) > 2 for argv in _analyse_examples())
