"""KL minimisation (TOFU, Maini et al. 2024). L = −NLL(forget) + KL(π_ref ‖ π_θ) on retain answer tokens."""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import kl_to_reference, logged, nll_terms
from clearbench.losses import StepInfo

NAME = "kl"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = True


@dataclasses.dataclass
class Config:
    forget_weight: float = 1.0  # TOFU: "loss = forget_loss + retain_loss", forget_loss = −NLL
    retain_weight: float = 1.0  # TOFU: retain_loss = KL(oracle ‖ current), unweighted


def formula(forget_nll: torch.Tensor, retain_kl: torch.Tensor, forget_weight: float, retain_weight: float) -> torch.Tensor:
    return -forget_weight * forget_nll + retain_weight * retain_kl


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("forget",)) | {"retain_kl": kl_to_reference(model, ref, batches["retain"])}
    total = formula(terms["forget_nll"], terms["retain_kl"], cfg.forget_weight, cfg.retain_weight)
    return total, logged(total, terms)
