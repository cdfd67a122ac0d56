"""Pieces shared by every model family: the conversation format, collate, checks, io, generation.

A family (``clearbench.models.family.Family``) supplies its processor and end-of-turn token; the
logic here is the same for all of them, so the label-masking contract is implemented once:

    prompt = chat_template(user turn: [image], question) + generation prompt
    full   = prompt + answer + end-of-turn token
    labels = -100 on every prompt token (counted on the processed, image-token-expanded ids) and
             on padding; the answer tokens and the end token are supervised.

Training rows are prompt+answer processed together (the processor expands the image
placeholder); the prompt's length is then measured on those processed ids: the prompt is
tokenised, its placeholder repeated as often as the processor expanded it, and the result must be
a prefix of the row (else a loud error instead of a silently shifted mask). CLEAR counted prompt
tokens on the unexpanded template (clear.md §7.11), which leaks image tokens into the labels.
Generation rows are the processed prompt alone, so generation sees exactly the prompt ids a
training row was trained on (a test checks this for every family).
"""
from __future__ import annotations

import dataclasses
import json
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from clearbench.provenance import write_dir_atomic
from clearbench.types import Modality, Record

if TYPE_CHECKING:
    from clearbench.models.family import Family

IGNORE_INDEX = -100  # label of a position that is not supervised (prompt, image tokens, padding)
MARKER_FILE = "clearbench_model.json"  # {"clearbench_family": NAME, ...}: a checkpoint of a marker family


