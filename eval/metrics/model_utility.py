"""Model utility: harmonic mean of the non-forget statistics (TOFU, Maini et al. 2024).

MU = hmean({probability, rouge_l, truth_ratio} x {retain, real_faces, real_world})
TOFU uses the same 9 values over {retain, real authors, world facts}. scipy's hmean of a list
containing 0 is 0 (a model that loses one ability entirely has no utility).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import hmean

from eval.metrics.spec import POOLED, Composite, Output, key

VERSION = 1
UTILITY_SPLITS: tuple[str, ...] = ("retain", "real_faces", "real_world")
UTILITY_METRICS: tuple[str, ...] = ("probability", "rouge_l", "truth_ratio")


def harmonic_mean(values: Sequence[float]) -> float:
    """scipy.stats.hmean; any zero gives exactly 0, an empty list is an error."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("harmonic mean of no values")
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"harmonic mean needs finite values >= 0, got {values.tolist()}")
    if np.any(values == 0):
        return 0.0
    return float(hmean(values))


def _model_utility(ctx) -> None:
    """Per modality over the utility cells that exist, and overall over the pooled cells."""
    modalities = sorted({m for s in UTILITY_SPLITS for m in ctx.modalities(s)})
    for modality in modalities + [POOLED]:
        parts = [key(s, modality, m) for s in UTILITY_SPLITS for m in UTILITY_METRICS if key(s, modality, m) in ctx.metrics]
        if parts:
            ctx.put(key("all", modality, "model_utility"), harmonic_mean([ctx.metrics[p] for p in parts]), parts)


SPECS = (
    Composite((Output("model_utility", doc="hmean of {probability, rouge_l, truth_ratio} x {retain, real_faces, "
                                           "real_world} cells of one modality"),),
              VERSION, _model_utility, columns=(("MU", "all/all/model_utility"),)),
)
