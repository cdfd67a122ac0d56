"""Versioned result files: build, write (atomic), load, validate, recompute.

A result file is self-contained: provenance, the metric options, the aggregates, every
per-example output and the gold model's forget/holdout examples that forget quality and
PrivLeak were computed against, so any reader can recompute every aggregate
(``recompute``) and check it (``validate``) without running a model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import clearbench
from clearbench.cost import check_costs
from clearbench.provenance import write_json_atomic
from eval.aggregate import GoldExamples, MetricOptions, MissingGoldError, aggregate, gold_command
from eval.example import ExampleOutput, split_of
from eval.metrics import metric_versions, outputs
from eval.metrics.spec import Output

SCHEMA_VERSION = 1
REQUIRED_PROVENANCE: tuple[str, ...] = (
    "config",             # the fully resolved evaluation config (dict)
    "config_hash",        # sha256 of that config
    "world_fingerprint",  # manifest.json "fingerprint" of the world evaluated on
    "forget_split",       # forget01 / forget05 / forget10
    "model_fingerprint",  # hash of the evaluated weights
    "parents",            # list: the chain of runs this model derives from (target, base, ...)
    "clearbench_version",
    "library_versions",   # {"torch": ..., "transformers": ..., "peft": ..., ...}
    "seed",
    "device",
    "metric_versions",    # {family: VERSION} from eval.metrics
)
REQUIRED_LIBRARIES: tuple[str, ...] = ("torch", "transformers", "peft")
# stored vs recomputed aggregates: relative 1e-9; the absolute floor is far below 1e-9 so that
# tiny forget-quality p-values (often 1e-10 and less) cannot be altered unnoticed.
TOLERANCE = 1e-9
ABS_FLOOR = 1e-15


def ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def _gold_examples(gold: Any) -> tuple[list[ExampleOutput] | None, str | None]:
    """Gold examples and fingerprint from a loaded gold result dict or a list of examples."""
    if gold is None:
        return None, None
    if isinstance(gold, dict):
        return [ExampleOutput.from_dict(d) for d in gold["examples"]], gold.get("provenance", {}).get("model_fingerprint")
    return list(gold), None


def build_result(
    examples: Sequence[ExampleOutput],
    aggregates: dict[str, Any],
    provenance: dict[str, Any],
    *,
    gold: dict[str, Any] | Sequence[ExampleOutput] | None = None,
    expected_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Assemble the result dict. ``gold`` is the gold result (or its examples) used for
    ``aggregates``; ``expected_ids`` are the ids the runner was asked to score (default: the
    examples' ids), so a later reader can tell a missing example from a world change."""
    prov = dict(provenance)
    prov.setdefault("clearbench_version", clearbench.__version__)
    prov.setdefault("metric_versions", metric_versions())
    gold_exs, gold_fp = _gold_examples(gold)
    embedded = None
    if gold_exs is not None:
        keep = [g for g in gold_exs if split_of(g.split) in ("forget", "holdout")]
        embedded = {"model_fingerprint": gold_fp, "examples": [g.to_dict() for g in keep]}
    ids = sorted(set(expected_ids if expected_ids is not None else (ex.id for ex in examples)))
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": prov,
        "aggregates": aggregates,
        "expected": {"n_examples": len(ids), "ids_sha256": ids_digest(ids)},
        "gold": embedded,
        "examples": [ex.to_dict() for ex in examples],
    }


