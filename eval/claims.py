"""CLEAR's claims tested on a replicate study, and how reproducible its method ranking is.

Input: per seed, the leaderboard's numbers of every run, ``{seed: {run name: {result key: value}}}`` (run names as
``clearbench run`` writes them: ``grad_ascent-multimodal-10``, ``npo-lora-l1-multimodal-10``, ``target-10``).
Each claim is a rule written down before the study ran (``CLAIMS``), evaluated in every seed; the report gives the
values it compared (mean ± sd over seeds) and in how many seeds it held.

Kendall's W (Kendall & Babington Smith 1939), with the tie correction, measures how well the seeds agree on the
ranking of the methods: W = 12 S / (m² (n³ − n) − m Σ_j T_j), S = Σ_i (R_i − m (n + 1) / 2)², T_j = Σ_g (t_g³ − t_g)
over the tie groups of seed j; 1 = the same ranking in every seed, 0 = no agreement.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata, spearmanr

Values = Mapping[str, Mapping[str, float]]  # run name -> result key -> value (one seed)

REAL, RETAIN, CLEAR_FORGET = "clear/all/real", "clear/all/retain", "clear/all/forget"
# What a model still knows of the forget set, for the claims: the mean answer probability over every forget record.
# CLEAR's Forget column (hmean of Prob and the forget-form truth ratio mean min(TR, 1/TR)) is not monotone in
# knowledge: a model that is sure of the truth (TR >> 1) scores ~0 like one that forgot everything (the tiny
# target scores 0.0001, its gold 0.098), so "forget / target" means nothing with it; it is kept for the Spearman
# comparison with CLEAR's table, which uses that formula.
FORGET = "forget/all/probability"

# CLEAR v4 Table 1 (LLaVA-1.5-7B, forget10, both modalities; shared/reference/clear.md §5): Real, Retain, Forget.
CLEAR_TABLE1: dict[str, tuple[float, float, float]] = {
    "dpo": (0.46, 0.48, 0.22), "llmu": (0.47, 0.51, 0.25), "idk": (0.48, 0.51, 0.33),
    "scrub": (0.49, 0.52, 0.36), "grad_ascent": (0.27, 0.00, 0.00), "rmu": (0.24, 0.00, 0.00),
}
CLEAR_BASE = (0.48, 0.51, 0.35)


def kendalls_w(scores: Sequence[Sequence[float]]) -> float:
    """Kendall's W of m rankings (rows: seeds) of n objects (columns: methods), ranked by ``scores`` (ties get
    average ranks, with the tie correction). Needs m >= 2 and n >= 2; W = 1 when every row orders the same way."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"Kendall's W needs >= 2 rankings of >= 2 objects, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("Kendall's W: every score must be finite")
    m, n = x.shape
    ranks = np.vstack([rankdata(row) for row in x])
    s = float(np.sum((ranks.sum(axis=0) - m * (n + 1) / 2.0) ** 2))
    ties = sum(float(np.sum(c ** 3 - c)) for c in (np.unique(row, return_counts=True)[1] for row in x))
    denom = m ** 2 * (n ** 3 - n) - m * ties
    return 1.0 if denom == 0 else 12.0 * s / denom


def spearman(ours: Mapping[str, float], theirs: Mapping[str, float]) -> tuple[float, int]:
    """Spearman's rho of two method -> value maps over the methods both have, and that count."""
    common = sorted(set(ours) & set(theirs))
    if len(common) < 3:
        return math.nan, len(common)
    rho = spearmanr([ours[m] for m in common], [theirs[m] for m in common]).statistic
    return float(rho), len(common)


def method_of(run: str, variant: str, modality: str, pct: str) -> str | None:
    """The method of run name ``<method>[-<variant>]-<modality>-<pct>`` when the rest matches, else None."""
    tail = "-".join(x for x in (variant, modality, pct) if x)
    return run[: -len(tail) - 1] if run.endswith("-" + tail) and len(run) > len(tail) + 1 else None


def _plain(method: str | None) -> bool:
    """A method name without a variant suffix (``npo``, not ``npo-lora``)."""
    return bool(method) and "-" not in method


