"""Which parameters train: LoRA wrapping (peft), freeze switches, and the L1 penalty.

A parameter's part (vision tower, projector, language model) comes from its model family's spec
(``clearbench.models.family.Family.part_of``); a name in no part of the family is an error.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from clearbench.config import LoraConfig, TrainConfig
from clearbench.models import family_of

LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def lora_targets(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full module names LoRA wraps; an empty match is an error listing what exists."""
    linears = _linear_names(model)
    spec = cfg.target_modules
    if spec == "language":
        family = family_of(model)
        names = [n for n in linears if n.rsplit(".", 1)[-1] in LANGUAGE_PROJECTIONS and family.part_of(n) == "language"]
    elif spec == "all-linear":
        names = [n for n in linears if not n.endswith("lm_head")]
    elif "," in spec or re.fullmatch(r"[A-Za-z0-9_]+", spec):
        wanted = {s.strip() for s in spec.split(",") if s.strip()}
        names = [n for n in linears if n.rsplit(".", 1)[-1] in wanted]
        missing = wanted - {n.rsplit(".", 1)[-1] for n in names}
        if missing:
            short = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ValueError(
                f"LoRA target module(s) {sorted(missing)} do not exist in this model; "
                f"linear module names are: {', '.join(short)} (or use 'language' / 'all-linear')"
            )
    else:
        pattern = re.compile(spec)
        names = [n for n in linears if pattern.fullmatch(n) or pattern.search(n)]
    if not names:
        raise ValueError(
            f"LoRA target_modules={spec!r} matches no linear module; use 'language', 'all-linear', "
            f"a comma list of short names or a regex over names such as {linears[:3]}"
        )
    return names


def apply_lora(model: nn.Module, cfg: LoraConfig, train: TrainConfig) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (base weights frozen). The projector, when trained,
    becomes a peft ``modules_to_save`` copy so adapter-only checkpoints keep it and the
    adapter-disabled reference still sees the original."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    family = family_of(model)
    targets = [n for n in lora_targets(model, cfg) if _part_enabled(family.part_of(n), train)]
    if not targets:
        raise ValueError("LoRA: every target module lies in a part frozen by train_* switches")
    modules_to_save = list(family.projector) if train.train_projector else None
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
        target_modules=targets, modules_to_save=modules_to_save,
    )
    return get_peft_model(model, peft_cfg)


def _part_enabled(part: str, train: TrainConfig) -> bool:
    return {"vision": train.train_vision_tower, "projector": train.train_projector,
            "language": train.train_language_model}[part]


def set_trainable(model: nn.Module, train: TrainConfig) -> None:
    """Full-parameter runs: requires_grad by part. LoRA runs: only adapters (and saved copies)
    in enabled parts train."""
    family = family_of(model)
    lora = any("lora_" in n for n, _ in model.named_parameters())
    for name, param in model.named_parameters():
        enabled = _part_enabled(family.part_of(name), train)
        if lora:
            is_adapter = "lora_" in name or "modules_to_save" in name
            param.requires_grad_(is_adapter and enabled)
        else:
            param.requires_grad_(enabled)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter is trainable: check train_vision_tower/train_projector/"
                         "train_language_model and lora.target_modules")


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Gradient checkpointing that also works with frozen embeddings + LoRA: the inputs of the
    checkpointed blocks must require grad, or no gradient reaches the adapters (a known peer bug)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    model.config.use_cache = False


def l1_anchor(model: nn.Module) -> dict[str, torch.Tensor]:
    """theta0 for ``l1_penalty``: a copy of every trainable parameter except LoRA's adapter weights (the
    projector's ``modules_to_save`` copy in a LoRA run, every trainable parameter in a full-parameter run)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}


def l1_penalty(model: nn.Module, anchor: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """L1 over every trainable parameter: sum |w| over LoRA adapter weights (CLEAR's L1 on LoRA; they start
    at or near 0) plus sum |theta - theta0| over every other trainable parameter (theta0 from ``l1_anchor``
    at the start of training), so a run has the same trainable parameters with and without L1."""
    terms = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_" in name:
            terms.append(param.abs().sum())
        elif anchor is not None and name in anchor:
            terms.append((param - anchor[name]).abs().sum())
        else:
            raise ValueError(f"L1 penalty: trainable parameter {name!r} has no starting value (theta0); take "
                             f"l1_anchor(model) after the trainable parameters are set")
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def add_l1_grad(model: nn.Module, params: list[torch.Tensor], anchor: dict[str, torch.Tensor] | None,
                l1_lambda: float) -> None:
    """Add the gradient of ``l1_lambda`` x ``l1_penalty(model, anchor)`` to ``params``' ``.grad`` (the model's trainable
    parameters). The training loop does so under DDP once per step, after the synchronised backward passes (whose
    micro-batch weights sum to 1 over the processes): inside them, a parameter that the penalty reaches but a
    process's forward pass skipped (the projector copy on a text-only micro-batch) is marked ready twice by DDP's
    reducer, which fails; ``autograd.grad`` runs none of its hooks."""
    penalty = l1_lambda * l1_penalty(model, anchor)
    for param, grad in zip(params, torch.autograd.grad(penalty, params, allow_unused=True)):
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad
