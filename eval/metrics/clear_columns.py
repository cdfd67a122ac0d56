"""CLEAR's paper-table columns (Dontsov et al. 2025; mm/build_vllm_table.py).

real   = hmean(Prob, TR of real_faces naming;  Prob, TR of real_world VQA)
retain = hmean(Prob, TR of retain captions;     Prob, TR of retain face naming)
forget = hmean(Prob, TR of forget captions;     Prob, TR of forget face naming)   (lower = better)
fq     = 1 - jensenshannon(TR_u, TR_gold) on forget captions   (fq_ks: KS p, D, log10 p on the same captions,
         CLEAR's forget quality before its paper switched to 1 - JS)
CLEAR's code leaves ROUGE out; the paper text says "ROUGE, Probability and Truth Ratio"
(``include_rouge=True`` follows the text).
"""
from __future__ import annotations

from eval.metrics.forget_quality import js_forget_quality, ks_outputs, ks_parts
from eval.metrics.model_utility import harmonic_mean
from eval.metrics.spec import POOLED, Cell, Comparison, Composite, Output, key

VERSION = 2  # 2: CLEAR's KS p on captions (fq_ks) with D, log10 p and n

# column -> the (split, modality, task) subsets whose statistics enter its harmonic mean;
# selected by task over all modalities (naming is image-only, captions and VQA are joint).
COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "real": (("real_faces", "all", "naming"), ("real_world", "all", "vqa")),
    "retain": (("retain", "all", "caption"), ("retain", "all", "naming")),
    "forget": (("forget", "all", "caption"), ("forget", "all", "naming")),
}
FQ_SUBSET: tuple[str, str, str] = ("forget", "all", "caption")


def column_metrics(include_rouge: bool) -> tuple[str, ...]:
    """The per-subset statistics a column averages: CLEAR's code, or its paper text with ROUGE."""
    return ("probability", "truth_ratio", "rouge_l") if include_rouge else ("probability", "truth_ratio")


def _columns(ctx) -> None:
    stats_used = column_metrics(ctx.options.clear_include_rouge)
    for column, subsets in COLUMNS.items():
        col_key = key("clear", POOLED, column)
        chosen = [(sub, ctx.subset(*sub)) for sub in subsets]
        missing = ["/".join(sub) for sub, exs in chosen if not exs]
        if missing:
            ctx.warn(f"{col_key} not computed: no {', '.join(missing)} examples")
            continue
        stats = [(sub, ctx.cell_stats(sub[0], exs)) for sub, exs in chosen]
        ctx.put(col_key, harmonic_mean([st[m] for _, st in stats for m in stats_used]),
                [f"{'/'.join(sub)}:{m}" for sub, _ in stats for m in stats_used])


SPECS = (
    Composite((Output("real", doc="hmean(Prob, TR) of real_faces naming and real_world VQA"),
               Output("retain", doc="hmean(Prob, TR) of retain captions and naming"),
               Output("forget", better="lower", doc="hmean(Prob, TR) of forget captions and naming")),
              VERSION, _columns,
              columns=(("Real", "clear/all/real"), ("Retain", "clear/all/retain"), ("Forget", "clear/all/forget"))),
    Comparison("fq", (Output("fq", doc="CLEAR's FQ column: 1 - JS on forget captions"),
                      *ks_outputs("fq_ks", "CLEAR's forget captions")), VERSION, value="truth_ratio", against="gold",
               compare=lambda tr_u, tr_g: {"": js_forget_quality(tr_u, tr_g), **ks_parts(tr_u, tr_g, "_ks")},
               cells=lambda ctx: [Cell(*FQ_SUBSET, scope="clear")], columns=(("FQ", "clear/all/fq"),)),
)