def write_result(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Validate, then write atomically (temp file in the same directory, then rename)."""
    problems = validate(result)
    if problems:
        raise ValueError(f"refusing to write an invalid result to {path}:\n  " + "\n  ".join(problems))
    return write_json_atomic(path, result, compact=True)


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result file at {path}; produce it with `clearbench evaluate ...`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_gold_result(path: str | os.PathLike, forget_split: str) -> dict[str, Any]:
    """Load the gold model's result; a missing file names the command that produces it."""
    if not Path(path).is_file():
        raise MissingGoldError(
            f"no gold result at {path}: forget quality for {forget_split} is measured against the "
            f"gold (retain-only) model; produce it with `{gold_command(forget_split)}`"
        )
    return load_result(path)


def examples_of(result: dict[str, Any]) -> list[ExampleOutput]:
    return [ExampleOutput.from_dict(d) for d in result["examples"]]


def gold_examples_of(gold_result: dict[str, Any]) -> GoldExamples:
    """A gold result's examples parsed once, for recomputing many results against it (``recompute``'s and
    ``validate``'s ``gold``): their check and per-example values are computed once and kept."""
    return GoldExamples([ExampleOutput.from_dict(d) for d in gold_result["examples"]], source=gold_result)


@dataclasses.dataclass(frozen=True)
class Recomputed:
    """The aggregates that validation recomputed for ``result`` against ``gold`` (the gold result; None: the
    copy embedded in the result), kept so that a reader that shows them (the leaderboard's rows) need not
    recompute them again."""

    result: Any
    gold: Any
    aggregates: dict[str, Any]

    def of(self, result: Any, gold: Any) -> dict[str, Any] | None:
        """The aggregates when they were recomputed for this very result and gold object, else None."""
        return self.aggregates if result is self.result and gold is self.gold else None


def recompute(result: dict[str, Any], gold_result: dict[str, Any] | None = None,
              gold: GoldExamples | None = None) -> dict[str, Any]:
    """Aggregates recomputed from the stored per-example values, with the stored options.
    Gold examples come from ``gold_result`` when given, else from the copy embedded in ``result``;
    ``gold``: ``gold_examples_of(gold_result)``, kept by a caller that recomputes many results against it."""
    return _recompute(examples_of(result), result, gold_result, gold)


def _recompute(examples: list[ExampleOutput], result: dict[str, Any], gold_result: dict[str, Any] | None,
               gold: GoldExamples | None) -> dict[str, Any]:
    options = MetricOptions.from_dict(result["aggregates"]["options"])
    if gold_result is not None:
        if gold is None or gold.source is not gold_result:
            gold = gold_examples_of(gold_result)
    elif result.get("gold"):
        gold = [ExampleOutput.from_dict(d) for d in result["gold"]["examples"]]
    else:
        gold = None
    return aggregate(examples, gold, options)


def _bound_problem(k: str, v: Any, known: dict[str, Output]) -> str | None:
    """Bounds of the key's metric, as its spec declares them (eval.metrics.outputs)."""
    metric = k.rsplit("/", 1)[-1]
    if metric not in known:
        return f"aggregate {k}: unknown metric {metric!r}"
    return known[metric].problem(k, v)


def validate(result: Any, gold_result: dict[str, Any] | None = None, gold: GoldExamples | None = None) -> list[str]:
    """Every problem with a result (empty list = valid): schema, provenance, bounds,
    duplicated or missing examples, and aggregates that differ from recomputation. ``gold`` as ``recompute``'s."""
    return validated(result, gold_result, gold)[0]


def validated(result: Any, gold_result: dict[str, Any] | None = None,
              gold: GoldExamples | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """``validate``'s problems and the aggregates it recomputed to compare them with the stored ones (None when
    it did not get that far), so that a reader that shows them (the leaderboard) need not recompute them again."""
    if not isinstance(result, dict):
        return ["result is not a JSON object"], None
    problems: list[str] = []
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        problems.append(f"schema_version is {version!r}, this clearbench reads {SCHEMA_VERSION}")
    prov = result.get("provenance") or {}
    problems += [f"provenance is missing {name!r}" for name in REQUIRED_PROVENANCE if name not in prov]
    libs = prov.get("library_versions") or {}
    problems += [f"provenance.library_versions is missing {lib!r}" for lib in REQUIRED_LIBRARIES if lib not in libs]
    problems += check_costs(prov)
    if "metric_versions" in prov and prov["metric_versions"] != metric_versions():
        problems.append(f"metric_versions {prov['metric_versions']} differ from this clearbench's "
                        f"{metric_versions()}; re-aggregate it with this clearbench (clearbench evaluate recomputes "
                        "from its cache) or check it with the version that wrote it")
    try:
        examples = examples_of(result)
    except (KeyError, TypeError, ValueError) as e:
        return problems + [f"examples cannot be read: {e}"], None
    problems += [p for ex in examples for p in ex.problems()]
    ids = [ex.id for ex in examples]
    dups = sorted(i for i, c in Counter(ids).items() if c > 1)
    problems += [f"example {i!r} is duplicated" for i in dups]
    expected = result.get("expected") or {}
    if expected.get("n_examples") != len(set(ids)) or expected.get("ids_sha256") != ids_digest(list(set(ids))):
        problems.append(f"examples do not match the expected ids ({len(set(ids))} unique examples, "
                        f"{expected.get('n_examples')} expected): missing or extra examples")
    aggs = result.get("aggregates") or {}
    stored = aggs.get("metrics")
    if not isinstance(stored, dict):
        return problems + ["aggregates.metrics is missing"], None
    known = outputs()
    problems += [p for k, v in stored.items() if (p := _bound_problem(k, v, known))]
    if gold_result is not None:
        problems += _gold_problems(result, gold_result)
    if dups or problems:
        return problems, None  # recomputation of an inconsistent result would only repeat the errors
    try:
        recomputed = _recompute(examples, result, gold_result, gold)
    except (ValueError, KeyError, ZeroDivisionError, MissingGoldError) as e:
        return problems + [f"aggregates cannot be recomputed: {e}"], None
    fresh = recomputed["metrics"]
    problems += _structure_problems(aggs, recomputed)
    for k in sorted(set(stored) | set(fresh)):
        if k not in fresh:
            problems.append(f"aggregate {k} is stored but not produced by recomputation")
        elif k not in stored:
            problems.append(f"aggregate {k} is missing (recomputation gives {fresh[k]})")
        elif not math.isclose(stored[k], fresh[k], rel_tol=TOLERANCE, abs_tol=ABS_FLOOR):
            problems.append(f"aggregate {k} = {stored[k]} but recomputation gives {fresh[k]}")
    return problems, recomputed


# the parts of ``aggregates`` besides the numbers: the report reads them, so they are recomputed too
RECOMPUTED_PARTS: tuple[str, ...] = ("cells", "components", "warnings")


def _structure_problems(stored: dict[str, Any], recomputed: dict[str, Any]) -> list[str]:
    """``aggregates.cells`` / ``components`` / ``warnings`` must be what recomputation gives (as read from JSON)."""
    fresh = json.loads(json.dumps({k: recomputed[k] for k in RECOMPUTED_PARTS}))
    return [f"aggregates.{k} differs from recomputation (stored {_short(stored.get(k))}, recomputed {_short(fresh[k])})"
            for k in RECOMPUTED_PARTS if stored.get(k) != fresh[k]]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _gold_problems(result: dict[str, Any], gold_result: dict[str, Any]) -> list[str]:
    """The gold copy embedded in ``result`` must be the gold result's own examples."""
    embedded = result.get("gold")
    if not embedded:
        return ["result embeds no gold examples but a gold result was given"]
    out = []
    fp = gold_result.get("provenance", {}).get("model_fingerprint")
    if embedded.get("model_fingerprint") != fp:
        out.append(f"embedded gold model_fingerprint {embedded.get('model_fingerprint')!r} != gold result's {fp!r}")
    theirs = {d["id"]: d for d in gold_result["examples"]}
    changed = [d["id"] for d in embedded["examples"] if theirs.get(d["id"]) != d]
    if changed:
        out.append(f"{len(changed)} embedded gold examples differ from the gold result (e.g. {changed[:3]})")
    return out
