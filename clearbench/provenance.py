"""What a number depends on: library versions, device, model fingerprints, run records."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import clearbench

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "numpy", "scipy")


def library_versions() -> dict[str, str]:
    out = {"clearbench": clearbench.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu:{platform.processor() or platform.machine()} threads={torch.get_num_threads()}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def local_model_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or for a hub id (``llava-hf/llava-1.5-7b-hf``) the local snapshot of it
    that transformers downloaded (the hub cache, no network): so a hub-id base model is fingerprinted
    by its files like a local one."""
    p = Path(path)
    if p.exists() or str(path).startswith((".", "/", "~")) or str(path).count("/") != 1:
        return p
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(path), local_files_only=True))
    except LocalEntryNotFoundError:
        raise ValueError(f"{path}: neither a local checkpoint directory nor a hub id in the local hub cache "
                         f"(load it once with network access, or pass a local directory)") from None


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the weight files (safetensors) of a checkpoint directory (or cached hub id), by name."""
    model_dir = local_model_dir(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_dir}: no *.safetensors weight files to fingerprint")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_run(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no run.json; is this a clearbench run directory?")
    return json.loads(path.read_text())
