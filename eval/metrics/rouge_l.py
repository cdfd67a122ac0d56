"""ROUGE-L recall of the greedy generation against the ground-truth answer (TOFU).

TOFU (Maini et al. 2024), ``evaluate_util.py``: ``RougeScorer(["rougeL"], use_stemmer=True)
.score(answer, generation)["rougeL"].recall`` = LCS(answer, generation) / len(answer tokens).
"""
from __future__ import annotations

import functools

from eval.metrics.spec import ExampleMetric, Output

VERSION = 1


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(generation: str, answer: str) -> float:
    """TOFU's ROUGE-L recall: LCS(answer, generation) / |answer| on stemmed lowercase words."""
    # rouge-score's signature is score(target, prediction); recall is relative to the target.
    return float(_scorer().score(answer, generation)["rougeL"].recall)


SPECS = (
    ExampleMetric(Output("rouge_l", forget_better="lower", header="ROUGE-L", doc="mean ROUGE-L recall"), VERSION,
                  lambda ex, batch: rouge_l_recall(ex.generation, ex.answer), needs=("generation",)),
)
