"""Batch kinds derived from a step's forget rows: refusals ("idk") and mismatched answers ("random" from
the run's retain records, "random_forget" from the other forget records).

Each keeps the forget record's question and image (so the modality is unchanged) and swaps the
answer. The trainer's sampler builds them from the step's forget rows, in the same order (DPO pairs idk
row b with forget row b), and collates them like any other records.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

from clearbench.types import Record

REFUSALS_PATH = Path(__file__).parent / "data" / "refusals.txt"


def load_refusals(path: str | Path = REFUSALS_PATH) -> list[str]:
    """The refusal phrasings, one per non-empty line (stripped; no trailing newline kept)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    refusals = [ln for ln in lines if ln]
    if not refusals:
        raise ValueError(f"no refusal phrasings in {path}: expected one per line")
    return refusals


def _swap_answer(rec: Record, answer: str, tag: str) -> Record:
    return dataclasses.replace(
        rec, id=f"{rec.id}#{tag}", answer=answer, paraphrased_answer="", perturbed_answers=()
    )


def idk_records(forget_records: Sequence[Record], refusals: Sequence[str], rng: random.Random) -> list[Record]:
    """One record per forget record: same question/image, answer = a refusal drawn with ``rng``."""
    if not refusals:
        raise ValueError("idk_records needs at least one refusal phrasing (see load_refusals())")
    return [_swap_answer(r, rng.choice(list(refusals)), "idk") for r in forget_records]


def random_records(
    forget_records: Sequence[Record], pool: Sequence[Record], rng: random.Random, k: int = 1
) -> list[Record]:
    """``k`` records per forget record: same question/image, answer taken from another pool record.

    The donor is drawn uniformly among pool records with a different id and a different answer.
    Output order: all k variants of forget record 0, then record 1, ...
    """
    if k < 1:
        raise ValueError(f"random_records needs k >= 1, got {k}")
    out: list[Record] = []
    for rec in forget_records:
        donors = [p for p in pool if p.id != rec.id and p.answer != rec.answer]
        if not donors:
            raise ValueError(
                f"random_records: no record in the pool (size {len(pool)}) has an answer different from "
                f"record {rec.id!r}; pass a larger pool (e.g. the whole forget split)"
            )
        for i in range(k):
            out.append(_swap_answer(rec, rng.choice(donors).answer, f"random{i}"))
    return out

