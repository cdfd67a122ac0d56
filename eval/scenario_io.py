"""A scenario's scoring stage body and its result files: score a model on the scenario's records through the one
scoring pass (eval.outputs, resumable from a per-example cache) into ``examples.json``; read them back; validate a
result (every value recomputed from the stored examples, eval.scenarios) and write ``result.json``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from clearbench.models import load_model
from clearbench.models.common import default_device
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, write_json_atomic
from clearbench.types import Record
from eval import outputs
from eval import scenarios as scores
from eval.example import ExampleOutput

EXAMPLES_FILE, RESULT_FILE = "examples.json", "result.json"


def _open_cache(out_dir: Path, key: dict[str, Any], resume: bool) -> Path:
    """``out_dir/cache`` of per-example outputs, kept when resuming with the same model and settings."""
    cache, meta = out_dir / "cache", out_dir / "cache" / "meta.json"
    if not resume or not meta.is_file() or json.loads(meta.read_text()) != key:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta, key)
    return cache


def score_into(model: Path, world, records: dict[str, list[Record]], out_dir: Path, view: dict[str, Any],
               batch_size: int, resume: bool) -> None:
    """Score ``model`` on ``records`` (eval config -> records) through eval.outputs into ``out_dir/examples.json``;
    an interrupted attempt resumes from the per-example cache when the model and ``view`` (the settings the
    records depend on) are the same."""
    out_dir = Path(out_dir)
    check_model_world(model, world.fingerprint)
    fingerprint = model_fingerprint(model_dir(model))
    cache = _open_cache(out_dir, {"model_fingerprint": fingerprint, "world_fingerprint": world.fingerprint,
                                  "scoring": view}, resume)
    loaded = load_model(model_dir(model), device=default_device())
    examples: list[ExampleOutput] = []
    for config, recs in records.items():
        examples += outputs.score(loaded, recs, config, cache=cache / f"{config}.jsonl", batch_size=batch_size,
                                  run=outputs.ScoreRun(progress=False))
    write_json_atomic(out_dir / EXAMPLES_FILE, {
        "model": str(model), "model_fingerprint": fingerprint, "world_fingerprint": world.fingerprint,
        "examples": [ex.to_dict() for ex in examples]}, compact=True)


def read_scored(path: Path) -> tuple[list[ExampleOutput], dict[str, Any]]:
    """A score stage's examples and its model's path and fingerprint."""
    data = json.loads((Path(path) / EXAMPLES_FILE).read_text())
    return [ExampleOutput.from_dict(d) for d in data.pop("examples")], data


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """Validate (recompute every value and score from the stored examples), then write ``result.json``."""
    problems = scores.validate_scenario(result)
    if problems:
        raise ValueError(f"the {result.get('scenario')} result does not validate: " + "; ".join(problems[:5]))
    write_json_atomic(Path(out_dir) / RESULT_FILE, result, compact=True)


