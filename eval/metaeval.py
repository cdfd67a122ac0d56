"""Meta-evaluation (issue 18, docs/metaeval.md): which metric tells a model that knows the forget authors from one
that does not, per modality, and keeps telling them apart after the weights are rounded or the model relearns.

Pure functions of stored per-model values (result files' aggregates; attack results' per-example outputs):
    knowledge score  s: the value oriented by the metric's declared direction on its split, so that "worse" (on
                     the forget split: more knowledge of the forget authors) is higher: v where lower is better,
                     -v where higher is better, |v - v_gold| where the gold model's value is best, |v| where 0 is;
                     outputs without a direction (counts, the gold model's own values) are not judged
    faithfulness     AUC = P(s+ > s-) + P(s+ = s-) / 2 over every pair of a positive and a negative pool model
                     (Mann-Whitney; OpenUnlearning, arXiv 2506.12618); for a key of modality m a positive was
                     finetuned on the forget authors' records of m (of every modality for a pooled key), a
                     negative on none of them; 95 % CI: percentile bootstrap, positives and negatives resampled apart
    robustness       the same AUC on the attacked pool (8-bit, 4-bit rounding; relearning), with the mean shift of s
                     on positives and on negatives and the gap between them before the attack
    cross-modal      per group of one-modality models: their AUC against the models that saw no forget author
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from eval.aggregate import MetricOptions, aggregate
from eval.attacks.result import METRICS as ATTACK_METRICS
from eval.example import ExampleOutput
from eval.metrics import output

VERSION = 2  # of the analysis (definitions above); the report and the leaderboard name it. 2: suggestion ties by specificity
MODALITIES: tuple[str, ...] = ("text", "image", "joint")
POOLED = "all"
ATTACK_SEP = ":"  # attack keys: "{attack}:{setting}/{modality}/{metric}" (eval.attacks.result's keys)
LEVEL = 0.95
_ORIENT = {"lower": "+", "higher": "-", "closer_to_gold": "gold", "closer_to_0": "zero"}
Values = Mapping[str, Mapping[str, float]]  # model -> key -> value


# ------------------------------------------------------------------------------------- statistics
def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(s+ > s-) + P(s+ = s-) / 2 over every (positive, negative) pair: the Mann-Whitney AUC."""
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]  # (P, 1), (1, N)
    if p.size == 0 or n.size == 0:
        raise ValueError("an AUC needs at least one positive and one negative model")
    return float(np.mean((p > n) + 0.5 * (p == n)))


def auc_interval(pos: Sequence[float], neg: Sequence[float], n_boot: int, seed: int) -> tuple[float, float]:
    """The AUC's percentile bootstrap interval (``LEVEL``): positives and negatives resampled apart, ``n_boot``
    times, by a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    p, n = np.asarray(pos, float), np.asarray(neg, float)
    ps = p[rng.integers(0, len(p), (n_boot, len(p)))][:, :, None]  # (B, P, 1)
    ns = n[rng.integers(0, len(n), (n_boot, len(n)))][:, None, :]  # (B, 1, N)
    boot = ((ps > ns) + 0.5 * (ps == ns)).mean(axis=(1, 2))
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def separation(scores: Mapping[str, float], pos: Iterable[str], neg: Iterable[str], n_boot: int,
               seed: int) -> dict[str, Any] | None:
    """{auc, ci, n_pos, n_neg} of the models ``pos`` against ``neg`` (those with a score); None if a side is empty."""
    p, n = [scores[m] for m in pos if m in scores], [scores[m] for m in neg if m in scores]
    if not p or not n:
        return None
    return {"auc": auc(p, n), "ci": list(auc_interval(p, n, n_boot, seed)), "n_pos": len(p), "n_neg": len(n)}


# ------------------------------------------------------------------------------------- keys
def parts(k: str) -> tuple[str, str, str]:
    scope, modality, metric = k.split("/")
    return scope, modality, metric


def orientation(k: str) -> str | None:
    """How key ``k``'s value becomes a knowledge score: "+" (v), "-" (-v), "gold" (|v - gold's|), "zero" (|v|), or
    None (not judged). An attack key's metrics are higher = more forget knowledge (eval.attacks.result)."""
    scope, _, metric = parts(k)
    if ATTACK_SEP in scope:
        setting = scope.split(ATTACK_SEP, 1)[1]
        base = metric.removesuffix("_delta").removesuffix("_before")
        return "+" if setting not in ("gold", "standard") and base in ATTACK_METRICS else None
    return _ORIENT.get(output(metric).direction(scope))


def knowledge(k: str, value: float, gold: float | None = None) -> float | None:
    """The knowledge score of ``value`` for key ``k`` (``gold``: the gold model's value of ``k``)."""
    o = orientation(k)
    if o in ("+", "-"):
        return value if o == "+" else -value
    if o == "zero":
        return abs(value)
    return abs(value - gold) if o == "gold" and gold is not None else None


def key_modalities(k: str) -> tuple[str, ...]:
    """The forget modalities a key's records present: its modality (image role dropped), all three if pooled."""
    m = parts(k)[1].partition("@")[0]
    return MODALITIES if m == POOLED else (m,)


def label(exposed: Iterable[str], k: str) -> int | None:
    """1: the model was trained on the forget authors' records of every modality of ``k``; 0: of none; None: some."""
    need = set(key_modalities(k))
    seen = set(exposed) & need
    return 1 if seen == need else 0 if not seen else None


def exposure_name(exposed: Iterable[str]) -> str:
    """"all", "none", or the modalities joined by "+" (a one-modality group: "text", "image+joint")."""
    seen = [m for m in MODALITIES if m in set(exposed)]
    return "all" if len(seen) == len(MODALITIES) else "+".join(seen) or "none"


