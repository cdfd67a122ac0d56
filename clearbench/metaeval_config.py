"""The ``metaeval`` section: the model pool of the meta-evaluation (issue 18; clearbench.metaeval plans it as
stages of ``clearbench run``, eval.metaeval judges every metric on it; docs/metaeval.md). Filled like every
section of clearbench.config: YAML and ``a.b=value`` overrides, unknown keys and wrong types are errors."""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

from clearbench.typed_config import FieldError, check_numbers
from clearbench.types import FORGET_MODALITIES, forget_percent, unknown_name_message

# exposure -> the modalities of the forget authors' records a pool model is finetuned on
EXPOSURES: dict[str, tuple[str, ...]] = {"all": FORGET_MODALITIES["multimodal"], "none": (),
                                         "text": FORGET_MODALITIES["text"], "visual": FORGET_MODALITIES["visual"]}
_NAME = re.compile(r"[a-z0-9_]+")


def _unique(field: str, values: list[Any], what: str) -> None:
    if not values:
        raise FieldError(field, values, f"list at least one {what}")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise FieldError(field, values, f"lists {dup} more than once")


@dataclasses.dataclass
class PoolGroup:
    """One group of pool models: the grid seeds x lengths x parameterisations, all with one ``exposure``."""

    # all: the target's data (positives); none: the gold's (negatives); text / visual: the gold's data plus the
    # forget authors' records of that modality only (text QA; or naming, captions and joint QA)
    exposure: typing.Literal[tuple(EXPOSURES)] = "all"  # type: ignore[valid-type]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3])  # every finetune phase's train.seed
    lengths: list[float] = dataclasses.field(default_factory=lambda: [1.0, 0.5])  # x epochs (or max_steps)
    parameterisations: list[str] = dataclasses.field(default_factory=lambda: ["full", "lora"])

    def __post_init__(self) -> None:
        _unique("seeds", self.seeds, "finetune seed")
        _unique("lengths", self.lengths, "length")
        _unique("parameterisations", self.parameterisations, "parameterisation")
        if any(s < 0 for s in self.seeds):
            raise FieldError("seeds", self.seeds, "seeds must be >= 0")
        if any(not math.isfinite(x) or x <= 0 for x in self.lengths):
            raise FieldError("lengths", self.lengths, "multiples of the finetune length, each a finite number > 0")


# the pool when ``groups`` is empty: 12 targets, 12 golds, 3 text-only and 3 visual-only models
DEFAULT_GROUPS: dict[str, PoolGroup] = {
    "target": PoolGroup("all"), "gold": PoolGroup("none"),
    "text_only": PoolGroup("text", lengths=[1.0], parameterisations=["full"]),
    "visual_only": PoolGroup("visual", lengths=[1.0], parameterisations=["full"])}


def _parameterisations() -> dict[str, dict[str, Any]]:
    return {"full": {}, "lora": {"train": {"lora": {"enabled": True}}}}


@dataclasses.dataclass
class MetaevalConfig:
    """``clearbench run`` with ``enabled``: instead of the study, a pool of models finetuned from the base that
    know the forget authors (exposure all) or not (none), or saw them in one modality only; each evaluated with
    the study's evaluation against the study's gold and attacked with ``attacks``; then the report ranks every
    metric by how well it separates them (faithfulness) and keeps separating them after an attack (robustness)."""

    enabled: bool = False
    forget: str = ""  # the forget split the pool is judged on; "": study.forget_splits[0]
    # parameterisation -> PhaseConfig fields over every finetune phase (e.g. LoRA with its own lr)
    parameterisations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=_parameterisations)
    # name -> group; {}: DEFAULT_GROUPS (a preset's groups replace them whole: YAML merges mappings key by key, so a
    # default filled in here could never be dropped)
    groups: dict[str, PoolGroup] = dataclasses.field(default_factory=dict)
    # eval.attacks run on every pool model (the robustness half), each with its Config fields
    attacks: list[str] = dataclasses.field(default_factory=list)
    attack_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    bootstrap: int = 1000  # resamples of each AUC's confidence interval (positives and negatives apart)
    seed: int = 0  # the bootstrap's

    def __post_init__(self) -> None:
        check_numbers(self, positive=("bootstrap",), non_negative=("seed",))
        if self.forget:
            try:
                forget_percent(self.forget)
            except ValueError as exc:
                raise FieldError("forget", self.forget, str(exc).removeprefix(f"{self.forget!r} ")) from None
        for name, group in self.pool_groups().items():
            if not _NAME.fullmatch(name):
                raise FieldError(f"groups.{name}", name, "a group name is lower-case letters, digits and _")
            for p in group.parameterisations:
                if p not in self.parameterisations:
                    raise FieldError(f"groups.{name}.parameterisations", p, unknown_name_message(
                        "parameterisation", p, self.parameterisations))
        for name in self.parameterisations:
            if not _NAME.fullmatch(name):
                raise FieldError(f"parameterisations.{name}", name, "a name is lower-case letters, digits and _")

    def pool_groups(self) -> dict[str, PoolGroup]:
        return self.groups or DEFAULT_GROUPS
