"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning").

L = w_f·(−(2/β)·log σ(−(β/|y|)·log π_θ(y|x) − γ)) + w_r·NLL(retain); reference-free, length-normalised.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo, answer_lengths, answer_logits, sequence_logprob

NAME = "simnpo"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = False


@dataclasses.dataclass
class Config:
    # open-unlearning configs/trainer/SimNPO.yaml (the SimNPO authors' TOFU setting, as recorded there):
    beta: float = 4.5  # "beta: 4.5"
    gamma: float = 0.0  # reward margin γ; open-unlearning "delta: 0.0" (γ = β·delta)
    forget_weight: float = 0.125  # open-unlearning "gamma: 0.125" (weight of the forget term)
    retain_weight: float = 1.0  # open-unlearning "alpha: 1"

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"simnpo beta must be > 0, got {self.beta}")


def formula(lp_forget: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """lp_forget (B,) sequence log-probs, lengths (B,) answer token counts -> () SimNPO forget loss."""
    return (-(2.0 / beta) * F.logsigmoid(-(beta / lengths.clamp(min=1)) * lp_forget - gamma)).mean()


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    f = batches["forget"]
    lp_f = sequence_logprob(answer_logits(model, f), f["labels"])  # (B,)
    terms = {"simnpo": formula(lp_f, answer_lengths(f["labels"]), cfg.beta, cfg.gamma)}
    terms |= nll_terms(model, batches, ("retain",))
    total = cfg.forget_weight * terms["simnpo"] + cfg.retain_weight * terms["retain_nll"]
    return total, logged(total, terms)
