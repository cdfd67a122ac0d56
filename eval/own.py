"""A model clearbench did not train (a checkpoint or plain PEFT adapter of one's own): what its result says about it.

``OwnModel`` is what ``clearbench evaluate`` is told on the command line: the model, the base a plain PEFT adapter
applies to (``--base``), the leaderboard's target it should descend from (``--target``) and the run behind it
(``--method``, ``--forget-modality``, ``--l1``, ``--lora``: the result's table and row label). In the result:

- ``provenance.run`` = {method, forget_modality, l1_lambda, lora}: the label (checked against a clearbench stage
  record, ``run.json``, when the model has one);
- ``provenance.base`` = {path, model_fingerprint} for a plain adapter;
- ``provenance.lineage`` = {target, target_fingerprint, verified, relation, ancestors}: whether the model's own
  records (its ``--base``, adapter markers, the ``parent`` fingerprints of its run records) reach the target's
  fingerprint. Records that name other ancestors only are an error; no records at all give ``verified: false``;
- ``provenance.own_model`` = true: evaluated as a model of one's own (``--method``, ``--base`` or ``--target``).

``unverified_lineage`` reads these back: the leaderboard marks a row whose lineage is unverified.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from clearbench.provenance import model_dir, model_fingerprint, read_run
from clearbench.types import FORGET_MODALITIES

LINEAGE_FIELD = "lineage"  # provenance.lineage: the leaderboard marks rows whose lineage.verified is not true
OWN_FIELD = "own_model"  # provenance.own_model: true for an own-model evaluation (the suite's runs have none)
NO_TARGET = "unverified: evaluated as an own model without --target, so no lineage was recorded"
MAX_DEPTH = 16


@dataclasses.dataclass(frozen=True)
class OwnModel:
    path: str | Path
    base: str | Path | None = None  # a plain PEFT adapter's base model
    target: str | Path | None = None  # the leaderboard's target: lineage checked and recorded
    method: str | None = None  # the label: the leaderboard's row and table
    forget_modality: str | None = None
    l1_lambda: float | None = None
    lora: bool = False


def as_own(model: Any) -> OwnModel:
    return model if isinstance(model, OwnModel) else OwnModel(path=model)


def load(own: OwnModel, device: str) -> tuple[Any, str]:
    """(clearbench.models.Loaded, model_fingerprint): a plain adapter on its base, else ``load_model``."""
    from clearbench.models import load_model, plain_adapter

    mdir = model_dir(own.path)
    if own.base is not None or plain_adapter.is_plain_adapter(mdir):
        plain_adapter.check(mdir, own.base)  # an adapter without --base: "pass --base DIR"
        return plain_adapter.load(mdir, own.base, device=device), plain_adapter.fingerprint(mdir, own.base)
    return load_model(mdir, device=device), model_fingerprint(mdir)


def run_label(own: OwnModel) -> dict[str, Any] | None:
    """``provenance.run`` from the flags; None without ``--method``. A clearbench stage record must agree."""
    if own.method is None:
        given = [flag for flag, v in (("--forget-modality", own.forget_modality), ("--l1", own.l1_lambda)) if v is not None]
        if given or own.lora:
            raise ValueError(f"{', '.join(given + (['--lora'] if own.lora else []))} label a --method: pass --method "
                             f"NAME too (the method your model was unlearned with)")
        return None
    if not own.method.strip():
        raise ValueError("--method must name the method the model was unlearned with")
    if own.forget_modality not in FORGET_MODALITIES:
        raise ValueError(f"--method needs --forget-modality, one of {', '.join(FORGET_MODALITIES)} (what was "
                         f"forgotten: it picks the leaderboard's table), got {own.forget_modality!r}")
    l1 = 0.0 if own.l1_lambda is None else float(own.l1_lambda)
    if not (math.isfinite(l1) and l1 >= 0):
        raise ValueError(f"--l1 {own.l1_lambda}: the L1 weight must be a finite number >= 0")
    label = {"method": own.method, "forget_modality": own.forget_modality, "l1_lambda": l1,
             "lora": bool(own.lora or own.base is not None)}
    return label | _check_record(own, label)


def _check_record(own: OwnModel, label: dict[str, Any]) -> dict[str, Any]:
    """A model with a clearbench unlearning record is labelled by it: a flag that disagrees is an error; the
    record's ``lora`` is kept."""
    try:
        record = read_run(own.path)
    except FileNotFoundError:
        return {}
    if record.get("stage") != "unlearn":
        return {}
    for key in ("method", "forget_modality", "l1_lambda"):
        if key in record and record[key] != label[key]:
            raise ValueError(f"--{key.replace('_lambda', '').replace('_', '-')} {label[key]!r} but the model's stage "
                             f"record {own.path}/run.json says {record[key]!r}: drop the flag (the record labels it)")
    return {"lora": bool(record["lora"])} if "lora" in record else {}


