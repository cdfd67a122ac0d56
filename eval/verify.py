"""Submission checking: is a result file fit for the leaderboard?

``check_file`` / ``check_result`` collect every reason to reject one file (empty = accepted):
``eval.results.validate`` (schema, provenance, bounds, duplicated/missing examples, aggregates vs
per-example values, embedded gold copy vs the leaderboard's gold), the leaderboard's own rules (same
world fingerprint, forget split and metric options as the leaderboard's ``Reference``) and a readable
run record (``run_info``). docs/submitting.md lists every check.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from eval.aggregate import MetricOptions
from eval.results import load_gold_result, validate

# run.forget_modality -> table; a method without one unlearned every modality (CLEAR's "both")
SETTING_OF = {"text": "text", "image": "visual", "visual": "visual", "joint": "multimodal",
              "multimodal": "multimodal", "both": "multimodal", "all": "multimodal"}


@dataclasses.dataclass
class Reference:
    """What every row must share: the leaderboard's world, forget split and gold result."""

    world_fingerprint: str | None = None
    forget_split: str | None = None
    gold: dict[str, Any] | None = None
    gold_path: str | None = None
    source: str = ""  # where the world and split came from (shown in the report)

    @property
    def gold_fingerprint(self) -> str | None:
        return (self.gold or {}).get("provenance", {}).get("model_fingerprint")


@dataclasses.dataclass
class Checked:
    path: str
    result: dict[str, Any] | None
    reasons: list[str]


def make_reference(gold: str | Path | None = None, world_fingerprint: str | None = None,
                   forget_split: str | None = None) -> Reference:
    """The leaderboard's reference: the gold result's world and split, or the flags. A gold
    result that is invalid or disagrees with the flags is a loud error (it is the yardstick)."""
    if gold is None:
        return Reference(world_fingerprint, forget_split, source="flags" if world_fingerprint or forget_split else "")
    g = load_gold_result(gold, forget_split or "forgetXX")
    problems = validate(_as_own_gold(g, g), g)
    if problems:
        raise ValueError(f"gold result {gold} is invalid:\n  " + "\n  ".join(problems))
    prov = g["provenance"]
    for flag, name, value in (("--world-fingerprint", "world_fingerprint", world_fingerprint),
                              ("--forget", "forget_split", forget_split)):
        if value is not None and prov.get(name) != value:
            raise ValueError(f"gold result {gold} has {name} {prov.get(name)!r} but {flag} says {value!r}; "
                             f"pass the gold result of that world and split, or drop {flag}")
    return Reference(prov["world_fingerprint"], prov["forget_split"], g, str(gold), source=f"gold result {gold}")


def _as_own_gold(result: dict[str, Any], gold: dict[str, Any] | None) -> dict[str, Any]:
    """The gold model's own result embeds its examples without a fingerprint (``--gold self``);
    fill it in so that the gold check applies to it like to any other row."""
    if not gold or not isinstance(result.get("gold"), dict) or result["gold"].get("model_fingerprint") is not None:
        return result
    if (result.get("provenance") or {}).get("model_fingerprint") != gold["provenance"].get("model_fingerprint"):
        return result
    return {**result, "gold": {**result["gold"], "model_fingerprint": gold["provenance"]["model_fingerprint"]}}


