"""Checks that need the world or the model.

``world_problems``: a result's examples are exactly the records its evaluation config selects from the world
(``eval.evaluate.select_records``), with the world's texts. ``verify``: re-score a seeded random sample of a
result's examples with the submitted model (``eval.outputs.score``, the evaluation's own scoring pass) and
compare every stored per-example value; the outcome is written beside the result as ``NAME.verified.json``
(bound to the file's sha256 and the model fingerprint), which the leaderboard reads to mark the row "re-scored".
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import clearbench
from clearbench.provenance import device_info, library_versions, model_dir, model_fingerprint, write_json_atomic
from eval.evaluate import EvalConfig, eval_configs, select_records
from eval.verify import (SIDECAR_KIND, VALUE_FIELDS, check_result, field_problems, id_problems, make_reference,
                         read_json, sidecar_path, stage_record_problems)


@dataclasses.dataclass(frozen=True)
class Sample:
    """Which examples are re-scored and how closely their values must agree (same device and dtype as the
    evaluation: a bf16 GPU run re-scored on a CPU differs by ~1e-2 and needs a looser tolerance)."""

    n: int = 32
    seed: int = 0
    rel_tol: float = 1e-4
    abs_tol: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"--sample must be an integer >= 1, got {self.n!r}")
        for name in ("rel_tol", "abs_tol"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")


def eval_config_of(result: dict[str, Any]) -> EvalConfig:
    """The evaluation config a result was scored with (its provenance), which selects its examples."""
    cfg = (result.get("provenance") or {}).get("config")
    if not isinstance(cfg, dict):
        raise ValueError("provenance.config is not an evaluation config")
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    return EvalConfig(**{k: v for k, v in cfg.items() if k in names})


def record_fields(rec) -> dict[str, Any]:
    """A world record as the example fields an evaluation copies from it (eval.outputs.score_chunk)."""
    return {"split": rec.split, "author_id": rec.author_id, "group": rec.group, "modality": str(rec.modality),
            "task": str(rec.task), "name": rec.name, "answer": rec.answer,
            "paraphrased_answer": rec.paraphrased_answer or rec.answer,
            "perturbed_answers": list(rec.perturbed_answers), "image_role": rec.image_role}


def expected_records(world, cfg: EvalConfig) -> dict[str, Any]:
    """{id: record} of every record an evaluation with ``cfg`` scores on ``world``."""
    return {r.id: r for config in eval_configs(world, cfg.forget)
            for r in select_records(world.records(config), config, cfg)}


def world_problems(result: dict[str, Any], world) -> list[str]:
    """The result's examples must be the records its own evaluation config selects from the world, with the
    world's texts (the ``expected`` block of the file is not trusted)."""
    try:
        cfg = eval_config_of(result)
        records = expected_records(world, cfg)
    except (TypeError, ValueError) as e:
        return [f"the world cannot give this result's examples: {' '.join(str(e).split())}"]
    mine = {d["id"]: d for d in result["examples"]}
    what = f"the world's selection ({cfg.forget}, max_per_cell={cfg.max_per_cell}, max_per_config={cfg.max_per_config})"
    return id_problems(list(mine), list(records), what) + field_problems(
        mine, {i: record_fields(r) for i, r in records.items()}, what)


def sample_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded random sample of ``n`` ids (all when there are fewer), in id order."""
    return sorted(random.Random(seed).sample(sorted(ids), min(n, len(ids))))


def _flat(values: Any) -> list[float]:
    return [x for row in values for x in row] if values and isinstance(values[0], list) else list(values)


def value_mismatches(stored: dict[str, Any], fresh: dict[str, Any], sample: Sample) -> list[str]:
    """Every stored value of one example that the re-scoring does not reproduce (first per field)."""
    where = stored["id"]
    out = [] if stored["generation"] == fresh["generation"] else [
        f"{where}: generation {stored['generation']!r} in the file, {fresh['generation']!r} re-scored"]
    for name in VALUE_FIELDS:
        a, b = _flat(stored[name]), _flat(fresh[name])
        if len(a) != len(b):
            out.append(f"{where}: {name} has {len(a)} values in the file, {len(b)} re-scored")
            continue
        bad = next((k for k, (x, y) in enumerate(zip(a, b))
                    if not math.isclose(x, y, rel_tol=sample.rel_tol, abs_tol=sample.abs_tol)), None)
        if bad is not None:
            out.append(f"{where}: {name}[{bad}] = {a[bad]!r} in the file, {b[bad]!r} re-scored")
    return out


def rescore(result: dict[str, Any], model: str | Path, world, ids: Sequence[str], sample: Sample) -> list[str]:
    """Score the records ``ids`` with the model (the result's batch size and generation length) and compare."""
    from clearbench.models import load_model
    from clearbench.models.common import default_device
    from eval import outputs

    cfg = eval_config_of(result)
    stored = {d["id"]: d for d in result["examples"]}
    by_config: dict[str, set[str]] = defaultdict(set)
    for i in ids:
        by_config[stored[i]["split"]].add(i)
    loaded = load_model(model_dir(model), device=default_device())
    out = []
    for config, wanted in sorted(by_config.items()):
        records = [r for r in world.records(config) if r.id in wanted]
        for ex in outputs.score(loaded, records, config, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                run=outputs.ScoreRun(progress=False)):
            out += value_mismatches(stored[ex.id], ex.to_dict(), sample)
    return out


def verify(path: str | Path, model: str | Path, world, sample: Sample = Sample(),
           gold: str | Path | None = None) -> dict[str, Any]:
    """Check the result at ``path`` against the world (and ``gold``), re-score a sample of its examples with
    ``model``, and write the outcome to ``sidecar_path(path)``; returns that record."""
    ref = make_reference(gold, world=world)
    result, data = read_json(path)
    if not isinstance(result, dict) or not isinstance(result.get("examples"), list):
        raise ValueError(f"{path} is not a result file (a JSON object with examples)")
    problems = check_result(result, ref)
    fp = model_fingerprint(model_dir(model))
    claimed = (result.get("provenance") or {}).get("model_fingerprint")
    if fp != claimed:
        problems.append(f"the model at {model} has fingerprint {fp[:16]}..., the result claims {str(claimed)[:16]}...: "
                        f"pass the model the result was scored with")
    problems += stage_record_problems(result["provenance"], model)
    ids = sample_ids([d["id"] for d in result["examples"]], sample.n, sample.seed)
    if not problems:
        problems = rescore(result, model, ref.world, ids, sample)
    record = {"kind": SIDECAR_KIND, "version": 1, "result": Path(path).name,
              "result_sha256": hashlib.sha256(data).hexdigest(), "model": str(model), "model_fingerprint": claimed,
              "world_fingerprint": ref.world.fingerprint, "sample": {"n": sample.n, "seed": sample.seed, "ids": ids},
              "tolerance": {"rel": sample.rel_tol, "abs": sample.abs_tol},
              "outcome": "failed" if problems else "passed", "problems": problems[:50], "n_problems": len(problems),
              "skipped": ref.skipped, "clearbench_version": clearbench.__version__,
              "library_versions": library_versions(), "device": device_info(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(sidecar_path(path), record)
    return record
