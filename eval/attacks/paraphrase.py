"""Paraphrase probes: ask the forget questions in other words (TOFU's and the unlearning survey's "rephrased
probe"; UnLOK-VQA's and FIUBench's paraphrased questions).

The probes are the forget records that carry a ``paraphrased_question`` (the world generator writes one per
question since version 2.3.0); the question is replaced by it, everything else (image, answers) is kept. An older
world without them is reported as the reason the setting is skipped.
"""
from __future__ import annotations

import dataclasses
import time

from clearbench.types import Record
from eval.attacks.probes import Setting, Target

NAME = "paraphrase"
VERSION = 1
NO_PARAPHRASES = "no paraphrased questions in this world"


@dataclasses.dataclass
class Config:
    pass


def settings(target: Target, cfg: Config) -> list[str]:
    return ["paraphrased_question"]


def paraphrased(records: list[Record]) -> list[Record]:
    """The records that have a paraphrased question, asked with it."""
    return [dataclasses.replace(r, question=r.paraphrased_question) for r in records if r.paraphrased_question.strip()]


def run_setting(target: Target, cfg: Config, name: str) -> Setting:
    probes = paraphrased(target.probes)
    if not probes:
        return Setting(name, skipped=NO_PARAPHRASES)
    t0 = time.time()
    examples = target.score(target.load(), probes)
    return Setting(name, params={"records": len(probes)}, examples=examples, seconds=time.time() - t0)
