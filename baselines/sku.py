"""SKU, Selective Knowledge negation Unlearning (Liu et al. 2024, "Towards Safer Large Language Models
through Machine Unlearning"; CLEAR's eleventh method).

Stage 1, harmful knowledge acquisition (the training loss), from SKU's unlearn_harm_new.py:
  L = ε1·NLL(forget)                 guided distortion: *learn* the forget data
    + ε2·NLL(random answer | forget question)   random disassociation
    − ε3·KL(π_ref ‖ π_θ)(retain)     preservation divergence (its ``compute_reverse_kl`` returns −KL)
Stage 2, knowledge negation (``on_train_end``): θ_final = θ_0 − λ·(θ_harmful − θ_0), λ = 1.
The random answers are other forget records' (batch kind "random_forget"): SKU's code draws them from the
harmful responses, ``bad_ans = get_harmful_responses(train_dataset)``, as CLEAR's does ("K=3 other forget items").
Not followed: SKU's PKU-SafeRLHF-specific data handling and its K=5 (the trainer's ``random_k`` sets K).
"""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import kl_to_reference, logged, nll_terms
from clearbench.losses import StepInfo

NAME = "sku"
BATCHES = ("forget", "random_forget", "retain")
NEEDS_REFERENCE = True
# CLEAR: 2.5·CE(forget) + 1.0·CE(random) − 0.5·KL(T‖θ)(retain), and no negation step (clear.md §3.2, §7.7)
CLEAR_RECIPE = {"forget_weight": 2.5, "random_weight": 1.0, "retain_weight": 0.5, "negate": False}


@dataclasses.dataclass
class Config:
    # SKU's harmful_unlearn/unlearn_harm_new.py argparse defaults:
    forget_weight: float = 0.5  # ε1: '"--bad_weight", default=0.5'
    random_weight: float = 1.0  # ε2: '"--random_weight", default=1'
    retain_weight: float = 1.0  # ε3: '"--normal_weight", default=1'
    negate: bool = True  # stage 2: "neg_task_vector = -task_vector"
    negation_scale: float = 1.0  # λ: TaskVector.apply_to's default scaling_coef = 1.0


def formula(forget_nll: torch.Tensor, random_nll: torch.Tensor, retain_kl: torch.Tensor,
            forget_weight: float, random_weight: float, retain_weight: float) -> torch.Tensor:
    return forget_weight * forget_nll + random_weight * random_nll - retain_weight * retain_kl


def negate(theta0: torch.Tensor, theta: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """θ_0 − λ·(θ − θ_0), the negated task vector applied to θ_0."""
    return theta0 - scale * (theta - theta0)


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    terms = nll_terms(model, batches, ("forget", "random_forget"))
    terms["retain_kl"] = kl_to_reference(model, ref, batches["retain"])
    total = formula(terms["forget_nll"], terms["random_forget_nll"], terms["retain_kl"],
                    cfg.forget_weight, cfg.random_weight, cfg.retain_weight)
    return total, logged(total, terms)


@torch.no_grad()
def on_train_end(model, initial_state: dict[str, torch.Tensor], cfg: Config) -> None:
    """Negate the task vector in place. ``initial_state`` maps ``model.named_parameters()`` names of the
    trained parameters to their values at the start of unlearning.

    LoRA: the effective update is s·B·A with B_0 = 0, so negating it means B ← −B with A kept
    (negating A and B separately would not negate the product). Other parameters: θ_0 − λ(θ − θ_0).
    """
    if not cfg.negate:
        return
    params = dict(model.named_parameters())
    missing = sorted(set(initial_state) - set(params))
    if missing:
        raise ValueError(f"sku.on_train_end: initial_state names not in the model: {missing[:3]}...")
    for name, theta0 in initial_state.items():
        p = params[name]
        if "lora_magnitude_vector" in name:
            raise ValueError("sku: task-vector negation is not defined for DoRA magnitude vectors; use plain LoRA")
        if "lora_A" in name or "lora_embedding_A" in name:
            continue  # the sign flip goes on B
        if "lora_B" in name or "lora_embedding_B" in name:
            if theta0.abs().max() > 0:
                raise ValueError(f"sku: {name} did not start at zero; negating a LoRA update needs B_0 = 0")
            p.copy_(-cfg.negation_scale * p)
            continue
        p.copy_(negate(theta0.to(p.device, p.dtype), p, cfg.negation_scale))
