"""Dataclasses filled from plain mappings (YAML presets, dotted overrides): types checked, unknown keys
named with a suggestion, out-of-range values named by their dotted key. The stage sections themselves are
in ``clearbench.config``."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

import yaml

from clearbench.types import unknown_name_message

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it and says how to fix it."""


class FieldError(ValueError):
    """A dataclass field's value is out of range (raised by ``__post_init__``; ``from_dict`` adds the key path)."""

    def __init__(self, field: str, value: Any, need: str):
        super().__init__(f"{field}={value!r}: {need}")
        self.field, self.value, self.need = field, value, need


def check_numbers(obj: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Finite numbers in the named fields of ``obj``: > 0 for ``positive``, >= 0 for ``non_negative``."""
    for name in positive + non_negative:
        value = getattr(obj, name)
        need = ("an integer" if isinstance(value, int) else "a finite number") + (" > 0" if name in positive else " >= 0")
        if not math.isfinite(value) or value < 0 or (value == 0 and name in positive):
            raise FieldError(name, value, f"must be {need}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursing into dataclasses, lists, dicts)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {', '.join(_type_name(a) for a in args)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and value not in allowed:  # YAML 1.1 reads `no`, `off`, `yes`, `on` as booleans
            value = next((w for w in (("yes", "on", "true") if value else ("no", "off", "false")) if w in allowed),
                         value)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, tp, where)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(unknown_name_message("config key", path, [f"{where}.{n}" if where else n for n in names]))
        default = _field_default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial section overrides the field's own default instance, not the class defaults
            value = deep_merge(to_dict(default), value)
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{where + '.' if where else ''}{exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None if f.default is dataclasses.MISSING else f.default


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.lr=1e-4", "lora.enabled=true"]`` -> nested dict (values parsed as YAML scalars)."""
    nested: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); close its brackets "
                              f"or quote it") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Fields added after studies existed, left out of stage keys (and of --resume's comparison) while they hold these
# values, so that adding them neither re-runs finished stages nor refuses to resume interrupted ones (phase
# objective; study.seeds of a single study; train.group_by_length and report_to; eval max_per_cell;
# study.scenarios; unlearn.forget_batch and forget_config). Their values here must never change meaning.
ADDED_DEFAULTS = {"objective": "lm", "seeds": [], "group_by_length": 0, "report_to": "", "max_per_cell": 0,
                  "eval_max_per_cell": 0, "attacks": [], "attack_options": {}, "attack_max_per_cell": 0,
                  "scenarios": ["forget"], "forget_batch": [], "forget_config": ""}


def without_added_defaults(obj: Any) -> Any:
    """``obj`` (a config as plain data) without the ADDED_DEFAULTS fields that hold their default."""
    if isinstance(obj, dict):
        return {k: without_added_defaults(v) for k, v in obj.items()
                if not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}
    if isinstance(obj, list):
        return [without_added_defaults(v) for v in obj]
    return obj
