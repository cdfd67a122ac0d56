"""Model families: one module per family declaring its ``Family`` spec, a literal registry, and ``load_model``.

A ``Family`` (``family.py``) holds the facts (transformers class, model_type, vision / projector / language
prefixes, decoder-layer path, packing, processor keys, end-of-turn token) and the operations that read them:
``load``, ``collate``, ``end_token``, ``language_layers``, ``part_of``, ``save``. Methods and metrics go through
these and never touch a tokenizer or a chat template. ``load_model`` also loads adapter-only checkpoints
(``adapter.py``): the parent chain is resolved, merged in memory, and the family is the chain root's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from clearbench.models import adapter, llava, qwen2_vl, tiny_llava
from clearbench.models.common import MARKER_FILE, Loaded, generate, unwrap
from clearbench.models.family import Family
from clearbench.types import check_name

FAMILIES: dict[str, Family] = {"tiny-llava": tiny_llava.FAMILY, "llava": llava.FAMILY, "qwen2-vl": qwen2_vl.FAMILY}

__all__ = ["FAMILIES", "Family", "Loaded", "detect_family", "family_of", "generate", "get_family",
           "language_layers", "load_model"]


def get_family(name: str) -> Family:
    return FAMILIES[check_name("model family", name, list(FAMILIES))]


def family_of(model: torch.nn.Module) -> Family:
    """The family of an in-memory model (through DDP / peft wrappers), by its transformers class. Families that
    share a class share its parts (tiny-llava is llava's spec renamed); a family detected by model_type wins."""
    cls = type(unwrap(model)).__name__
    for family in sorted(FAMILIES.values(), key=lambda f: f.marker):
        if family.model_class == cls:
            return family
    raise ValueError(f"{cls} is the model class of no registered model family "
                     f"({', '.join(f'{f.name}: {f.model_class}' for f in FAMILIES.values())}); "
                     f"add a family module and its line in clearbench.models.FAMILIES")


def language_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of ``model``'s language model, at its family's ``layers`` path (RMU hooks one)."""
    return family_of(model).language_layers(model)


def detect_family(path: str | os.PathLike) -> str:
    """The family of a checkpoint: a marker family by its marker file, the others by config model_type; for an
    adapter-only checkpoint, the family of the full checkpoint at the root of its parent chain."""
    path = adapter.root_of(path)
    p = Path(path)
    if p.is_dir():
        config = p / "config.json"
        if not config.is_file():
            found = sorted(x.name for x in p.iterdir())
            raise ValueError(f"{p}: no config.json, not a model checkpoint. Found: {found or 'nothing'}")
        model_type = json.loads(config.read_text()).get("model_type")
        if (p / MARKER_FILE).is_file():
            family = get_family(json.loads((p / MARKER_FILE).read_text())["clearbench_family"])
            if model_type not in family.model_types:
                raise ValueError(f"{p}: {MARKER_FILE} names model family {family.name!r} (model_type "
                                 f"{' or '.join(family.model_types)}) but config.json has model_type {model_type!r}")
            return family.name
    elif p.exists() or str(path).startswith((".", "/", "~")):
        raise ValueError(f"{path}: not a checkpoint directory")
    else:  # a hub id: resolved by transformers (fails fast with HF_HUB_OFFLINE=1 when not cached)
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(path)).model_type
    by_type = {t: f.name for f in FAMILIES.values() if not f.marker for t in f.model_types}
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
    spec = FAMILIES[found]
    if adapter.is_adapter_dir(path):  # parent chain (checked by fingerprint) + this adapter, merged
        model, processor, _ = adapter.load(path, device=device, dtype=dtype)
    else:
        model, processor = spec.load(path, device=device, dtype=dtype)
    return Loaded(model=model, processor=processor, family=spec, path=str(path))
