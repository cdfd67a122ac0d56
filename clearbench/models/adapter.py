"""Adapter-only checkpoints: a LoRA run with ``train.save_merged: false`` saves its PEFT adapter,
not a merged copy of the model (a merged LLaVA-1.5-7B is ~28 GB in fp32, its LoRA r8 adapter well
under 1 GB).

An adapter directory holds ``adapter_model.safetensors`` + ``adapter_config.json`` (peft), the
processor files and ``clearbench_adapter.json``, which names the parent model it applies to::

    {"clearbench_adapter": 1, "family": "llava",
     "parent": {"path": "runs/target/model",    # as the stage was given it (a dir or a hub id)
                "abspath": "/abs/runs/target/model", "relpath": "../../../target/model",  # null for a hub id
                "model_fingerprint": "<the parent's model_fingerprint>"},
     "chain": [{"path": ..., "model_fingerprint": ..., "adapter": true}, ...]}   # every ancestor, nearest first

The parent may itself be an adapter directory (an unlearned adapter on an adapter target); ``load``
resolves the chain recursively: load the parent (merged in memory), check that its fingerprint is
the recorded one, apply this adapter, ``merge_and_unload``. The chain is merged in fp32 and cast
once to the dtype asked for (bf16 on a GPU), as a merged fp32 checkpoint would be loaded: no extra
bf16 rounding per link; the peak memory is the fp32 model. The parent is looked up at ``relpath``
from the adapter (a study directory moved as a whole still loads), then at ``abspath``, then as
given (a hub id: the local hub cache); whichever is found must have the recorded fingerprint, so a
missing, moved or changed parent is an error naming both directories, never a silent other base.
The fingerprint of an adapter directory is ``provenance.adapter_fingerprint``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clearbench.provenance import ADAPTER_MARKER, model_fingerprint, write_dir_atomic

MAX_CHAIN = 16  # adapters on adapters; deeper is a cycle or a mistake


class ParentModelError(FileNotFoundError):
    """The parent model of an adapter directory is missing or is not the one it was trained on."""


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_MARKER).is_file()


def read_marker(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / ADAPTER_MARKER).read_text())


def resolve_parent(path: str | os.PathLike) -> str:
    """Where the parent of adapter dir ``path`` is now (a directory, or the hub id it was given as)."""
    path = Path(path)
    parent = read_marker(path)["parent"]
    local = [p for p in ((path / parent["relpath"]) if parent.get("relpath") else None,
                         Path(parent["abspath"]) if parent.get("abspath") else None) if p is not None]
    for candidate in local:
        if candidate.is_dir():
            return str(os.path.normpath(candidate))
    if not local:  # saved on top of a hub id: transformers resolves it (the local hub cache offline)
        return parent["path"]
    raise ParentModelError(
        f"adapter checkpoint {path} applies to the parent model {parent['path']} ({parent['abspath']}), "
        f"which is missing (looked for {', '.join(str(p) for p in local)}). Put the parent back at that path, "
        f"or re-run the stage that wrote {path}.")


def root_of(path: str | os.PathLike) -> str:
    """The full checkpoint at the root of an adapter chain (``path`` itself for a plain checkpoint)."""
    current, seen = str(path), []
    while is_adapter_dir(current):
        seen.append(current)
        if len(seen) > MAX_CHAIN:
            raise ValueError(f"{path}: adapter chain longer than {MAX_CHAIN} ({' -> '.join(seen[:4])} ...): a cycle?")
        current = resolve_parent(current)
    return current


def check_parent(path: str | os.PathLike, parent: str) -> None:
    """``parent`` (as resolved) has the fingerprint recorded when the adapter at ``path`` was saved."""
    want = read_marker(path)["parent"]
    found = model_fingerprint(Path(parent))
    if found != want["model_fingerprint"]:
        raise ParentModelError(
            f"adapter checkpoint {path} was trained on parent model {want['path']} with fingerprint "
            f"{want['model_fingerprint']}, but {parent} now has fingerprint {found}: the parent changed since. "
            f"Restore that parent or re-run the stage that wrote {path}; a different base is never used silently.")


def load(path: str | os.PathLike, *, device: str = "cpu", dtype=None) -> tuple[Any, Any, str]:
    """(merged model, processor, family name) of adapter dir ``path``: parent (recursively) + adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor

    from clearbench.models import load_model
    from clearbench.models.common import check_compatible, default_dtype

    parent = resolve_parent(path)
    check_parent(path, parent)  # before loading gigabytes
    # merged in fp32 (as training merged it) and cast once at the end, like a merged fp32 checkpoint loaded in bf16
    base = load_model(parent, device=device, dtype=torch.float32)
    model = PeftModel.from_pretrained(base.model, str(path), is_trainable=False).merge_and_unload()
    cast_like_from_pretrained(model, default_dtype(device, dtype))
    for p in model.parameters():  # as a plain checkpoint loads: every parameter can be trained
        p.requires_grad_(True)
    processor = AutoProcessor.from_pretrained(str(path))
    check_compatible(model, processor, path)
    return model.eval(), processor, base.name