def scores_of(values: Values, k: str, gold: Mapping[str, float]) -> dict[str, float]:
    """{model: knowledge score of key ``k``} for the models that have it."""
    out = {}
    for model, vals in values.items():
        if k in vals:
            s = knowledge(k, vals[k], gold.get(k))
            if s is not None:
                out[model] = s
    return out


# ------------------------------------------------------------------------------------- faithfulness
def faithfulness(values: Values, exposed: Mapping[str, Sequence[str]], gold: Mapping[str, float],
                 n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per judged key: {orientation, auc, ci, n_pos, n_neg} (labels by exposure, every pool model), ``clean``
    (models that saw every modality against those that saw none) and ``cross`` {one-modality group: its
    separation from the models that saw none}; keys without both a positive and a negative are left out."""
    groups: dict[str, list[str]] = {}
    for model in values:
        groups.setdefault(exposure_name(exposed[model]), []).append(model)
    rows: dict[str, dict[str, Any]] = {}
    for k in sorted(set().union(*(v.keys() for v in values.values()))):
        if orientation(k) is None:
            continue
        scores = scores_of(values, k, gold)
        labels = {m: label(exposed[m], k) for m in scores}
        main = separation(scores, [m for m, lab in labels.items() if lab == 1],
                          [m for m, lab in labels.items() if lab == 0], n_boot, seed)
        if main is None:
            continue
        none = groups.get("none", [])
        rows[k] = {"orientation": orientation(k), **main,
                   "clean": separation(scores, groups.get("all", []), none, n_boot, seed),
                   "cross": {g: separation(scores, ms, none, n_boot, seed) for g, ms in sorted(groups.items())
                             if g not in ("all", "none")}}
    return rows


# ------------------------------------------------------------------------------------- robustness
def _examples(block: Mapping[str, Any] | None) -> list[ExampleOutput]:
    return [ExampleOutput.from_dict(d) for d in (block or {}).get("examples", [])]


def attacked(result: Mapping[str, Any], options: MetricOptions) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """{"{attack}:{setting}": (keys before, keys after)} of one attack result: the evaluation's keys recomputed by
    eval.aggregate from the setting's probes, the same records unattacked and the gold model's (when the result
    holds them all). Attack probes are forget records only, so MIA keys (which need holdout records) are absent."""
    standard = {ex.id: ex for ex in _examples(result["standard"])}
    gold = {ex.id: ex for ex in _examples(result.get("gold"))}
    out = {}
    for setting in result["settings"]:
        after = _examples(setting)
        if setting.get("skipped") or not after:
            continue
        ids = [ex.id for ex in after]
        gold_ex = [gold[i] for i in ids] if all(i in gold for i in ids) else None
        opts = options if gold_ex else dataclasses.replace(options, require_gold=False)
        before = aggregate([standard[i] for i in ids], gold_ex, opts)["metrics"]
        out[f"{result['attack']}{ATTACK_SEP}{setting['name']}"] = (before, aggregate(after, gold_ex, opts)["metrics"])
    return out


def robustness(pairs: Mapping[str, Mapping[str, tuple[Mapping[str, float], Mapping[str, float]]]],
               exposed: Mapping[str, Sequence[str]], gold: Mapping[str, float], n_boot: int = 1000,
               seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """{key: {setting: {auc, ci, n_pos, n_neg, auc_before, shift_pos, shift_neg, gap}}}: per attack setting the
    separation after the attack, before it (the same probes), the mean change of the knowledge score on positives
    and on negatives, and the gap mean(s+) - mean(s-) before. ``pairs``: {model: {setting: (before, after)}}."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for setting in sorted(set().union(*(p.keys() for p in pairs.values()))):
        before = {m: p[setting][0] for m, p in pairs.items() if setting in p}
        after = {m: p[setting][1] for m, p in pairs.items() if setting in p}
        for k in sorted(set().union(*(a.keys() for a in after.values()))):
            if orientation(k) is None:
                continue
            sb, sa = scores_of(before, k, gold), scores_of(after, k, gold)
            models = sorted(set(sb) & set(sa))
            pos = [m for m in models if label(exposed[m], k) == 1]
            neg = [m for m in models if label(exposed[m], k) == 0]
            res = separation(sa, pos, neg, n_boot, seed)
            if res is None:
                continue
            rows.setdefault(k, {})[setting] = res | {
                "auc_before": auc([sb[m] for m in pos], [sb[m] for m in neg]),
                "shift_pos": float(np.mean([sa[m] - sb[m] for m in pos])),
                "shift_neg": float(np.mean([sa[m] - sb[m] for m in neg])),
                "gap": float(np.mean([sb[m] for m in pos]) - np.mean([sb[m] for m in neg]))}
    return rows


def worst_auc(settings: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The robustness summary of one key: its lowest AUC after any attack setting (None without attacks)."""
    return min((s["auc"] for s in settings.values()), default=None)


# ------------------------------------------------------------------------------------- per-model values
def model_values(result: Mapping[str, Any], attack_results: Sequence[Mapping[str, Any]] = ()) -> dict[str, float]:
    """Every key a pool model is judged on: its evaluation's aggregates and its attack scores (after each setting,
    the recovery ``_delta``, ``worst_case`` and ``max_delta``; not the unattacked copies and counts)."""
    values = dict(result["aggregates"]["metrics"])
    for r in attack_results:
        for k, v in r["aggregates"]["metrics"].items():
            if k.split("/", 1)[0] in ("standard", "gold") or k.endswith(("/n", "_before")):
                continue
            values[f"{r['attack']}{ATTACK_SEP}{k}"] = v
    return values
