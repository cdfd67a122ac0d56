"""Model families: one module per family, a literal registry, and ``load_model``.

A family module exposes ``NAME``, ``load(path, device, dtype) -> (model, processor)``,
``collate(processor, records, *, answers=None, for_generation=False, max_length=None) -> dict``,
``end_token(processor) -> str``, ``language_layers(model) -> nn.ModuleList`` and
``save(model, processor, out_dir)``. Methods and metrics go through these and never touch a
tokenizer or a chat template. ``load_model`` also loads adapter-only checkpoints (``adapter.py``):
the parent chain is resolved, merged in memory, and the family is the chain root's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import torch

from clearbench.models import adapter, llava, qwen2_vl, tiny_llava
from clearbench.models.common import Loaded, generate
from clearbench.types import check_name

FAMILIES: dict[str, ModuleType] = {"tiny-llava": tiny_llava, "llava": llava, "qwen2-vl": qwen2_vl}

__all__ = ["FAMILIES", "Loaded", "detect_family", "generate", "get_family", "load_model"]


def get_family(name: str) -> ModuleType:
    return FAMILIES[check_name("model family", name, list(FAMILIES))]


def detect_family(path: str | os.PathLike) -> str:
    """The family of a checkpoint: tiny-llava (marker file), llava or qwen2-vl (config model_type); for an
    adapter-only checkpoint, the family of the full checkpoint at the root of its parent chain."""
    path = adapter.root_of(path)
    p = Path(path)
    if p.is_dir():
        marker = p / tiny_llava.MARKER_FILE
        if marker.is_file():
            return json.loads(marker.read_text())["clearbench_family"]
        config = p / "config.json"
        if not config.is_file():
            found = sorted(x.name for x in p.iterdir())
            raise ValueError(f"{p}: no config.json, not a model checkpoint. Found: {found or 'nothing'}")
        model_type = json.loads(config.read_text()).get("model_type")
    elif p.exists() or str(path).startswith((".", "/", "~")):
        raise ValueError(f"{path}: not a checkpoint directory")
    else:  # a hub id: resolved by transformers (fails fast with HF_HUB_OFFLINE=1 when not cached)
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(path)).model_type
    by_type = {llava.MODEL_TYPE: llava.NAME, qwen2_vl.MODEL_TYPE: qwen2_vl.NAME}
    if model_type not in by_type:
        raise ValueError(
            f"{path}: config model_type {model_type!r} is not a supported family "
            f"(expected one of {sorted(by_type)}: families {sorted(FAMILIES)})"
        )
    return by_type[model_type]


def load_model(
    path: str | os.PathLike, *, family: str | None = None, device: str = "cpu", dtype: torch.dtype | str | None = None
) -> Loaded:
    """Load a checkpoint dir (or hub id) through its family; ``family`` is verified when given.

    Weights are safetensors only. dtype defaults to bf16 on GPU and fp32 on CPU. An adapter-only
    checkpoint loads as its parent (recursively) with the adapter merged in, in that dtype.
    """
    found = detect_family(path)
    if family is not None:
        get_family(family)
        if family != found:
            raise ValueError(f"{path}: asked for model family {family!r} but the checkpoint is {found!r}")
    module = FAMILIES[found]
    if adapter.is_adapter_dir(path):  # parent chain (checked by fingerprint) + this adapter, merged
        model, processor, _ = adapter.load(path, device=device, dtype=dtype)
    else:
        model, processor = module.load(path, device=device, dtype=dtype)
    return Loaded(model=model, processor=processor, family=module, path=str(path))
