"""Forget quality: how close the unlearned model's forget-set truth ratios are to the gold model's.

ks:  FQ = scipy.stats.ks_2samp(TR_unlearned, TR_gold).pvalue          (TOFU; CLEAR @init)
js:  FQ_js = 1 - scipy.spatial.distance.jensenshannon(TR_u, TR_g)      (CLEAR paper tables)
     jensenshannon normalises each *index-aligned* TR vector to sum 1 (a "distribution over
     items") and returns sqrt(JS divergence, natural log); clearbench aligns items by id.
modality gap = max_m log10 FQ_m - min_m log10 FQ_m over the forget modalities (0 = every
     modality is as forgotten as the others, relative to gold).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from eval.metrics.spec import POOLED, Cell, Comparison, Composite, Output, key

VERSION = 1
# p-values can underflow to 0.0 for large, fully separated samples; log10 of the smallest
# positive double keeps the gap finite.
_TINY = np.finfo(np.float64).tiny


def ks_forget_quality(tr_unlearned: Sequence[float], tr_gold: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy default method: exact for small samples)."""
    if len(tr_unlearned) == 0 or len(tr_gold) == 0:
        raise ValueError("forget quality needs at least one truth ratio on each side")
    return float(ks_2samp(np.asarray(tr_unlearned), np.asarray(tr_gold)).pvalue)


def js_forget_quality(tr_unlearned: Sequence[float], tr_gold: Sequence[float]) -> float:
    """1 - jensenshannon(TR_u, TR_g) on index-aligned vectors, as CLEAR's tables (FQ column)."""
    if len(tr_unlearned) != len(tr_gold) or len(tr_gold) == 0:
        raise ValueError(
            f"JS forget quality needs index-aligned non-empty vectors, got {len(tr_unlearned)} "
            f"and {len(tr_gold)} truth ratios"
        )
    return float(1.0 - jensenshannon(np.asarray(tr_unlearned), np.asarray(tr_gold)))


def modality_gap(pvalues: Mapping[str, float]) -> float:
    """max - min of log10 per-modality KS p-values (p floored at the smallest positive double)."""
    if len(pvalues) == 0:
        raise ValueError("modality gap needs at least one per-modality forget quality")
    logs = [float(np.log10(max(p, _TINY))) for p in pvalues.values()]
    return max(logs) - min(logs)


def _cells(ctx) -> list[Cell]:
    """Every forget modality and the pool."""
    return [Cell("forget", m) for m in ctx.modalities("forget") + [POOLED]]


def _compare(tr_unlearned: np.ndarray, tr_gold: np.ndarray) -> dict[str, float]:
    return {"forget_quality": ks_forget_quality(tr_unlearned, tr_gold),
            "forget_quality_js": js_forget_quality(tr_unlearned, tr_gold)}


def _modality_gap(ctx) -> None:
    parts = [key("forget", m, "forget_quality") for m in ctx.modalities("forget")]
    parts = [p for p in parts if p in ctx.metrics]
    if parts:
        ctx.put(key("forget", POOLED, "modality_gap"), modality_gap({p: ctx.metrics[p] for p in parts}), parts)


SPECS = (
    Comparison((Output("forget_quality", fmt=".3g", doc="KS p-value, TR unlearned vs TR gold"),
                Output("forget_quality_js", doc="1 - Jensen-Shannon distance, id-aligned TR vectors")),
               VERSION, value="truth_ratio", against="gold", compare=_compare, cells=_cells,
               columns=(("FQ (KS p)", "forget/all/forget_quality"), ("FQ (1−JS)", "forget/all/forget_quality_js"))),
    Composite((Output("modality_gap", high=math.inf, better="lower",
                      doc="max_m log10 FQ_m - min_m log10 FQ_m over the forget modalities"),), VERSION, _modality_gap),
)
