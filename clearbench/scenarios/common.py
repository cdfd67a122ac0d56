"""What the scenarios' plans share: seeded record subsets, the control configs, the plan-time checks of a scenario's
method list and the unlearn section of its runs (scoring and results: eval.scenario_io)."""
from __future__ import annotations

import random
from typing import Any

from clearbench.config import BenchConfig, ConfigError, UnlearnConfig, deep_merge, from_dict, to_dict
from clearbench.types import Record, unknown_name_message
from clearbench.unlearn import check_method_names

CONTROL_CONFIGS = ("retain_perturbed", "real_faces", "real_world")


def sample(records: list[Record], n: int, seed: str) -> list[Record]:
    """``n`` of ``records`` drawn by ``seed`` (all of them when there are no more), in id order; n = 0: all."""
    recs = sorted(records, key=lambda r: r.id)
    return recs if not n or len(recs) <= n else sorted(random.Random(seed).sample(recs, n), key=lambda r: r.id)


def controls(world, n: int, seed: int) -> dict[str, list[Record]]:
    """``n`` records of each control config the world has (retain, real faces, real world)."""
    return {c: sample(world.records(c), n, f"{seed}:{c}") for c in CONTROL_CONFIGS if c in world.configs}


def check_methods(cfg: BenchConfig, section: str, methods: list[str], variant: str) -> list[str]:
    """A scenario's methods ([]: study.methods) and study variant, checked by name (did you mean)."""
    if variant not in cfg.study.variants:
        raise ConfigError(f"{section}.variant: {unknown_name_message('study variant', variant, cfg.study.variants)}")
    check_method_names(methods, f"{section}.methods")
    return methods or cfg.study.methods


def unlearn_section(cfg: BenchConfig, variant: str, what: str, overrides: tuple[str, dict[str, Any]] = ("", {}),
                    **fields: Any) -> dict[str, Any]:
    """The unlearn section of a scenario's run: the study variant's overrides, the scenario's own (``overrides``:
    its field's name, e.g. restore.unlearn, and value), then ``fields`` (method, forget, forget_batch or
    forget_config, ...). ``what`` names the scenario in errors."""
    (field, over), base = overrides, to_dict(cfg.unlearn)
    if over:  # a misspelt key is named as the scenario's field, not as the study's unlearn section
        from_dict(UnlearnConfig, deep_merge(base, over), field)
    section = deep_merge(deep_merge(base, cfg.study.variants[variant]), over) | fields
    stop = section.get("stop", {})
    if stop.get("rule", "fixed") != "fixed" and stop.get("threshold") == "gold":
        raise ConfigError(f"{what}: unlearn.stop.threshold=gold has no gold model here; use a numeric threshold or "
                          f"stop.rule=fixed")
    return section
