"""Submission checking: is a result file fit for the leaderboard?

``check_file`` / ``check_result`` collect every reason to reject one file (empty = accepted):
``eval.results.validate`` (schema, provenance, bounds, duplicated/missing examples, every aggregate vs
its recomputation, embedded gold copy vs the leaderboard's gold), the leaderboard's own rules (same world,
forget split and metric options as the ``Reference``), the examples against the gold result's (same ids
and texts, values not copied from it), greedy consistency, the stage record beside the model, with a
world the ids and texts the world gives (``eval.rescore``), and a re-scoring sidecar (``eval.rescore``
writes it). docs/submitting.md has the table of what each level detects.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from clearbench.provenance import read_run
from eval.aggregate import GoldExamples, MetricOptions
from eval.results import Recomputed, gold_examples_of, load_gold_result, validated

MAX_RESULT_BYTES = 64 * 2**20  # a capped tiny-preset study's result is ~18 MB (about 7 KB per example)
MAX_PROVENANCE_BYTES = 2**20   # provenance is shown in the report; it holds configs, not data
MAX_DEPTH = 16                 # the schema nests 6 deep (examples -> example -> lp_perturbed -> row)
SIDECAR_KIND = "clearbench-verification"
# what identifies an example's inputs and references: equal in every row of one leaderboard (one world)
RECORD_FIELDS: tuple[str, ...] = ("split", "author_id", "group", "modality", "task", "name", "answer",
                                  "paraphrased_answer", "perturbed_answers", "image_role")
VALUE_FIELDS: tuple[str, ...] = ("lp_answer", "lp_paraphrased", "lp_perturbed", "minkpp_mu", "minkpp_sigma")
GREEDY_MARGIN = 0.05  # nats: a greedily generated token's log p is >= mu (the mean log p under p)

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
    world: Any = None  # the opened world (clearbench.data.World) when --world is given
    skipped: list[str] = dataclasses.field(default_factory=list)  # checks that could not run, and why
    gold_recomputed: Recomputed | None = None  # the gold's aggregates, recomputed when make_reference validated it

    @property
    def gold_fingerprint(self) -> str | None:
        return (self.gold or {}).get("provenance", {}).get("model_fingerprint")

    @functools.cached_property
    def gold_sha256(self) -> str | None:
        return None if self.gold is None else content_sha256(self.gold)

    @functools.cached_property
    def gold_examples(self) -> GoldExamples | None:
        """The gold's examples, parsed once for every file (None where unreadable: recomputation says why)."""
        try:
            return None if self.gold is None else gold_examples_of(self.gold)
        except (KeyError, TypeError, ValueError):
            return None

    def is_gold(self, result: dict[str, Any]) -> bool:
        """The gold row is the ``--gold`` file's content (never a fingerprint a file claims); without a
        leaderboard gold, the file evaluated as its own gold. A file whose provenance differs from the gold's
        is not the gold's content, so only a file with the gold's provenance is hashed whole (~1 s at 20 MB)."""
        if self.gold is None:
            return (result.get("provenance") or {}).get("gold") == "self"
        if result is self.gold:
            return True
        if content_sha256(result.get("provenance")) != content_sha256(self.gold.get("provenance")):
            return False
        return content_sha256(result) == self.gold_sha256


def content_sha256(result: Any) -> str:
    """sha256 of a parsed JSON document in canonical form (key order and whitespace do not count)."""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Checked:
    path: str
    result: dict[str, Any] | None
    reasons: list[str]
    level: str = "recomputed"  # "re-scored" when a matching RESULT.verified.json passed (eval.rescore)
    recomputed: Recomputed | None = dataclasses.field(default=None, repr=False, compare=False)


