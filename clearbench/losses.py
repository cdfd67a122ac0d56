"""Pure tensor functions shared by the unlearning methods and the evaluation.

Conventions: a batch is the dict a model family's collate returns (``input_ids``,
``attention_mask``, ``labels`` with -100 everywhere except answer tokens, optionally
``pixel_values`` / ``image_grid_thw``). Logits are (B, T, V); the causal shift is applied here,
once, so that position t of the shifted tensors scores token t+1 of the input.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from clearbench.models import language_layers  # noqa: F401  (RMU's layer lookup, read from the family's spec)
from clearbench.models.common import IGNORE_INDEX, unwrap


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """Where training is when a method's loss is called.

    ``step`` is the 0-based *optimizer* step (all micro-batches of one accumulated step share it),
    ``total_steps`` the number of optimizer steps of the run, ``epoch`` the 0-based epoch.
    """

    step: int = 0
    total_steps: int = 1
    epoch: int = 0


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32: half precision goes up, float64 stays (``.float()`` would round it down)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without ``labels``, i.e. what the model is called with when we want logits."""
    return {k: v for k, v in batch.items() if k != "labels"}


def logit_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool over *logit* positions: True where position t predicts an answer token t+1."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every answer token under ``logits``, with the causal shift.

    logits (B, T, V), or (N, V) already gathered at ``logit_mask(labels)`` (``answer_logits``); labels
    (B, T) -> lp (B, T-1) float32 or float64 (0 where masked), mask (B, T-1) bool.
    Only answer positions go through log-softmax (a VLM prompt holds hundreds of image positions).
    """
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != IGNORE_INDEX  # (B, T-1)
    picked = upcast(logits if logits.dim() == 2 else logits[:, :-1, :][mask])  # (N, V)
    lp_sel = -F.cross_entropy(picked, shift_labels[mask], reduction="none")  # (N,)
    lp = torch.zeros(mask.shape, dtype=lp_sel.dtype, device=logits.device)
    lp = lp.masked_scatter(mask, lp_sel)  # (B, T-1), differentiable
    return lp, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y|x) per sequence: the sum over answer tokens. (B, T, V) or (N, V), (B, T) -> (B,)."""
    lp, _ = token_logprobs(logits, labels)
    return lp.sum(dim=-1)


def answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    """|y| per sequence (number of supervised tokens after the shift). (B, T) -> (B,) float."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1).float()


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's token-mean answer NLL. (B, T, V) or (N, V), (B, T) -> ().

    Per-example means make the loss of a batch the mean of its micro-batches' losses, which is what
    the trainer's split into processes x accumulation needs (HF's ``outputs.loss`` is a token mean over
    the whole batch; the two agree when every answer has the same length).
    """
    lp, mask = token_logprobs(logits, labels)
    return _per_example_mean(-lp, mask)


def _per_example_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values, mask (B, N) -> () mean over examples of the masked mean within each example."""
    return ((values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)).mean()


def answer_logits(model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """``model(**model_inputs(batch)).logits[logit_mask(batch["labels"])]`` without the full logits: (N, V),
    the logits at the N positions that predict answer tokens, in row-major (b, t) order. The losses
    (``token_logprobs``, ``mean_nll``, ``sequence_logprob``, ``kl_per_token``) take it in place of (B, T, V).

    The output head (vocab x width) runs only at those positions, through the forward's ``logits_to_keep``
    argument: transformers >= 5 slices the decoder's hidden states with a (B, T) bool mask to (N, H) before
    ``lm_head``. The model is still called as a whole, so DDP (gradient sync), accelerate's autocast and
    peft wrappers (LoRA on the head included) behave as in a plain forward. A model whose forward takes no
    ``logits_to_keep`` gets the full-logits path.
    """
    mask = logit_mask(batch["labels"])  # (B, T) over logit positions; the last column is always False
    if not _takes_logits_to_keep(model):
        return model(**model_inputs(batch)).logits[mask]
    logits = model(**model_inputs(batch), logits_to_keep=mask).logits
    if logits.dim() == 3 and logits.shape[:2] == mask.shape:  # the forward ignored the mask
        return logits[mask]
    n = int(mask.sum())
    if logits.dim() != 2 or logits.shape[0] != n:
        raise RuntimeError(
            f"{type(unwrap(model)).__name__}.forward(logits_to_keep=<(B, T) bool mask>) returned logits of shape "
            f"{tuple(logits.shape)}, expected ({n}, vocab): this transformers version slices hidden states differently"
        )
    return logits


def answer_nll(model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """``mean_nll(model(**model_inputs(batch)).logits, batch["labels"])``, with the output head applied at
    answer positions only (see ``answer_logits``). -> () float32 or float64."""
    return mean_nll(answer_logits(model, batch), batch["labels"])


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the (unwrapped) model's class forward has a ``logits_to_keep`` parameter. The class
    attribute is inspected, not the instance's: accelerate replaces ``model.forward`` by a wrapper."""
    forward = getattr(type(unwrap(model)), "forward", None)
    try:
        return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def kl_per_token(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p‖q) = Σ_v p_v (log p_v − log q_v) at each position; mean over an example's masked positions,
    then over examples (as ``mean_nll``).

    p_logits, q_logits (B, T, V), or (N, V) already gathered at ``mask`` (``answer_logits``); mask (B, T)
    bool over logit positions (e.g. ``logit_mask(labels)``), None for every position. -> () float32 or float64.
    Gradient flows into whichever side requires it.
    """
    if mask is None:
        if p_logits.dim() == 2 or q_logits.dim() == 2:
            raise ValueError("kl_per_token: (N, V) gathered logits need the mask they were gathered at")
        mask = torch.ones(p_logits.shape[:2], dtype=torch.bool, device=p_logits.device)
    log_p = F.log_softmax(upcast(p_logits if p_logits.dim() == 2 else p_logits[mask]), dim=-1)  # (N, V)
    log_q = F.log_softmax(upcast(q_logits if q_logits.dim() == 2 else q_logits[mask]), dim=-1)  # (N, V)
    kl_sel = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (N,)
    kl = torch.zeros(mask.shape, dtype=kl_sel.dtype, device=kl_sel.device).masked_scatter(mask, kl_sel)  # (B, T)
    return _per_example_mean(kl, mask)


def masked_mse(acts: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of the mean-over-hidden squared error, per example, then over the batch.

    acts (B, T, H); target (B, T, H) or broadcastable (1, 1, H); mask (B, T) bool -> ().
    The per-example normalisation follows open-unlearning's RMU ``compute_activation_loss``.
    """
    sq = (upcast(acts) - upcast(target)).pow(2).mean(dim=-1)  # (B, T)
    per_example = (sq * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)  # (B,)
    return per_example.mean()


def layer_index(num_layers: int, frac: float) -> int:
    """Layer chosen relative to depth: round(frac · (L − 1)), so 0 is the first and 1 the last."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"layer_frac must be in [0, 1], got {frac}")
    return int(round(frac * (num_layers - 1)))
