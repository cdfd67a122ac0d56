"""The config sections of the scenarios (``study.scenarios``; clearbench.scenarios runs them), filled like every
section of clearbench.config: YAML and ``a.b=value`` overrides, unknown keys and wrong types are errors."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from clearbench.typed_config import FieldError, check_numbers
from clearbench.types import FORGET_MODALITIES, forget_percent

SCENARIOS = ("forget", "restore", "sequential")  # study.scenarios: the study's grid and the two scenarios


def _check_forget(split: str) -> None:
    try:
        forget_percent(split)
    except ValueError as exc:
        raise FieldError("forget", split, str(exc).removeprefix(f"{split!r} ")) from None


@dataclasses.dataclass
class SequentialConfig:
    """``study.scenarios: [sequential]``: ``steps`` successive deletion requests (``forget``'s authors in that many
    batches, clearbench.unlearn.author_batches), each unlearned from the previous request's model with the unlearn
    section and study variant ``variant``; a fixed seeded subset is scored after every request."""

    forget: str = "forget10"
    steps: int = 10  # T requests (forget10 of the default world: ten forget01-sized batches of 2 authors)
    methods: list[str] = dataclasses.field(default_factory=list)  # []: study.methods
    variant: str = ""  # a study.variants key: its unlearn overrides apply to every request ("": the plain run)
    # unlearn fields over the variant's, for every request
    unlearn: dict[str, Any] = dataclasses.field(default_factory=dict)
    forget_modality: typing.Literal[tuple(FORGET_MODALITIES)] = "multimodal"  # type: ignore[valid-type]
    n_per_request: int = 8  # forgetXX_perturbed records scored per request (all modalities)
    n_control: int = 16  # retain_perturbed, real_faces and real_world records scored each
    seed: int = 0  # draws the scored subsets
    batch_size: int = 32  # scoring batch size

    def __post_init__(self) -> None:
        _check_forget(self.forget)
        check_numbers(self, positive=("steps", "n_per_request", "n_control", "batch_size"), non_negative=("seed",))


@dataclasses.dataclass
class RestoreConfig:
    """``study.scenarios: [restore]`` (RESTOR, arXiv 2411.00204): the target (clean) finetuned on a corruption set
    of the world (``corrupt_<type>_k<k>``) is the corrupted model; every method unlearns the corruption set from it
    (setting full: the corrupting records; wrong_only: the same records without their k unrelated true facts,
    ``corrupt_<type>_k0``); the victims' true facts are scored on the clean, corrupted and unlearned models."""

    corruptions: list[typing.Literal["text", "bind", "visual"]] = dataclasses.field(  # type: ignore[valid-type]
        default_factory=lambda: ["text", "bind", "visual"])
    contexts: list[int] = dataclasses.field(default_factory=lambda: [0, 2])  # k: corrupt_<type>_k<k>
    settings: list[typing.Literal["full", "wrong_only"]] = dataclasses.field(  # type: ignore[valid-type]
        default_factory=lambda: ["full", "wrong_only"])
    methods: list[str] = dataclasses.field(default_factory=list)  # []: study.methods
    variant: str = ""  # a study.variants key: its unlearn overrides apply to every run ("": the plain run)
    # unlearn fields over the variant's for every restore run, e.g. the corrupting phase's batch size and epochs so
    # that unlearning gets as many steps as the corruption had (configs/tiny.yaml)
    unlearn: dict[str, Any] = dataclasses.field(default_factory=dict)
    # the corrupting finetune: PhaseConfig fields over clearbench.scenarios.restore.CORRUPT_PHASE (data config
    # "full" stands for the corruption set; train.lora.enabled: LoRA), checked when the study is planned
    phase: dict[str, Any] = dataclasses.field(default_factory=dict)
    forget: str = "forget10"  # the methods' retain set: this split's retain authors, without the corruption's
    max_per_config: int = 0  # victims_* records scored per config (seeded subset); 0: all
    n_control: int = 16  # retain_perturbed, real_faces and real_world records scored each (collateral)
    seed: int = 0
    batch_size: int = 32  # scoring batch size

    def __post_init__(self) -> None:
        _check_forget(self.forget)
        check_numbers(self, positive=("n_control", "batch_size"), non_negative=("max_per_config", "seed"))
        for i, k in enumerate(self.contexts):
            if k not in (0, 1, 2, 3):
                raise FieldError(f"contexts[{i}]", k, "k unrelated true facts per corrupting record: 0, 1, 2 or 3")