def make_reference(gold: str | Path | None = None, world_fingerprint: str | None = None,
                   forget_split: str | None = None, world: Any = None) -> Reference:
    """The leaderboard's reference: the gold result's world and split, or the flags; ``world`` (a path or
    an opened world) adds the checks against the world. A gold result that is invalid, or disagrees with
    the flags or the world, is a loud error (it is the yardstick)."""
    if world is not None:
        world = _open(world)
        world_fingerprint = world_fingerprint or world.fingerprint
        if world.fingerprint != world_fingerprint:
            raise ValueError(f"--world {world.path} has fingerprint {world.fingerprint!r} but --world-fingerprint says "
                             f"{world_fingerprint!r}; pass the leaderboard's world")
    if gold is None:
        ref = Reference(world_fingerprint, forget_split, world=world,
                        source="flags" if world_fingerprint or forget_split else "")
        return _with_skipped(ref)
    g = load_gold_result(gold, forget_split or "forgetXX")
    ref = Reference(None, None, g, str(gold), source=f"gold result {gold}", world=world)
    problems, fresh = validated(_as_own_gold(g, ref), g)
    problems += _world_problems(g, world) if world is not None else []
    ref.gold_recomputed = None if fresh is None else Recomputed(g, g, fresh)
    if problems:
        raise ValueError(f"gold result {gold} is invalid: " + "; ".join(problems))
    prov = g["provenance"]
    for flag, name, value in (("--world-fingerprint", "world_fingerprint", world_fingerprint),
                              ("--forget", "forget_split", forget_split)):
        if value is not None and prov.get(name) != value:
            raise ValueError(f"gold result {gold} has {name} {prov.get(name)!r} but {flag} says {value!r}; "
                             f"pass the gold result of that world and split, or drop {flag}")
    ref.world_fingerprint, ref.forget_split = prov["world_fingerprint"], prov["forget_split"]
    return _with_skipped(ref)


def _open(world: Any) -> Any:
    from clearbench.data import open_world

    return open_world(world) if isinstance(world, (str, Path)) else world


def _with_skipped(ref: Reference) -> Reference:
    """Name the checks this reference cannot run (shown in the report and printed on stderr)."""
    if ref.gold is None:
        ref.skipped.append("without --gold, examples are not compared with a gold result (ids, texts, values copied "
                           "from it) and embedded gold copies are trusted")
    if ref.world is None:
        ref.skipped.append("without --world, the expected example ids are " + (
            "the gold result's" if ref.gold is not None else "the file's own") + " and texts are not compared with "
            "the world")
    return ref


def _as_own_gold(result: dict[str, Any], ref: Reference) -> dict[str, Any]:
    """The gold model's own result embeds its examples without a fingerprint (``--gold self``);
    fill it in so that the gold check applies to it like to any other row."""
    if ref.gold is None or not isinstance(result.get("gold"), dict) or result["gold"].get("model_fingerprint"):
        return result
    if not ref.is_gold(result):
        return result
    return {**result, "gold": {**result["gold"], "model_fingerprint": ref.gold_fingerprint}}


def read_json(path: str | Path) -> tuple[Any, bytes]:
    """A result file's JSON and its bytes; a file over ``MAX_RESULT_BYTES`` or nested deeper than ``MAX_DEPTH``
    is a ValueError whose message is one line."""
    size = Path(path).stat().st_size
    if size > MAX_RESULT_BYTES:
        raise ValueError(f"{size / 2**20:.0f} MiB is over the {MAX_RESULT_BYTES // 2**20} MiB limit of a result file")
    data = Path(path).read_bytes()
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"JSON nested deeper than the schema allows ({MAX_DEPTH} levels)") from None
    if _depth(doc) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than the schema allows ({MAX_DEPTH} levels)")
    return doc, data


def _depth(doc: Any) -> int:
    deepest, stack = 0, [(doc, 1)] if isinstance(doc, (dict, list)) else []
    while stack:  # only containers are stacked, and a list of numbers is passed over at C speed
        node, d = stack.pop()
        deepest = max(deepest, d)
        children = node.values() if isinstance(node, dict) else node
        if d <= MAX_DEPTH and not {dict, list}.isdisjoint(map(type, children)):  # json.loads makes no subclasses
            stack += [(v, d + 1) for v in children if isinstance(v, (dict, list))]
    return deepest


