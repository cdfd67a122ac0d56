"""IDK-preference DPO (Rafailov et al. 2023, as TOFU uses it: refusal preferred over the forget answer).

L = −log σ(β·[(log π_θ(idk) − log π_ref(idk)) − (log π_θ(y_f) − log π_ref(y_f))]) + w_r·NLL(retain),
with sequence log-probabilities (sums over answer tokens).
``mode="clear"`` reproduces CLEAR's code, whose last live line is ``loss = -idk_loss_current.mean()``:
L = mean_b Σ_t −log π_θ(idk_t) — a summed-NLL finetune on the refusals (clear.md §3.2, §7.2).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from baselines.terms import logged, nll_terms
from clearbench.losses import StepInfo, answer_logits, sequence_logprob
from clearbench.types import check_name

NAME = "dpo"
BATCHES = ("forget", "idk")  # default config; see batches(cfg)
NEEDS_REFERENCE = True
MODES = ("original", "clear")
CLEAR_RECIPE = {"mode": "clear"}  # what CLEAR's tables ran


@dataclasses.dataclass
class Config:
    beta: float = 0.1  # TOFU dataloader.py: "beta = 0.1"
    retain_weight: float = 0.0  # TOFU's dpo has no retain term; open-unlearning adds NLL(retain) with weight 1
    mode: str = "original"  # "original" (DPO) | "clear" (CLEAR's summed-NLL IDK finetune)

    def __post_init__(self) -> None:
        check_name("dpo mode", self.mode, MODES)


def batches(cfg: Config) -> tuple[str, ...]:
    if cfg.mode == "clear":
        return ("idk",)
    return ("forget", "idk") + (("retain",) if cfg.retain_weight else ())


def needs_reference(cfg: Config) -> bool:
    return cfg.mode == "original"


def formula(lp_idk: torch.Tensor, ref_lp_idk: torch.Tensor, lp_forget: torch.Tensor, ref_lp_forget: torch.Tensor,
            beta: float) -> torch.Tensor:
    """All inputs (B,) sequence log-probs; idk row b answers the same question as forget row b. -> ()."""
    margin = (lp_idk - ref_lp_idk) - (lp_forget - ref_lp_forget)  # (B,)
    return -F.logsigmoid(beta * margin).mean()


def clear_formula(lp_idk: torch.Tensor) -> torch.Tensor:
    """CLEAR: mean over the batch of the summed NLL of the refusal. lp_idk (B,) -> ()."""
    return (-lp_idk).mean()


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    i = batches["idk"]
    lp_i = sequence_logprob(answer_logits(model, i), i["labels"])  # (B,)
    if cfg.mode == "clear":
        total = clear_formula(lp_i)
        return total, logged(total, {"idk_logprob": lp_i.mean()})
    f = batches["forget"]
    if f["input_ids"].shape[0] != i["input_ids"].shape[0]:
        raise ValueError("dpo: the idk and forget batches must pair row by row (build idk rows from the forget rows)")
    lp_f = sequence_logprob(answer_logits(model, f), f["labels"])  # (B,)
    ref_i = sequence_logprob(ref.answer_logits(i), i["labels"])
    ref_f = sequence_logprob(ref.answer_logits(f), f["labels"])
    total = formula(lp_i, ref_i, lp_f, ref_f, cfg.beta)
    terms = {"dpo": total, "idk_logratio": (lp_i - ref_i).mean(), "forget_logratio": (lp_f - ref_f).mean()}
    if cfg.retain_weight:
        terms |= nll_terms(model, batches, ("retain",))
        total = total + cfg.retain_weight * terms["retain_nll"]
    return total, logged(total, terms)
