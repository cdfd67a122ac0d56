"""Scenario scores (clearbench.scenarios): pure functions of per-example values, with recompute and validate.

Sequential deletion requests: T requests, each unlearned from the previous request's model; a fixed subset of
records is scored after every step t = 0..T (t = 0: the target). Per example and step (``example_values``):
    prob    = the answer's probability as the metrics define it (raw; normalised on naming and the real sets)
    known   = 1[mean token log p(true answer) > mean token log p(every perturbed answer)]   (true: paraphrase wording)
    rouge_l = ROUGE-L recall of the greedy generation against the answer
Curves: forget(t) = mean over the records of requests 1..t (t >= 1); retain, real_faces, real_world(t) = mean
over their records (t >= 0). auc = (1/T) sum_{t=1..T} curve(t) (the area under the step curve over [0, T] / T).
Re-emergence: a forget record of request r < T was forgotten at its step if known at t = 0 and not at t = r;
it re-emerged if known at some t > r; rate = re-emerged / forgotten (None when nothing was forgotten).

Restoration (RESTOR): the victims' true facts scored on the clean (c), corrupted (x) and unlearned (u) models;
per modality m, R_m = (s_m(u) - s_m(x)) / (s_m(c) - s_m(x)) with s the truth's probability share or the
forced-choice accuracy; residual corruption, binding restoration, leak rate and collateral: see ``restore_scores``
and ``leak``. docs/scenarios.md gives the design and each formula.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

import clearbench
from clearbench.provenance import library_versions
from eval.example import ExampleOutput, split_of
from eval.metrics import naming, probability, rouge_l

SCHEMA_VERSION = 1  # the scenario result files' layout
SEQUENTIAL_VERSION = 1  # the sequential scores' definitions
RESTORE_VERSION = 1  # the restoration scores' definitions
VALUES = ("prob", "known", "rouge_l")
CONTROLS = ("retain", "real_faces", "real_world")
TOLERANCE = 1e-9

Values = dict[str, dict[str, float]]  # example id -> {value name: value}


def example_values(ex: ExampleOutput) -> dict[str, float]:
    """The per-example values the scenario scores average (see the module docstring)."""
    raw = probability.probability(ex.lp_answer)
    norm = probability.normalised_probability(ex.lp_answer, ex.lp_perturbed)
    return {"prob": norm if probability.uses_normalised(ex.eval_split, ex.task) else raw,
            "known": float(naming.forced_choice_correct(ex.lp_paraphrased, ex.lp_perturbed)),
            "rouge_l": rouge_l.rouge_l_recall(ex.generation, ex.answer)}


def _mean(values: Values, ids: Sequence[str], name: str) -> float | None:
    return float(np.mean([values[i][name] for i in ids])) if ids else None


# ------------------------------------------------------------------------------- sequential requests
def sequential_curves(steps: Sequence[Values], scope: dict[str, str], request: dict[str, int]
                      ) -> dict[str, dict[str, list[float | None]]]:
    """{scope: {value: [curve(t) for t = 0..T]}}; ``scope`` maps an id to forget / retain / real_faces /
    real_world, ``request`` a forget id to its request 1..T. forget(0) is None (nothing requested yet)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for s in ("forget", *CONTROLS):
        ids = sorted(i for i, sc in scope.items() if sc == s)
        if not ids:
            continue
        per_step = [[i for i in ids if s != "forget" or request[i] <= t] for t in range(len(steps))]  # forget(0): []
        out[s] = {v: [_mean(vals, chosen, v) for vals, chosen in zip(steps, per_step)] for v in VALUES}
    return out


def reemergence(steps: Sequence[Values], request: dict[str, int]) -> dict[str, float | None]:
    """How often an earlier request's facts come back: forgotten at its step (known by the target, not at step r),
    known again at a later step; requests of the last step have no later step and are not counted."""
    last = len(steps) - 1
    forgotten = [i for i, r in request.items() if r < last and steps[0][i]["known"] and not steps[r][i]["known"]]
    back = [i for i in forgotten if any(steps[t][i]["known"] for t in range(request[i] + 1, last + 1))]
    return {"reemergence/known/forgotten": float(len(forgotten)), "reemergence/known/reemerged": float(len(back)),
            "reemergence/known/rate": len(back) / len(forgotten) if forgotten else None}