def check_file(path: str | Path, ref: Reference) -> Checked:
    """Every reason to reject one file (empty = accepted), and its verification level."""
    try:
        result, data = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Checked(str(path), None, [f"cannot be read as a JSON result file: {' '.join(str(e).split())}"])
    reasons, fresh = checked_result(result, ref)
    if not isinstance(result, dict):
        return Checked(str(path), None, reasons)
    level, sidecar = sidecar_level(path, data, result)
    return Checked(str(path), result, reasons + sidecar, level, Recomputed(result, ref.gold, fresh) if fresh else None)


def check_result(result: Any, ref: Reference) -> list[str]:
    return checked_result(result, ref)[0]


def checked_result(result: Any, ref: Reference) -> tuple[list[str], dict[str, Any] | None]:
    """``check_result``'s reasons and the aggregates validation recomputed (None when it did not get that far)."""
    if not isinstance(result, dict):
        return ["result is not a JSON object"], None
    try:
        reasons, fresh = validated(_as_own_gold(result, ref), ref.gold, ref.gold_examples)
    except Exception as e:  # a malformed file must be rejected, not crash the leaderboard
        return [f"result cannot be validated: {type(e).__name__}: {e}"], None
    prov = result.get("provenance") if isinstance(result.get("provenance"), dict) else {}
    if len(json.dumps(prov)) > MAX_PROVENANCE_BYTES:
        return reasons + [f"provenance is over the {MAX_PROVENANCE_BYTES // 1024} KiB limit (it is shown in the report)"
                          ], fresh
    reasons += _options_problems(result, ref)
    for name, want in (("world_fingerprint", ref.world_fingerprint), ("forget_split", ref.forget_split)):
        if want is not None and name in prov and prov[name] != want:
            reasons.append(f"{name} {prov[name]!r} differs from the leaderboard's {want!r} ({ref.source})")
    try:
        run_info(prov)
        reasons += stage_record_problems(prov)
    except ValueError as e:
        reasons.append(str(e))
    if reasons:
        return reasons, fresh  # the content checks below assume a well-formed file
    if ref.gold is not None and not ref.is_gold(result):
        reasons += gold_problems(result, ref)
    reasons += greedy_problems(result["examples"])
    return reasons + (_world_problems(result, ref.world) if ref.world is not None else []), fresh


def _world_problems(result: dict[str, Any], world: Any) -> list[str]:
    from eval.rescore import world_problems

    return world_problems(result, world)
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


def id_problems(mine: Sequence[str], truth: Sequence[str], what: str) -> list[str]:
    """The examples a row scores must be exactly those of ``truth`` (the gold result's, or the world's)."""
    missing, extra = sorted(set(truth) - set(mine)), sorted(set(mine) - set(truth))
    out = [f"{len(missing)} examples are missing (e.g. {missing[:3]}); {what} has them"] if missing else []
    return out + ([f"{len(extra)} examples are not in {what} (e.g. {extra[:3]})"] if extra else [])


def field_problems(mine: dict[str, dict[str, Any]], truth: dict[str, dict[str, Any]], what: str) -> list[str]:
    """Per record field, the examples whose text differs from ``truth`` (a rewritten reference answer)."""
    out = []
    for name in RECORD_FIELDS:
        bad = sorted(i for i in mine.keys() & truth.keys() if mine[i].get(name) != truth[i].get(name))
        if bad:
            out.append(f"{len(bad)} examples' {name} differs from {what} (e.g. {bad[:3]})")
    return out


def gold_problems(result: dict[str, Any], ref: Reference) -> list[str]:
    """A row shares the gold result's world: the same example ids and texts; its per-example values are its own
    model's (a value list identical to the gold model's was copied), and it is not the gold model re-labelled."""
    gold = {d["id"]: d for d in ref.gold["examples"]}
    mine = {d["id"]: d for d in result["examples"]}
    what = f"the gold result ({ref.gold_path})"
    out = id_problems(list(mine), list(gold), what) + field_problems(mine, gold, what)
    if (result.get("provenance") or {}).get("model_fingerprint") == ref.gold_fingerprint:
        out.append(f"model_fingerprint is the gold model's but the file is not the gold result ({ref.gold_path}); "
                   f"the gold row is the --gold file itself")
    copied = sorted(i for i in mine.keys() & gold.keys()
                    if all(mine[i].get(f) == gold[i].get(f) for f in VALUE_FIELDS))
    if copied:
        out.append(f"{len(copied)} examples' per-example values are identical to the gold model's (e.g. "
                   f"{copied[:3]}): copied from the gold result")
    return out


