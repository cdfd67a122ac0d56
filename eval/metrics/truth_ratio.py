"""Truth ratio (TOFU, Maini et al. 2024) and CLEAR's global-mean variant.

With L = mean token NLL of an answer variant (paraphrase ``para``, perturbed ``pert_k``):
    tofu:  TR_i = exp(mean_k L_pert,ik - L_para,i)       per item (TOFU aggregate_eval_stat.py)
    clear: TR_i = exp(mean_{j,k} L_pert,jk - L_para,i)   mean over all items j of the group
           (CLEAR mm/calculate_metrics.py; the group is one (split, modality, task) set).
TR_i = P_para / P_pert with P the per-token probability, P_pert the *geometric* mean over k.
Higher TR = the model prefers the true (paraphrased) answer. open-unlearning stores 1/TR.
Reported statistic (TOFU's code): forget -> mean min(TR, 1/TR); others -> mean max(0, 1 - 1/TR).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from eval.metrics.spec import ExampleMetric, Output, row_means

VERSION = 3  # 2: the reference answer is an option; 3: TOFU's reference per split by default (tr_reference "tofu")
TR_MODES: tuple[str, ...] = ("tofu", "clear")
# the true answer the perturbed ones are compared with: TOFU's per split, or one for every split
TR_REFERENCES: tuple[str, ...] = ("tofu", "paraphrase", "answer")
# TOFU compares with the answer on real authors and world facts (base_answer_key: answer), elsewhere the paraphrase
TOFU_ANSWER_SPLITS: tuple[str, ...] = ("real_faces", "real_world")
# exp() of a log-ratio beyond this would overflow float64; never reached by real models
# (it needs a per-token NLL gap of 700 nats).
_MAX_LOG = 700.0


def truth_ratios(
    lp_paraphrased: Sequence[Sequence[float]],
    lp_perturbed: Sequence[Sequence[Sequence[float]]],
    mode: str = "tofu",
) -> np.ndarray:
    """Per-item TR_i = P_para,i / P_pert,i for one group of items, shape (N,)."""
    if mode not in TR_MODES:
        raise ValueError(f"Unknown tr_mode {mode!r}. Known: {', '.join(TR_MODES)}.")
    para = -row_means(lp_paraphrased)  # (N,); row_means: each row's np.mean, computed a row length at a time
    ks = [len(rows) for rows in lp_perturbed]
    flat = -row_means([lp for rows in lp_perturbed for lp in rows])
    pert = np.split(flat, np.cumsum(ks)[:-1]) if ks else []  # per item: (K_i,)
    if mode == "tofu":
        pert_mean = np.array([p.mean() for p in pert])  # (N,) per-item mean over k
    else:
        # CLEAR: np.array(average_perturb_loss).mean() over all items and all k; with a
        # ragged K this is the mean over every (item, k) pair.
        pert_mean = np.full(len(pert), np.concatenate(pert).mean() if pert else np.nan)
    return np.exp(np.clip(pert_mean - para, -_MAX_LOG, _MAX_LOG))


def forget_stat(tr: np.ndarray) -> float:
    """mean min(TR, 1/TR): 1 when true and false answers are equally likely (forget sets)."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1.0 / tr)))


def keep_stat(tr: np.ndarray) -> float:
    """mean max(0, 1 - 1/TR) = mean max(0, 1 - P_pert/P_para): high when the truth is preferred."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / tr)))


def truth_ratio_stat(tr: np.ndarray, split: str) -> float:
    """The reported ``truth_ratio``: forget form on the forget split, keep form elsewhere."""
    return forget_stat(tr) if split == "forget" else keep_stat(tr)


def reference_of(split: str, tr_reference: str) -> str:
    """"answer" or "paraphrase": the reference a split's truth ratio uses under option ``tr_reference``."""
    if tr_reference not in TR_REFERENCES:
        raise ValueError(f"Unknown tr_reference {tr_reference!r}. Known: {', '.join(TR_REFERENCES)}.")
    if tr_reference == "tofu":
        return "answer" if split in TOFU_ANSWER_SPLITS else "paraphrase"
    return tr_reference


def _group_truth_ratios(group, options) -> np.ndarray:
    """TR of every example of one (split, modality, task) group, against its split's reference."""
    answer = reference_of(group[0].eval_split, options.tr_reference) == "answer"
    reference = [ex.lp_answer if answer else ex.lp_paraphrased for ex in group]
    return truth_ratios(reference, [ex.lp_perturbed for ex in group], options.tr_mode)


SPECS = (
    ExampleMetric(Output("truth_ratio", header="TR",
                         doc="forget: mean min(TR, 1/TR); all other splits: mean max(0, 1 - 1/TR)"), VERSION,
                  lambda ex, batch: batch.per_group("truth_ratio", ex, _group_truth_ratios),
                  needs=("lp_answer", "lp_paraphrased", "lp_perturbed"), cell=truth_ratio_stat),
)
