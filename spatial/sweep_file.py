"""The sweep file: a base config, a grid and/or a list of members, and seeds, read into Members and grouped.

See spatial/sweep.py for the format and what a sweep writes.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from temt_core.config import ConfigError, from_dict, load_config, merge_dicts, suggest, to_dict
from temt_core.population import check_population_config, structure_key

from .config import SpatialConfig

SWEEP_KEYS = ("base_config", "base", "grid", "members", "seeds")
# keys members of one population may differ in, outside the model (the model's: population.MEMBER_KEYS); every
# other key of SpatialConfig is a grouping key
MEMBER_TRAIN_KEYS = ("lr_max", "lr_min", "lr_half_life", "grad_clip", "loss_on", "seed")
MEMBER_EVAL_KEYS = ("n_worlds", "steps", "seed")


@dataclass
class Member:
    name: str
    overrides: dict            # dotted key -> value (seed included as train.seed)
    config: SpatialConfig
    group: int = -1
    label: str | None = None   # the arm's name from the sweep file (members: - {arm: NAME, ...}), if given


# -- the sweep file ------------------------------------------------------------------------------------------------

def _flatten_keys(d: dict, prefix: str = "") -> dict:
    """{'model': {'w_g': 1}} or {'model.w_g': 1} -> {'model.w_g': 1}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_keys(v, key + "."))
        else:
            out[key] = v
    return out


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        node = out
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = v
    return out


def _check_key(key: str, base: dict, where: str) -> None:
    """A dotted key must name a leaf of the config (a section alone is not a value)."""
    node, done = base, []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            options = [".".join(done + [o]) for o in node] if isinstance(node, dict) else []
            raise ConfigError(f"{where}: key {key!r} does not exist{suggest(key, options)}; valid keys "
                              f"{'in ' + repr('.'.join(done)) if done else 'at the top'}: {', '.join(options)}")
        node, done = node[part], done + [part]
    if isinstance(node, dict):
        raise ConfigError(f"{where}: key {key!r} is a config section, not a value; name one of its keys "
                          f"({', '.join(f'{key}.{o}' for o in node)})")


