"""A store of finished worlds and models shared by study directories (``clearbench run --stage-store DIR``, or
``CLEARBENCH_STAGE_STORE``).

The world, the base and the finetunes (target, golds) of the tiny preset take half an hour on two cores and are the
same for every study of one world seed: tiny-calibrate, tiny-grid and tiny-metaeval share them with tiny. With a
store, a study copies each finished stage of those kinds into ``DIR/<kind>/<key>-<code>/`` and, before making one,
copies it from there when the store has it. An entry is used only under the same stage key (the stage's settings
and those of the stages it reads, as within one study directory) *and* the same code: ``<code>`` hashes the
clearbench and data_gen sources and the torch and transformers versions, so any edit of the code or an upgrade
makes a new entry instead of reusing an old one. Entries appear whole (written aside, then renamed) and are never
changed; delete a directory of the store to drop an entry.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from clearbench.plan import STAGE_FILE, Stage
from clearbench.provenance import write_dir_atomic, write_json_atomic

ENV = "CLEARBENCH_STAGE_STORE"
STORED_KINDS = ("generate", "pretrain", "finetune")  # the stages every study of one world repeats
ENTRY_FILE = ".store.json"  # what the entry is and where it came from (not copied back into a study)
_SOURCES = ("clearbench", "data_gen")  # the code that makes those stages (data_gen's word lists included)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """16 hex digits over every file of clearbench/ and data_gen/ (bytecode left out) and the torch and
    transformers versions: what besides the stage key decides the stored outputs."""
    import torch
    import transformers

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"torch {torch.__version__} transformers {transformers.__version__}".encode())
    for package in _SOURCES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def from_env(path: str | os.PathLike | None = None) -> "StageStore | None":
    """The store at ``path``, else at ``$CLEARBENCH_STAGE_STORE``, else None (no store)."""
    path = path or os.environ.get(ENV)
    return StageStore(path) if path else None


class StageStore:
    """``root``/<kind>/<key>-<code>/: finished stage directories, each with its marker (``stage.json``)."""

    def __init__(self, root: str | os.PathLike, code: str | None = None):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"--stage-store {self.root} is a file; give the store a directory")
        self.code = code or code_fingerprint()

    def entry(self, stage: Stage) -> Path:
        return self.root / stage.kind / f"{stage.key}-{self.code}"

    def has(self, stage: Stage) -> bool:
        """The store holds ``stage`` finished under its key (a marker with that key)."""
        if stage.kind not in STORED_KINDS:
            return False
        try:
            return json.loads((self.entry(stage) / STAGE_FILE).read_text()).get("key") == stage.key
        except (OSError, ValueError):
            return False

    def fetch(self, stage: Stage) -> bool:
        """Copy the stored ``stage`` to ``stage.path`` (which the caller has cleared; it appears whole); its
        marker then says where it came from. False if the store does not hold it."""
        if not self.has(stage):
            return False
        src = self.entry(stage)

        def write(tmp: Path) -> None:
            shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(ENTRY_FILE))
            marker = json.loads((tmp / STAGE_FILE).read_text())
            write_json_atomic(tmp / STAGE_FILE, marker | {"from_store": str(src)})

        write_dir_atomic(stage.path, write)
        return True

    def put(self, stage: Stage) -> bool:
        """Copy the finished ``stage`` (its marker written) into the store, unless it is there already or is
        not of a stored kind; True if this call added it."""
        if stage.kind not in STORED_KINDS or self.has(stage) or not stage.marker.is_file():
            return False
        dest = self.entry(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            shutil.copytree(stage.path, tmp, dirs_exist_ok=True)
            marker = json.loads((tmp / STAGE_FILE).read_text())
            marker.pop("from_store", None)
            write_json_atomic(tmp / STAGE_FILE, marker)
            write_json_atomic(tmp / ENTRY_FILE, {"stage": stage.name, "kind": stage.kind, "key": stage.key,
                                                 "code": self.code, "source": str(stage.path.resolve()),
                                                 "stored": time.strftime("%Y-%m-%dT%H:%M:%S")})
            os.rename(tmp, dest)  # whole or not at all; another study that stored it first wins
        except OSError:
            if not self.has(stage):
                raise
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
