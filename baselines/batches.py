"""Batch kinds derived from a step's forget rows: refusals ("idk") and mismatched answers ("random",
"random_forget").

Each keeps the forget record's question and image (so the modality is unchanged) and swaps the
answer. The trainer builds them with ``derived_records`` from the step's forget rows, in the same order
(DPO pairs idk row b with forget row b), and collates them like any other records.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

from clearbench.types import Record

REFUSALS_PATH = Path(__file__).parent / "data" / "refusals.txt"
# whose answers a mismatched-answer kind re-asks the forget question with: LLMU's "normal data" (the
# run's retain records) or, as SKU's code and CLEAR's do, other forget records
RANDOM_DONORS = {"random": "retain", "random_forget": "forget"}
DERIVED_KINDS = ("idk", *RANDOM_DONORS)


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


def derived_records(kind: str, rows: Sequence[Record], *, forget: Sequence[Record], retain: Sequence[Record],
                    refusals: Sequence[str], seed: int, step: int, k: int) -> list[Record]:
    """The ``kind`` batch of optimizer step ``step``, built from that step's forget ``rows``: "idk" one
    refusal per row; "random" ``k`` answers per row drawn from ``retain`` records, "random_forget" from
    ``forget`` records (``RANDOM_DONORS``). Deterministic in (seed, step, kind)."""
    rng = random.Random(f"{seed}:{step}:{kind}")
    if kind == "idk":
        return idk_records(rows, refusals, rng)
    if kind in RANDOM_DONORS:
        return random_records(rows, retain if RANDOM_DONORS[kind] == "retain" else forget, rng, k)
    raise ValueError(f"{kind!r} is not a derived batch kind; derived kinds: {', '.join(DERIVED_KINDS)}")
