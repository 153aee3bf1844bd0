"""Typed configs: dataclasses are the source of truth, YAML files override them, `key=value` overrides those.

    cfg = load_config(SpatialConfig, "configs/spatial/quick.yaml", ["model.pos_dim=64", "train.steps=500"])

Unknown keys and values of the wrong type are errors that name the key (and the file), with a suggestion
for near-misses: a typo must never silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it and where it came from."""


def suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check/convert one value against a type hint (int, float, str, bool, None, Optional, tuple, list, dataclass)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        # each option's own error, without the repeated "where: " prefix: "expected a bool; 'x' is not one of [...]"
        reasons = "; or ".join(e[len(where) + 2:] if e.startswith(f"{where}: ") else e for e in errors)
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {reasons}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            items = [_convert(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, where)
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):          # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from a (nested) dict; every key must be a field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}{suggest(str(key), names)}; "
                              f"valid keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:           # __post_init__ checks
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(cfg) -> dict:
    """Plain, YAML-safe dict (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


def parse_overrides(overrides: list[str]) -> dict:
    """['a.b=3', 'c=[1, 2]'] -> {'a': {'b': 3}, 'c': [1, 2]}; values are parsed as YAML."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (for example model.pos_dim=64)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse the value: {err}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return out


def merge_dicts(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def merge_overrides(cls, config, overrides: list[str]):
    """`key=value` overrides on top of an existing config (a resumed run's), checked like any other."""
    if not overrides:
        return config
    try:
        return from_dict(cls, merge_dicts(to_dict(config), parse_overrides(overrides)))
    except ConfigError as err:
        raise ConfigError(f"command-line override: {err}") from None


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None):
    """Defaults of `cls`, then the YAML file at `path`, then `key=value` overrides."""
    data = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            line = err.object.count(b"\n", 0, err.start) + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{err.object[err.start]:02x}); config files "
                              "must be UTF-8") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config sections")
        try:
            from_dict(cls, merge_dicts(to_dict(cls()), loaded))     # check the file on its own, to name it
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        data = merge_dicts(data, loaded)
    if overrides:
        try:
            data = merge_dicts(data, parse_overrides(overrides))
            return from_dict(cls, data)
        except ConfigError as err:
            raise ConfigError(f"command-line override: {err}") from None
    return from_dict(cls, data)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# -- describing a config: every key, its default and its meaning ---------------------------------------------------

def field_comments(cls) -> dict[str, str]:
    """The comment written beside each field of dataclass `cls` in its source, by field name.

    A field's comment is its trailing `# ...` plus the comment-only lines under it that start in the same column.
    A trailing comment that starts with extra spaces (`#   ...`) continues the comment of the field above, and the
    fields so joined share the whole text. Comment lines at another column (section headings) belong to no field.
    Fields of base classes are included; a class whose source cannot be read gives {}."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        out.update(_class_field_comments(klass))
    return out


def _class_field_comments(klass) -> dict[str, str]:
    import ast
    import inspect
    import io
    import textwrap
    import tokenize
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body
    fields_at = {n.lineno: (n.target.id, n.end_lineno) for n in body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    end = min([n.lineno for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))] + [len(source) + 1])
    comments = {t.start[0]: (t.start[1], t.string[1:]) for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT}
    lines = source.splitlines()
    groups: list[dict] = []
    current = None
    line = 1
    while line < min(end, len(lines) + 1):
        if line in fields_at:
            name, last = fields_at[line]
            col, text = next((comments[i] for i in range(line, last + 1) if i in comments), (None, ""))
            if current is not None and text.startswith("  "):          # '#   ...': continues the comment above
                current["names"].append(name)
            else:
                current = {"names": [name], "parts": [], "col": col}
                groups.append(current)
            current["parts"].append(text.strip())
            current["col"] = col
            line = last + 1
            continue
        if line in comments and lines[line - 1].lstrip().startswith("#") and current is not None:
            col, text = comments[line]
            if col == current["col"]:
                current["parts"].append(text.strip())
            else:
                current = None                                           # a section heading
        line += 1
    return {name: " ".join(p for p in g["parts"] if p) for g in groups for name in g["names"]}


def describe(config) -> list[tuple[str, Any, str]]:
    """(dotted key, value, meaning) for every field of a dataclass config, nested sections flattened.

    `config` is a dataclass (its defaults are described) or an instance (its values are). The value is YAML-safe
    (as `to_dict` gives it); the meaning is the field's comment in the source (`field_comments`), '' if none."""
    obj = config() if isinstance(config, type) else config
    helps = field_comments(type(obj))
    rows = []
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += [(f"{f.name}.{key}", v, h) for key, v, h in describe(value)]
        else:
            rows.append((f.name, to_dict(value), helps.get(f.name, "")))
    return rows


def format_description(rows: list[tuple[str, Any, str]]) -> str:
    """`describe` rows as aligned text, one key a line: key, value (as a key=value override writes it), meaning."""
    def inline(v) -> str:
        return yaml.safe_dump([v], default_flow_style=True, width=10**6).strip()[1:-1]
    cells = [(key, inline(value), meaning) for key, value, meaning in rows]
    w_key = max((len(k) for k, _, _ in cells), default=0)
    w_val = min(max((len(v) for _, v, _ in cells), default=0), 24)
    return "\n".join(f"{k:<{w_key}}  {v:<{w_val}}  {m}".rstrip() for k, v, m in cells) + "\n"


def dump_config(cfg) -> str:
    """The config as the YAML that `save_config` writes and `load_config` reads back."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_text(cls, path: str | Path | None = None, overrides: list[str] | None = None,
                listing: bool = False) -> str:
    """What a `config` command prints: the config resolved from `cls`'s defaults, the YAML file and the overrides,
    as YAML, or (listing) every key with its value and its meaning (`describe`)."""
    cfg = load_config(cls, path, overrides)
    return format_description(describe(cfg)) if listing else dump_config(cfg)
