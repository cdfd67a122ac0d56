"""Plain PEFT adapter directories on a named base model: a user's own LoRA checkpoint as peft's
``save_pretrained`` writes it (``adapter_config.json`` + ``adapter_model.safetensors``, no
``clearbench_adapter.json`` marker), loaded as ``base`` with the adapter merged in (``load``).

Its fingerprint (``fingerprint``) hashes what ``provenance.adapter_fingerprint`` hashes for a clearbench adapter
(its own files, the merge-relevant adapter_config.json fields) with the base's model_fingerprint, so the same
adapter on another base is another model. Weights are safetensors only: nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clearbench.provenance import ADAPTER_CONFIG_KEYS, checkpoint_files, model_dir, model_fingerprint, sha256_file

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json")


def is_plain_adapter(path: str | os.PathLike) -> bool:
    """A directory with peft's adapter_config.json and no clearbench adapter marker."""
    from clearbench.models.adapter import is_adapter_dir

    return (Path(path) / CONFIG).is_file() and not is_adapter_dir(path)


def check(path: str | os.PathLike, base: str | os.PathLike | None) -> None:
    """``path`` is a plain PEFT adapter with safetensors weights and ``base`` is given; errors name the fix."""
    p = Path(path)
    if not is_plain_adapter(p):
        raise ValueError(f"--base is for a plain PEFT adapter directory (adapter_config.json + {WEIGHTS}); {p} "
                         f"is not one: drop --base to evaluate it as a checkpoint")
    if not (p / WEIGHTS).is_file():
        other = sorted(f.name for f in p.glob("adapter_model.*"))
        raise ValueError(f"{p}: no {WEIGHTS}" + (f" (found {', '.join(other)}: convert it to safetensors, "
                                                 f"clearbench never unpickles weights)" if other else ""))
    if base is None:
        named = json.loads((p / CONFIG).read_text()).get("base_model_name_or_path") or "?"
        raise ValueError(f"{p} is a PEFT adapter without clearbench's marker: pass --base DIR, the model it was "
                         f"trained on (e.g. the leaderboard's runs/target; its adapter_config.json names {named!r})")


def fingerprint(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """sha256 over "clearbench-plain-adapter/1", the adapter's own files but adapter_config.json, the merge-relevant
    adapter_config.json fields and the base's model_fingerprint (16 hex digits, as model_fingerprint)."""
    p = Path(path)
    h = hashlib.sha256(b"clearbench-plain-adapter/1\n")
    for f in checkpoint_files(p):
        if f.name != CONFIG or f.parent != p:
            h.update(f"{f.relative_to(p).as_posix()}\n{sha256_file(f)}\n".encode())
    config = json.loads((p / CONFIG).read_text())
    merge = {k: sorted(v) if isinstance(v, list) else v for k, v in config.items() if k in ADAPTER_CONFIG_KEYS}
    h.update(json.dumps(merge, sort_keys=True, separators=(",", ":")).encode())
    h.update(f"base:{model_fingerprint(model_dir(base))}".encode())
    return h.hexdigest()[:16]


def load(path: str | os.PathLike, base: str | os.PathLike, *, device: str = "cpu", dtype=None) -> Any:
    """``clearbench.models.Loaded`` of ``base`` (a model or run directory) with the adapter merged (in fp32, then cast once, as a clearbench
    adapter loads); the processor is the adapter directory's when it holds one, else the base's."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor

    from clearbench.models import Loaded, load_model
    from clearbench.models.adapter import cast_like_from_pretrained
    from clearbench.models.common import check_compatible, default_dtype

    check(path, base)
    parent = load_model(model_dir(base), device=device, dtype=torch.float32)
    model = PeftModel.from_pretrained(parent.model, str(path), is_trainable=False).merge_and_unload()
    cast_like_from_pretrained(model, default_dtype(device, dtype))
    own = any((Path(path) / f).is_file() for f in PROCESSOR_FILES)
    processor = AutoProcessor.from_pretrained(str(path)) if own else parent.processor
    check_compatible(model, processor, path)
    return Loaded(model=model.eval(), processor=processor, family=parent.family, path=str(path))
