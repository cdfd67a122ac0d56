"""Aggregation: per-example values -> every result key, in one vocabulary.

Keys are ``"{scope}/{modality}/{metric}"``: scope is a split (forget, retain, holdout,
real_faces, real_world) or ``all`` (across the utility splits), ``mia`` or ``clear``;
modality is text / image / joint or ``all`` (pooled). Examples: ``forget/joint/rouge_l``,
``retain/image/naming_acc``, ``forget/all/forget_quality``, ``all/all/model_utility``,
``clear/all/real``, ``mia/text/min_k_pp_auc``. docs/metrics.md lists every key.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from eval.example import SPLITS, ExampleOutput, split_of
from eval.metrics import clear_columns, forget_quality, mia, model_utility, naming, probability
from eval.metrics import rouge_l, truth_ratio

POOLED = "all"


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    """Switches between the published definitions (stored in every result file).

    tr_mode: "tofu" (per-item mean over perturbed answers) or "clear" (global mean).
    tr_reference: the true answer the perturbed ones are compared with: "paraphrase" (default;
      TOFU and CLEAR, whose perturbed answers are the paraphrase with the fact changed, as in
      clearbench worlds since schema 2) or "answer" (for data whose perturbed answers perturb the
      answer's wording, e.g. schema 1 worlds: against the paraphrase a trained model prefers the
      answer's template, so every perturbed answer beat the paraphrase, retain QA truth ratio 0).
    clear_include_rouge: CLEAR columns with ROUGE (paper text) or without (CLEAR's code).
    mink_k: fraction of lowest tokens for Min-K% / Min-K%++ (open-unlearning default 0.4).
    require_gold: forget quality and PrivLeak need the gold model's examples; False only
      for runs that deliberately skip them (they are then absent, never None).
    """

    tr_mode: str = "tofu"
    tr_reference: str = "paraphrase"
    clear_include_rouge: bool = False
    mink_k: float = 0.4
    require_gold: bool = True

    def __post_init__(self) -> None:
        if self.tr_mode not in truth_ratio.TR_MODES:
            raise ValueError(f"Unknown tr_mode {self.tr_mode!r}. Known: {', '.join(truth_ratio.TR_MODES)}.")
        if self.tr_reference not in ("answer", "paraphrase"):
            raise ValueError(f"Unknown tr_reference {self.tr_reference!r}. Known: answer, paraphrase.")
        if not 0.0 < self.mink_k <= 1.0:
            raise ValueError(f"mink_k must be in (0, 1], got {self.mink_k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricOptions":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown metric options {sorted(unknown)}")
        return cls(**d)  # files written before tr_reference existed used TOFU's, the default


class MissingGoldError(FileNotFoundError):
    """Forget quality / PrivLeak were asked for without the gold (retain-only) model's result."""


def gold_command(forget_config: str) -> str:
    pct = "".join(c for c in forget_config if c.isdigit()) or "XX"
    return f"clearbench evaluate --model runs/gold-{pct} ..."


def key(scope: str, modality: str, metric: str) -> str:
    return f"{scope}/{modality}/{metric}"


# --------------------------------------------------------------------------- per-example values
def check_examples(examples: Sequence[ExampleOutput], what: str = "examples") -> None:
    """Loud error on inconsistent examples, duplicated ids or mixed forget/holdout configs."""
    problems = [p for ex in examples for p in ex.problems()]
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            problems.append(f"duplicated example id {ex.id!r}")
        seen.add(ex.id)
    for split in ("forget", "holdout"):
        configs = sorted({ex.split for ex in examples if split_of(ex.split) == split})
        if len(configs) > 1:
            problems.append(f"one result holds one {split} split, got {configs}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"cannot score {what}: " + "; ".join(problems[:10]) + more)


def truth_ratios(examples: Sequence[ExampleOutput], tr_mode: str, reference: str = "paraphrase") -> dict[str, float]:
    """{id: TR} with CLEAR's global mean taken within each (split, modality, task) group; the true
    answer is ``reference`` ("answer" or "paraphrase", see MetricOptions)."""
    groups: dict[tuple[str, str, str], list[ExampleOutput]] = defaultdict(list)
    for ex in examples:
        groups[(ex.split, ex.modality, ex.task)].append(ex)
    out: dict[str, float] = {}
    for group in groups.values():
        trs = truth_ratio.truth_ratios(
            [ex.lp_answer if reference == "answer" else ex.lp_paraphrased for ex in group],
            [ex.lp_perturbed for ex in group], tr_mode
        )
        out.update({ex.id: float(t) for ex, t in zip(group, trs)})
    return out


def per_example_values(examples: Sequence[ExampleOutput], options: MetricOptions) -> dict[str, dict[str, float]]:
    """{id: {metric: value}} for every per-example quantity the aggregates average."""
    trs = truth_ratios(examples, options.tr_mode, options.tr_reference)
    k = options.mink_k
    out: dict[str, dict[str, float]] = {}
    for ex in examples:
        raw = probability.probability(ex.lp_answer)
        norm = probability.normalised_probability(ex.lp_answer, ex.lp_perturbed)
        v = {
            "rouge_l": rouge_l.rouge_l_recall(ex.generation, ex.answer),
            "probability_raw": raw,
            "probability_norm": norm,
            "probability": norm if probability.uses_normalised(ex.eval_split, ex.task) else raw,
            "tr": trs[ex.id],
            "loss": mia.loss_score(ex.lp_answer),
            "zlib": mia.zlib_score(ex.lp_answer, ex.answer),
            "min_k": mia.min_k_score(ex.lp_answer, k),
            "min_k_pp": mia.min_k_pp_score(ex.lp_answer, ex.minkpp_mu, ex.minkpp_sigma, k),
        }
        if ex.task == "naming":
            v["naming_acc"] = float(naming.name_in_generation(ex.generation, ex.name))
            v["naming_choice_acc"] = float(naming.forced_choice_correct(ex.lp_answer, ex.lp_perturbed))
        out[ex.id] = v
    return out


# --------------------------------------------------------------------------- aggregation
def _subset(examples: Iterable[ExampleOutput], split: str, modality: str = POOLED, task: str | None = None):
    return [
        ex for ex in examples
        if ex.eval_split == split and modality in (POOLED, ex.modality) and task in (None, ex.task)
    ]


def _stats(split: str, subset: Sequence[ExampleOutput], vals: dict[str, dict[str, float]]) -> dict[str, float]:
    """The per-cell statistics: means of per-example values plus the truth-ratio statistic."""
    col = lambda name: [vals[ex.id][name] for ex in subset if name in vals[ex.id]]  # noqa: E731
    out = {"n": float(len(subset))}
    for name in ("rouge_l", "probability", "probability_raw", "probability_norm", "naming_acc", "naming_choice_acc"):
        if col(name):
            out[name] = float(np.mean(col(name)))
    out["truth_ratio"] = truth_ratio.truth_ratio_stat(np.array(col("tr")), split)
    return out


def aggregate(
    examples: Sequence[ExampleOutput],
    gold: Sequence[ExampleOutput] | None = None,
    options: MetricOptions | None = None,
) -> dict[str, Any]:
    """Every (split, modality) cell present, model utility, CLEAR columns, MIA, forget quality.

    Returns {"metrics": {key: float}, "cells": [[split, modality], ...], "components":
    {key: [inputs]}, "warnings": [...], "options": {...}}. Gold-dependent keys need ``gold``.
    """
    options = options or MetricOptions()
    check_examples(examples)
    vals = per_example_values(examples, options)
    metrics: dict[str, float] = {}
    components: dict[str, list[str]] = {}
    warnings: list[str] = []
    cells = sorted({(ex.eval_split, ex.modality) for ex in examples}, key=lambda c: (SPLITS.index(c[0]), c[1]))
    for split in [s for s in SPLITS if any(c[0] == s for c in cells)]:
        for modality in [m for s, m in cells if s == split] + [POOLED]:
            for name, value in _stats(split, _subset(examples, split, modality), vals).items():
                metrics[key(split, modality, name)] = value

    # model utility: per modality over the cells that exist, and overall over pooled cells
    for modality in sorted({m for s, m in cells if s in model_utility.UTILITY_SPLITS}) + [POOLED]:
        parts = [key(s, modality, m) for s in model_utility.UTILITY_SPLITS for m in model_utility.UTILITY_METRICS
                 if key(s, modality, m) in metrics]
        mu_key = key("all", modality, "model_utility")
        metrics[mu_key] = model_utility.harmonic_mean([metrics[p] for p in parts])
        components[mu_key] = parts

    # CLEAR paper columns
    col_metrics = clear_columns.column_metrics(options.clear_include_rouge)
    for column, subsets in clear_columns.COLUMNS.items():
        col_key = key("clear", POOLED, column)
        chosen = [(sub, _subset(examples, *sub)) for sub in subsets]
        missing = ["/".join(sub) for sub, exs in chosen if not exs]
        if missing:
            warnings.append(f"{col_key} not computed: no {', '.join(missing)} examples")
            continue
        stats = [(sub, _stats(sub[0], exs, vals)) for sub, exs in chosen]
        metrics[col_key] = model_utility.harmonic_mean([st[m] for _, st in stats for m in col_metrics])
        components[col_key] = [f"{'/'.join(sub)}:{m}" for sub, _ in stats for m in col_metrics]

    # MIA: forget vs holdout, per modality and pooled
    both = sorted({m for s, m in cells if s == "forget"} & {m for s, m in cells if s == "holdout"})
    mia_modalities = both + [POOLED] if both else []
    aucs: dict[str, float] = {}
    for modality in mia_modalities:
        f, h = _subset(examples, "forget", modality), _subset(examples, "holdout", modality)
        for attack in mia.ATTACKS:
            k_ = key("mia", modality, f"{attack}_auc")
            aucs[k_] = metrics[k_] = mia.auc([vals[e.id][attack] for e in f], [vals[e.id][attack] for e in h])

    forget_examples = _subset(examples, "forget")
    if forget_examples and gold is None and options.require_gold:
        raise MissingGoldError(
            f"forget quality and PrivLeak need the gold (retain-only) model's result for "
            f"{forget_examples[0].split}; produce it with `{gold_command(forget_examples[0].split)}` "
            "and pass its result file as the gold result"
        )
    if gold is not None and forget_examples:
        _gold_metrics(examples, gold, options, vals, aucs, mia_modalities, metrics, components, warnings)
    return {
        "metrics": metrics,
        "cells": [list(c) for c in cells],
        "components": components,
        "warnings": warnings,
        "options": options.to_dict(),
    }


def _aligned(examples, gold, split, modality=POOLED, task=None) -> tuple[list[str], list[ExampleOutput]]:
    """Ids of one subset, checked to be identical in the gold result (loud error otherwise)."""
    mine = sorted(ex.id for ex in _subset(examples, split, modality, task))
    theirs = sorted(ex.id for ex in _subset(gold, split, modality, task))
    if mine != theirs:
        only_mine, only_gold = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        raise ValueError(
            f"gold and evaluated {split}/{modality} examples differ: {len(only_mine)} ids only in the "
            f"evaluated result (e.g. {only_mine[:3]}), {len(only_gold)} only in gold (e.g. {only_gold[:3]}); "
            "evaluate both models on the same world and forget split"
        )
    return mine, _subset(gold, split, modality, task)


def _gold_metrics(examples, gold, options, vals, aucs, mia_modalities, metrics, components, warnings) -> None:
    check_examples(gold, "gold examples")
    forget_configs = {ex.split for ex in _subset(examples, "forget")}
    gold_configs = {ex.split for ex in _subset(gold, "forget")}
    if forget_configs != gold_configs:
        raise ValueError(f"gold result scores {sorted(gold_configs)}, this result {sorted(forget_configs)}")
    gold_tr = truth_ratios(gold, options.tr_mode, options.tr_reference)
    pvalues: dict[str, float] = {}
    for modality in sorted({ex.modality for ex in _subset(examples, "forget")}) + [POOLED]:
        ids, _ = _aligned(examples, gold, "forget", modality)
        tr_u, tr_g = [vals[i]["tr"] for i in ids], [gold_tr[i] for i in ids]
        p = forget_quality.ks_forget_quality(tr_u, tr_g)
        metrics[key("forget", modality, "forget_quality")] = p
        metrics[key("forget", modality, "forget_quality_js")] = forget_quality.js_forget_quality(tr_u, tr_g)
        if modality != POOLED:
            pvalues[modality] = p
    gap_key = key("forget", POOLED, "modality_gap")
    metrics[gap_key] = forget_quality.modality_gap(pvalues)
    components[gap_key] = [key("forget", m, "forget_quality") for m in pvalues]

    sub = clear_columns.FQ_SUBSET
    if _subset(examples, *sub):
        ids, _ = _aligned(examples, gold, *sub)
        metrics[key("clear", POOLED, "fq")] = forget_quality.js_forget_quality(
            [vals[i]["tr"] for i in ids], [gold_tr[i] for i in ids])
    else:
        warnings.append(f"clear/all/fq not computed: no {'/'.join(sub)} examples")

    if mia_modalities:
        gold_vals = per_example_values(_subset(gold, "forget") + _subset(gold, "holdout"), options)
        for modality in mia_modalities:
            _aligned(examples, gold, "holdout", modality)
            f, h = _subset(gold, "forget", modality), _subset(gold, "holdout", modality)
            for attack in mia.ATTACKS:
                auc_gold = mia.auc([gold_vals[e.id][attack] for e in f], [gold_vals[e.id][attack] for e in h])
                pl_key = key("mia", modality, f"{attack}_privleak")
                if auc_gold >= 1.0:
                    warnings.append(f"{pl_key} not computed: the gold model's AUC is 1.0 (PrivLeak undefined)")
                    continue
                metrics[pl_key] = mia.privleak(aucs[key("mia", modality, f"{attack}_auc")], auc_gold)
                metrics[key("mia", modality, f"{attack}_auc_gold")] = auc_gold