def cast_like_from_pretrained(model: Any, dtype) -> None:
    """Cast what ``from_pretrained(dtype=...)`` casts, the checkpoint's tensors (parameters, persistent
    buffers), and leave computed buffers alone: ``model.to(bf16)`` would also round e.g. the fp32 rotary
    ``inv_freq`` and change every logit."""
    import torch

    if dtype == torch.float32:
        return
    saved = set(model.state_dict())
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    for prefix, module in model.named_modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_floating_point() and f"{prefix}.{name}".lstrip(".") in saved:
                module._buffers[name] = buf.to(dtype)
    model.config.dtype = dtype


def relocate(path: str | os.PathLike, old: str | os.PathLike, new: str | os.PathLike) -> None:
    """Rewrite the marker of adapter dir ``path`` (a copy of ``old`` that will live at ``new``) so that its
    ``relpath`` still reaches the parent."""
    marker = read_marker(path)
    parent = marker["parent"]
    if parent.get("relpath"):
        where = (Path(old) / parent["relpath"]).resolve()
        parent["relpath"] = os.path.relpath(where, Path(new).resolve())
        (Path(path) / ADAPTER_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def save(model: Any, processor: Any, out_dir: str | os.PathLike, parent: str | os.PathLike, family: str) -> Path:
    """Atomic save of a peft-wrapped ``model``'s adapter (+ processor, marker) onto ``out_dir``; ``parent``
    is the model the adapter was trained on (a model dir, possibly itself an adapter, or a hub id)."""
    if not hasattr(model, "peft_config"):
        raise ValueError("adapter-only save needs a LoRA (peft) model; full-parameter runs save merged weights")
    out = Path(out_dir)
    local = Path(parent).is_dir()
    entry = {"path": str(parent), "model_fingerprint": model_fingerprint(Path(parent)),
             "abspath": str(Path(parent).resolve()) if local else None,
             "relpath": os.path.relpath(Path(parent).resolve(), out.resolve()) if local else None}
    ancestors = read_marker(parent)["chain"] if local and is_adapter_dir(parent) else []
    chain = [{"path": entry["path"], "model_fingerprint": entry["model_fingerprint"],
              "adapter": local and is_adapter_dir(parent)}] + ancestors
    def write(tmp: Path) -> None:
        # no embedding layers: LoRA wraps nn.Linear only and the vocabulary is never resized ("auto" would
        # look the base's config up on the hub to check)
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model card template
        processor.save_pretrained(tmp)
        marker = {"clearbench_adapter": 1, "family": family, "parent": entry, "chain": chain}
        (tmp / ADAPTER_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")

    return write_dir_atomic(out, write)
