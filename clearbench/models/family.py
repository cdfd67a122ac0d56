"""What a model family is: its facts in one ``Family`` spec, and the operations that read them.

A family module (``llava.py``, ``qwen2_vl.py``, ``tiny_llava.py``) declares ``FAMILY = Family(...)``: the
transformers class, the config ``model_type``, where the vision tower, projector and language model live (module
name prefixes), the decoder-layer path, whether answer variants can be packed, extra per-token processor keys and
the end-of-turn token. Loading, collate, LoRA part classification, freezing, RMU's layer lookup, detection and
packing read these facts; a parameter that lies in no part of its family is an error, never "language" by default.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from clearbench.models import common
from clearbench.types import Record

MARKER_FILE = common.MARKER_FILE
PARTS = ("vision", "projector", "language")
_WRAPPER_PREFIXES = ("module.", "base_model.model.")  # DDP, then peft (LoRA's PeftModel and LoraModel)


@dataclasses.dataclass(frozen=True)
class Family:
    """The facts of one model family. Prefixes are module names in the transformers model (no wrapper)."""

    name: str  # registry key; "family" in run records and results
    model_class: str  # transformers class its checkpoints load as
    model_types: tuple[str, ...]  # config.json "model_type" values of its checkpoints
    vision: tuple[str, ...]  # vision tower
    projector: tuple[str, ...]  # vision -> language projector (looked up before vision: it may lie inside it)
    language: tuple[str, ...]  # language model, output head included
    layers: str  # dotted path of the language model's decoder-layer ModuleList
    packable: bool = False  # 1-D rotary positions: a record's answer variants may share its prompt in one row
    token_keys: tuple[str, ...] = ()  # per-token (B, T) processor outputs besides input_ids/attention_mask
    end_of_turn: str | None = None  # the token that ends an answer; None: the tokenizer's eos
    marker: bool = False  # detected by MARKER_FILE only (its model_type is another family's)

    # ------------------------------------------------------------------------- parts
    def part_of(self, name: str) -> str:
        """'vision', 'projector' or 'language' for a parameter or module name (DDP / peft prefixes allowed)."""
        bare = name
        for prefix in _WRAPPER_PREFIXES:
            bare = bare.removeprefix(prefix)
        for part in ("projector", "vision", "language"):
            if any(bare == p or bare.startswith(p + ".") for p in getattr(self, part)):
                return part
        raise ValueError(
            f"{name!r} lies in no part of model family {self.name!r} (vision {list(self.vision)}, projector "
            f"{list(self.projector)}, language {list(self.language)}): add its prefix to the family's spec")

    def language_layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        """The language model's decoder layers (also through peft / DDP wrappers)."""
        obj: Any = common.unwrap(model)
        for attr in self.layers.split("."):
            obj = getattr(obj, attr, None)
        if not isinstance(obj, torch.nn.ModuleList) or not len(obj):
            raise ValueError(f"{type(common.unwrap(model)).__name__}: no decoder layers at {self.layers!r} "
                             f"(model family {self.name!r}); fix the family's ``layers`` path")
        return obj

    # ------------------------------------------------------------------------- chat format
    def end_token(self, processor: Any) -> str:
        """The token that ends an assistant answer (supervised; generation stops on it)."""
        return self.end_of_turn or processor.tokenizer.eos_token

    def collate(self, processor: Any, records: Sequence[Record], *, answers: Sequence[str] | None = None,
                for_generation: bool = False, max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Records -> model inputs (+ ``labels`` unless ``for_generation``); see ``common.collate``."""
        return common.collate(processor, records, end_token=self.end_token(processor), token_keys=self.token_keys,
                              answers=answers, for_generation=for_generation, max_length=max_length)

    # ------------------------------------------------------------------------- io
    def load(self, path: str | os.PathLike, device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[Any, Any]:
        """(model, processor) from a local dir or hub id: safetensors only, every weight present and used."""
        import transformers

        common.check_checkpoint_files(path, self.name)
        model_class = getattr(transformers, self.model_class)
        model = common.from_pretrained(model_class, path, common.default_dtype(device, dtype)).to(device)
        processor = transformers.AutoProcessor.from_pretrained(str(path))
        common.check_compatible(model, processor, path)
        tok = processor.tokenizer
        if self.end_of_turn and tok.convert_tokens_to_ids(self.end_of_turn) in (None, tok.unk_token_id):
            raise ValueError(f"{path}: the tokenizer has no {self.end_of_turn!r} token, which ends every answer of "
                             f"model family {self.name!r}; it is not this family's chat tokenizer")
        return model.eval(), processor

    def save(self, model: Any, processor: Any, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
        """Atomic save (safetensors + processor). A marker family also writes MARKER_FILE: the marker of the
        checkpoint the model was loaded from (it records e.g. the tiny shape), updated with ``extra``."""
        marker = None
        if self.marker:
            loaded_from = getattr(model, "name_or_path", "")
            source = Path(loaded_from) / MARKER_FILE if loaded_from else None
            marker = json.loads(source.read_text()) if source and source.is_file() else {}
            marker.update(extra or {}, clearbench_family=self.name)
        return common.save_pretrained(model, processor, out_dir, marker=marker)