def ancestors(own: OwnModel) -> list[str]:
    """Fingerprints of the models the records name as this model's ancestors, nearest first: ``--base``, the
    parent chain of clearbench adapter markers, the ``parent`` fingerprints of run records (followed while the
    parent directory still holds the recorded model)."""
    from clearbench.models.adapter import is_adapter_dir, read_marker

    out: list[str] = []
    start = Path(own.path)
    if own.base is not None:
        out.append(model_fingerprint(model_dir(own.base)))
        start = Path(own.base)
    mdir = model_dir(start)
    if is_adapter_dir(mdir):
        out += [entry["model_fingerprint"] for entry in read_marker(mdir).get("chain", [])]
    path = start
    for _ in range(MAX_DEPTH):
        try:
            parent = read_run(path).get("parent")
        except FileNotFoundError:
            break
        if not isinstance(parent, dict) or not parent.get("model_fingerprint"):
            break
        out.append(parent["model_fingerprint"])
        path = Path(parent.get("path") or "")
        try:
            if read_run(path).get("model_fingerprint") != parent["model_fingerprint"]:
                break  # the parent directory holds another model now: its records are not this model's past
        except FileNotFoundError:
            break
    return list(dict.fromkeys(out))


def lineage(own: OwnModel, fingerprint: str) -> dict[str, Any] | None:
    """``provenance.lineage`` for ``--target``: verified when the model is the target or its records reach it."""
    if own.target is None:
        return None
    target_fp = model_fingerprint(model_dir(own.target))
    chain = ancestors(own)
    entry = {"target": str(own.target), "target_fingerprint": target_fp, "ancestors": chain}
    if fingerprint == target_fp:
        return entry | {"verified": True, "relation": "is the target"}
    if target_fp in chain:
        how = "adapter on --base" if own.base is not None and chain[0] == target_fp else "run records"
        return entry | {"verified": True, "relation": f"descends from the target ({how})"}
    if chain:
        raise ValueError(f"the model's records trace it to {', '.join(chain)}, not to the target {own.target} "
                         f"({target_fp}): evaluate a model unlearned from the leaderboard's target")
    return entry | {"verified": False, "relation": "unverified: no run record, adapter marker or --base names the "
                                                   "model's parent (pass an adapter with --base TARGET to verify it)"}


def own_provenance(own: OwnModel, fingerprint: str) -> dict[str, Any]:
    """The provenance fields a labelled, plain-adapter or --target evaluation adds."""
    out: dict[str, Any] = {}
    label = run_label(own)
    if label is not None:
        out["run"] = label
    if own.base is not None:
        out["base"] = {"path": str(own.base), "model_fingerprint": model_fingerprint(model_dir(own.base))}
    found = lineage(own, fingerprint)
    if found is not None:
        out[LINEAGE_FIELD] = found
    if out:
        out[OWN_FIELD] = True
    return out


def unverified_lineage(provenance: Any) -> str | None:
    """Why a result's model is not verified to descend from the leaderboard's target (its lineage's
    ``relation``), or None: a verified lineage, or a result of the suite's own runs (``clearbench run``: no
    lineage and no own-model field). An own-model result (``own_model``, or a plain adapter's ``base``)
    without any lineage is unverified."""
    if not isinstance(provenance, dict):
        return None
    found = provenance.get(LINEAGE_FIELD)
    if isinstance(found, dict):
        return None if found.get("verified") is True else str(found.get("relation") or "unverified")
    if found is not None:
        return f"unverified: provenance.{LINEAGE_FIELD} is not a record"
    if provenance.get(OWN_FIELD) or provenance.get("base") is not None:
        return NO_TARGET
    return None
