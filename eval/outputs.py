"""The ONLY code in eval/ that runs the model: one scoring pass per record.

Per record: one teacher-forced forward pass per distinct answer variant (answer, paraphrase,
each perturbed answer) through the core's ``clearbench.scoring.teacher_forced``, batched across
records and sorted by length, which also yields the per-position vocabulary statistics Min-K%++
needs; plus one batched greedy generation that sees the image. Results are appended to a JSONL
cache as they are computed, so an interrupted evaluation resumes where it stopped;
``ScoreRun(shard=(i, n))`` scores a disjoint slice.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from clearbench.eval_config import GENERATION
from clearbench.models.common import generate
from clearbench.scoring import teacher_forced
from clearbench.types import Record
from eval.example import ExampleOutput



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


def score_chunk(loaded, records: list[Record], config: str, batch_size: int, max_new_tokens: int
                ) -> list[ExampleOutput]:
    # Distinct answer strings per record: naming's paraphrase is the name itself, scored once.
    variants: list[tuple[Record, str]] = []
    for rec in records:
        for text in dict.fromkeys([rec.answer, rec.paraphrased_answer or rec.answer, *rec.perturbed_answers]):
            variants.append((rec, text))
    # one pass: a record's prompt and image are encoded once for all its variants; Min-K%++ only for the answer
    scored = teacher_forced(loaded, variants, batch_size, stats=[text == rec.answer for rec, text in variants])
    by_key: dict[tuple[str, str], list[float]] = {}
    stats: dict[str, tuple[list[float], list[float]]] = {}
    for (rec, text), (lp, mu, sig) in zip(variants, scored):
        if text == rec.answer:
            stats[rec.id] = (mu, sig)
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


@dataclasses.dataclass(frozen=True)
class ScoreRun:
    """How a scoring pass runs, not what it computes: the shard ``(i, n)`` of the records it scores, the
    records per cache flush, a progress bar, and a chunk count to stop after (tests simulate a kill)."""

    shard: tuple[int, int] = (0, 1)
    chunk_size: int = 64
    progress: bool = True
    stop_after: int | None = None


def score(loaded, records: Sequence[Record], config: str, *, cache: Path | None = None, batch_size: int = 32,
          max_new_tokens: int = GENERATION["max_new_tokens"], run: ScoreRun = ScoreRun()) -> list[ExampleOutput]:
    """Score ``records`` of eval config ``config``; returns outputs in id order (this shard's)."""
    mine = shard_records(records, run.shard)
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
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"score {config}", disable=not run.progress,
                   dynamic_ncols=True)
        for n, start in enumerate(range(0, len(todo), run.chunk_size)):
            if run.stop_after is not None and n >= run.stop_after:  # tests simulate a killed evaluation
                raise KeyboardInterrupt(f"stopped after {n} chunks")
            for ex in score_chunk(loaded, todo[start:start + run.chunk_size], config, batch_size, max_new_tokens):
                done[ex.id] = ex
                if handle:
                    handle.write(json.dumps(ex.to_dict()) + "\n")
            if handle:
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(min(run.chunk_size, len(todo) - start))
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