@dataclasses.dataclass
class Loaded:
    """A model ready to use: ``model`` (a transformers model, eval mode), its ``processor`` and the
    ``family`` that knows its chat template and parts (``family.name`` is the registry key)."""

    model: Any
    processor: Any
    family: Family
    path: str = ""

    @property
    def name(self) -> str:
        return self.family.name

    def collate(self, records: Sequence[Record], **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.family.collate(self.processor, records, **kwargs)


# ----------------------------------------------------------------------------- conversation
def conversation(record: Record, answer: str | None = None) -> list[dict]:
    """CLEAR's conversation format (clear.md §2.2): the image entry first, only when there is one."""
    content: list[dict] = [{"type": "image"}] if record.image is not None else []
    content.append({"type": "text", "text": record.question})
    conv = [{"role": "user", "content": content}]
    if answer is not None:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return conv


def render(processor: Any, record: Record, answer: str, end_token: str) -> tuple[str, str]:
    """(prompt text, answer suffix) from the processor's own chat template.

    The suffix is what the template puts after the generation prompt for this answer, with
    trailing template whitespace dropped and ``end_token`` appended when the template does not
    already end the turn with it (llava-1.5's hub template ends the answer with a space, no eos).
    """
    template = getattr(processor, "chat_template", None)
    if not template:
        raise ValueError(f"{type(processor).__name__} has no chat_template; save one with the processor")
    key = (template, record.image is not None, record.question, answer, end_token)
    cache = _RENDERED.setdefault(processor, {})
    if key not in cache:
        if len(cache) >= _RENDER_CACHE_SIZE:
            cache.clear()
        cache[key] = _render(processor, record, answer, end_token)
    return cache[key]


# (prompt, suffix) per processor and (template, has image, question, answer, end token): a study renders the same
# records every epoch and in every scoring; with it collating 32 tiny-preset records takes 11 ms instead of 15
_RENDERED: "weakref.WeakKeyDictionary[Any, dict[tuple, tuple[str, str]]]" = weakref.WeakKeyDictionary()
_RENDER_CACHE_SIZE = 200_000


def _render(processor: Any, record: Record, answer: str, end_token: str) -> tuple[str, str]:
    prompt = processor.apply_chat_template(conversation(record), add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(conversation(record, answer), add_generation_prompt=False, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            f"record {record.id!r}: the chat template's full conversation does not start with its generation "
            f"prompt, cannot split prompt from answer.\nprompt: {prompt!r}\nfull:   {full!r}"
        )
    suffix = full[len(prompt):].rstrip()
    if not suffix.endswith(end_token):
        suffix += end_token
    return prompt, suffix


# ----------------------------------------------------------------------------- collate
def collate(
    processor: Any,
    records: Sequence[Record],
    *,
    end_token: str,
    token_keys: Sequence[str] = (),
    answers: Sequence[str] | None = None,
    for_generation: bool = False,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Records -> model inputs (+ ``labels`` unless ``for_generation``). See the module docstring.

    Right padding for training batches, left padding for generation (prompt only, no labels).
    Images go to the processor in row order, only for the rows that have one, so ``pixel_values``
    (and ``image_grid_thw`` for Qwen2-VL) hold exactly the image rows of the batch. ``token_keys``: the
    family's per-token processor outputs besides input_ids/attention_mask, padded like them.
    ``max_length`` truncates the answer from the right; a prompt longer than it is an error,
    because truncating a prompt would cut image tokens.
    """
    records = list(records)
    if not records:
        raise ValueError("collate got an empty list of records")
    if answers is not None and len(answers) != len(records):
        raise ValueError(f"answers has {len(answers)} entries for {len(records)} records")
    images, prompts, suffixes = _render_all(processor, records, end_token, answers)
    texts = prompts if for_generation else [p + s for p, s in zip(prompts, suffixes)]
    enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True, padding_side="right")
    keys = {"input_ids", "attention_mask", *token_keys}
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    rows = {k: [enc[k][i, : lengths[i]].tolist() for i in range(len(records))] for k in enc if k in keys}
    unknown = [k for k, v in enc.items() if k not in keys and torch.is_tensor(v)
               and v.shape[:2] == enc["input_ids"].shape and k != "pixel_values"]
    if unknown:
        raise ValueError(f"processor returned per-token keys collate does not know how to pad: {unknown}; "
                         f"list them in the model family's token_keys")
    _check_image_rows(records, rows["input_ids"], processor)
    if for_generation:
        if max_length is not None and max(lengths) > max_length:
            raise ValueError(f"a prompt is {max(lengths)} tokens, longer than max_length={max_length}")
        batch = _pad_rows(rows, enc, processor, left=True)
    else:
        n_prompt = _prompt_lengths(processor, records, prompts, rows["input_ids"])
        if max_length is not None:
            _truncate(records, rows, n_prompt, max_length)
        batch = _pad_rows(rows, enc, processor, left=False)
        width = batch["input_ids"].shape[1]
        labels = [_pad([IGNORE_INDEX] * n + ids[n:], width, IGNORE_INDEX, False)
                  for n, ids in zip(n_prompt, rows["input_ids"])]
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    for key, value in enc.items():  # per-image tensors: pixel_values, image_grid_thw, ...
        if key not in keys and torch.is_tensor(value):
            batch[key] = value
    return batch


def _render_all(processor: Any, records: list[Record], end_token: str, answers: Sequence[str] | None
                ) -> tuple[list, list[str], list[str]]:
    """(images of the image rows, prompts, answer suffixes), after checking each record's image and question."""
    image_token = getattr(processor, "image_token", None)
    images, prompts, suffixes = [], [], []
    for i, r in enumerate(records):
        if r.modality != Modality.TEXT and r.image is None:
            raise ValueError(f"record {r.id!r}: modality {r.modality.value!r} needs an image but has none")
        if image_token and image_token in r.question:
            raise ValueError(f"record {r.id!r}: question contains the image placeholder {image_token!r}")
        if r.image is not None:
            images.append(r.image.convert("RGB") if hasattr(r.image, "convert") else r.image)
        prompt, suffix = render(processor, r, r.answer if answers is None else answers[i], end_token)
        prompts.append(prompt)
        suffixes.append(suffix)
    return images, prompts, suffixes


def _truncate(records: list[Record], rows: dict[str, list[list[int]]], n_prompt: list[int], max_length: int) -> None:
    """Cut every row to ``max_length`` tokens (answer only: a prompt that does not fit is an error)."""
    for i, r in enumerate(records):
        if n_prompt[i] >= max_length:
            raise ValueError(
                f"record {r.id!r}: prompt is {n_prompt[i]} tokens (image tokens included), "
                f"max_length={max_length} leaves no room for the answer; raise max_length"
            )
        for key in rows:
            rows[key][i] = rows[key][i][:max_length]


def _pad_rows(rows: dict[str, list[list[int]]], enc: Any, processor: Any, left: bool) -> dict[str, torch.Tensor]:
    """Pad each per-token key to the longest row: input_ids with the pad token, the others with 0."""
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"tokenizer {type(processor.tokenizer).__name__} has no pad token; set one when building "
                         f"the processor")
    width = max(len(x) for x in rows["input_ids"])
    return {key: torch.tensor([_pad(s, width, pad_id if key == "input_ids" else 0, left) for s in seqs],
                              dtype=enc[key].dtype) for key, seqs in rows.items()}


def _prompt_lengths(processor: Any, records: Sequence[Record], prompts: list[str], ids: list[list[int]]) -> list[int]:
    """Length of each prompt in the processed (image-token-expanded) ids of its full row.

    The prompt is tokenised without expansion, its image placeholder is then repeated as many
    times as the processor expanded it in that row, and the result must be a prefix of the full
    row: if the template glued the prompt's last token to the answer's first, labels cannot be
    split at a token boundary and we fail instead of supervising part of the prompt.
    """
    tok = processor.tokenizer
    image_id = getattr(processor, "image_token_id", None)
    out = []
    for r, prompt_ids, row in zip(records, tok(prompts)["input_ids"], ids):
        n_image = sum(1 for t in row if t == image_id) if image_id is not None else 0
        n_placeholder = sum(1 for t in prompt_ids if t == image_id) if image_id is not None else 0
        expanded: list[int] = []
        for t in prompt_ids:
            expanded.extend([t] * (n_image // max(n_placeholder, 1)) if t == image_id else [t])
        if row[: len(expanded)] != expanded or len(expanded) >= len(row):
            raise ValueError(
                f"record {r.id!r}: the tokenised prompt is not a prefix of the tokenised prompt+answer "
                f"(the answer's first token merges with the prompt's last), cannot mask labels.\n"
                f"prompt: {tok.convert_ids_to_tokens(expanded[-8:])}\nfull:   {tok.convert_ids_to_tokens(row[len(expanded) - 8: len(expanded) + 4])}"
            )
        out.append(len(expanded))
    return out


def _pad(seq: list, width: int, fill: Any, left: bool) -> list:
    pad = [fill] * (width - len(seq))
    return pad + seq if left else seq + pad


def _check_image_rows(records: Sequence[Record], ids: list[list[int]], processor: Any) -> None:
    """Every image row holds image tokens, no text row does (the processor got the images right)."""
    image_id = getattr(processor, "image_token_id", None)
    if image_id is None:
        return
    for r, row in zip(records, ids):
        n = sum(1 for t in row if t == image_id)
        if (r.image is not None) != (n > 0):
            raise ValueError(
                f"record {r.id!r}: has image={r.image is not None} but its processed prompt holds {n} image "
                f"tokens; the processor's chat template or image token does not match the tokenizer"
            )


# ----------------------------------------------------------------------------- checks and io
def check_compatible(model: Any, processor: Any, path: str | os.PathLike) -> None:
    """The tokenizer fits the model: its ids are inside the embedding and the image token agrees."""
    tok = processor.tokenizer
    n_embed = model.get_input_embeddings().weight.shape[0]
    if len(tok) > n_embed:
        raise ValueError(
            f"{path}: tokenizer has {len(tok)} tokens but the model's embedding has {n_embed} rows; "
            f"the tokenizer does not belong to this model"
        )
    model_image_id = getattr(model.config, "image_token_id", None)
    proc_image_id = getattr(processor, "image_token_id", None)
    if model_image_id is not None and proc_image_id is not None and model_image_id != proc_image_id:
        raise ValueError(
            f"{path}: the processor's image token {getattr(processor, 'image_token', '?')!r} has id "
            f"{proc_image_id} but the model expects image_token_id={model_image_id}"
        )


def check_checkpoint_files(path: str | os.PathLike, family: str) -> None:
    """A local checkpoint dir holds a config, safetensors weights and a tokenizer."""
    p = Path(path)
    if not p.is_dir():
        return  # a hub id: from_pretrained resolves (or fails offline) on its own
    found = sorted(x.name for x in p.iterdir())
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any(name.endswith(".safetensors") for name in found):
        missing.append("*.safetensors weights")
    if not any(name.startswith("tokenizer") for name in found):
        missing.append("tokenizer files")
    if missing:
        raise ValueError(
            f"{p}: not a complete {family!r} checkpoint, missing {', '.join(missing)}. Found: {found or 'nothing'}"
        )


def default_device() -> str:
    """Where inference runs: the GPU when there is one (a 7B model scored on a CPU takes days), else the CPU.
    Training stages load on the CPU instead and let accelerate place the model (fp32 master weights)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device, dtype: torch.dtype | str | None) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU (bf16 is 10-20x slower on CPUs without AVX512-BF16, feasibility §3.7)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def unwrap(model: Any) -> Any:
    """The transformers model under DDP and peft wrappers (peft's base model holds the LoRA-injected modules)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        model = model.get_base_model()
    return model


def from_pretrained(model_class: Any, path: str | os.PathLike, dtype: torch.dtype) -> Any:
    """``model_class.from_pretrained`` from safetensors, every weight of the model found in the checkpoint and
    every checkpoint weight used: transformers would fill a missing one (an ``lm_head``) with random values."""
    model, info = model_class.from_pretrained(str(path), dtype=dtype, use_safetensors=True, output_loading_info=True)
    problems = [f"{len(keys)} {what} ({', '.join(sorted(map(str, keys))[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing", info.get("missing_keys") or ()),
                                   ("unexpected", info.get("unexpected_keys") or ()),
                                   ("of another shape", info.get("mismatched_keys") or ())) if keys]
    if problems:
        raise ValueError(f"{path}: the checkpoint's weights do not match {model_class.__name__} "
                         f"(model_type {model.config.model_type!r}): {'; '.join(problems)}; "
                         f"it is incomplete or belongs to another model family")
    return model


def save_pretrained(model: Any, processor: Any, out_dir: str | os.PathLike, marker: dict | None = None) -> Path:
    """Atomic save: safetensors weights + processor (+ MARKER_FILE holding ``marker``) into a temp dir, then
    renamed onto ``out_dir``."""
    if hasattr(model, "peft_config"):
        raise ValueError("save got a peft-wrapped model; merge it first (model.merge_and_unload())")
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if marker is not None:
            (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")

    return write_dir_atomic(out_dir, write)


# ----------------------------------------------------------------------------- generation
@torch.no_grad()
def generate(loaded: Loaded, records: Sequence[Record], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers for ``records``: batched with left padding, only the new tokens decoded."""
    model, processor, family = loaded.model, loaded.processor, loaded.family
    tok = processor.tokenizer
    end_id = tok.convert_tokens_to_ids(family.end_token(processor))
    eos = sorted({end_id, tok.eos_token_id} - {None})
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(records), batch_size):
            batch = family.collate(processor, records[start:start + batch_size], for_generation=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            gen = model.generate(
                **batch, do_sample=False, max_new_tokens=max_new_tokens,
                eos_token_id=eos, pad_token_id=tok.pad_token_id,
            )
            new = gen[:, batch["input_ids"].shape[1]:]
            out.extend(s.strip() for s in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out
