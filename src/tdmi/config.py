"""Typed experiment configs: dataclasses with documented defaults, loaded from YAML, overridable from the CLI.

One YAML file per experiment lives in ``configs/``. A file only states what differs from the defaults of
``tdmi.config_schema`` (the paper's TDMI on PoseTrack17: W48, 384x288, delta=2), whose every field says where its
value comes from; this module loads, overrides, validates and dumps them.

    cfg = load_config("configs/tdmi_w48_pt17.yaml", overrides=["train.lr=5e-4", "model.tde.modulation=false"])
    print(dump_config(cfg))     # the fully resolved config, as YAML

Unknown keys, wrong types and values outside a closed set are errors that name the key, the value and the
choices. Sizes are written ``[w, h]`` (as HRNet's yaml files do); tensors are ``[..., h, w]``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

# The schema (dataclasses and ConfigError) is re-exported: ``from tdmi.config import ModelConfig`` keeps working.
from tdmi.config_schema import (NUMERIC_RANGES, AugmentConfig, BackboneConfig, ConfigError,  # noqa: F401
                                DataConfig, ExperimentConfig, MIConfig, ModelConfig, RDMConfig, TDEConfig, TestConfig,
                                TrainConfig)


# --------------------------------------------------------------------------------------------------------------
# Loading, overriding, validating


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The experiment configs shipped inside the package (``configs/`` in a checkout links here)."""


def packaged_configs() -> list[Path]:
    """The shipped experiment configs, sorted by name."""
    return sorted(PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``tdmi_w48_pt17`` or ``tdmi_w48_pt17.yaml``)."""
    candidate = Path(path)
    if candidate.is_file() or len(candidate.parts) > 1:
        return candidate
    name = candidate.name if candidate.suffix == ".yaml" else f"{candidate.name}.yaml"
    shipped = PACKAGED_CONFIGS / name
    return shipped if shipped.is_file() else candidate


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (a path, or the name of a shipped config; the defaults when ``path`` is None) and apply
    ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        if not path.is_file():
            names = ", ".join(p.stem for p in packaged_configs())
            raise ConfigError(f"{path}: config file not found (a path, or one of the shipped configs: {names})")
        try:
            with path.open(encoding="utf-8") as stream:  # a stream, so YAML's message names the file, not a string
                loaded = yaml.safe_load(stream)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        raw = loaded
    overridden: dict[str, str] = {}
    for item in overrides:
        apply_override(raw, item)
        overridden[item.partition("=")[0].strip()] = item
    where = str(path) if path is not None else "<defaults>"
    try:
        return check_ranges(from_dict(ExperimentConfig, raw, where=where), where)
    except ConfigError as err:
        # A value that came from --set is blamed on the --set argument, not on the file.
        detail = str(err)[len(where) + 2:]
        unknown = re.match(r"unknown key '([^']+)'", detail)
        named = unknown.group(1) if unknown else re.split(r"[ =\[]", detail, maxsplit=1)[0]
        for key, item in overridden.items():
            # the key set, a field inside a section that was set as a whole, or a bad section name on the way
            if named == key or named.startswith(key + ".") or key.startswith(named + "."):
                raise ConfigError(f"--set {item}: {detail}") from None
        raise


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override to a raw nested dict; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=5e-4")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key component")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def from_dict(cls: type, raw: Any, where: str = "<config>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys, types and closed choices."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in known]
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key {name!r}; valid keys here: {', '.join(known)}")
    kwargs = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(hints[key], value, where, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, name)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, name)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {name}={value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {name} must be a list, got {value!r}")
        return [_coerce(args[0], v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads "5e-4" as a string; accept any text Python parses as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        return value
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (JSON/YAML-serialisable)."""
    return dataclasses.asdict(cfg)


def flatten_dict(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: ``{"model": {"delta": 2}} -> {"model.delta": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_dict(value, name + "."))
        else:
            flat[name] = value
    return flat


def dump_config(cfg: Any) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


LEGACY_DEFAULTS = {("model", "tde", "stage1_feature"): "layer1",
                   ("model", "mi", "formulation"): "vsd"}  # the default until 2026-12-06 (now balanced)
"""Fields added, or whose default changed, after checkpoints were already saved, with the value an earlier checkpoint
used: a stored config without the field means that value, not today's default. (``mi.formulation`` has always been
stored; its entry guards a hand-trimmed sidecar from silently switching objective.)"""


def config_from_dict(raw: dict[str, Any], where: str = "<dict>") -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from :func:`to_dict` output (e.g. a checkpoint sidecar).

    A stored config that predates a field in :data:`LEGACY_DEFAULTS` gets the value the model was built with then.
    """
    raw = with_legacy_defaults(raw)
    return check_ranges(from_dict(ExperimentConfig, raw, where=where), where)


def check_ranges(cfg: ExperimentConfig, where: str = "<config>") -> ExperimentConfig:
    """``cfg``, after checking every numeric field against :data:`~tdmi.config_schema.NUMERIC_RANGES` (and that
    floats are finite); the first value out of range is a :class:`ConfigError` naming the key."""
    import math

    flat = flatten_dict(to_dict(cfg))
    for key, (low, high, low_open) in NUMERIC_RANGES.items():
        value = flat[key]
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if item is None:
                continue
            name = f"{key}[{i}]" if isinstance(value, list) else key
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{where}: {name}={item!r} must be a finite number")
            too_low = low is not None and (item <= low if low_open else item < low)
            if too_low or (high is not None and item > high):
                bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
                          f"<= {high:g}" if high is not None else ""]
                raise ConfigError(f"{where}: {name}={item!r} is out of range: it must be "
                                  f"{' and '.join(b for b in bounds if b)}")
    return cfg


def with_legacy_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the stored config ``raw`` with :data:`LEGACY_DEFAULTS` filled in where their section exists and the
    field does not."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for path, value in LEGACY_DEFAULTS.items():
        node = raw
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] not in node:
            node[path[-1]] = value
    return raw
