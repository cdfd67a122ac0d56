"""The ONLY code in eval/ that runs the model: one scoring pass per record.

Per record: one teacher-forced forward pass per distinct answer variant (answer, paraphrase,
each perturbed answer), batched across records and sorted by length, which also yields the
per-position vocabulary statistics Min-K%++ needs; plus one batched greedy generation that sees
the image. Results are appended to a JSONL cache as they are computed, so an interrupted
evaluation resumes where it stopped; ``shard=(i, n)`` scores a disjoint slice.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from clearbench.losses import token_logprobs
from clearbench.models.common import generate, unwrap
from clearbench.types import Record
from eval.example import ExampleOutput

GENERATION = {"do_sample": False, "max_new_tokens": 32}  # recorded in results' provenance


def shard_records(records: Sequence[Record], shard: tuple[int, int]) -> list[Record]:
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {i}/{n}: expected 0 <= i < n")
    ordered = sorted(records, key=lambda r: r.id)
    return [r for k, r in enumerate(ordered) if k % n == i]


def trim_torn_tail(path: Path) -> None:
    """Cut a last line that was not completely written (no final newline), so appends start on
    a fresh line instead of gluing onto the torn one (which would lose the next example too)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def read_cache(path: Path | None) -> dict[str, ExampleOutput]:
    """Examples already scored; a torn last line (killed mid-write) is ignored."""
    if path is None or not Path(path).exists():
        return {}
    done: dict[str, ExampleOutput] = {}
    for line in Path(path).read_text().splitlines():
        try:
            ex = ExampleOutput.from_dict(json.loads(line))
        except (json.JSONDecodeError, ValueError, KeyError, TypeError):
            continue
        done[ex.id] = ex
    return done


@torch.no_grad()
def teacher_forced(loaded, items: list[tuple[Record, str]], batch_size: int, stats: bool
                   ) -> list[tuple[list[float], list[float], list[float]]]:
    """Per item: (token log-probs of the answer, Min-K%++ mu, sigma); mu/sigma only if ``stats``.

    Items of the same record share its prompt: for the LLaVA families they are packed into one
    row ``[prompt | answer_1 | answer_2 | ...]`` whose attention mask lets each answer see the
    prompt and itself only, with every answer's positions continuing from the prompt's, so the
    prompt and the image are encoded once per record instead of once per answer variant, and
    the vocabulary projection runs on answer positions only. Equal to one forward per item
    (tests check 1e-5)."""
    base = _packable(loaded.model) if loaded.family.packable else None
    if base is not None:
        return _teacher_forced_packed(loaded, base, items, batch_size, stats)
    return _teacher_forced_rows(loaded, items, batch_size, stats)


def _packable(model):
    """The LlavaForConditionalGeneration under DDP / peft wrappers (LoRA layers live inside it), or None."""
    base = unwrap(getattr(model, "module", model))
    if type(base).__name__ != "LlavaForConditionalGeneration" or base.get_output_embeddings() is None:
        return None
    return base