def load_sweep(path: str | Path) -> list[Member]:
    """Members of a sweep file, named, resolved and grouped. Every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in spec:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} in the sweep file{suggest(str(key), SWEEP_KEYS)}; "
                              f"valid keys: {', '.join(SWEEP_KEYS)}")
    base_file = spec.get("base_config")
    if base_file is not None:
        if not isinstance(base_file, str):
            raise ConfigError(f"{path}: base_config must be a path to a spatial config file, got {base_file!r}")
        candidates = [Path(base_file), path.parent / base_file]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ConfigError(f"{path}: base_config {base_file!r} does not exist (looked in the working "
                              f"directory and next to the sweep file)")
        base_file = found
    base = load_config(SpatialConfig, base_file)
    extra = spec.get("base") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{path}: base must be a mapping of config sections, got {extra!r}")
    try:
        base = from_dict(SpatialConfig, merge_dicts(to_dict(base), _nest(_flatten_keys(extra))))
    except ConfigError as err:
        raise ConfigError(f"{path}: base: {err}") from None
    base_dict = to_dict(base)

    points = [{}]
    if "grid" in spec:
        grid = spec["grid"]
        if not isinstance(grid, dict) or not grid:
            raise ConfigError(f"{path}: grid is empty: give at least one key with a list of values "
                              "(for example  grid: {model.w_reg_e: [0.01, 0.1]}), or leave grid out")
        grid = _flatten_keys(grid)
        for key, values in grid.items():
            _check_key(key, base_dict, f"{path}: grid")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: grid key {key!r} needs a non-empty list of values, got {values!r}")
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    arms, labels = [{}], [None]
    if "members" in spec:
        members = spec["members"]
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{path}: members must be a non-empty list of override mappings, got {members!r}")
        arms, labels = [], []
        for i, m in enumerate(members):
            if not isinstance(m, dict) or not m:
                raise ConfigError(f"{path}: members[{i}] must be a non-empty mapping of overrides, got {m!r}")
            m = dict(m)
            label = m.pop("arm", None)          # an optional name for the arm (a pre-registered ladder's names)
            if label is not None and (not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", label)):
                raise ConfigError(f"{path}: members[{i}]: arm must be a name of letters, digits and ._+- "
                                  f"(got {label!r})")
            if label is not None and label in labels:
                raise ConfigError(f"{path}: members[{i}]: arm name {label!r} is used twice")
            m = _flatten_keys(m)
            for key in m:
                _check_key(key, base_dict, f"{path}: members[{i}]")
            arms.append(m)
            labels.append(label)
    seeds = spec.get("seeds")
    if seeds is not None:
        if (not isinstance(seeds, list) or not seeds or
                not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
            raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{path}: seeds has repeated values: {seeds}")
        if any("train.seed" in d for d in points + arms):
            raise ConfigError(f"{path}: train.seed is set both by seeds and by grid/members; use one of them")
    else:
        seeds = [None]

    out: list[Member] = []
    for arm, label in zip(arms, labels):
        for point in points:
            clash = sorted(set(arm) & set(point))
            if clash:
                raise ConfigError(f"{path}: {clash[0]!r} is set both by a member and by the grid")
            for seed in seeds:
                overrides = {**arm, **point, **({} if seed is None else {"train.seed": seed})}
                where = f"{path}: member {overrides}"
                try:
                    config = from_dict(SpatialConfig, merge_dicts(base_dict, _nest(overrides)))
                except ConfigError as err:
                    raise ConfigError(f"{where}: {err}") from None
                if config.model_kind != "temt":          # populations stack TEM-t weights only
                    raise ConfigError(f"{where}: model_kind={config.model_kind!r}: sweeps train populations of "
                                      "TEM-t models; train TEM runs one by one with `temt-spatial train`")
                name = _member_name(len(out), overrides) if label is None else \
                    label + "".join(f"_{k.split('.')[-1]}={v}" for k, v in point.items()) + \
                    ("" if seed is None else f"-seed{seed}")
                out.append(Member(name, overrides, config, label=label))
    seen: dict = {}
    for m in out:
        key = json.dumps(to_dict(m.config), sort_keys=True)
        if key in seen:
            raise ConfigError(f"{path}: members {seen[key]} and {m.name} have the same config")
        seen[key] = m.name
    assign_groups(out, str(path))
    return out


def _member_name(index: int, overrides: dict) -> str:
    lasts = [k.split(".")[-1] for k in overrides]
    parts = []
    for k, v in overrides.items():
        short = k.split(".")[-1] if lasts.count(k.split(".")[-1]) == 1 else k
        value = "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        parts.append("seed" + value if k == "train.seed" else f"{short}={value}")
    name = re.sub(r"[^A-Za-z0-9._=+-]", "", "_".join(parts))[:80]
    return f"m{index:03d}" + (f"-{name}" if name else "")


def group_key(config: SpatialConfig) -> tuple:
    """Members with equal keys can share a population."""
    t = tuple((f.name, getattr(config.train, f.name)) for f in fields(config.train) if f.name not in MEMBER_TRAIN_KEYS)
    e = tuple((f.name, getattr(config.eval, f.name)) for f in fields(config.eval) if f.name not in MEMBER_EVAL_KEYS)
    return structure_key(config.model), t, e


def trains_alone(config: SpatialConfig) -> bool:
    """Members a population cannot hold (population.check_population_config: module norms, two streams; and the
    isometry control), and landmark members on a CPU, are trained one after another with the plain Trainer, into
    the same member folder layout."""
    if config.train.w_isometry:           # the isometry control needs the world's coordinates: Trainer only
        return True
    # Landmark populations are exact (tests/core/test_population.py) but slower than one model after another on a
    # CPU (0.80x wall, 0.91x CPU time for 4 members, benchmarks/population_speed.py --landmark stimulus): the loop
    # is sequential either way and batching members saves launches, which only a GPU pays for.
    if config.model.landmark is not None and not config.train.device.startswith("cuda"):
        return True
    try:
        check_population_config(config.model)
        return False
    except ValueError:
        return True


def assign_groups(members: list[Member], where: str = "sweep") -> list[list[Member]]:
    keys: list = []
    for m in members:
        if m.config.walks.kind == "graph":
            raise ConfigError(f"{where}: member {m.name}: walks.kind='graph' needs worlds given in code; sweeps "
                              "train square or hex worlds")
        k = ("alone",) + group_key(m.config) if trains_alone(m.config) else group_key(m.config)
        if k not in keys:
            keys.append(k)
        m.group = keys.index(k)
    return [[m for m in members if m.group == g] for g in range(len(keys))]
