"""Attack result files: build, aggregate, write (atomic), load, validate, recompute; the worst case over attacks.

An attack result holds the attacked model's per-example outputs (``eval.example.ExampleOutput``) for every
setting of one attack (``relearn``'s forget_n10, ``quantize``'s int4_g128, ...), the same model's outputs on
every probe record without attack (``standard``: the evaluation's forget probes) and, with a gold result, the
gold model's; every aggregate is recomputed from them (``recompute``) and checked (``validate``).

Keys are ``"{setting}/{modality}/{metric}"`` with metric in ``METRICS`` (higher = more forget knowledge in
all four; the truth ratio is its keep form, mean max(0, 1 - 1/TR), as on retain), plus ``_before`` (the
unattacked model on the same records) and ``_delta`` (after - before: the recovery), ``n``, and the
``standard``, ``gold``, ``worst_case`` and ``max_delta`` rows (docs/attacks.md).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import clearbench
from clearbench.cost import check_costs
from clearbench.provenance import write_json_atomic
from eval.aggregate import MetricOptions, per_example_values
from eval.example import ExampleOutput
from eval.metrics import metric_versions, truth_ratio

SCHEMA_VERSION = 1
KIND = "clearbench-attack"
METRICS: tuple[str, ...] = ("rouge_l", "probability", "naming_acc", "truth_ratio")
POOLED = "all"
MODALITY_ORDER: tuple[str, ...] = ("text", "image", "joint", POOLED)
REQUIRED_PROVENANCE: tuple[str, ...] = ("config", "config_hash", "world_fingerprint", "forget_split",
                                        "model_fingerprint", "clearbench_version", "library_versions",
                                        "metric_versions", "seed", "device")
TOLERANCE, ABS_FLOOR = 1e-9, 1e-15  # as eval.results: stored vs recomputed aggregates


def ids_digest(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------- per example
def example_values(examples: Sequence[ExampleOutput]) -> dict[str, dict[str, float]]:
    """{id: {metric: value}} for ``METRICS``, from the evaluation's per-example values (naming_acc on naming
    records only); the truth ratio in its keep form, higher = the truth preferred."""
    out = per_example_values(examples, MetricOptions(), METRICS)
    for row in out.values():  # the per-example truth ratio is TR itself
        row["truth_ratio"] = truth_ratio.keep_stat(np.array([row["truth_ratio"]]))
    return out


def cell_means(values: dict[str, dict[str, float]], modality: dict[str, str], ids: Iterable[str],
               prefix: str) -> dict[str, float]:
    """``{prefix}/{m}/{metric}`` means over ``ids`` per modality and pooled, with ``{prefix}/{m}/n``."""
    ids = sorted(ids)
    out: dict[str, float] = {}
    for m in MODALITY_ORDER:
        sub = [i for i in ids if m in (POOLED, modality[i])]
        if not sub:
            continue
        out[f"{prefix}/{m}/n"] = float(len(sub))
        for metric in METRICS:
            col = [values[i][metric] for i in sub if metric in values[i]]
            if col:
                out[f"{prefix}/{m}/{metric}"] = float(np.mean(col))
    return out


# ------------------------------------------------------------------------------------- aggregation
def _examples(block: dict[str, Any] | None) -> list[ExampleOutput]:
    return [ExampleOutput.from_dict(d) for d in (block or {}).get("examples", [])]


def aggregate(result: dict[str, Any]) -> dict[str, Any]:
    """Every aggregate of an attack result from its per-example values (see the module docstring)."""
    standard = _examples(result["standard"])
    std_vals = example_values(standard)
    modality = {ex.id: ex.modality for ex in standard}
    metrics = cell_means(std_vals, modality, std_vals, "standard")
    gold = _examples(result.get("gold"))
    if gold:
        gold_vals = example_values(gold)
        metrics |= cell_means(gold_vals, {ex.id: ex.modality for ex in gold}, set(gold_vals) & set(std_vals), "gold")
    worst = {i: dict(v) for i, v in std_vals.items()}  # per example: the most recovered value seen
    curves: dict[str, list[dict[str, Any]]] = {}
    best: dict[str, tuple[float, str]] = {}  # cell -> (largest recovery, its setting)
    for setting in result["settings"]:
        if setting.get("skipped"):
            continue
        vals = example_values(_examples(setting))
        metrics |= _setting_metrics(setting, vals, std_vals, modality, best)
        if not setting.get("in_sample"):
            for i, row in vals.items():
                worst[i] = {metric: max(worst[i][metric], v) for metric, v in row.items()}
        if (setting.get("params") or {}).get("curve_ids"):
            curves[setting["name"]] = _curve(setting, vals, std_vals, modality)
    metrics |= cell_means(worst, modality, worst, "worst_case")
    metrics |= {f"max_delta/{cell}": d for cell, (d, _) in best.items()}
    return {"metrics": metrics, "curves": curves,
            "max_delta_setting": {cell: name for cell, (_, name) in sorted(best.items())}}


def _setting_metrics(setting: dict[str, Any], vals: dict[str, dict[str, float]], std_vals: dict[str, dict[str, float]],
                     modality: dict[str, str], best: dict[str, tuple[float, str]]) -> dict[str, float]:
    """A setting's means after the attack, before it (the standard values of the same records) and their
    difference; records the setting in ``best`` where its recovery is the largest so far (out-of-sample only)."""
    name = setting["name"]
    after = cell_means(vals, modality, vals, name)
    out = dict(after)
    for k, v in cell_means(std_vals, modality, vals, name).items():
        if k.endswith("/n"):
            continue
        out[f"{k}_before"], out[f"{k}_delta"] = v, after[k] - v
        cell = k.split("/", 1)[1]
        if not setting.get("in_sample") and (cell not in best or after[k] - v > best[cell][0]):
            best[cell] = (after[k] - v, name)
    return out


def _curve(setting: dict[str, Any], vals: dict[str, dict[str, float]], std_vals: dict[str, dict[str, float]],
           modality: dict[str, str]) -> list[dict[str, Any]]:
    """The recovery curve on the setting's curve probes: step 0 (the standard values), every stored point, and
    the final step (the setting's own values of those records)."""
    ids = setting["params"]["curve_ids"]
    points = [(0, std_vals)] + [(p["step"], example_values(_examples(p))) for p in setting["curve"]]
    points.append((setting["params"]["steps"], vals))
    return [{"step": step, "metrics": _strip(cell_means(v, modality, ids, "curve"))} for step, v in points]


def _strip(cells: dict[str, float]) -> dict[str, float]:
    return {k.split("/", 1)[1]: v for k, v in cells.items()}


def worst_case(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The worst case over the standard probes and every attack of several results of ONE model (one world,
    forget split and fingerprint): per forget example the most recovered value any of them saw (in-sample
    relearning excluded), averaged -> ``worst_case/{m}/{metric}``."""
    if not results:
        raise ValueError("worst_case needs at least one attack result")
    keys = {(r["provenance"]["model_fingerprint"], r["provenance"]["world_fingerprint"],
             r["provenance"]["forget_split"]) for r in results}
    if len(keys) != 1:
        raise ValueError(f"attack results of different models, worlds or forget splits: {sorted(keys)}; "
                         f"the worst case is per model")
    worst: dict[str, dict[str, float]] = {}
    modality: dict[str, str] = {}
    for r in results:
        blocks = [r["standard"]] + [s for s in r["settings"] if not s.get("skipped") and not s.get("in_sample")]
        for block in blocks:
            exs = _examples(block)
            modality |= {ex.id: ex.modality for ex in exs}
            for i, row in example_values(exs).items():
                seen = worst.setdefault(i, {})
                for metric, v in row.items():
                    seen[metric] = max(seen.get(metric, -math.inf), v)
    return cell_means(worst, modality, worst, "worst_case")


# ----------------------------------------------------------------------------------- the result file
def build_result(attack: str, version: int, provenance: dict[str, Any], options: dict[str, Any],
                 standard: Sequence[ExampleOutput], settings: Sequence[dict[str, Any]],
                 gold: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result dict: ``settings`` are ``Setting.to_dict()``s; ``gold`` is {model_fingerprint, examples}."""
    prov = dict(provenance)
    prov.setdefault("clearbench_version", clearbench.__version__)
    prov.setdefault("metric_versions", metric_versions())
    result = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "attack": attack, "attack_version": version,
        "provenance": prov, "options": options,
        "standard": {"examples": [ex.to_dict() for ex in standard]},
        "gold": gold, "settings": list(settings),
    }
    result["expected"] = expected_block(result)
    result["aggregates"] = aggregate(result)
    return result


def expected_block(result: dict[str, Any]) -> dict[str, Any]:
    """Per block (standard, each setting, each curve point), the number and digest of its example ids."""
    def digest(block):
        ids = [d["id"] for d in block.get("examples", [])]
        return {"n_examples": len(ids), "ids_sha256": ids_digest(ids)}

    out = {"standard": digest(result["standard"])}
    for s in result["settings"]:
        out[s["name"]] = digest(s)
        for point in s.get("curve", []):
            out[f"{s['name']}@{point['step']}"] = digest(point)
    return out


def write_result(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Validate, then write atomically."""
    problems = validate(result)
    if problems:
        raise ValueError(f"refusing to write an invalid attack result to {path}:\n  " + "\n  ".join(problems))
    return write_json_atomic(path, result, compact=True)


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no attack result at {path}; produce it with `clearbench attack ...`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def recompute(result: dict[str, Any]) -> dict[str, Any]:
    return aggregate(result)


def validate(result: Any, known: dict[str, int] | None = None) -> list[str]:
    """Every problem with an attack result (empty = valid): schema, provenance, the attack and its version
    (``known``: {attack: VERSION}), unreadable, inconsistent, duplicated, foreign or missing examples, and
    aggregates that differ from recomputation."""
    if not isinstance(result, dict):
        return ["attack result is not a JSON object"]
    problems = _header_problems(result, known)
    try:
        blocks = {"standard": _examples(result["standard"])}
        for s in result["settings"]:
            blocks[s["name"]] = _examples(s)
            blocks |= {f"{s['name']}@{p['step']}": _examples(p) for p in s.get("curve", [])}
    except (KeyError, TypeError, ValueError) as e:
        return problems + [f"examples cannot be read: {e}"]
    standard_ids = {ex.id for ex in blocks["standard"]}
    for name, exs in blocks.items():
        problems += [p for ex in exs for p in ex.problems()]
        problems += [f"{name}: example {i!r} is duplicated" for i, c in Counter(ex.id for ex in exs).items() if c > 1]
        foreign = sorted({ex.id for ex in exs} - standard_ids)
        if foreign:
            problems.append(f"{name}: {len(foreign)} examples are not standard probes (e.g. {foreign[:3]})")
    if result.get("expected") != expected_block(result):
        problems.append("examples do not match the expected ids of their block: missing or extra examples")
    if problems:
        return problems  # recomputing an inconsistent result would only repeat the errors
    try:
        fresh = aggregate(result)
    except (ValueError, KeyError, ZeroDivisionError) as e:
        return [f"aggregates cannot be recomputed: {e}"]
    return _compare(result.get("aggregates") or {}, fresh)


def _header_problems(result: dict[str, Any], known: dict[str, int] | None) -> list[str]:
    problems = []
    if result.get("schema_version") != SCHEMA_VERSION or result.get("kind") != KIND:
        problems.append(f"not an attack result of schema {SCHEMA_VERSION} (kind {result.get('kind')!r}, "
                        f"schema_version {result.get('schema_version')!r})")
    prov = result.get("provenance") or {}
    problems += [f"provenance is missing {name!r}" for name in REQUIRED_PROVENANCE if name not in prov]
    problems += check_costs(prov)
    if "metric_versions" in prov and prov["metric_versions"] != metric_versions():
        problems.append(f"metric_versions {prov['metric_versions']} differ from this clearbench's {metric_versions()}")
    attack = result.get("attack")
    if known is not None and known.get(attack) != result.get("attack_version"):
        problems.append(f"attack {attack!r} version {result.get('attack_version')!r}: this clearbench has "
                        f"{known.get(attack)!r}")
    return problems


def _compare(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    problems = []
    a, b = stored.get("metrics") or {}, fresh["metrics"]
    for k in sorted(set(a) | set(b)):
        if k not in b:
            problems.append(f"aggregate {k} is stored but not produced by recomputation")
        elif k not in a:
            problems.append(f"aggregate {k} is missing (recomputation gives {b[k]})")
        elif not isinstance(a[k], (int, float)) or not math.isclose(a[k], b[k], rel_tol=TOLERANCE, abs_tol=ABS_FLOOR):
            problems.append(f"aggregate {k} = {a[k]} but recomputation gives {b[k]}")
    if not _close_curves(stored.get("curves"), fresh["curves"]):
        problems.append("aggregates.curves differ from recomputation")
    if stored.get("max_delta_setting") != fresh["max_delta_setting"]:
        problems.append("aggregates.max_delta_setting differs from recomputation")
    return problems


def _close_curves(stored: Any, fresh: dict[str, list[dict[str, Any]]]) -> bool:
    try:
        if set(stored) != set(fresh):
            return False
        for name, points in fresh.items():
            if [p["step"] for p in stored[name]] != [p["step"] for p in points]:
                return False
            for p, q in zip(stored[name], points):
                if set(p["metrics"]) != set(q["metrics"]) or not all(
                        math.isclose(p["metrics"][k], v, rel_tol=TOLERANCE, abs_tol=ABS_FLOOR)
                        for k, v in q["metrics"].items()):
                    return False
    except (TypeError, KeyError, AttributeError):
        return False
    return True