def _vocab_stats(logits: torch.Tensor, targets: torch.Tensor, stats: bool):
    """logits (N, V), targets (N,) -> lp (N,), mu (N,), sigma (N,) (mu/sigma None unless ``stats``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    lp = logp.gather(1, targets[:, None])[:, 0]
    if not stats:
        return lp, None, None
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp.pow(2)).sum(-1) - mu.pow(2)).clamp(min=0).sqrt()
    return lp, mu, sigma


def _teacher_forced_packed(loaded, model, items, batch_size: int, stats: bool):
    device = next(model.parameters()).device
    groups: dict[str, list[int]] = {}  # record id -> its item indices
    for k, (rec, _) in enumerate(items):
        groups.setdefault(rec.id, []).append(k)
    order = sorted(groups.values(), key=lambda ks: (items[ks[0]][0].image is not None, len(items[ks[0]][0].question)
                                                   + sum(len(items[k][1]) for k in ks)))
    batches, cur, rows = [], [], 0  # at most batch_size answer variants per forward (>= one record)
    for ks in order:
        if cur and rows + len(ks) > batch_size:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(ks)
        rows += len(ks)
    if cur:
        batches.append(cur)
    pad_id = loaded.processor.tokenizer.pad_token_id
    out: list = [None] * len(items)
    for group in batches:
        flat = [k for ks in group for k in ks]
        batch = loaded.collate([items[k][0] for k in flat], answers=[items[k][1] for k in flat])
        ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
        lengths = batch["attention_mask"].sum(1).tolist()
        has_image = [items[k][0].image is not None for k in flat]
        image_row = list(itertools.accumulate(has_image, initial=0))  # flat row -> its pixel_values row
        seqs, positions, segments, picks, pix = [], [], [], [], []
        i = 0
        for ks in group:
            n_prompt = next(t for t, lab in enumerate(labels[i]) if lab != -100)
            prompt = ids[i][:n_prompt]
            seq, pos, seg = list(prompt), list(range(n_prompt)), [0] * n_prompt
            for j, k in enumerate(ks):
                row = ids[i + j][:lengths[i + j]]
                if row[:n_prompt] != prompt or labels[i + j][n_prompt - 1] != -100:
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
        width = max(len(x) for x in seqs)
        input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in seqs], device=device)
        position_ids = torch.tensor([x + [0] * (width - len(x)) for x in positions], device=device)
        seg = torch.tensor([x + [-1] * (width - len(x)) for x in segments], device=device)  # (B, T), -1 = pad
        q, k_ = seg[:, :, None], seg[:, None, :]  # (B, T, 1), (B, 1, T)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = causal & (k_ >= 0) & ((k_ == 0) | (k_ == q)) | torch.eye(width, dtype=torch.bool, device=device)
        mask = torch.zeros(allowed.shape, dtype=model.dtype, device=device).masked_fill(
            ~allowed, torch.finfo(model.dtype).min)[:, None]  # (B, 1, T, T) additive
        kwargs = {}
        if pix:
            kwargs["pixel_values"] = batch["pixel_values"][pix].to(device=device, dtype=model.dtype)
        hidden = model.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                             **kwargs).last_hidden_state  # (B, T, H)
        rows_idx = torch.tensor([r for r, where, _, _ in picks for _ in where], device=device)
        cols_idx = torch.tensor([c for _, where, _, _ in picks for c in where], device=device)
        targets = torch.tensor([t for _, _, ans, _ in picks for t in ans], device=device)
        logits = model.get_output_embeddings()(hidden[rows_idx, cols_idx])  # (N, V): answer positions only
        lp, mu, sigma = _vocab_stats(logits, targets, stats)
        lp = lp.cpu().tolist()
        mu = mu.cpu().tolist() if stats else None
        sigma = sigma.cpu().tolist() if stats else None
        at = 0
        for _, where, _, k in picks:
            n = len(where)
            out[k] = (lp[at:at + n], mu[at:at + n] if stats else [], sigma[at:at + n] if stats else [])
            at += n
    return out


@torch.no_grad()
def _teacher_forced_rows(loaded, items: list[tuple[Record, str]], batch_size: int, stats: bool
                   ) -> list[tuple[list[float], list[float], list[float]]]:
    """One padded row per (record, answer): the generic path (any family)."""
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
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (B, T, V)
        lp, mask = token_logprobs(logits, labels)  # (B, T-1)
        if stats:  # only answer positions: a VLM prompt holds hundreds of image positions
            logp = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)  # (N, V)
            p = logp.exp()
            mu_sel = (p * logp).sum(-1)  # (N,)
            sig_sel = ((p * logp.pow(2)).sum(-1) - mu_sel.pow(2)).clamp(min=0).sqrt()
            mu = torch.zeros(mask.shape).masked_scatter(mask.cpu(), mu_sel.cpu())  # (B, T-1)
            sigma = torch.zeros(mask.shape).masked_scatter(mask.cpu(), sig_sel.cpu())
        lp, mask = lp.cpu(), mask.cpu()
        for row, k in enumerate(idx):
            m = mask[row]
            mus = mu[row][m].tolist() if stats else []
            sig = sigma[row][m].tolist() if stats else []
            out[k] = (lp[row][m].tolist(), mus, sig)
    return out


def score_chunk(loaded, records: list[Record], config: str, batch_size: int, max_new_tokens: int
                ) -> list[ExampleOutput]:
    # Distinct answer strings per record: naming's paraphrase is the name itself, scored once.
    variants: list[tuple[Record, str]] = []
    for rec in records:
        for text in dict.fromkeys([rec.answer, rec.paraphrased_answer or rec.answer, *rec.perturbed_answers]):
            variants.append((rec, text))
    answers = teacher_forced(loaded, [v for v in variants if v[1] == v[0].answer], batch_size, stats=True)
    others = teacher_forced(loaded, [v for v in variants if v[1] != v[0].answer], batch_size, stats=False)
    by_key: dict[tuple[str, str], list[float]] = {}
    stats: dict[str, tuple[list[float], list[float]]] = {}
    a_iter, o_iter = iter(answers), iter(others)
    for rec, text in variants:
        if text == rec.answer:
            lp, mu, sig = next(a_iter)
            stats[rec.id] = (mu, sig)
        else:
            lp, _, _ = next(o_iter)
        by_key[(rec.id, text)] = lp
    gens = generate(loaded, records, max_new_tokens=max_new_tokens, batch_size=batch_size)
    out = []
    for rec, gen in zip(records, gens):
        para = rec.paraphrased_answer or rec.answer
        out.append(ExampleOutput(
            id=rec.id, author_id=rec.author_id, split=config, group=rec.group, modality=str(rec.modality),
            task=str(rec.task), name=rec.name, answer=rec.answer, paraphrased_answer=para,
            perturbed_answers=list(rec.perturbed_answers), image_role=rec.image_role, generation=gen,
            lp_answer=by_key[(rec.id, rec.answer)], lp_paraphrased=by_key[(rec.id, para)],
            lp_perturbed=[by_key[(rec.id, t)] for t in rec.perturbed_answers],
            minkpp_mu=stats[rec.id][0], minkpp_sigma=stats[rec.id][1],
        ))
    return out


def score(loaded, records: Sequence[Record], config: str, *, cache: Path | None = None, batch_size: int = 32,
          max_new_tokens: int = GENERATION["max_new_tokens"], shard: tuple[int, int] = (0, 1),
          chunk_size: int = 64, progress: bool = True, stop_after: int | None = None) -> list[ExampleOutput]:
    """Score ``records`` of eval config ``config``; returns outputs in id order (this shard's)."""
    mine = shard_records(records, shard)
    done = read_cache(cache)
    todo = [r for r in mine if r.id not in done]
    was_training = loaded.model.training
    loaded.model.eval()
    handle = None
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        trim_torn_tail(cache)
        handle = open(cache, "a")
    try:
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"score {config}", disable=not progress,
                   dynamic_ncols=True)
        for n, start in enumerate(range(0, len(todo), chunk_size)):
            if stop_after is not None and n >= stop_after:  # tests simulate a killed evaluation
                raise KeyboardInterrupt(f"stopped after {n} chunks")
            for ex in score_chunk(loaded, todo[start:start + chunk_size], config, batch_size, max_new_tokens):
                done[ex.id] = ex
                if handle:
                    handle.write(json.dumps(ex.to_dict()) + "\n")
            if handle:
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(min(chunk_size, len(todo) - start))
        bar.close()
    finally:
        if handle:
            handle.close()
        loaded.model.train(was_training)
    return [done[r.id] for r in mine]


def merge_shards(parts: Iterable[Sequence[ExampleOutput]]) -> list[ExampleOutput]:
    """Join shard outputs; a duplicated id across shards is an error."""
    merged: dict[str, ExampleOutput] = {}
    for part in parts:
        for ex in part:
            if ex.id in merged:
                raise ValueError(f"example {ex.id!r} appears in two shards; shards must be disjoint")
            merged[ex.id] = ex
    return [merged[k] for k in sorted(merged)]
