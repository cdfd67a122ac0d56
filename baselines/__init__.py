"""The unlearning methods: one module per method, registered by explicit import.

Every method module defines ``NAME``, ``BATCHES`` (batch kinds for the default config),
``NEEDS_REFERENCE``, a ``Config`` dataclass and ``loss(model, batches, ref, cfg, step)``; optionally
``batches(cfg)`` / ``needs_reference(cfg)`` when a config option changes what it needs,
``resolve(cfg, steps_per_epoch, total_steps)`` when the config depends on the run's length,
``on_train_end(model, initial_state, cfg)`` and ``CLEAR_RECIPE`` (overrides that reproduce CLEAR's code).
The trainer should ask through ``batches_for`` / ``needs_reference_for`` / ``resolve_config`` rather than
read the constants.

A method outside this package is a *plugin*: ``--method my_pkg.my_method`` (or a ``study.methods`` entry of that
form) imports the module ``my_pkg.my_method``, which must follow the same contract (``check_contract``); its
name everywhere (run names, ``provenance.run.method``) is the dotted module path. docs/submitting.md has a
worked example.
"""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any, Mapping

from baselines import (dpo, grad_ascent, grad_diff, idk, kl, llmu, npo, retain_ft, rmu, scrub, simnpo,
                       sku)
from clearbench.types import unknown_name_message

METHODS: dict[str, types.ModuleType] = {
    "retain_ft": retain_ft,
    "grad_ascent": grad_ascent,
    "grad_diff": grad_diff,
    "kl": kl,
    "idk": idk,
    "dpo": dpo,
    "npo": npo,
    "simnpo": simnpo,
    "llmu": llmu,
    "rmu": rmu,
    "scrub": scrub,
    "sku": sku,
}

# "random": answers of the run's retain records (LLMU's normal data); "random_forget": of the other forget records
BATCH_KINDS = ("forget", "retain", "idk", "random", "random_forget")


# the method contract: attribute -> (what it must be, a test of it)
CONTRACT: dict[str, tuple[str, Any]] = {
    "NAME": ("a str", lambda v: isinstance(v, str) and bool(v)),
    "BATCHES": (f"a tuple of batch kinds among {', '.join(BATCH_KINDS)}",
                lambda v: isinstance(v, (tuple, list)) and all(k in BATCH_KINDS for k in v)),
    "NEEDS_REFERENCE": ("a bool", lambda v: isinstance(v, bool)),
    "Config": ("a dataclass (its fields are the method's options)", lambda v: isinstance(v, type) and dataclasses.is_dataclass(v)),
    "loss": ("a function loss(model, batches, ref, cfg, step) -> (loss, logs)", callable),
}
_PLUGINS: dict[str, types.ModuleType] = {}  # dotted module path -> the checked module


def is_plugin_name(name: str) -> bool:
    """A dotted module path (``my_pkg.my_method``), the form a plugin method is named by."""
    return isinstance(name, str) and "." in name and all(part.isidentifier() for part in name.split("."))


def check_contract(name: str, module: types.ModuleType) -> types.ModuleType:
    """``module`` defines every attribute of ``CONTRACT`` with the right kind, else one error naming what is wrong."""
    problems = [f"{attr} is missing" if not hasattr(module, attr) else f"{attr} is not {what}"
                for attr, (what, ok) in CONTRACT.items() if not (hasattr(module, attr) and ok(getattr(module, attr)))]
    if problems:
        raise ValueError(f"method plugin {name!r} ({getattr(module, '__file__', '?')}) does not follow the method "
                         f"contract: {'; '.join(problems)}. A method module defines "
                         + ", ".join(f"{a} ({w})" for a, (w, _) in CONTRACT.items()) + " (docs/submitting.md)")
    return module


def load_plugin(name: str) -> types.ModuleType:
    """Import the plugin method module ``name`` (a dotted path on sys.path) once and check its contract."""
    if name not in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"method {name!r}: cannot import the plugin module ({exc}); install its package or put "
                             f"the directory that holds it on PYTHONPATH") from None
        _PLUGINS[name] = check_contract(name, module)
    return _PLUGINS[name]


def get_method(name: str) -> types.ModuleType:
    """The method module for ``name``: a built-in method, or a plugin module named by its dotted path; unknown
    names fail with a suggestion."""
    if name in METHODS:
        return METHODS[name]
    if is_plugin_name(name):
        return load_plugin(name)
    raise ValueError(unknown_name_message("method", name, METHODS).rstrip(".")
                     + "; or a plugin method module by its dotted path, e.g. my_pkg.my_method.")


def _check_type(method: str, key: str, value: Any, hint: Any) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        ok = False
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise TypeError(
            f"method {method!r}: option {key!r} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def method_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """``get_method(name).Config`` with ``overrides`` applied; unknown keys and wrong types are errors."""
    module = get_method(name)
    hints = typing.get_type_hints(module.Config)
    known = [f.name for f in dataclasses.fields(module.Config)]
    values = {}
    for key, value in dict(overrides or {}).items():
        if key not in known:
            if not known:
                raise ValueError(f"method {name!r} takes no options, got {key!r}.")
            raise ValueError(unknown_name_message(f"option for method {name!r}:", key, known))
        values[key] = _check_type(name, key, value, hints[key])
    return module.Config(**values)


def clear_recipe(name: str) -> dict[str, Any]:
    """Config overrides that reproduce what CLEAR's code ran for this method ({} where we match it)."""
    return dict(getattr(get_method(name), "CLEAR_RECIPE", {}))


def batches_for(name: str, cfg: Any) -> tuple[str, ...]:
    """Batch kinds the trainer must supply every step for this method and config."""
    module = get_method(name)
    kinds = tuple(module.batches(cfg)) if hasattr(module, "batches") else tuple(module.BATCHES)
    bad = [k for k in kinds if k not in BATCH_KINDS]
    if bad:
        raise ValueError(f"method {name!r} asks for unknown batch kinds {bad}; known: {', '.join(BATCH_KINDS)}")
    return kinds


def needs_reference_for(name: str, cfg: Any) -> bool:
    """Whether the trainer must build a ``clearbench.reference.Reference`` for this method and config."""
    module = get_method(name)
    return bool(module.needs_reference(cfg)) if hasattr(module, "needs_reference") else bool(module.NEEDS_REFERENCE)


def resolve_config(name: str, cfg: Any, steps_per_epoch: int, total_steps: int) -> Any:
    """The method's config completed with the run's length, once, before training: ``steps_per_epoch``
    optimizer steps per pass over the forget set, ``total_steps`` in the run. Unchanged for methods
    without a ``resolve`` hook."""
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(f"resolve_config({name!r}): steps_per_epoch={steps_per_epoch} and total_steps={total_steps} "
                         f"must be >= 1")
    module = get_method(name)
    return module.resolve(cfg, steps_per_epoch, total_steps) if hasattr(module, "resolve") else cfg
