"""Gradient ascent (Golatkar et al. 2020; TOFU, Maini et al. 2024). L = −NLL(forget)."""
from __future__ import annotations

import dataclasses

import torch

from clearbench.losses import StepInfo, answer_nll

NAME = "grad_ascent"
BATCHES = ("forget",)
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    """No hyperparameters (TOFU: ``loss = forget_loss * -1``; CLEAR: −CE(forget))."""


def formula(forget_nll: torch.Tensor) -> torch.Tensor:
    return -forget_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    f = batches["forget"]
    nll_f = answer_nll(model, f)
    total = formula(nll_f)
    return total, {"loss": total.item(), "forget_nll": nll_f.item()}