def greedy_problems(examples: Sequence[dict[str, Any]]) -> list[str]:
    """An example whose greedy generation is its answer had every answer token as the model's most likely one,
    so each token's log p is at least mu (the mean log p under the model, stored for Min-K%++). The last
    position is left out (the end token, or a generation cut at max_new_tokens)."""
    bad = sorted(d["id"] for d in examples if d["generation"].strip() and d["generation"].strip() == d["answer"].strip()
                 and any(lp < mu - GREEDY_MARGIN for lp, mu in zip(d["lp_answer"][:-1], d["minkpp_mu"][:-1])))
    return [f"{len(bad)} examples' generation is the answer but the stored log-probabilities say the model would "
            f"not generate it greedily (e.g. {bad[:3]}): generations and log-probabilities disagree"] if bad else []


def stage_record_problems(provenance: dict[str, Any], model: str | Path | None = None) -> list[str]:
    """The run the provenance names (method, forget modality, L1) must be the one in the stage record (run.json)
    beside the model: ``model``, else ``provenance["model_path"]`` when that still holds the evaluated model."""
    path = model or provenance.get("model_path")
    if not isinstance(path, (str, Path)) or not str(path):
        return []
    try:
        record = read_run(path)
    except (OSError, ValueError):
        return []  # no stage record (a model trained elsewhere, or a path on another machine)
    if not isinstance(record, dict) or (model is None and record.get("model_fingerprint") != provenance.get(
            "model_fingerprint")):
        return []  # the path holds another model now
    claimed = run_info(provenance) or {}
    actual = record if record.get("stage") == "unlearn" else {}
    out = []
    for name in ("method", "forget_modality", "l1_lambda"):
        mine, theirs = claimed.get(name), actual.get(name)
        if (mine or None) != (theirs or None):
            out.append(f"provenance says {name} {mine!r} but the stage record {Path(path) / 'run.json'} says "
                       f"{theirs!r}")
    return out


def sidecar_path(path: str | Path) -> Path:
    """``results/npo.json`` -> ``results/npo.verified.json`` (written by ``clearbench leaderboard verify``)."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.json')}.verified.json")


def is_sidecar(path: str | Path) -> bool:
    return Path(path).name.endswith(".verified.json")


def sidecar_level(path: str | Path, data: bytes, result: dict[str, Any]) -> tuple[str, list[str]]:
    """("re-scored", []) when the file's sidecar passed for exactly these bytes and this model; a failed or
    stale sidecar is a rejection reason; no sidecar: ("recomputed", [])."""
    side = sidecar_path(path)
    if not side.is_file():
        return "recomputed", []
    try:
        record, _ = read_json(side)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return "recomputed", [f"{side.name} cannot be read: {e}"]
    if not isinstance(record, dict) or record.get("kind") != SIDECAR_KIND:
        return "recomputed", [f"{side.name} is not a verification record ({SIDECAR_KIND})"]
    if record.get("result_sha256") != hashlib.sha256(data).hexdigest() or record.get("model_fingerprint") != (
            result.get("provenance") or {}).get("model_fingerprint"):
        return "recomputed", [f"{side.name} was written for other content (the file changed after "
                              f"`clearbench leaderboard verify`); verify it again or remove {side.name}"]
    if record.get("outcome") != "passed":
        return "recomputed", [f"re-scoring with the model failed ({side.name}): " + "; ".join(
            str(r) for r in (record.get("problems") or ["no reason recorded"])[:3])]
    return "re-scored", []


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
    """Check every file (a ``*.verified.json`` sidecar is read with its result, not as one)."""
    checked = [check_file(p, ref) for p in paths if not is_sidecar(p)]
    if ref.gold is None and (ref.world_fingerprint is None or ref.forget_split is None):
        ref = resolve_reference(ref, [c.result for c in checked])
        checked = [c if c.result is None else check_file(c.path, ref) for c in checked]
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