def check_file(path: str | Path, ref: Reference) -> Checked:
    """Every reason to reject one file (empty = accepted)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Checked(str(path), None, [f"cannot be read as a JSON result file: {e}"])
    return Checked(str(path), result, check_result(result, ref))


def check_result(result: Any, ref: Reference) -> list[str]:
    if not isinstance(result, dict):
        return ["result is not a JSON object"]
    try:
        reasons = validate(_as_own_gold(result, ref.gold), ref.gold)
    except Exception as e:  # a malformed file must be rejected, not crash the leaderboard
        reasons = [f"result cannot be validated: {type(e).__name__}: {e}"]
    prov = result.get("provenance") if isinstance(result.get("provenance"), dict) else {}
    reasons += _options_problems(result, ref)
    for name, want in (("world_fingerprint", ref.world_fingerprint), ("forget_split", ref.forget_split)):
        if want is not None and name in prov and prov[name] != want:
            reasons.append(f"{name} {prov[name]!r} differs from the leaderboard's {want!r} ({ref.source})")
    try:
        run_info(prov)
    except ValueError as e:
        reasons.append(str(e))
    return reasons


# Metric options that change the numbers: every row of one leaderboard must use the gold result's.
SCORING_OPTIONS = ("tr_mode", "tr_reference", "clear_include_rouge", "mink_k", "fq_aggregation")


def _options_problems(result: dict[str, Any], ref: Reference) -> list[str]:
    """A result scored with other metric options (e.g. the truth ratio against the answer instead of
    the paraphrase) is not comparable with the leaderboard's rows, even when it is internally valid."""
    if ref.gold is None:
        return []
    try:
        mine = MetricOptions.from_dict(result["aggregates"]["options"]).to_dict()
        want = MetricOptions.from_dict(ref.gold["aggregates"]["options"]).to_dict()
    except (KeyError, TypeError, ValueError):
        return []  # unreadable options are reported by validate()
    return [f"metric option {k}={mine[k]!r} differs from the leaderboard's {want[k]!r} ({ref.source}); "
            f"re-score with the leaderboard's options (clearbench evaluate recomputes from its cache)"
            for k in SCORING_OPTIONS if mine[k] != want[k]]


def resolve_reference(ref: Reference, results: Sequence[dict[str, Any] | None]) -> Reference:
    """Without a gold result or flags, the leaderboard's world and split are those of most files."""
    out = dataclasses.replace(ref)
    provs = [r["provenance"] for r in results if isinstance(r, dict) and isinstance(r.get("provenance"), dict)]
    filled = []
    for name in ("world_fingerprint", "forget_split"):
        values = Counter(p.get(name) for p in provs if p.get(name) is not None)
        if getattr(out, name) is None and values:
            setattr(out, name, values.most_common(1)[0][0])
            filled.append(name)
    if filled:
        majority = f"{' and '.join(filled)} of the majority of the submitted files"
        out.source = f"{out.source}; {majority}" if out.source else majority
    return out


def check_files(paths: Sequence[str | Path], ref: Reference) -> tuple[Reference, list[Checked]]:
    checked = [check_file(p, ref) for p in paths]
    if ref.gold is None and (ref.world_fingerprint is None or ref.forget_split is None):
        ref = resolve_reference(ref, [c.result for c in checked])
        checked = [Checked(c.path, c.result, c.reasons if c.result is None else check_result(c.result, ref))
                   for c in checked]
    return ref, checked


def run_info(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The unlearning run behind a result: ``provenance["run"]`` = {method, forget_modality,
    l1_lambda, lora}, else ``provenance["config"]["unlearn"]``, else the nearest parent's record
    (``parents[0]``, itself or its "run"/"unlearn" entry). None for models not unlearned by a
    method (base, target, gold). An unknown forget_modality is an error."""
    parents = provenance.get("parents") or [None]
    first = parents[0] if isinstance(parents, list) and parents else None
    config = provenance.get("config") if isinstance(provenance.get("config"), dict) else {}
    candidates = [provenance.get("run"), config.get("unlearn"), first]
    if isinstance(first, dict):
        candidates += [first.get("run"), first.get("unlearn")]
    for cand in candidates:
        if isinstance(cand, dict) and cand.get("method"):
            fm = cand.get("forget_modality")
            if isinstance(fm, (list, tuple)):
                fm = fm[0] if len(set(fm)) == 1 else "multimodal"
            if fm is not None and fm not in SETTING_OF:
                raise ValueError(f"run.forget_modality {fm!r} is not one of {sorted(SETTING_OF)}")
            return {**cand, "forget_modality": fm}
    return None
