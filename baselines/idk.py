"""IDK finetuning (TOFU, Maini et al. 2024). L = NLL(refusal | forget question) + NLL(retain)."""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo

NAME = "idk"
BATCHES = ("idk", "retain")
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    idk_weight: float = 1.0  # TOFU: "loss = idk_loss + retain_loss"
    retain_weight: float = 1.0  # TOFU: unweighted


def formula(idk_nll: torch.Tensor, retain_nll: torch.Tensor, idk_weight: float, retain_weight: float) -> torch.Tensor:
    return idk_weight * idk_nll + retain_weight * retain_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("idk", "retain"))
    total = formula(terms["idk_nll"], terms["retain_nll"], cfg.idk_weight, cfg.retain_weight)
    return total, logged(total, terms)
