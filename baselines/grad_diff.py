"""Gradient difference (Liu et al. 2022; TOFU, Maini et al. 2024). L = −w_f·NLL(forget) + w_r·NLL(retain)."""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo

NAME = "grad_diff"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    forget_weight: float = 1.0  # TOFU: "loss = forget_loss + retain_loss" (forget_loss = −NLL); CLEAR β=1.0
    retain_weight: float = 1.0  # TOFU: unweighted retain NLL


def formula(forget_nll: torch.Tensor, retain_nll: torch.Tensor, forget_weight: float, retain_weight: float) -> torch.Tensor:
    return -forget_weight * forget_nll + retain_weight * retain_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("forget", "retain"))
    total = formula(terms["forget_nll"], terms["retain_nll"], cfg.forget_weight, cfg.retain_weight)
    return total, logged(total, terms)
