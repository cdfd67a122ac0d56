"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): a student moves away from
the teacher (the frozen original) on forget data and stays close on retain data, in alternating phases.

max step: L = −KL_T(π_ref ‖ π_θ)(forget)      min step: L = α·KL_T(π_ref ‖ π_θ)(retain) + γ·NLL(retain)
KL_T = T²·KL at temperature T (SCRUB's DistillKL). Phase schedule (ours, deterministic in StepInfo):
during the first ``max_epochs`` epochs every ``max_every``-th optimizer step is a max step, all other
steps are min steps (SCRUB alternates a forget pass and a retain pass per epoch for ``msteps`` epochs;
our epochs are forget-anchored, so the passes are interleaved step by step).
"""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged
from clearbench.losses import StepInfo, answer_logits, kl_per_token, logit_mask, mean_nll

NAME = "scrub"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = True


@dataclasses.dataclass
class Config:
    # SCRUB's reference notebook settings (meghdadk/SCRUB, small-scale unlearning):
    kl_weight: float = 0.001  # α: "args.alpha = 0.001"
    nll_weight: float = 0.99  # γ: "args.gamma = 0.99"
    temperature: float = 4.0  # "args.kd_T = 4"
    max_epochs: int = 2  # "args.msteps = 2": max steps only in the first msteps epochs
    max_every: int = 2  # ours: 1 max step per 2 optimizer steps while max steps run

    def __post_init__(self) -> None:
        if self.max_every < 1 or self.temperature <= 0:
            raise ValueError(f"scrub needs max_every >= 1 and temperature > 0, got {self.max_every}, {self.temperature}")


def phase(step: StepInfo, cfg: Config) -> str:
    """"max" or "min", a pure function of the optimizer step and epoch."""
    return "max" if step.epoch < cfg.max_epochs and step.step % cfg.max_every == 0 else "min"


def distill_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged per example over masked positions, then over examples.
    (B, T, V) or (N, V) gathered at the mask, twice, (B, T) -> ()."""
    return kl_per_token(teacher_logits / temperature, student_logits / temperature, mask) * temperature**2


def formula(which: str, kl: torch.Tensor, retain_nll: torch.Tensor | None, kl_weight: float, nll_weight: float) -> torch.Tensor:
    if which == "max":
        return -kl
    return kl_weight * kl + nll_weight * retain_nll


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    which = phase(step, cfg)
    b = batches["forget"] if which == "max" else batches["retain"]
    logits = answer_logits(model, b)  # (N, V) at logit_mask(labels)
    kl = distill_kl(ref.answer_logits(b), logits, logit_mask(b["labels"]), cfg.temperature)
    nll = mean_nll(logits, b["labels"]) if which == "min" else None
    total = formula(which, kl, nll, cfg.kl_weight, cfg.nll_weight)
    terms = {"phase_max": which == "max", f"{'forget' if which == 'max' else 'retain'}_kl": kl}
    if nll is not None:
        terms["retain_nll"] = nll
    return total, logged(total, terms)
