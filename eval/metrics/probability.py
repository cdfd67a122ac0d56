"""Answer probability, raw and normalised against the perturbed options (TOFU, CLEAR).

Raw (TOFU ``Prob.`` on retain/forget QA, CLEAR on captions):
    P(a | q) = exp(mean_t log p(a_t | q, a_<t))            (per-token, length-normalised)
Normalised (TOFU on real authors / world facts, CLEAR on face naming and real sets):
    P_norm = P(a) / (P(a) + sum_k P(a'_k))                 with the same per-token P
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import logsumexp

from eval.metrics.spec import ExampleMetric, Output, row_means

VERSION = 1


def probability(lp: Sequence[float]) -> float:
    """exp(mean token log-prob): the geometric-mean per-token probability of the answer."""
    return float(np.exp(np.mean(np.asarray(lp, dtype=np.float64))))


def normalised_probability(lp_true: Sequence[float], lp_options: Sequence[Sequence[float]]) -> float:
    """P(a) / (P(a) + sum_k P(a'_k)), each P = exp(mean token log-prob); computed in log space."""
    logs = np.array([np.mean(lp_true)] + [np.mean(o) for o in lp_options], dtype=np.float64)
    return float(np.exp(logs[0] - logsumexp(logs)))


def normalised_probabilities(lp_true: Sequence[Sequence[float]],
                             lp_options: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """``normalised_probability`` of many answers, shape (N,): the same numbers (each answer's own means, one
    logsumexp over the rows of each number of options: the same operations per row, so equal bit for bit,
    tests/test_metrics.py) at a fraction of the cost of one logsumexp call per answer."""
    true = row_means(lp_true)
    option_means = row_means([o for options in lp_options for o in options])
    ends = np.cumsum([len(options) for options in lp_options])
    rows_of: dict[int, list[int]] = {}  # number of options -> answers
    for i, options in enumerate(lp_options):
        rows_of.setdefault(len(options), []).append(i)
    out = np.empty(len(lp_true), dtype=np.float64)
    for k, rows in rows_of.items():
        logs = np.empty((len(rows), k + 1), dtype=np.float64)  # [mean lp(answer), mean lp(option 1..k)]
        logs[:, 0] = true[rows]
        for j, i in enumerate(rows):
            logs[j, 1:] = option_means[ends[i] - k:ends[i]]
        out[rows] = np.exp(logs[:, 0] - logsumexp(logs, axis=1))
    return out


def _group_normalised(group, options) -> np.ndarray:
    return normalised_probabilities([ex.lp_answer for ex in group], [ex.lp_perturbed for ex in group])


def _normalised(ex, batch) -> float:
    """The example's ``normalised_probability``, computed for its whole group at once (``Batch.per_group``)."""
    return batch.per_group("probability_norm", ex, _group_normalised)


def uses_normalised(split: str, task: str) -> bool:
    """Which probability the ``probability`` key reports (TOFU's and CLEAR's rule).

    TOFU normalises on real authors and world facts (its ``eval_log*`` files stay raw); CLEAR
    normalises every task except the caption logs (face naming, real faces, real world).
    clearbench: normalised for the real_faces / real_world splits and for naming records.
    """
    return split in ("real_faces", "real_world") or task == "naming"


def _reported(ex, batch) -> float:
    if uses_normalised(ex.eval_split, ex.task):
        return _normalised(ex, batch)
    return probability(ex.lp_answer)


SPECS = (
    ExampleMetric(Output("probability", forget_better="lower", header="Prob",
                         doc="per example: normalised on real_faces, real_world and naming records, else raw"),
                  VERSION, _reported, needs=("lp_answer", "lp_perturbed")),
    ExampleMetric(Output("probability_raw", forget_better="lower", doc="mean P(answer)"), VERSION,
                  lambda ex, batch: probability(ex.lp_answer), needs=("lp_answer",)),
    ExampleMetric(Output("probability_norm", forget_better="lower", doc="mean P(answer) / (P(answer) + sum_k P(pert_k))"),
                  VERSION, _normalised,
                  needs=("lp_answer", "lp_perturbed")),
)
