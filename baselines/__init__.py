"""The unlearning methods: one module per method, registered by explicit import.

Every method module defines ``NAME``, ``BATCHES`` (batch kinds for the default config),
``NEEDS_REFERENCE``, a ``Config`` dataclass and ``loss(model, batches, ref, cfg, step)``; optionally
``batches(cfg)`` / ``needs_reference(cfg)`` when a config option changes what it needs,
``resolve(cfg, steps_per_epoch, total_steps)`` when the config depends on the run's length,
``on_train_end(model, initial_state, cfg)`` and ``CLEAR_RECIPE`` (overrides that reproduce CLEAR's code).
The trainer should ask through ``batches_for`` / ``needs_reference_for`` / ``resolve_config`` rather than
read the constants.
"""
from __future__ import annotations

import dataclasses
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


def get_method(name: str) -> types.ModuleType:
    """The method module for ``name``; unknown names fail with a suggestion."""
    if name not in METHODS:
        raise ValueError(unknown_name_message("method", name, METHODS))
    return METHODS[name]


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
