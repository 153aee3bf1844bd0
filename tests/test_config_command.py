"""`temt-spatial config` / `temt-language config`: the resolved config as YAML, and every key with its default and
the meaning written beside its field (temt_core.config.describe)."""
from dataclasses import dataclass, field

import yaml

from language.cli import main as language_main
from language.train import LanguageConfig
from spatial.cli import main as spatial_main
from spatial.config import SpatialConfig
from temt_core.config import describe, field_comments, from_dict, load_config, to_dict


@dataclass
class _Inner:
    depth: int = 3          # how deep
    # a section heading, not a field's comment
    width: float = 0.5      # how wide, spread
                            # over two lines
    plain: str = "x"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=lambda: _Inner(depth=7))
    weight: float = 0.0     # weight of a loss on the true
    scale: float = 1.0      #   displacements, and its scale (shared by both fields)
    flags: tuple[int, ...] = (1, 2)   # a tuple


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_field_comments_follow_the_source_layout():
    assert field_comments(_Inner) == {"depth": "how deep", "width": "how wide, spread over two lines", "plain": ""}
    shared = "weight of a loss on the true displacements, and its scale (shared by both fields)"
    assert field_comments(_Outer) == {"inner": "", "weight": shared, "scale": shared, "flags": "a tuple"}


def test_describe_flattens_sections_with_the_instance_defaults():
    rows = describe(_Outer)
    assert rows == [("inner.depth", 7, "how deep"), ("inner.width", 0.5, "how wide, spread over two lines"),
                    ("inner.plain", "x", ""), ("weight", 0.0, rows[3][2]), ("scale", 1.0, rows[3][2]),
                    ("flags", [1, 2], "a tuple")]
    assert describe(_Outer(weight=2.0))[3][1] == 2.0          # an instance: its values


def test_describe_covers_every_key_of_both_configs():
    for cls in (SpatialConfig, LanguageConfig):
        rows = describe(cls)
        assert {k: v for k, v, _ in rows} == _flat(to_dict(cls()))
        assert sum(bool(h) for _, _, h in rows) > 0.6 * len(rows)        # most fields carry a comment
    helps = {k: h for k, _, h in describe(SpatialConfig)}
    assert helps["model.pos_dim"].startswith("E; TEM's g has 120 units")
    assert "'orthogonal'" in helps["model.transition"]                 # a comment continued on the next line
    assert helps["train.isometry_scale"] == helps["train.w_isometry"] and "0 = off" in helps["train.w_isometry"]
    assert helps["model.n_actions"] == "square grid: stay + 4 moves (TEM)"   # the '# task' heading stays out


def test_spatial_config_prints_the_resolved_yaml(capsys):
    args = ["--config", "configs/spatial/quick.yaml", "model.pos_dim=64"]
    assert spatial_main(["config", *args]) == 0
    printed = from_dict(SpatialConfig, yaml.safe_load(capsys.readouterr().out))
    assert printed == load_config(SpatialConfig, args[1], args[2:]) and printed.model.pos_dim == 64


def test_spatial_config_list_and_errors(capsys):
    assert spatial_main(["config", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(describe(SpatialConfig))
    assert any(line.split()[:2] == ["train.grad_clip", "2.0"] and "gradient-norm clip" in line for line in lines)
    assert spatial_main(["config", "model.pos_dmi=3"]) == 2
    assert "did you mean 'pos_dim'" in capsys.readouterr().err


def test_language_config_prints_yaml_and_lists_keys(capsys):
    assert language_main(["config", "--config", "configs/language/quick.yaml", "train.steps=7"]) == 0
    printed = from_dict(LanguageConfig, yaml.safe_load(capsys.readouterr().out))
    assert printed.train.steps == 7 and printed == load_config(LanguageConfig, "configs/language/quick.yaml",
                                                               ["train.steps=7"])
    assert language_main(["config", "--list", "eval.bootstrap=500"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("eval.bootstrap "))
    assert line.split()[1] == "500" and "bootstrap resamples (of seeds and test sentences)" in line
    assert language_main(["config", "eval.bootstrp=5"]) == 2
