"""Forget quality: how close the unlearned model's forget-set truth ratios are to the gold model's.

ks:  FQ = scipy.stats.ks_2samp(TR_unlearned, TR_gold).pvalue, beside it the statistic D and log10 p
     (TOFU; CLEAR @init). log10 p is computed in log space, so it stays finite where p underflows.
js:  FQ_js = 1 - scipy.spatial.distance.jensenshannon(TR_u, TR_g)      (CLEAR paper tables)
     jensenshannon normalises each *index-aligned* TR vector to sum 1 (a "distribution over
     items") and returns sqrt(JS divergence, natural log); clearbench aligns items by id.
The headline (``forget/all/forget_quality``) is TOFU's: KS on the forget set's text-QA truth ratios at
TOFU's sizes (40 per forget percent, at most 300). Variants: each forget modality at one common n
(``forget/{m}/...``), every forget record pooled (``forget_quality_pooled``), CLEAR's captions
(``clear/all/fq*``, in clear_columns). modality gap = max_m log10 FQ_m - min_m log10 FQ_m (equal n).
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from clearbench.types import forget_percent
from eval.metrics.spec import POOLED, Cell, Comparison, Composite, Output, key

VERSION = 2  # 2: TOFU's headline (text QA at TOFU's n), D, log10 p and n beside each p, equal-n modalities
SAMPLE_SEED = 0  # the seeded subsample of a cell larger than its n (the same units for every model)
TOFU_ITEMS_PER_PERCENT, TOFU_MAX_ITEMS = 40, 300  # forget01 40, forget05 200, forget10 300 (of TOFU's 400)
AGGREGATIONS: tuple[str, ...] = ("item", "author_fact")


def ks_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(D, p, log10 p) of the two-sample KS test (scipy's default method: exact for small samples)."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("forget quality needs at least one truth ratio on each side")
    res = ks_2samp(np.asarray(a), np.asarray(b))
    d, p = float(res.statistic), float(res.pvalue)
    return d, p, log10_ks_pvalue(d, len(a), len(b), p)


def ks_forget_quality(tr_unlearned: Sequence[float], tr_gold: Sequence[float]) -> float:
    """The KS p-value."""
    return ks_test(tr_unlearned, tr_gold)[1]


def log10_ks_pvalue(d: float, n: int, m: int, p: float) -> float:
    """log10 of the two-sided KS p-value of statistic ``d`` for samples of sizes n and m.

    n == m: scipy's exact formula (``_compute_prob_outside_square``, p = 2 A0 (1 - A1 (1 - ...)) with
    A_k = prod_{j<h} (n - kh - j) / (n + kh + j + 1), h = round(d n)) with A0 summed in log space, so
    it stays finite where p underflows (n = m = 600, D = 1: p = 2 / C(1200, 600) ~ 1e-360). n != m:
    log10 of scipy's p, or where that underflowed, the asymptotic tail ln p ~ ln 2 - 2 D^2 nm/(n+m)."""
    if n == m and n <= 10000:  # scipy's exact range for equal sizes
        h = int(round(d * n))
        if h == 0:
            return 0.0
        j = np.arange(h, dtype=np.float64)
        inner = 0.0
        for k in range(n // h, 0, -1):
            inner = float(np.prod((n - k * h - j) / (n + k * h + j + 1.0))) * (1.0 - inner)
        log_a0 = float(np.sum(np.log(n - j) - np.log(n + j + 1.0)))
        return min(0.0, (math.log(2.0) + log_a0 + math.log1p(-inner)) / math.log(10.0))
    if p > 0.0:
        return math.log10(p)
    return (math.log(2.0) - 2.0 * d * d * n * m / (n + m)) / math.log(10.0)


def js_forget_quality(tr_unlearned: Sequence[float], tr_gold: Sequence[float]) -> float:
    """1 - jensenshannon(TR_u, TR_g) on index-aligned vectors, as CLEAR's tables (FQ column)."""
    if len(tr_unlearned) != len(tr_gold) or len(tr_gold) == 0:
        raise ValueError(
            f"JS forget quality needs index-aligned non-empty vectors, got {len(tr_unlearned)} "
            f"and {len(tr_gold)} truth ratios"
        )
    return float(1.0 - jensenshannon(np.asarray(tr_unlearned), np.asarray(tr_gold)))


def modality_gap(log10_pvalues: Mapping[str, float]) -> float:
    """max - min of the per-modality log10 KS p-values."""
    if len(log10_pvalues) == 0:
        raise ValueError("modality gap needs at least one per-modality forget quality")
    return max(log10_pvalues.values()) - min(log10_pvalues.values())


def tofu_n(forget_config: str) -> int:
    """TOFU's forget-set size for a forget split: 40 per percent (20 QA x 2 authors), at most 300."""
    return min(TOFU_ITEMS_PER_PERCENT * forget_percent(forget_config.removesuffix("_perturbed")), TOFU_MAX_ITEMS)


def fact_key(ex: Any) -> str:
    """The author x fact a record asks: naming and captions ask who the author is (one fact per author
    and task); QA records ask the fact their answer states (joint QA repeat a fact over photos)."""
    fact = f"/{ex.answer}" if ex.task == "qa" else ""
    return f"{ex.author_id}/{ex.modality}/{ex.task}{fact}"


def subsample(keys: Sequence[str], n: int) -> list[str]:
    """``n`` of ``keys`` drawn with ``SAMPLE_SEED`` from their sorted order (all of them when n is 0 or more)."""
    keys = sorted(keys)
    return keys if not n or len(keys) <= n else sorted(random.Random(SAMPLE_SEED).sample(keys, n))


# --------------------------------------------------------------------------- specs
def _units(ctx, cell: Cell, ids: list[str]) -> list[list[str]]:
    """One unit per example, or per author x fact (``fq_aggregation``), subsampled to the cell's n."""
    if ctx.options.fq_aggregation == "author_fact":
        units: dict[str, list[str]] = {}
        for i in ids:
            units.setdefault(fact_key(ctx.example(i)), []).append(i)
    else:
        units = {i: [i] for i in ids}
    return [units[k] for k in subsample(list(units), cell.n)]


def _cells(ctx) -> list[Cell]:
    """TOFU's headline, each forget modality at the smallest modality's n, and every forget record."""
    forget = ctx.subset("forget")
    if not forget:
        return []
    sizes = [len(_units(ctx, Cell("forget", m), [ex.id for ex in ctx.subset("forget", m)]))
             for m in ctx.modalities("forget")]
    return [Cell("forget", "text", "qa", label=POOLED, n=tofu_n(forget[0].split)),
            *(Cell("forget", m, n=min(sizes)) for m in ctx.modalities("forget")),
            Cell("forget", POOLED, variant="_pooled")]


def ks_parts(a: np.ndarray, b: np.ndarray, prefix: str = "") -> dict[str, float]:
    """KS p, D, log10 p and n under ``prefix`` (the output-name parts of a KS comparison)."""
    d, p, log10p = ks_test(a, b)
    return {prefix: p, f"{prefix}_d": d, f"{prefix}_log10p": log10p, f"{prefix}_n": float(len(a))}


def ks_outputs(name: str, what: str) -> tuple[Output, ...]:
    return (Output(name, fmt=".3g", doc=f"KS p-value, {what}"),
            Output(f"{name}_d", better="lower", doc=f"KS statistic D, {what}"),
            Output(f"{name}_log10p", low=-math.inf, high=0.0, fmt=".2f", doc=f"log10 of the KS p-value, {what}"),
            Output(f"{name}_n", high=math.inf, integer=True, better="none", doc=f"units per side, {what}"))


def _modality_gap(ctx) -> None:
    parts = [key("forget", m, "forget_quality_log10p") for m in ctx.modalities("forget")]
    parts = [p for p in parts if p in ctx.metrics]
    if parts:
        ctx.put(key("forget", POOLED, "modality_gap"), modality_gap({p: ctx.metrics[p] for p in parts}), parts)


_OUTPUTS = tuple(o for v, what in (("", "TR unlearned vs TR gold"), ("_pooled", "every forget record pooled"))
                 for o in (*ks_outputs(f"forget_quality{v}", what),
                           Output(f"forget_quality{v}_js", doc=f"1 - Jensen-Shannon distance, {what}")))
SPECS = (
    Comparison("forget_quality", _OUTPUTS, VERSION, value="truth_ratio", against="gold", cells=_cells, units=_units,
               compare=lambda a, b: {**ks_parts(a, b), "_js": js_forget_quality(a, b)},
               columns=(("FQ D", "forget/all/forget_quality_d"), ("FQ (KS p)", "forget/all/forget_quality"),
                        ("FQ log10 p", "forget/all/forget_quality_log10p"))),
    Composite((Output("modality_gap", high=math.inf, better="lower",
                      doc="max_m log10 FQ_m - min_m log10 FQ_m over the forget modalities (equal n)"),),
              VERSION, _modality_gap),
)
