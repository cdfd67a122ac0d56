"""Qwen2-VL family (``Qwen/Qwen2-VL-2B-Instruct``, ``Qwen/Qwen2-VL-7B-Instruct``).

CLEAR's HEAD default model (clear.md §2.1). The processor's own chat template renders

    prompt = "<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n"
             "<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n"
    full   = prompt + "{answer}<|im_end|>"

The processor expands ``<|image_pad|>`` to (t*h*w)/merge**2 tokens per image; images travel as
flattened patches ``pixel_values`` (sum of patches, C*T*P*P) with ``image_grid_thw`` (n_images, 3),
and ``mm_token_type_ids`` (B, T) tells the model where the image tokens are for M-RoPE.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from clearbench.models import common
from clearbench.types import Record

NAME = "qwen2-vl"
MODEL_TYPE = "qwen2_vl"  # config.json "model_type"
END_TOKEN = "<|im_end|>"


def load(path: str | os.PathLike, device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """(Qwen2VLForConditionalGeneration, Qwen2VLProcessor) from a local dir or hub id, safetensors only."""
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    common.check_checkpoint_files(path, NAME)
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        str(path), dtype=common.default_dtype(device, dtype), use_safetensors=True
    ).to(device)
    processor = AutoProcessor.from_pretrained(str(path))
    common.check_compatible(model, processor, path)
    if processor.tokenizer.convert_tokens_to_ids(END_TOKEN) in (None, processor.tokenizer.unk_token_id):
        raise ValueError(f"{path}: the tokenizer has no {END_TOKEN!r} token; it is not a Qwen2-VL chat tokenizer")
    model.eval()
    return model, processor


def end_token(processor: Any) -> str:
    """``<|im_end|>`` ends every turn in Qwen's ChatML template (the Instruct models stop on it)."""
    return END_TOKEN


def collate(
    processor: Any,
    records: Sequence[Record],
    *,
    answers: Sequence[str] | None = None,
    for_generation: bool = False,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Records -> {input_ids, attention_mask, mm_token_type_ids, [pixel_values, image_grid_thw], [labels]}."""
    return common.collate(
        processor, records, end_token=END_TOKEN, answers=answers,
        for_generation=for_generation, max_length=max_length,
    )


def language_layers(model: Any) -> torch.nn.ModuleList:
    """``model.model.language_model.layers`` (Qwen2 decoder layers), through a peft wrapper too."""
    return common.language_layers(model)


def save(model: Any, processor: Any, out_dir: str | os.PathLike) -> Path:
    return common.save_pretrained(model, processor, out_dir)
