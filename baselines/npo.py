"""Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning").

L = −(2/β)·log σ(−β·(log π_θ(y|x) − log π_ref(y|x))) + w_r·NLL(retain)
  = (2/β)·log(1 + (π_θ(y|x)/π_ref(y|x))^β) + w_r·NLL(retain), on sequence likelihoods of forget answers.
``mode="clear"`` reproduces CLEAR's code (clear.md §3.2, §7.4): the ratio of full softmax distributions,
L = (2/β)·mean over every (position, vocab) entry, prompt/image/pad included, of log(1 + (p_θ/(p_ref+1e-8))^β).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo, answer_logits, model_inputs, sequence_logprob
from clearbench.types import check_name

NAME = "npo"
BATCHES = ("forget",)  # default config; see batches(cfg)
NEEDS_REFERENCE = True
MODES = ("original", "clear")
CLEAR_RECIPE = {"mode": "clear", "beta": 1.0}  # CLEAR ran its `loss_beta` default 1.0


@dataclasses.dataclass
class Config:
    beta: float = 0.1  # Zhang et al. 2024 (TOFU experiments): "β = 0.1"
    retain_weight: float = 0.0  # plain NPO; NPO+RT (the paper's retain-regularised variant) uses 1.0
    mode: str = "original"  # "original" (sequence likelihood ratio) | "clear" (CLEAR's per-vocab ratio)

    def __post_init__(self) -> None:
        check_name("npo mode", self.mode, MODES)
        if self.beta <= 0:
            raise ValueError(f"npo beta must be > 0, got {self.beta}")


def batches(cfg: Config) -> tuple[str, ...]:
    return ("forget",) + (("retain",) if cfg.retain_weight else ())


def formula(lp_forget: torch.Tensor, ref_lp_forget: torch.Tensor, beta: float) -> torch.Tensor:
    """lp_forget, ref_lp_forget (B,) sequence log-probs -> () NPO loss."""
    return (-(2.0 / beta) * F.logsigmoid(-beta * (lp_forget - ref_lp_forget))).mean()


def clear_formula(logits: torch.Tensor, ref_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """CLEAR's variant. logits, ref_logits (B, T, V) -> (); softplus(β·log r) = log(1 + r^β), computed stably."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    log_p_ref = torch.log(F.softmax(ref_logits.float(), dim=-1) + 1e-8)  # (B, T, V)
    return (2.0 / beta) * F.softplus(beta * (log_p - log_p_ref)).mean()


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    f = batches["forget"]
    if cfg.mode == "clear":  # every position of the full distributions
        total = clear_formula(model(**model_inputs(f)).logits, ref(f), cfg.beta)
        terms = {"npo": total}
    else:
        lp_f = sequence_logprob(answer_logits(model, f), f["labels"])  # (B,)
        ref_lp_f = sequence_logprob(ref.answer_logits(f), f["labels"])
        total = formula(lp_f, ref_lp_f, cfg.beta)
        terms = {"npo": total, "forget_logratio": (lp_f - ref_lp_f).mean()}
    if cfg.retain_weight:
        terms |= nll_terms(model, batches, ("retain",))
        total = total + cfg.retain_weight * terms["retain_nll"]
    return total, logged(total, terms)
