"""What a number depends on: library versions, device, model fingerprints, run records."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import clearbench

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "numpy", "scipy",
             "scikit-learn", "rouge-score")


def library_versions() -> dict[str, str | None]:
    """clearbench, Python and the libraries a number depends on (None when not installed), read from
    package metadata without importing them."""
    out: dict[str, str | None] = {"clearbench": clearbench.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
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


ADAPTER_MARKER = "clearbench_adapter.json"  # marks an adapter-only checkpoint (clearbench.models.adapter)
# adapter_config.json fields that change what merging the adapter does (peft's other fields are bookkeeping:
# the base path it was saved from, peft's version, inference_mode, ...)
ADAPTER_CONFIG_KEYS = ("peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern",
                       "fan_in_fan_out", "target_modules", "exclude_modules", "modules_to_save", "bias", "lora_bias",
                       "layers_to_transform", "layers_pattern")
# What loading a checkpoint directory reads: weights, then config, generation config, tokenizer, processor and
# chat-template files and the clearbench markers (a swapped tokenizer must change the fingerprint)
FINGERPRINT_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model", ".tiktoken")
_FINGERPRINTS: dict[tuple, str] = {}  # (dir, file stats) -> fingerprint: a 7B base is hashed once per process


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The files of ``model_dir`` (subfolders included, hidden entries not) that a fingerprint covers."""
    model_dir = Path(model_dir)
    return sorted(f for f in model_dir.rglob("*") if f.suffix in FINGERPRINT_SUFFIXES and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(model_dir).parts))


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over what a checkpoint directory (or cached hub id) loads from: its weights, config, tokenizer and
    processor files (``checkpoint_files``), each by relative path and content.

    An adapter-only checkpoint (``clearbench_adapter.json``) is ``adapter_fingerprint``: its own files and its
    parent's fingerprint, so the same adapter on another parent is another model."""
    model_dir = local_model_dir(model_dir)
    files = checkpoint_files(model_dir)
    if not any(f.suffix == ".safetensors" for f in files):
        raise ValueError(f"{model_dir}: no *.safetensors weight files to fingerprint")
    key = (str(model_dir.resolve()), tuple((str(f.relative_to(model_dir)), *_stat(f)) for f in files))
    if key not in _FINGERPRINTS:
        if (model_dir / ADAPTER_MARKER).is_file():
            _FINGERPRINTS[key] = adapter_fingerprint(model_dir)
        else:
            _FINGERPRINTS[key] = _files_hash(model_dir, files, b"clearbench-model/2\n").hexdigest()[:16]
    return _FINGERPRINTS[key]


