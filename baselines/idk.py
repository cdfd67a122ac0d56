"""IDK finetuning (TOFU, Maini et al. 2024). L = NLL(refusal | forget question) + NLL(retain)."""
from __future__ import annotations

import dataclasses

import torch

from clearbench.losses import StepInfo, answer_nll

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
    i, r = batches["idk"], batches["retain"]
    nll_i = answer_nll(model, i)
    nll_r = answer_nll(model, r)
    total = formula(nll_i, nll_r, cfg.idk_weight, cfg.retain_weight)
    return total, {"loss": total.item(), "idk_nll": nll_i.item(), "retain_nll": nll_r.item()}
