"""Retain finetuning (TOFU, Maini et al. 2024 §4; CLEAR's "Retain FT"). L = NLL(retain)."""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo

NAME = "retain_ft"
BATCHES = ("retain",)
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    """No hyperparameters: lr and epochs are the trainer's ("lr 1e-5, 5 epochs", CLEAR recipe)."""


def formula(retain_nll: torch.Tensor) -> torch.Tensor:
    return retain_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("retain",))
    total = formula(terms["retain_nll"])
    return total, logged(total, terms)