def _stat(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()  # ctime changes on every write, whatever the mtime says
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _files_hash(root: Path, files: list[Path], header: bytes) -> "hashlib._Hash":
    h = hashlib.sha256(header)
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\n{sha256_file(f)}\n".encode())
    return h


def adapter_fingerprint(adapter_dir: Path) -> str:
    """Fingerprint of an adapter-only checkpoint: sha256 over "clearbench-adapter/2", its own files (weights,
    tokenizer and processor files, as for a full checkpoint) but for adapter_config.json and the marker, then
    the merge-relevant adapter_config.json fields (ADAPTER_CONFIG_KEYS, canonical JSON, lists sorted) and the
    parent's model_fingerprint as recorded in clearbench_adapter.json (whose paths may change: a moved study).
    The recorded value is used (no parent needed to fingerprint); loading checks the parent still has it."""
    adapter_dir = Path(adapter_dir)
    parent_fp = json.loads((adapter_dir / ADAPTER_MARKER).read_text())["parent"]["model_fingerprint"]
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    merge = {k: sorted(v) if isinstance(v, list) else v for k, v in config.items() if k in ADAPTER_CONFIG_KEYS}
    own = [f for f in checkpoint_files(adapter_dir) if f.relative_to(adapter_dir).as_posix()
           not in (ADAPTER_MARKER, "adapter_config.json")]
    h = _files_hash(adapter_dir, own, b"clearbench-adapter/2\n")
    h.update(json.dumps(merge, sort_keys=True, separators=(",", ":")).encode())
    h.update(f"parent:{parent_fp}".encode())
    return h.hexdigest()[:16]


def write_dir_atomic(out: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Build a directory with ``write(tmp)`` in a fresh sibling temp dir, then swap it in for ``out``
    (``swap_dir``): readers see the old directory or the whole new one, never a partial one.
    The temp dir is removed if ``write`` fails."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_dir(tmp, out)
    return out


def _aside(out: Path) -> Path:
    return out.parent / f".{out.name}.previous"


def swap_dir(new: Path, out: Path) -> None:
    """Replace directory ``out`` by ``new`` so that a complete ``out`` exists at every instant but between two
    renames, and then its old copy sits aside (``.<name>.previous``, which ``recover_dir`` puts back): rename
    the old aside, rename the new in, delete the old."""
    out, aside = Path(out), _aside(Path(out))
    recover_dir(out, remove_temps=False)
    if aside.exists():  # left over from a swap killed after its new directory was in place
        shutil.rmtree(aside)
    had_old = out.exists()
    if had_old:
        os.replace(out, aside)
    try:
        os.replace(new, out)
    except BaseException:
        if had_old and not out.exists():
            os.replace(aside, out)
        shutil.rmtree(new, ignore_errors=True)
        raise
    if had_old:
        shutil.rmtree(aside, ignore_errors=True)


def recover_dir(out: str | os.PathLike, *, remove_temps: bool = True) -> None:
    """Undo a ``swap_dir`` a kill interrupted (``out`` missing, its old copy aside: put it back) and, with
    ``remove_temps``, delete the sibling temp dirs of ``write_dir_atomic`` a kill left behind (only when no
    other process writes ``out``: a checkpoint on (re)start)."""
    out = Path(out)
    aside = _aside(out)
    if aside.is_dir() and not out.exists():
        os.replace(aside, out)
    if remove_temps and out.parent.is_dir():
        for p in out.parent.iterdir():
            if p.name.startswith(f".{out.name}.") and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write ``text`` (or bytes) to a fresh temp file beside ``path``, fsync it, then rename it onto ``path``: a
    reader (or a crash) sees the old file or the whole new one. A symlink at ``path`` is replaced, never followed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; a file here is as readable as any other
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, *, compact: bool = False) -> Path:
    """JSON through ``write_text_atomic``: indented and key-sorted, or ``compact`` (result files: no NaN)."""
    if compact:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    else:
        text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    return write_text_atomic(path, text)


def model_dir(run_or_model: str | os.PathLike) -> Path:
    """A stage directory (with ``model/``) or a model directory itself -> the model directory."""
    p = Path(run_or_model)
    return p / "model" if (p / "model").is_dir() else p


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A stage directory's ``run.json`` (what was run on what); for a ``model/`` directory, its stage's."""
    p = Path(run_dir)
    for path in (p / "run.json", *([p.parent / "run.json"] if p.name == "model" else [])):
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{run_dir}: no run.json; is this a clearbench run directory?")


def run_world(run_or_model: str | os.PathLike) -> str | None:
    """The world fingerprint a model was trained on (from its run.json), or None when it has no run record."""
    try:
        return read_run(run_or_model).get("world_fingerprint")
    except FileNotFoundError:
        return None


def check_model_world(run_or_model: str | os.PathLike, world_fingerprint: str, what: str = "model") -> None:
    """A model with a run record must have been trained on the world being used (the forget split would
    name other people otherwise); a model without one (a plain checkpoint) passes."""
    fp = run_world(run_or_model)
    if fp and fp != world_fingerprint:
        raise ValueError(f"{what} {run_or_model} was trained on world {fp[:12]}..., not on this world "
                         f"({world_fingerprint[:12]}...): pass the matching --world")
