"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): a student moves away from
the teacher (the frozen original) on forget data and stays close on retain data, in alternating phases.

max step: L = −KL_T(π_ref ‖ π_θ)(forget)      min step: L = α·KL_T(π_ref ‖ π_θ)(retain) + γ·NLL(retain)
KL_T = T²·KL at temperature T (SCRUB's DistillKL). Which step is which (``schedule``, a function of the step):
- "paper" (default), SCRUB's loop: "if epoch <= args.msteps: train_distill(epoch, forget_loader, ...,
  "maximize")", then "train_distill(epoch, retain_loader, ..., "minimize")" in every epoch. A SCRUB epoch
  here is a forget pass of ``pass_steps`` max steps (the trainer's steps per epoch, set by ``resolve``)
  then a retain pass of as many min steps; after ``max_epochs`` such epochs, min steps only.
- "alternate": during the first ``max_epochs`` trainer epochs every ``max_every``-th step is a max step,
  the others min steps (clearbench's schedule before the paper's).
"""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged
from clearbench.losses import StepInfo, answer_logits, kl_per_token, logit_mask, mean_nll
from clearbench.types import check_name

NAME = "scrub"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = True
SCHEDULES = ("paper", "alternate")


@dataclasses.dataclass
class Config:
    # SCRUB's large-scale notebook (meghdadk/SCRUB, large_scale_unlearning.ipynb):
    kl_weight: float = 0.001  # α: "args.alpha = 0.001"
    nll_weight: float = 0.99  # γ: "args.gamma = 0.99"
    temperature: float = 4.0  # "args.kd_T = 4"
    max_epochs: int = 2  # "args.msteps = 2": max steps in the first msteps epochs only
    schedule: str = "paper"  # "paper" | "alternate" (module docstring)
    max_every: int = 2  # "alternate" only: 1 max step per max_every optimizer steps
    # "paper": optimizer steps per pass. Ours: a retain pass as long as a forget pass (SCRUB's covers the whole
    # retain set, 9x longer for forget10, more than a forget-anchored step budget holds). 0: set by resolve()
    pass_steps: int = 0

    def __post_init__(self) -> None:
        check_name("scrub schedule", self.schedule, SCHEDULES)
        if self.max_every < 1 or self.temperature <= 0 or self.pass_steps < 0 or self.max_epochs < 0:
            raise ValueError(f"scrub needs max_every >= 1, temperature > 0, pass_steps >= 0 and max_epochs >= 0, "
                             f"got {self.max_every}, {self.temperature}, {self.pass_steps}, {self.max_epochs}")


def resolve(cfg: Config, steps_per_epoch: int, total_steps: int) -> Config:
    """A pass of the paper schedule is one pass over the forget set: the trainer's steps per epoch."""
    return cfg if cfg.pass_steps else dataclasses.replace(cfg, pass_steps=steps_per_epoch)


def phase(step: StepInfo, cfg: Config) -> str:
    """"max" or "min", a pure function of the optimizer step (and epoch)."""
    if cfg.schedule == "alternate":
        return "max" if step.epoch < cfg.max_epochs and step.step % cfg.max_every == 0 else "min"
    if cfg.pass_steps < 1:
        raise ValueError("scrub: schedule 'paper' needs pass_steps; the trainer sets it with "
                         "baselines.resolve_config('scrub', cfg, steps_per_epoch, total_steps)")
    cycle = 2 * cfg.pass_steps  # a forget pass, then a retain pass
    return "max" if step.step < cfg.max_epochs * cycle and step.step % cycle < cfg.pass_steps else "min"


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
