"""LLaVA-1.5 family (``llava-hf/llava-1.5-7b-hf`` and checkpoints in the same format).

The paper's model (CLEAR, clear.md §2.1). Loaded with the real transformers classes and the
processor's own hub chat template (clear.md §2.2), which renders

    prompt = "USER: <image>\\n{question} ASSISTANT:"
    full   = prompt + " {answer}</s>"      (the hub template ends the answer with a space; we
                                           supervise the eos instead so generation can stop)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from clearbench.models import common
from clearbench.types import Record

NAME = "llava"
MODEL_TYPE = "llava"  # config.json "model_type"


def load(path: str | os.PathLike, device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor) from a local dir or hub id, safetensors only."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    common.check_checkpoint_files(path, NAME)
    model = LlavaForConditionalGeneration.from_pretrained(
        str(path), dtype=common.default_dtype(device, dtype), use_safetensors=True
    ).to(device)
    processor = AutoProcessor.from_pretrained(str(path))
    common.check_compatible(model, processor, path)
    model.eval()
    return model, processor


def end_token(processor: Any) -> str:
    """The token that ends an assistant answer (the tokenizer's eos, ``</s>`` for llava-1.5)."""
    return processor.tokenizer.eos_token


def collate(
    processor: Any,
    records: Sequence[Record],
    *,
    answers: Sequence[str] | None = None,
    for_generation: bool = False,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Records -> {input_ids, attention_mask, [pixel_values], [labels]} (see ``common.collate``)."""
    return common.collate(
        processor, records, end_token=end_token(processor), answers=answers,
        for_generation=for_generation, max_length=max_length,
    )


def language_layers(model: Any) -> torch.nn.ModuleList:
    """``model.model.language_model.layers`` (Llama decoder layers), through a peft wrapper too."""
    return common.language_layers(model)


def save(model: Any, processor: Any, out_dir: str | os.PathLike) -> Path:
    return common.save_pretrained(model, processor, out_dir)
