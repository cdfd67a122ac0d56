"""Vision-tower pretraining for the tiny model: LLaVA's stage 1 done the cheap way.

A pretrain phase with ``objective: vision_attributes`` trains only the vision tower (the projector and the
language model stay as they are) to predict, from the image features the projector will read (the
``vision_feature_layer`` patch tokens, mean-pooled), which attribute phrases the record's description names:
"a person with short brown hair, fair skin, blue eyes and a cap" gives the labels {"short brown hair",
"fair skin", "blue eyes", "a cap"} (multi-label, binary cross-entropy over the phrases of all the phase's
records; the linear head is thrown away afterwards). ``objective: vision_answers`` does the same for
short-answer questions such as the world VQA: each distinct question is a softmax over the answers seen with
it ("What shape is in the image?" -> circle, square, star ...). ``vision_multitask`` trains both at once.

Why: the world's anonymous faces are not authors, so nothing about the authors leaks into the base model,
yet the tower learns features that tell faces apart, and a vision-only step costs a fraction of a
language-model step; the anonymous faces must look like the photos the model will name. Deterministic in
(seed, step); a resumed phase restarts from its start. What each choice was measured against:
docs/presets.md ("The tiny recipe").
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from clearbench.augment import augment_image
from clearbench.config import TrainConfig
from clearbench.cost import count_step, count_tokens
from clearbench.processes import is_main
from clearbench.threads import ThreadGovernor
from clearbench.train import TrainResult, lr_lambda, total_steps
from clearbench.types import Record, Task

_PREFIXES = ("a person with ", "a person wearing ")


def attribute_phrases(description: str) -> list[str]:
    """'a person with A, B and C' -> ['A', 'B', 'C'] (the prefix is optional)."""
    text = description.strip().rstrip(".")
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    return [p.strip() for p in re.split(r",\s*|\s+and\s+", text) if p.strip()]


def _require_images(records: Sequence[Record], objective: str, selection: str) -> None:
    bad = [r.id for r in records if r.image is None]
    if bad:
        raise ValueError(f"{objective} needs image records; {len(bad)} have no image (e.g. {bad[:3]}): "
                         f"select e.g. {selection}")


def attribute_targets(records: Sequence[Record]) -> tuple[list[str], torch.Tensor]:
    """The phrase vocabulary of ``records`` and their multi-hot targets (n_records x n_phrases)."""
    _require_images(records, "vision_attributes", "{config: pretrain, tasks: [caption]} (the anonymous faces)")
    phrases = [attribute_phrases(r.answer) for r in records]
    if any(len(p) < 2 for p in phrases):
        r = next(r for r, p in zip(records, phrases) if len(p) < 2)
        raise ValueError(f"record {r.id!r}: its answer {r.answer!r} is not an attribute description "
                         f"('a person with A, B and C'); vision_attributes trains on face descriptions")
    vocab = sorted({p for ps in phrases for p in ps})
    index = {p: i for i, p in enumerate(vocab)}
    y = torch.zeros(len(records), len(vocab))
    for i, ps in enumerate(phrases):
        y[i, [index[p] for p in ps]] = 1.0
    return vocab, y


def _vision_tower(model) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    tower = getattr(inner, "vision_tower", None) or getattr(model, "vision_tower", None)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision_tower: vision_attributes needs a LLaVA-style model")
    return tower


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Mean-pooled patch features of the layer the projector reads (CLS dropped, as 'default' does)."""
    layer = getattr(model.config, "vision_feature_layer", -1)
    hidden = _vision_tower(model)(pixel_values=pixel_values, output_hidden_states=True).hidden_states[layer]
    return hidden[:, 1:].mean(1)


def answer_targets(records: Sequence[Record]) -> tuple[list[tuple[str, str]], torch.Tensor, torch.Tensor]:
    """The (question, answer) classes of ``records``, each record's class index and its allowed-class mask.

    Each distinct question is its own classification over the answers seen with it ("What shape is in
    the image?" -> circle / square / star ...); the mask (n_records x n_classes) keeps a record's softmax
    within its question's answers.
    """
    _require_images(records, "vision_answers", "{config: pretrain, tasks: [vqa]} (the world VQA)")
    classes = sorted({(r.question, r.answer.strip()) for r in records})
    index = {c: i for i, c in enumerate(classes)}
    by_question: dict[str, list[int]] = {}
    for (q, _), i in index.items():
        by_question.setdefault(q, []).append(i)
    single = [q for q, idx in by_question.items() if len(idx) < 2]
    if len(single) == len(by_question):
        raise ValueError(f"vision_answers: every question has a single answer in the {len(records)} records "
                         f"(e.g. {single[:2]}); it trains on short-answer questions such as the world VQA")
    y = torch.tensor([index[(r.question, r.answer.strip())] for r in records])
    mask = torch.zeros(len(records), len(classes), dtype=torch.bool)
    for k, r in enumerate(records):
        mask[k, by_question[r.question]] = True
    return classes, y, mask