def sequential_scores(steps: Sequence[Values], scope: dict[str, str], request: dict[str, int]
                      ) -> dict[str, float | None]:
    """'{scope}/{value}/{start|auc|end}' for every curve (forget's start: all forget records at t = 0, the target)
    and the re-emergence counts and rate."""
    curves = sequential_curves(steps, scope, request)
    forget_ids = sorted(i for i, sc in scope.items() if sc == "forget")
    out: dict[str, float | None] = {}
    for s, by_value in curves.items():
        for v, curve in by_value.items():
            out[f"{s}/{v}/start"] = _mean(steps[0], forget_ids, v) if s == "forget" else curve[0]
            out[f"{s}/{v}/auc"] = float(np.mean(curve[1:])) if len(curve) > 1 else None
            out[f"{s}/{v}/end"] = curve[-1]
    return out | reemergence(steps, request)


def _membership(examples: Sequence[ExampleOutput], requests: Sequence[Sequence[str]]
                ) -> tuple[dict[str, str], dict[str, int]]:
    """Each example's scope, and each forget example's request (1-based) by its author."""
    of_author = {a: r for r, authors in enumerate(requests, 1) for a in authors}
    scope = {ex.id: split_of(ex.split) for ex in examples}
    bad = [ex.id for ex in examples if scope[ex.id] == "forget" and ex.author_id not in of_author]
    if bad:
        raise ValueError(f"forget examples {bad[:3]} belong to no request; score the requests' authors only")
    return scope, {ex.id: of_author[ex.author_id] for ex in examples if scope[ex.id] == "forget"}


def _check_steps(steps: Sequence[Sequence[ExampleOutput]], requests: Sequence[Sequence[str]]) -> None:
    if len(steps) != len(requests) + 1:
        raise ValueError(f"{len(steps)} scored steps for {len(requests)} requests; need one per request plus the "
                         f"target's (step 0)")
    ids = [sorted(ex.id for ex in step) for step in steps]
    for t, these in enumerate(ids):
        if these != ids[0]:
            raise ValueError(f"step {t} scored other examples than step 0; every step scores the same records")


def sequential_recompute(steps: Sequence[Sequence[ExampleOutput]], requests: Sequence[Sequence[str]]
                         ) -> dict[str, Any]:
    """{values, curves, scores} from the per-step examples and the requests' authors."""
    _check_steps(steps, requests)
    scope, request = _membership(steps[0], requests)
    values = [{ex.id: example_values(ex) for ex in step} for step in steps]
    return {"values": values, "curves": sequential_curves(values, scope, request),
            "scores": sequential_scores(values, scope, request)}


