"""Typed configs (YAML + key=value, strict keys) and atomic, versioned checkpoints."""
import json
from dataclasses import dataclass, field

import pytest
import torch

from temt_core.checkpoint import (FORMAT_VERSION, CheckpointError, flatten, latest_checkpoint, load_checkpoint,
                                  save_checkpoint, unflatten, write_latest)
from temt_core.config import ConfigError, load_config, parse_overrides, to_dict
from temt_core.model import TEMtConfig


@dataclass
class Inner:
    size: int = 3
    rate: float = 0.5
    name: str | None = None
    sizes: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  size: 7\n  sizes: [4, 5, 6]\nflag: true\n")
    cfg = load_config(Outer, path, ["inner.rate=2", "inner.name=abc"])
    assert cfg == Outer(Inner(size=7, rate=2.0, name="abc", sizes=(4, 5, 6)), flag=True)
    assert isinstance(cfg.inner.rate, float)


def test_unknown_key_names_the_key_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  sise: 7\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'inner.sise' \(did you mean 'size'\?\)"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match=r"command-line override: unknown config key 'flags'"):
        load_config(Outer, None, ["flags=true"])


@pytest.mark.parametrize("override,match", [
    ("inner.size=2.5", r"inner.size: expected an integer, got 2.5"),
    ("inner.size=abc", r"inner.size: expected an integer, got 'abc'"),
    ("flag=1", r"flag: expected true or false"),
    ("inner.sizes=[1, x]", r"inner.sizes\[1\]: expected an integer"),
    ("inner", r"must look like key=value"),
])
def test_mistyped_values_are_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, None, [override])


def test_dataclass_checks_surface_as_config_errors():
    with pytest.raises(ConfigError, match="activation must be one of"):
        load_config(TEMtConfig, None, ["activation=swish"])


def test_parse_overrides_nests():
    assert parse_overrides(["a.b=3", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 3, "c": "x"}, "d": [1, 2]}


def test_to_dict_round_trip():
    cfg = Outer(Inner(size=9, sizes=(3,)))
    assert load_config(Outer, None, [f"inner.size={cfg.inner.size}", "inner.sizes=[3]"]) == cfg
    assert to_dict(cfg)["inner"]["sizes"] == [3]


def test_checkpoint_round_trip_with_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {"w": torch.randn(2, 2)}
    meta = {"optimizer": flatten(opt.state_dict(), "optim", tensors), "step": 5}
    path = save_checkpoint(tmp_path / "ck", tensors, meta)
    loaded, meta2 = load_checkpoint(path)
    assert meta2["step"] == 5 and meta2["format_version"] == FORMAT_VERSION == 2
    state = unflatten(meta2["optimizer"], loaded)
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(state)
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(opt2.state_dict()["state"][0][k], v)


def test_checkpoint_errors_and_atomic_replace(tmp_path):
    save_checkpoint(tmp_path / "ck", {"a": torch.ones(2)}, {"step": 1})
    # a crash mid-save leaves a .tmp directory, never a broken checkpoint under the real name
    (tmp_path / "ck.tmp-999").mkdir()
    assert load_checkpoint(tmp_path / "ck")[1]["step"] == 1
    save_checkpoint(tmp_path / "ck", {"a": torch.zeros(2)}, {"step": 2})
    assert load_checkpoint(tmp_path / "ck")[1]["step"] == 2
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "ck" / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="tensors.safetensors: checksum mismatch"):
        load_checkpoint(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "ck")
    write_latest(tmp_path, "ck")
    assert latest_checkpoint(tmp_path) == tmp_path / "ck"
