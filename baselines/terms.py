"""Loss terms several methods share: one forward pass of the model (and of the reference) on one batch kind,
reduced as clearbench.losses reduces (a mean over each example's answer positions, then over examples)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from clearbench.losses import answer_logits, answer_nll, kl_per_token, logit_mask


def nll_terms(model, batches: Mapping[str, dict], kinds: Iterable[str]) -> dict[str, torch.Tensor]:
    """{"<kind>_nll": NLL of the answers of ``batches[kind]``} for each kind; each value ()."""
    return {f"{kind}_nll": answer_nll(model, batches[kind]) for kind in kinds}


def kl_to_reference(model, ref, batch: dict) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) at the positions that predict answer tokens, the reference frozen -> ()."""
    logits = answer_logits(model, batch)  # (N, V) at logit_mask(labels)
    return kl_per_token(ref.answer_logits(batch), logits, logit_mask(batch["labels"]))


def logged(total: torch.Tensor, terms: Mapping[str, Any]) -> dict[str, float]:
    """A step's logs: ``loss`` and each term (tensor or number) as a float."""
    return {"loss": total.item()} | {key: float(value.detach()) if torch.is_tensor(value) else float(value)
                                     for key, value in terms.items()}
