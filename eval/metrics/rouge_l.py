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

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_tokenizer())


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """rouge-score's default tokenizer with the Porter stemmer (``use_stemmer=True``), its stems and whole texts
    memoised: both are pure functions, the same answers recur in every result file of a report and the same
    words in every generation, and stemming was most of the time a report spent on ROUGE."""
    from nltk.stem import porter
    from rouge_score import tokenize, tokenizers

    class MemoTokenizer(tokenizers.Tokenizer):
        def __init__(self) -> None:
            self.stem = functools.lru_cache(maxsize=2**17)(porter.PorterStemmer().stem)
            self._tokens = functools.lru_cache(maxsize=2**15)(lambda text: tuple(tokenize.tokenize(text, self)))

        def tokenize(self, text: str) -> list[str]:
            return list(self._tokens(text)) if isinstance(text, str) else tokenize.tokenize(text, self)

    return MemoTokenizer()


def rouge_l_recall(generation: str, answer: str) -> float:
    """TOFU's ROUGE-L recall: LCS(answer, generation) / |answer| on stemmed lowercase words."""
    if isinstance(generation, str) and isinstance(answer, str):
        return _memo_recall(generation, answer)  # a pure function: models of one study often generate alike
    return _recall(generation, answer)


@functools.lru_cache(maxsize=2**16)
def _memo_recall(generation: str, answer: str) -> float:
    return _recall(generation, answer)


def _recall(generation: str, answer: str) -> float:
    # rouge-score's signature is score(target, prediction); recall is relative to the target.
    return float(_scorer().score(answer, generation)["rougeL"].recall)


SPECS = (
    ExampleMetric(Output("rouge_l", forget_better="lower", header="ROUGE-L", doc="mean ROUGE-L recall"), VERSION,
                  lambda ex, batch: rouge_l_recall(ex.generation, ex.answer), needs=("generation",)),
)
