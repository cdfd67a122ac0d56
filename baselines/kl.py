"""KL minimisation (TOFU, Maini et al. 2024). L = −NLL(forget) + KL(π_ref ‖ π_θ) on retain answer tokens."""
from __future__ import annotations

import dataclasses

import torch

from clearbench.losses import StepInfo, answer_logits, answer_nll, kl_per_token, logit_mask

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
    f, r = batches["forget"], batches["retain"]
    nll_f = answer_nll(model, f)
    logits_r = answer_logits(model, r)  # (N, V) at logit_mask(labels)
    kl_r = kl_per_token(ref.answer_logits(r), logits_r, logit_mask(r["labels"]))  # KL(ref ‖ θ), mean over answer positions
    total = formula(nll_f, kl_r, cfg.forget_weight, cfg.retain_weight)
    return total, {"loss": total.item(), "forget_nll": nll_f.item(), "retain_kl": kl_r.item()}
