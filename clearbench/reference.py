"""The frozen reference model (NPO/DPO's π_ref, KL's and SCRUB's teacher, RMU's frozen activations).

With LoRA the reference costs no memory: it is the *same* peft network run with its adapters
disabled (``PeftModel.disable_adapter()``), which is exactly the model unlearning started from
because peft keeps the base weights frozen. Without LoRA (full-parameter unlearning) it is a
deep copy, frozen, taken when the ``Reference`` is built (so build it before the first step).

Either way the reference runs in eval mode (no dropout) and without gradients.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Mapping

import torch

from clearbench.cost import count_tokens
from clearbench.losses import answer_logits, model_inputs


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Reference:
    """``ref(batch) -> logits``; ``ref.answer_logits(batch)``; ``with ref.module() as m:`` for hooks; ``ref.kind``."""

    def __init__(self, model: torch.nn.Module):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        if _is_peft(model):
            self.kind = "adapter-disabled"
            self._net = model
        else:
            self.kind = "copy"
            self._net = count_tokens(copy.deepcopy(model).eval())  # its passes are part of the run's cost
            self._net.requires_grad_(False)

    @contextlib.contextmanager
    def module(self) -> Iterator[torch.nn.Module]:
        """The network in reference mode: adapters off (peft) or the frozen copy; eval mode."""
        if self.kind == "copy":
            yield self._net
            return
        was_training = self._net.training
        self._net.eval()
        try:
            with self._net.disable_adapter():
                yield self._net
        finally:
            self._net.train(was_training)

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Reference logits (B, T, V) for a collated batch; no gradient."""
        with self.module() as net:
            return net(**model_inputs(batch)).logits

    @torch.no_grad()
    def answer_logits(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Reference logits (N, V) at the answer positions only, ``clearbench.losses.answer_logits``; no gradient."""
        with self.module() as net:
            return answer_logits(net, batch)
