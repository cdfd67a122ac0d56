"""Membership-inference attacks, forget vs holdout, as ROC AUC; and PrivLeak (MUSE, open-unlearning).

Per-example scores (loss-like: higher = the model finds the answer *less* likely):
    loss      = -mean_t lp_t                                        (Yeom et al. 2018)
    zlib      = loss / len(zlib.compress(answer.encode("utf-8")))  (Carlini et al. 2021)
    min_k     = -mean of the lowest max(1, int(k T)) lp_t (Shi et al. 2024, k=0.4)
    min_k_pp  = same over z_t = (lp_t - mu_t) / sqrt(max(sigma_t^2, 1e-6))  (Zhang et al. 2024)
AUC = sklearn roc_auc_score(labels, scores) with forget labelled 0 and holdout 1, as
open-unlearning: AUC -> 1 when forget answers are far more likely than holdout answers
(still memorised), 0.5 when indistinguishable.
PrivLeak = ((1 - AUC) - (1 - AUC_gold)) / (1 - AUC_gold) * 100   (0 = leaks like gold).
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from eval.metrics.spec import POOLED, Cell, Comparison, ExampleMetric, Output

VERSION = 1
ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_pp")
# open-unlearning clamps the Min-K%++ variance at 1e-6 (mia/min_k_plus_plus.py)
_MIN_VAR = 1e-6


def loss_score(lp: Sequence[float]) -> float:
    """Mean NLL of the answer tokens."""
    return float(-np.mean(lp))


def zlib_score(lp: Sequence[float], text: str) -> float:
    """Mean NLL divided by the zlib-compressed length (bytes) of the answer text."""
    return loss_score(lp) / len(zlib.compress(text.encode("utf-8")))


def _min_k(values: np.ndarray, k: float) -> float:
    num_k = max(1, int(len(values) * k))  # open-unlearning's count: floor, at least one token
    return float(-np.mean(np.sort(values)[:num_k]))


def min_k_score(lp: Sequence[float], k: float = 0.4) -> float:
    """-mean of the lowest k-fraction of token log-probs."""
    return _min_k(np.asarray(lp, dtype=np.float64), k)


def min_k_pp_score(lp: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = 0.4) -> float:
    """Min-K% over per-token z-scores (lp_t - mu_t) / sigma_t under the model's own distribution."""
    lp, mu, sigma = (np.asarray(x, dtype=np.float64) for x in (lp, mu, sigma))  # (T,) each
    z = (lp - mu) / np.sqrt(np.maximum(sigma**2, _MIN_VAR))
    return _min_k(z, k)


def auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC with forget labelled 0, holdout 1, loss-like scores (open-unlearning's orientation)."""
    if len(forget_scores) == 0 or len(holdout_scores) == 0:
        raise ValueError("MIA AUC needs at least one forget and one holdout example")
    labels = np.r_[np.zeros(len(forget_scores)), np.ones(len(holdout_scores))]
    scores = np.r_[np.asarray(forget_scores, float), np.asarray(holdout_scores, float)]
    return float(roc_auc_score(labels, scores))


def privleak(auc_value: float, auc_gold: float) -> float:
    """((1 - AUC) - (1 - AUC_gold)) / (1 - AUC_gold) x 100; undefined when AUC_gold = 1."""
    if auc_gold >= 1.0:
        raise ZeroDivisionError("PrivLeak is undefined when the gold model's AUC is 1.0")
    return float(((1.0 - auc_value) - (1.0 - auc_gold)) / (1.0 - auc_gold) * 100.0)


# --------------------------------------------------------------------------- specs
_SCORES = {  # attack -> (per-example score of (example, batch), outputs it reads)
    "loss": (lambda ex, b: loss_score(ex.lp_answer), ("lp_answer",)),
    "zlib": (lambda ex, b: zlib_score(ex.lp_answer, ex.answer), ("lp_answer",)),
    "min_k": (lambda ex, b: min_k_score(ex.lp_answer, b.options.mink_k), ("lp_answer",)),
    "min_k_pp": (lambda ex, b: min_k_pp_score(ex.lp_answer, ex.minkpp_mu, ex.minkpp_sigma, b.options.mink_k),
                 ("lp_answer", "minkpp_mu", "minkpp_sigma")),
}


def _cells(ctx) -> list[Cell]:
    """Each modality present in both forget and holdout, and the pool (none without a common modality)."""
    both = sorted(set(ctx.modalities("forget")) & set(ctx.modalities("holdout")))
    return [Cell("forget", m, scope="mia") for m in both + [POOLED]] if both else []


def _attack_specs(attack: str) -> tuple:
    score, needs = _SCORES[attack]

    def relative(mine: dict[str, float], gold: dict[str, float]) -> dict[str, float]:
        if gold["_auc"] >= 1.0:
            raise ValueError(f"{attack}_privleak not computed: the gold model's AUC is 1.0 (PrivLeak undefined)")
        return {"_privleak": privleak(mine["_auc"], gold["_auc"]), "_auc_gold": gold["_auc"]}

    return (
        ExampleMetric(Output(attack, low=0.0, high=math.inf, better="none", doc=f"{attack} score (loss-like)"),
                      VERSION, score, needs=needs, cell=None),
        Comparison(attack, (Output(f"{attack}_auc", better="closer_to_gold", doc="ROC AUC forget (0) vs holdout (1)"),
                            Output(f"{attack}_auc_gold", better="none", doc="the same AUC for the gold model"),
                            Output(f"{attack}_privleak", low=-100.0, high=math.inf, tolerance=1e-9,
                                   better="closer_to_0", doc="PrivLeak against the gold model")),
                   VERSION, value=attack, against="holdout", cells=_cells, relative=relative,
                   compare=lambda forget, holdout: {"_auc": auc(forget, holdout)}),
    )


SPECS = tuple(spec for attack in ATTACKS for spec in _attack_specs(attack))
