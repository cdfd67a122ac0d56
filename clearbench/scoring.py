"""Teacher-forced scoring: per-token log-probabilities of given answers, batched (the core's scoring primitive).

The evaluation pass (``eval.outputs``) and unlearning's early stopping (``answer_probability``) both score
answers through ``teacher_forced``; it runs the model in whatever mode it is in, without gradients.
Items of one record share its prompt: for a packable family they go into one row
``[prompt | answer_1 | answer_2 | ...]`` whose attention mask lets each answer see the prompt and itself only,
every answer's positions continuing from the prompt's, so the prompt and the image are encoded once per record
instead of once per answer variant, and the vocabulary projection runs on answer positions only. Equal to one
forward per item (tests check 1e-5). Other families take one padded row per (record, answer).
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import torch

from clearbench.losses import upcast
from clearbench.models.common import IGNORE_INDEX, Loaded, unwrap
from clearbench.types import Record

Scored = tuple[list[float], list[float], list[float]]  # (answer-token log-probs, Min-K%++ mu, sigma)


@torch.no_grad()
def teacher_forced(loaded: Loaded, items: Sequence[tuple[Record, str]], batch_size: int,
                   stats: bool | Sequence[bool]) -> list[Scored]:
    """Per (record, answer) item: (token log-probs of the answer, Min-K%++ mu, sigma); mu/sigma only for the items
    ``stats`` asks for (one flag for all, or one per item; the others get empty lists)."""
    items = list(items)
    flags = _item_flags(stats, len(items))
    base = packed_model(loaded)
    if base is not None:
        return _teacher_forced_packed(loaded, base, items, batch_size, flags)
    return teacher_forced_rows(loaded, items, batch_size, flags)


def _item_flags(stats: bool | Sequence[bool], n: int) -> list[bool]:
    flags = [bool(stats)] * n if isinstance(stats, bool) else [bool(x) for x in stats]
    if len(flags) != n:
        raise ValueError(f"stats has {len(flags)} flags for {n} items")
    return flags


def answer_probability(loaded: Loaded, records: Sequence[Record], batch_size: int = 32) -> float:
    """Mean over records of exp(mean token log p(answer)) (TOFU's Prob.), teacher-forced in eval mode; the
    model's train/eval mode is restored after."""
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        out = teacher_forced(loaded, [(r, r.answer) for r in records], batch_size, stats=False)
    finally:
        model.train(was_training)
    return float(np.mean([np.exp(np.mean(np.asarray(lp, dtype=np.float64))) for lp, _, _ in out]))


def packed_model(loaded: Loaded) -> Any | None:
    """The transformers model under DDP / peft wrappers (LoRA layers live inside it) when its family packs
    answer variants and it has an output head, else None (the per-row path)."""
    base = unwrap(loaded.model)
    if not loaded.family.packable or base.get_output_embeddings() is None:
        return None
    return base


def _vocab_stats(logits: torch.Tensor, targets: torch.Tensor, stats: torch.Tensor):
    """logits (N, V), targets (N,), stats (N,) bool -> lp (N,), mu (N,), sigma (N,); mu/sigma are computed at the
    positions ``stats`` marks only (0 elsewhere) and are None when it marks none."""
    logp = torch.log_softmax(upcast(logits), dim=-1)  # (N, V)
    lp = logp.gather(1, targets[:, None])[:, 0]
    if not bool(stats.any()):
        return lp, None, None
    every = bool(stats.all())
    sel = logp if every else logp[stats]  # no (N, V) copy when every position asks
    p = sel.exp()
    mu_at = (p * sel).sum(-1)
    sigma_at = ((p * sel.pow(2)).sum(-1) - mu_at.pow(2)).clamp(min=0).sqrt()
    if every:
        return lp, mu_at, sigma_at
    mu, sigma = torch.zeros_like(lp), torch.zeros_like(lp)
    mu[stats], sigma[stats] = mu_at, sigma_at
    return lp, mu, sigma


def _split(lp: torch.Tensor, mu: torch.Tensor | None, sigma: torch.Tensor | None, sizes: list[int],
           stats: list[bool]) -> list[Scored]:
    """Flat (N,) statistics -> one (lp, mu, sigma) lists triple per consecutive run of ``sizes``; mu/sigma are
    empty for the runs whose ``stats`` flag is off."""
    cols = [x.cpu().tolist() if x is not None else None for x in (lp, mu, sigma)]
    out, at = [], 0
    for n, want in zip(sizes, stats):
        out.append(tuple(c[at:at + n] if c is not None and (want or j == 0) else [] for j, c in enumerate(cols)))
        at += n
    return out


def _position_flags(sizes: list[int], stats: list[bool], device: Any) -> torch.Tensor:
    """One flag per flat position: its item's ``stats`` flag repeated over the item's ``sizes`` positions."""
    return torch.tensor([want for n, want in zip(sizes, stats) for _ in range(n)], dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------------------- per-row path
@torch.no_grad()
def teacher_forced_rows(loaded: Loaded, items: Sequence[tuple[Record, str]], batch_size: int,
                        stats: bool | Sequence[bool]) -> list[Scored]:
    """One padded row per (record, answer): the generic path (any family)."""
    stats = _item_flags(stats, len(items))
    model = loaded.model
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda k: len(items[k][0].question) + len(items[k][1]))
    out: list = [None] * len(items)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = loaded.collate([items[k][0] for k in idx], answers=[items[k][1] for k in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        labels = batch.pop("labels")[:, 1:]  # (B, T-1): token t+1 is scored at logit position t
        mask = labels != IGNORE_INDEX
        logits = model(**batch).logits[:, :-1]  # (B, T-1, V)
        # only answer positions go through the vocabulary statistics (a VLM prompt holds hundreds of image tokens)
        sizes, want = mask.sum(1).tolist(), [stats[k] for k in idx]
        flags = _position_flags(sizes, want, device)
        scored = _split(*_vocab_stats(logits[mask], labels[mask], flags), sizes, want)
        for row, k in enumerate(idx):
            out[k] = scored[row]
    return out


# ---------------------------------------------------------------------------------------- packed path
def _pack_batches(items: list[tuple[Record, str]], batch_size: int) -> list[list[list[int]]]:
    """Item indices grouped by record, records sorted by (has image, length), then cut into forwards of at most
    ``batch_size`` answer variants (at least one record each)."""
    groups: dict[str, list[int]] = {}  # record id -> its item indices
    for k, (rec, _) in enumerate(items):
        groups.setdefault(rec.id, []).append(k)
    order = sorted(groups.values(), key=lambda ks: (items[ks[0]][0].image is not None, len(items[ks[0]][0].question)
                                                   + sum(len(items[k][1]) for k in ks)))
    batches, cur, rows = [], [], 0
    for ks in order:
        if cur and rows + len(ks) > batch_size:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(ks)
        rows += len(ks)
    return batches + [cur] if cur else batches


def _pack_rows(items: list[tuple[Record, str]], group: list[list[int]], batch: dict[str, torch.Tensor]):
    """The packed rows of one forward: per record ``[prompt | answer_1 | ...]`` with its positions and segment
    ids (0 = prompt, j = answer j), the (row, positions, answer tokens, item) of each answer, and the
    ``pixel_values`` rows of the records with an image."""
    ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
    lengths = batch["attention_mask"].sum(1).tolist()
    flat = [k for ks in group for k in ks]
    has_image = [items[k][0].image is not None for k in flat]
    image_row = list(itertools.accumulate(has_image, initial=0))  # flat row -> its pixel_values row
    seqs, positions, segments, picks, pix = [], [], [], [], []
    i = 0
    for ks in group:
        n_prompt = next(t for t, lab in enumerate(labels[i]) if lab != IGNORE_INDEX)
        prompt = ids[i][:n_prompt]
        seq, pos, seg = list(prompt), list(range(n_prompt)), [0] * n_prompt
        for j, k in enumerate(ks):
            row = ids[i + j][:lengths[i + j]]
            if row[:n_prompt] != prompt or labels[i + j][n_prompt - 1] != IGNORE_INDEX:
                raise ValueError(f"record {items[k][0].id!r}: its answer variants do not share one prompt")
            answer = row[n_prompt:]
            # the first answer token is predicted at the prompt's last position, token t at t-1
            picks.append((len(seqs), [n_prompt - 1] + list(range(len(seq), len(seq) + len(answer) - 1)), answer, k))
            seq += answer
            pos += range(n_prompt, n_prompt + len(answer))
            seg += [j + 1] * len(answer)
        if has_image[i]:
            pix.append(image_row[i])
        seqs.append(seq)
        positions.append(pos)
        segments.append(seg)
        i += len(ks)
    return seqs, positions, segments, picks, pix


def _packed_forward(model: Any, packed: tuple, pixel_values: torch.Tensor | None, pad_id: int, stats: torch.Tensor):
    """Run the packed rows (each answer sees the prompt and itself) -> lp, mu, sigma at the answer positions
    (mu, sigma where the per-position flags ``stats`` ask)."""
    seqs, positions, segments, picks, _ = packed
    device = next(model.parameters()).device
    width = max(len(x) for x in seqs)
    input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in seqs], device=device)
    position_ids = torch.tensor([x + [0] * (width - len(x)) for x in positions], device=device)
    seg = torch.tensor([x + [-1] * (width - len(x)) for x in segments], device=device)  # (B, T), -1 = pad
    q, k_ = seg[:, :, None], seg[:, None, :]  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    allowed = causal & (k_ >= 0) & ((k_ == 0) | (k_ == q)) | torch.eye(width, dtype=torch.bool, device=device)
    mask = torch.zeros(allowed.shape, dtype=model.dtype, device=device).masked_fill(
        ~allowed, torch.finfo(model.dtype).min)[:, None]  # (B, 1, T, T) additive
    kwargs = {} if pixel_values is None else {"pixel_values": pixel_values.to(device=device, dtype=model.dtype)}
    hidden = model.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         **kwargs).last_hidden_state  # (B, T, H)
    rows_idx = torch.tensor([r for r, where, _, _ in picks for _ in where], device=device)
    cols_idx = torch.tensor([c for _, where, _, _ in picks for c in where], device=device)
    targets = torch.tensor([t for _, _, ans, _ in picks for t in ans], device=device)
    logits = model.get_output_embeddings()(hidden[rows_idx, cols_idx])  # (N, V): answer positions only
    return _vocab_stats(logits, targets, stats)


def _teacher_forced_packed(loaded: Loaded, model: Any, items: list[tuple[Record, str]], batch_size: int,
                           stats: list[bool]) -> list[Scored]:
    pad_id = loaded.processor.tokenizer.pad_token_id
    out: list = [None] * len(items)
    for group in _pack_batches(items, batch_size):
        flat = [k for ks in group for k in ks]
        batch = loaded.collate([items[k][0] for k in flat], answers=[items[k][1] for k in flat])
        packed = _pack_rows(items, group, batch)
        pix = packed[4]
        sizes, want = [len(where) for _, where, _, _ in packed[3]], [stats[k] for _, _, _, k in packed[3]]
        flags = _position_flags(sizes, want, next(model.parameters()).device)
        scored = _split(*_packed_forward(model, packed, batch["pixel_values"][pix] if pix else None, pad_id, flags),
                        sizes, want)
        for (_, _, _, k), triple in zip(packed[3], scored):
            out[k] = triple
    return out
