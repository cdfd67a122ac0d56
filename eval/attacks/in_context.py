"""In-context relearning: put k forget facts in the prompt before each probe (Lynch et al. 2024, arXiv 2402.16835).

Setting ``other_kK``: k text facts (question and answer) of OTHER forget people, seeded per probe; every probe.
Setting ``same_kK``: k facts of the probe's own person, on the QA probes only (a naming or caption probe would be
answered by copying the name from them). A fact that restates the probe's own answer (ROUGE-L recall of the
answer in the fact >= ``max_overlap``, the person's name left out) is never put in front of it.
"""
from __future__ import annotations

import dataclasses
import random
import time

from clearbench.types import Record
from eval.attacks.probes import Setting, Target
from eval.metrics.rouge_l import rouge_l_recall

NAME = "in_context"
VERSION = 1
SOURCES = ("other", "same")


@dataclasses.dataclass
class Config:
    k: list[int] = dataclasses.field(default_factory=lambda: [3])
    sources: list[str] = dataclasses.field(default_factory=lambda: list(SOURCES))
    max_overlap: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.k or any(k < 1 for k in self.k):
            raise ValueError(f"in_context k={self.k}: a list of fact counts >= 1")
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"in_context sources {unknown}: known {list(SOURCES)}")


def settings(target: Target, cfg: Config) -> list[str]:
    return [f"{source}_k{k}" for source in cfg.sources for k in cfg.k]


def _without_name(text: str, name: str) -> str:
    return text.replace(name, " ") if name else text


def restates(fact: Record, probe: Record, max_overlap: float) -> bool:
    """The fact gives the probe's answer away: most of the answer (the name left out) is in the fact."""
    answer = _without_name(probe.answer, probe.name).strip(" .,")
    if not answer:  # a naming probe: the answer is the name itself
        return probe.name.casefold() in f"{fact.question} {fact.answer}".casefold()
    return rouge_l_recall(_without_name(fact.answer, fact.name), answer) >= max_overlap


def with_context(probe: Record, facts: list[Record], k: int, source: str, cfg: Config) -> Record | None:
    """``probe`` with k facts before its question (None when there are not k usable ones)."""
    pool = [f for f in facts if (f.author_id == probe.author_id) == (source == "same") and f.id != probe.id
            and not restates(f, probe, cfg.max_overlap)]
    if len(pool) < k:
        return None
    chosen = random.Random(f"{cfg.seed}:{source}:{k}:{probe.id}").sample(sorted(pool, key=lambda r: r.id), k)
    context = " ".join(f"{f.question} {f.answer}" for f in chosen)
    return dataclasses.replace(probe, question=f"{context} {probe.question}")


def run_setting(target: Target, cfg: Config, name: str) -> Setting:
    source, k = name.split("_k")[0], int(name.split("_k")[1])
    facts = [r for r in target.training_records() if str(r.modality) == "text" and str(r.task) == "qa"]
    probes = target.probes if source == "other" else [p for p in target.probes if str(p.task) == "qa"]
    built = [with_context(p, facts, int(k), source, cfg) for p in probes]
    probes = [p for p in built if p is not None]
    if not probes:
        return Setting(name, skipped=f"no probe has {k} usable facts of {'its own' if source == 'same' else 'other'} "
                                     f"forget people in {target.forget}")
    t0 = time.time()
    examples = target.score(target.load(), probes)
    return Setting(name, params={"k": k, "source": source, "records": len(probes)}, examples=examples,
                   seconds=time.time() - t0)