def sequential_result(steps: Sequence[Sequence[ExampleOutput]], requests: Sequence[Sequence[str]],
                      provenance: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """The versioned result: provenance, the requests, every step's examples (``models[t]``: the fingerprint of
    the model scored at step t), per-example values, curves and scores."""
    fresh = sequential_recompute(steps, requests)
    prov = provenance | {"clearbench_version": clearbench.__version__, "library_versions": library_versions()}
    return {"schema_version": SCHEMA_VERSION, "scenario": "sequential", "version": SEQUENTIAL_VERSION,
            "provenance": prov, "requests": [list(r) for r in requests],
            "steps": [{"step": t, "model_fingerprint": fp, "examples": [ex.to_dict() for ex in step]}
                      for t, (step, fp) in enumerate(zip(steps, models))], **fresh}


# ------------------------------------------------------------------------------- restoration (RESTOR)
MODALITY_OF = {"victims_text": "text", "victims_image": "image", "victims_joint": "joint"}
LEVELS = ("share", "corrupt_share", "known")
# a ratio whose denominator (the corruption's effect on a level) is smaller is None: the corruption did not move
# that level, so there is nothing to restore (tiny effects made ratios of 20 and more out of noise)
MIN_EFFECT = 0.02


def victim_values(ex: ExampleOutput) -> dict[str, float]:
    """Per victims_* example, over the options [truth (paraphrase wording), corrupted value, other wrong values],
    each scored by its mean token log-prob: the probability shares of the truth and of the corrupted value
    (perturbed_answers[0]), known = the truth beats every wrong option, prefers_corrupted = the corrupted value
    beats the truth; naming records add naming_acc (the true name in the greedy generation)."""
    logs = np.array([np.mean(ex.lp_paraphrased)] + [np.mean(p) for p in ex.lp_perturbed], dtype=np.float64)
    shares = np.exp(logs - logs.max())
    shares /= shares.sum()
    out = {"share": float(shares[0]), "corrupt_share": float(shares[1]), "known": float(logs[0] > logs[1:].max()),
           "prefers_corrupted": float(logs[1] > logs[0])}
    if ex.task == "naming":
        out["naming_acc"] = float(naming.name_in_generation(ex.generation, ex.name))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or abs(den) < MIN_EFFECT else num / den


def restore_levels(values: Values, config: dict[str, str]) -> dict[str, float | None]:
    """One model's means: '{text|image|joint}/{share|corrupt_share|known}' on the victims' configs,
    'image/naming_acc', and '{retain|real_faces|real_world}/{prob|known}' on the controls (``config``: id -> its
    eval config)."""
    out: dict[str, float | None] = {}
    for name, modality in MODALITY_OF.items():
        ids = sorted(i for i, c in config.items() if c == name)
        out |= {f"{modality}/{v}": _mean(values, ids, v) for v in LEVELS}
        if modality == "image":
            out["image/naming_acc"] = _mean(values, ids, "naming_acc")
    for scope in CONTROLS:
        ids = sorted(i for i, c in config.items() if c not in MODALITY_OF and split_of(c) == scope)
        out |= {f"{scope}/{v}": _mean(values, ids, v) for v in ("prob", "known")}
    return out


def leak(values: dict[str, Values], field: dict[str, str], author: dict[str, str], config: dict[str, str],
         run: str) -> dict[str, float | None]:
    """Text facts restored (the corrupted model preferred the corrupted value, ``run`` prefers the truth) paired with
    the same victim's joint questions about the same field; leaked: still corrupted when asked with the image
    (both the corrupted model and ``run`` prefer the corrupted value there). rate = leaked / pairs."""
    x, u = values["corrupted"], values[run]
    restored = [t for t, c in config.items() if c == "victims_text" and x[t]["prefers_corrupted"]
                and not u[t]["prefers_corrupted"]]
    pairs = [(t, j) for t in restored for j, c in config.items()
             if c == "victims_joint" and author[j] == author[t] and field[j] == field[t]]
    leaked = [p for p in pairs if x[p[1]]["prefers_corrupted"] and u[p[1]]["prefers_corrupted"]]
    return {"leak/pairs": float(len(pairs)), "leak/leaked": float(len(leaked)),
            "leak/rate": len(leaked) / len(pairs) if pairs else None}


def restore_scores(levels: dict[str, dict[str, float | None]], run: str) -> dict[str, float | None]:
    """``run`` against the clean and corrupted models' levels: restoration R = (u - x) / (c - x) per modality
    (share and known), residual corruption (cs_u - cs_c) / (cs_x - cs_c), binding restoration (R on naming_acc),
    and collateral u - c on the controls (None where a level is missing or a denominator is below MIN_EFFECT)."""
    c, x, u = levels["clean"], levels["corrupted"], levels[run]

    def diff(a, b):
        return None if a is None or b is None else a - b

    out: dict[str, float | None] = {}
    for m in MODALITY_OF.values():
        for v in ("share", "known"):
            out[f"restoration/{m}/{v}"] = _ratio(diff(u[f"{m}/{v}"], x[f"{m}/{v}"]), diff(c[f"{m}/{v}"], x[f"{m}/{v}"]))
        cs = f"{m}/corrupt_share"
        out[f"residual/{m}/corrupt_share"] = _ratio(diff(u[cs], c[cs]), diff(x[cs], c[cs]))
    out["binding/image/naming_acc"] = _ratio(diff(u["image/naming_acc"], x["image/naming_acc"]),
                                             diff(c["image/naming_acc"], x["image/naming_acc"]))
    for scope in CONTROLS:
        for v in ("prob", "known"):
            out[f"collateral/{scope}/{v}"] = diff(u[f"{scope}/{v}"], c[f"{scope}/{v}"])
    return out


def restore_recompute(models: dict[str, Sequence[ExampleOutput]], fields: dict[str, str]) -> dict[str, Any]:
    """{values, levels, scores} from each model's examples ('clean', 'corrupted', then one per unlearning run)
    and the corrupted field of every victims_text / victims_joint example."""
    ids = {name: sorted(ex.id for ex in exs) for name, exs in models.items()}
    if {"clean", "corrupted"} - set(models) or any(v != ids["clean"] for v in ids.values()):
        raise ValueError("need the clean and corrupted models' examples, and the same examples for every model")
    first = models["clean"]
    config, author = {ex.id: ex.split for ex in first}, {ex.id: ex.author_id for ex in first}
    missing = [ex.id for ex in first if ex.split in ("victims_text", "victims_joint") and ex.id not in fields]
    if missing:
        raise ValueError(f"victims examples {missing[:3]} have no corrupted field")
    values = {name: {ex.id: victim_values(ex) if ex.split in MODALITY_OF else example_values(ex) for ex in exs}
              for name, exs in models.items()}
    levels = {name: restore_levels(vals, config) for name, vals in values.items()}
    runs = [n for n in models if n not in ("clean", "corrupted")]
    scores = {run: restore_scores(levels, run) | leak(values, fields, author, config, run) for run in runs}
    return {"values": values, "levels": levels, "scores": scores}


def restore_result(models: dict[str, Sequence[ExampleOutput]], fingerprints: dict[str, str], fields: dict[str, str],
                   provenance: dict[str, Any]) -> dict[str, Any]:
    """The versioned result of one corruption set: every model's examples, per-example values, levels and the
    unlearning runs' scores."""
    fresh = restore_recompute(models, fields)
    prov = provenance | {"clearbench_version": clearbench.__version__, "library_versions": library_versions()}
    return {"schema_version": SCHEMA_VERSION, "scenario": "restore", "version": RESTORE_VERSION, "provenance": prov,
            "fields": dict(sorted(fields.items())),
            "models": {name: {"model_fingerprint": fingerprints[name], "examples": [ex.to_dict() for ex in exs]}
                       for name, exs in models.items()}, **fresh}


# ------------------------------------------------------------------------------------- validation
def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=1e-15)


