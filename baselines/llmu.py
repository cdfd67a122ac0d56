"""LLMU (Yao et al. 2023, "Large Language Model Unlearning").

L = −ε1·NLL(forget) + ε2·NLL(mismatched completion | forget question) + ε3·KL(π_ref ‖ π_θ) on retain.
The mismatched completions (``completions``): answers of normal data (the paper; its unlearn_harm.py
draws them from TruthfulQA, ``normal_ans = get_truthfulQA_answers_plaintext()``; here the run's retain
records, batch kind "random"), answers of other forget records ("random_forget"), or refusals ("idk",
what CLEAR's code ran). The paper also stops once the forget loss passes ``max_bad_loss``: a trainer option.
"""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import kl_to_reference, logged
from clearbench.losses import StepInfo, answer_nll
from clearbench.types import check_name

NAME = "llmu"
BATCHES = ("forget", "random", "retain")  # default config; see batches(cfg)
NEEDS_REFERENCE = True
COMPLETIONS = ("random", "random_forget", "idk")
# CLEAR: −CE(forget) + KL(θ‖T)(retain) + CE(idk), unweighted (clear.md §3.1: "DPO and LLMU get {forget, retain,
# idk}"; §3.2; its KL direction is reversed)
CLEAR_RECIPE = {"forget_weight": 1.0, "completion_weight": 1.0, "retain_weight": 1.0, "completions": "idk"}


@dataclasses.dataclass
class Config:
    # LLMU's unlearn_harm.py argparse defaults:
    forget_weight: float = 0.5  # ε1: '"--bad_weight", default=0.5'
    completion_weight: float = 1.0  # ε2: '"--random_weight", default=1'
    retain_weight: float = 1.0  # ε3: '"--normal_weight", default=1'
    completions: str = "random"  # the batch kind: "random" (the paper) | "random_forget" | "idk" (CLEAR)

    def __post_init__(self) -> None:
        check_name("llmu completions", self.completions, COMPLETIONS)


def batches(cfg: Config) -> tuple[str, ...]:
    return ("forget", cfg.completions, "retain")


def formula(forget_nll: torch.Tensor, completion_nll: torch.Tensor, retain_kl: torch.Tensor,
            forget_weight: float, completion_weight: float, retain_weight: float) -> torch.Tensor:
    return -forget_weight * forget_nll + completion_weight * completion_nll + retain_weight * retain_kl


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = {"forget_nll": answer_nll(model, batches["forget"]),
             "completion_nll": answer_nll(model, batches[cfg.completions]),
             "retain_kl": kl_to_reference(model, ref, batches["retain"])}
    total = formula(terms["forget_nll"], terms["completion_nll"], terms["retain_kl"],
                    cfg.forget_weight, cfg.completion_weight, cfg.retain_weight)
    return total, logged(total, terms)