def method_values(values: Values, key: str, variant: str = "", modality: str = "multimodal",
                  pct: str = "10") -> dict[str, float]:
    """{method: value of ``key``} for the runs of one variant and forget setting (one seed)."""
    out = {}
    for run, row in values.items():
        method = method_of(run, variant, modality, pct)
        if _plain(method) and key in row:
            out[method] = float(row[key])
    return out


@dataclasses.dataclass
class Verdict:
    claim: str
    held: int  # seeds where it held
    seeds: int  # seeds where it could be checked
    evidence: str  # the compared values, mean ± sd over seeds


def _ms(values: Sequence[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.fmean(vals):.2f}{sd}"


def _ratio(row: Mapping[str, float], base: Mapping[str, float], key: str) -> float:
    b = base.get(key)
    return math.nan if not b or key not in row else row[key] / b


# A claim: (text, the runs and keys it reads -> per-seed evidence values and whether it held).
Rule = Callable[[Values, str], tuple[dict[str, float], bool | None]]


def _runs(values: Values, pct: str, *names: str) -> list[Mapping[str, float]] | None:
    rows = [values.get(n if n.startswith("target") else f"{n}-{pct}") for n in names]
    return None if any(r is None for r in rows) else rows


def destroy_rule(method: str) -> Rule:
    """``method`` destroys retain (<= 25 % of the target's) and harms real (<= 75 % of the target's)."""
    def rule(values: Values, pct: str):
        rows = _runs(values, pct, f"{method}-multimodal", f"target-{pct}")
        if rows is None:
            return {}, None
        ret, real = _ratio(rows[0], rows[1], RETAIN), _ratio(rows[0], rows[1], REAL)
        return {"retain/target": ret, "real/target": real}, ret <= 0.25 and real <= 0.75
    return rule


def keep_rule(method: str) -> Rule:
    """``method`` keeps retain (>= 90 % of the target's) and barely forgets (forget >= 80 % of the target's)."""
    def rule(values: Values, pct: str):
        rows = _runs(values, pct, f"{method}-multimodal", f"target-{pct}")
        if rows is None:
            return {}, None
        ret, fgt = _ratio(rows[0], rows[1], RETAIN), _ratio(rows[0], rows[1], FORGET)
        return {"retain/target": ret, "forget/target": fgt}, ret >= 0.9 and fgt >= 0.8
    return rule


def balance_rule(method: str) -> Rule:
    """``method`` balances: forget < 80 % of the target's while retain >= 90 % of the target's."""
    def rule(values: Values, pct: str):
        rows = _runs(values, pct, f"{method}-multimodal", f"target-{pct}")
        if rows is None:
            return {}, None
        ret, fgt = _ratio(rows[0], rows[1], RETAIN), _ratio(rows[0], rows[1], FORGET)
        return {"retain/target": ret, "forget/target": fgt}, ret >= 0.9 and fgt < 0.8
    return rule


def both_modalities_rule(values: Values, pct: str):
    """Unlearning both modalities leaves a lower forget score than text-only or visual-only unlearning (each
    method, full-parameter variant): held when true for a majority of the methods that ran all three."""
    wins, total, gaps = 0, 0, []
    for method, multi in method_values(values, FORGET, "", "multimodal", pct).items():
        single = [method_values(values, FORGET, "", m, pct).get(method) for m in ("text", "visual")]
        if None in single:
            continue
        total += 1
        wins += multi < min(single)
        gaps.append(min(single) - multi)
    if not total:
        return {}, None
    return {"methods": float(total), "multimodal lower": float(wins), "min single - multi": float(np.mean(gaps))}, \
        wins * 2 > total


def l1_rule(method: str) -> Rule:
    """L1 on LoRA prevents ``method``'s collapse: retain with L1 >= 1.5 x retain without (both LoRA, same lr)."""
    def rule(values: Values, pct: str):
        rows = _runs(values, pct, f"{method}-lora-l1-multimodal", f"{method}-lora-multimodal")
        if rows is None or RETAIN not in rows[0] or RETAIN not in rows[1]:
            return {}, None
        with_l1, without = rows[0][RETAIN], rows[1][RETAIN]
        return {"retain with L1": with_l1, "retain without": without}, with_l1 >= 1.5 * max(without, 1e-12)
    return rule


CLAIMS: dict[str, Rule] = {
    "GA destroys retain and real (CLEAR Table 1: .27/.00/.00)": destroy_rule("grad_ascent"),
    "RMU destroys retain and real (CLEAR Table 1: .24/.00/.00)": destroy_rule("rmu"),
    "SCRUB keeps retain but barely forgets": keep_rule("scrub"),
    "IDK keeps retain but barely forgets": keep_rule("idk"),
    "Retain FT keeps retain but barely forgets": keep_rule("retain_ft"),
    "DPO balances forgetting and retain": balance_rule("dpo"),
    "LLMU balances forgetting and retain": balance_rule("llmu"),
    "Forgetting both modalities beats one": both_modalities_rule,
    "L1 on LoRA prevents GA's collapse (CLEAR v1: .32/.00/.00 -> .49/.50/.37)": l1_rule("grad_ascent"),
}


def evaluate_claims(per_seed: Mapping[int, Values], pct: str = "10") -> list[Verdict]:
    """Every claim of ``CLAIMS`` over the seeds."""
    out = []
    for claim, rule in CLAIMS.items():
        evidence: dict[str, list[float]] = {}
        held = checked = 0
        for values in per_seed.values():
            ev, ok = rule(values, pct)
            if ok is None:
                continue
            checked += 1
            held += bool(ok)
            for k, v in ev.items():
                evidence.setdefault(k, []).append(v)
        out.append(Verdict(claim, held, checked, "; ".join(f"{k} {_ms(v)}" for k, v in evidence.items())))
    return out


def clear_correlations(per_seed: Mapping[int, Values], pct: str = "10") -> dict[str, tuple[float, float, int]]:
    """Spearman rho of our method ordering (full-parameter, multimodal) with CLEAR Table 1's columns, per seed:
    {column: (mean rho, sd, methods)}; Forget both with CLEAR's own formula and with the forget probability."""
    out = {}
    for col, key, idx in (("forget (CLEAR's formula)", CLEAR_FORGET, 2), ("forget (probability)", FORGET, 2),
                          ("retain", RETAIN, 1), ("real", REAL, 0)):
        rhos, n = [], 0
        for values in per_seed.values():
            rho, n = spearman(method_values(values, key, "", "multimodal", pct),
                              {m: v[idx] for m, v in CLEAR_TABLE1.items()})
            rhos.append(rho)
        good = [r for r in rhos if not math.isnan(r)]
        out[col] = (statistics.fmean(good) if good else math.nan,
                    statistics.stdev(good) if len(good) > 1 else math.nan, n)
    return out


def ranking_agreement(per_seed: Mapping[int, Values], key: str, lower_is_better: bool = True,
                      variant: str | None = None, modality: str = "multimodal", pct: str = "10") -> tuple[float, int]:
    """Kendall's W of the seeds' rankings of the unlearning runs by ``key`` (all variants unless one is named),
    over the runs every seed has; returns (W, number of runs ranked)."""
    rows = []
    variants = [variant] if variant is not None else None
    names = None
    for values in per_seed.values():
        runs = {r: v[key] for r, v in values.items()
                if key in v and not r.startswith(("target", "gold", "base")) and f"-{modality}-{pct}" in r
                and (variants is None or _plain(method_of(r, variant or "", modality, pct)))}
        names = set(runs) if names is None else names & set(runs)
        rows.append(runs)
    ordered = sorted(names or ())
    sign = 1.0 if lower_is_better else -1.0
    return kendalls_w([[sign * r[n] for n in ordered] for r in rows]), len(ordered)


# ------------------------------------------------------------------------------ a study directory -> markdown
HEADLINE, RANK_KEY = "forget/all/forget_quality", "forget/all/forget_quality_d"


def study_values(out) -> dict[int, dict[str, dict[str, float]]]:
    """``{seed: {run: aggregates}}`` of a ``clearbench run`` directory: ``OUT/seed-<s>/results/*.json`` for a
    replicate study, else ``OUT/results/*.json`` (seed from its config.json, 0 when absent)."""
    import json
    from pathlib import Path

    out = Path(out)
    dirs = {int(p.name.removeprefix("seed-")): p for p in out.glob("seed-*") if p.name[5:].isdigit()}
    if not dirs:
        cfg = out / "config.json"
        seed = json.loads(cfg.read_text()).get("world", {}).get("seed", 0) if cfg.exists() else 0
        dirs = {int(seed): out}
    per_seed = {}
    for seed, d in sorted(dirs.items()):
        files = sorted((d / "results").glob("*.json"))
        runs = {f.stem: json.loads(f.read_text())["aggregates"]["metrics"] for f in files
                if not f.stem.endswith((".verified", ".attacks"))}
        if runs:
            per_seed[seed] = runs
    if not per_seed:
        raise FileNotFoundError(f"{out}: no results/*.json (nor seed-*/results/*.json): not a clearbench run directory")
    return per_seed


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def headline_table(values: Values, pct: str = "10") -> list[str]:
    """Markdown: every run of one seed sorted by the ranking statistic (D vs the gold, lower = closer)."""
    rows = sorted(((r, v) for r, v in values.items() if r.endswith(f"-{pct}") and RANK_KEY in v),
                  key=lambda rv: (rv[1][RANK_KEY], rv[0]))
    lines = ["| run | KS D vs gold | forget quality (KS p) | log10 p | n | forget prob | retain | real |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run, v in rows:
        lines.append(f"| {run} | {_fmt(v[RANK_KEY])} | {_fmt(v.get(HEADLINE), '.2g')} | "
                     f"{_fmt(v.get(HEADLINE + '_log10p'), '.1f')} | {_fmt(v.get(HEADLINE + '_n'), '.0f')} | "
                     f"{_fmt(v.get(FORGET))} | {_fmt(v.get(RETAIN))} | {_fmt(v.get(REAL))} |")
    return lines


def distinct_headlines(values: Values, pct: str = "10") -> tuple[int, int]:
    """(distinct headline values among the unlearning runs, how many equal the target's)."""
    target = values.get(f"target-{pct}", {}).get(HEADLINE)
    runs = [v[HEADLINE] for r, v in values.items() if HEADLINE in v and r.endswith(f"-{pct}")
            and not r.startswith(("target", "gold", "base"))]
    return len(set(runs)), sum(x == target for x in runs)


def claims_markdown(per_seed: Mapping[int, Values], pct: str = "10") -> str:
    """The claims, CLEAR correlations, ranking agreement and per-seed headline tables of a study, as markdown."""
    lines = [f"# CLEAR's claims on this study (forget{pct}, seeds {sorted(per_seed)})", "",
             "| claim | held in | evidence (mean ± sd over seeds) |", "|---|---:|---|"]
    for v in evaluate_claims(per_seed, pct):
        lines.append(f"| {v.claim} | {v.held}/{v.seeds} | {v.evidence} |")
    lines += ["", "Spearman's rho of the full-parameter multimodal runs with CLEAR Table 1 (LLaVA-1.5-7B):", "",
              "| column | rho (mean) | sd | methods |", "|---|---:|---:|---:|"]
    for col, (rho, sd, n) in clear_correlations(per_seed, pct).items():
        lines.append(f"| {col} | {_fmt(rho, '.2f')} | {_fmt(sd, '.2f')} | {n} |")
    lines += ["", f"Ranking agreement over seeds (Kendall's W of the rankings by `{RANK_KEY}`):", ""]
    if len(per_seed) < 2:
        lines.append("- one seed only: W needs at least two.")
    else:
        variants = sorted({r.split("-multimodal")[0].partition("-")[2] for vals in per_seed.values() for r in vals
                           if f"-multimodal-{pct}" in r and not r.startswith(("target", "gold", "base"))})
        for variant in [None, *variants]:
            label = 'all variants' if variant is None else 'variant ' + repr(variant)
            try:
                w, n = ranking_agreement(per_seed, RANK_KEY, True, variant, "multimodal", pct)
                lines.append(f"- {label}: W = {w:.3f} over {n} runs")
            except ValueError as exc:  # fewer than 2 runs every seed has
                lines.append(f"- {label}: not defined ({exc})")
    for seed, values in per_seed.items():
        distinct, tied = distinct_headlines(values, pct)
        lines += ["", f"## Seed {seed}: runs by KS D vs the gold ({distinct} distinct headline values, "
                  f"{tied} tied with the target)", "", *headline_table(values, pct)]
    return "\n".join(lines) + "\n"