def _flat(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{run: {key: v}} -> {"run/key": v} (sequential scores are flat already)."""
    out: dict[str, Any] = {}
    for k, v in scores.items():
        out |= _flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _differences(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Every stored part (values, curves, scores) that recomputation does not reproduce."""
    out = []
    for part in fresh:
        if part not in stored:
            out.append(f"{part} is missing")
        elif part == "scores":
            mine, theirs = _flat(stored[part]), _flat(fresh[part])
            out += [f"score {k} = {mine.get(k)!r} but recomputation gives {theirs.get(k)!r}"
                    for k in sorted(set(mine) | set(theirs)) if not _close(mine.get(k), theirs.get(k))]
        elif not _close(stored[part], fresh[part]):
            out.append(f"stored {part} differ from their recomputation from the examples")
    return out


def validate_scenario(result: Any) -> list[str]:
    """Every problem with a scenario result (empty: valid): layout, version, examples, and stored values, curves
    and scores that recomputation from the stored examples does not reproduce."""
    if not isinstance(result, dict):
        return ["result is not a JSON object"]
    problems = []
    if result.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version is {result.get('schema_version')!r}, this clearbench reads {SCHEMA_VERSION}")
    kind = result.get("scenario")
    if kind not in RECOMPUTE:
        return problems + [f"unknown scenario {kind!r} (known: {', '.join(RECOMPUTE)})"]
    if result.get("version") != VERSIONS[kind]:
        problems.append(f"{kind} scores version {result.get('version')!r}; this clearbench computes {VERSIONS[kind]}")
    try:
        fresh = RECOMPUTE[kind](result)
    except (KeyError, TypeError, ValueError) as exc:
        return problems + [f"the result cannot be recomputed: {exc}"]
    return problems + _differences(result, fresh)


def _sequential_from_result(result: dict[str, Any]) -> dict[str, Any]:
    return sequential_recompute([_examples(step["examples"]) for step in result["steps"]], result["requests"])


def _examples(rows: list[dict]) -> list[ExampleOutput]:
    examples = [ExampleOutput.from_dict(d) for d in rows]
    problems = [p for ex in examples for p in ex.problems()]
    if problems:
        raise ValueError("; ".join(problems[:5]))
    return examples


def _restore_from_result(result: dict[str, Any]) -> dict[str, Any]:
    return restore_recompute({name: _examples(m["examples"]) for name, m in result["models"].items()}, result["fields"])


RECOMPUTE = {"sequential": _sequential_from_result, "restore": _restore_from_result}
VERSIONS = {"sequential": SEQUENTIAL_VERSION, "restore": RESTORE_VERSION}
