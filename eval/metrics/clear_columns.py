"""CLEAR's paper-table columns (Dontsov et al. 2025; mm/build_vllm_table.py).

real   = hmean(Prob, TR of real_faces naming;  Prob, TR of real_world VQA)
retain = hmean(Prob, TR of retain captions;     Prob, TR of retain face naming)
forget = hmean(Prob, TR of forget captions;     Prob, TR of forget face naming)   (lower = better)
fq     = 1 - jensenshannon(TR_u, TR_gold) on forget captions
CLEAR's code leaves ROUGE out; the paper text says "ROUGE, Probability and Truth Ratio"
(``include_rouge=True`` follows the text).
"""
from __future__ import annotations

VERSION = 1

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