def train_vision_attributes(model, processor, records: Sequence[Record], cfg: TrainConfig, out_dir: Path,
                            desc: str = "vision") -> TrainResult:
    """Train the vision tower of ``model`` in place on attribute phrases; logs to ``out_dir/log.jsonl``."""
    vocab, targets = attribute_targets(records)

    def loss(logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[idx])

    return _train_tower(model, processor, records, cfg, out_dir, desc, (len(vocab), loss))


def train_vision_answers(model, processor, records: Sequence[Record], cfg: TrainConfig, out_dir: Path,
                         desc: str = "vision") -> TrainResult:
    """Train the vision tower of ``model`` in place to classify each record's short answer among the
    answers of its question (softmax per question); logs to ``out_dir/log.jsonl``."""
    classes, y, mask = answer_targets(records)

    def loss(logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.masked_fill(~mask[idx], float("-inf")), y[idx])

    return _train_tower(model, processor, records, cfg, out_dir, desc, (len(classes), loss))


def train_vision_multitask(model, processor, records: Sequence[Record], cfg: TrainConfig, out_dir: Path,
                           desc: str = "vision") -> TrainResult:
    """Both objectives in one phase: caption records (face descriptions) train the attribute phrases,
    VQA records the answer classes; a batch mixes them and its loss is the sum of the two means. Run one
    after the other instead, the tiny tower forgets the first (docs/presets.md)."""
    faces = [k for k, r in enumerate(records) if r.task == Task.CAPTION]
    vqa = [k for k, r in enumerate(records) if r.task != Task.CAPTION]
    if not faces or not vqa:
        raise ValueError(f"vision_multitask trains face descriptions (caption) and short answers (vqa) together; "
                         f"the phase selected {len(faces)} caption and {len(vqa)} other records: select e.g. "
                         f"{{config: pretrain, tasks: [caption, vqa]}}")
    vocab, attr = attribute_targets([records[k] for k in faces])
    classes, y, mask = answer_targets([records[k] for k in vqa])
    n_attr = len(vocab)
    row = torch.zeros(len(records), dtype=torch.long)  # a record's row in its own objective's targets
    row[faces], row[vqa] = torch.arange(len(faces)), torch.arange(len(vqa))
    is_face = torch.zeros(len(records), dtype=torch.bool)
    is_face[faces] = True

    def loss(logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        f, r = is_face[idx], row[idx]
        total = logits.new_zeros(())
        if f.any():
            total = total + torch.nn.functional.binary_cross_entropy_with_logits(logits[f, :n_attr], attr[r[f]])
        if (~f).any():
            total = total + torch.nn.functional.cross_entropy(
                logits[~f, n_attr:].masked_fill(~mask[r[~f]], float("-inf")), y[r[~f]])
        return total

    return _train_tower(model, processor, records, cfg, out_dir, desc, (n_attr + len(classes), loss))


def _train_tower(model, processor, records: Sequence[Record], cfg: TrainConfig, out_dir: Path, desc: str,
                 objective: tuple[int, Callable[[torch.Tensor, np.ndarray], torch.Tensor]]) -> TrainResult:
    """The vision tower plus a throw-away linear head on its pooled features, trained on ``objective``:
    (the head's width, the loss of its logits (B, n_out) given the batch's record indices)."""
    n_out, loss_fn = objective
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tower = _vision_tower(model)
    count_tokens(model)  # the stage's cost meter counts the images the tower sees
    width = tower.config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(width, n_out)
    trainable = {id(p) for p in tower.parameters()}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    params = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    per_epoch = max(1, len(records) // cfg.batch_size)
    total = total_steps(cfg, per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total))
    model.train()
    t0, loss_value = time.time(), float("nan")
    # several processes (clearbench.launch_stage) train the same tower side by side; the main one logs
    log_path = out_dir / "log.jsonl" if is_main() else os.devnull
    # the governor: fewer torch threads while other processes hold cores (clearbench.threads)
    with open(log_path, "w") as log, tqdm(range(total), desc=desc, dynamic_ncols=True, disable=not is_main()) as bar, \
            ThreadGovernor() as governor:
        for step in bar:
            governor.tick()
            epoch, pos = divmod(step, per_epoch)
            idx = np.random.default_rng([cfg.seed, epoch]).permutation(len(records))[
                pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
            images = [records[i].image.convert("RGB") for i in idx]
            if cfg.augment:
                images = [augment_image(im, np.random.default_rng([cfg.seed, step, int(i)]),
                                        flip=records[i].task != Task.VQA)  # VQA answers name positions
                          for im, i in zip(images, idx)]
            pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            loss = loss_fn(head(image_features(model, pixels.to(next(tower.parameters()).dtype))), idx)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            count_step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            if (step + 1) % max(1, cfg.log_every) == 0 or step + 1 == total:
                log.write(json.dumps({"step": step + 1, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{loss_value:.4f}")
    for n, p in model.named_parameters():
        p.requires_grad_(saved[n])
    return TrainResult(steps=total, final_loss=loss_value, seconds=time.time() - t0, resumed_from=0)


# pretrain phase objective -> trainer (``PhaseConfig.objective`` other than "lm")
TRAINERS = {"vision_attributes": train_vision_attributes, "vision_answers": train_vision_answers,
            "vision_multitask": train_vision_multitask}
