"""The settings of a scoring pass and of an attack, as plain config data: the study plans stages with them (and
hashes them into stage keys) without importing eval/, which reads them (eval.evaluate, eval.attacks)."""
from __future__ import annotations

import dataclasses
from typing import Any

GENERATION = {"do_sample": False, "max_new_tokens": 32}  # greedy decoding; recorded in results' provenance


@dataclasses.dataclass
class EvalConfig:
    forget: str = "forget10"
    batch_size: int = 32
    max_new_tokens: int = GENERATION["max_new_tokens"]
    max_per_config: int = 0  # 0: no cap; older configs' cap per eval config (CLEAR's code: 300)
    seed: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # MetricOptions fields
    max_per_cell: int = 0  # 0: no cap; else per (eval config, modality, task, image role) cell, seeded

    def __post_init__(self) -> None:
        for name, least in (("max_per_config", 0), ("max_per_cell", 0), ("batch_size", 1), ("max_new_tokens", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}{' (0: no cap)' if least == 0 else ''}, "
                                 f"got {v!r}")
        if self.max_per_config and self.max_per_cell:
            raise ValueError(f"max_per_config={self.max_per_config} and max_per_cell={self.max_per_cell}: "
                             "set one cap (max_per_cell caps each modality x task x image-role cell)")


@dataclasses.dataclass
class AttackConfig:
    """One attack run: which attack, the probes and how they are scored, and the attack's own ``options``
    (fields of its ``Config``, e.g. ``{"n": [10], "train": {"lr": 1e-3}}`` for relearn)."""

    attack: str = "relearn"
    forget: str = ""  # "": the forget split the model was unlearned on (its run.json), else forget10
    max_per_config: int = 0  # caps on the probe records, as the evaluation's (EvalConfig); 0: none
    max_per_cell: int = 0
    batch_size: int = 32
    max_new_tokens: int = GENERATION["max_new_tokens"]
    seed: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
