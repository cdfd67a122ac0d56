"""Gradient ascent (Golatkar et al. 2020; TOFU, Maini et al. 2024). L = −NLL(forget)."""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo

NAME = "grad_ascent"
BATCHES = ("forget",)
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    """No hyperparameters (TOFU: ``loss = forget_loss * -1``; CLEAR: −CE(forget))."""


def formula(forget_nll: torch.Tensor) -> torch.Tensor:
    return -forget_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("forget",))
    total = formula(terms["forget_nll"])
    return total, logged(total, terms)
