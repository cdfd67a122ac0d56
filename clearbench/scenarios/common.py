"""What the scenarios share: seeded record subsets, the scoring stage body (eval.outputs with a resumable cache),
reading scored examples, writing a validated result, and the plan-time checks of a scenario's method list."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from clearbench.config import BenchConfig, ConfigError, deep_merge, to_dict
from clearbench.models import load_model
from clearbench.models.common import default_device
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, write_json_atomic
from clearbench.types import Record, unknown_name_message
from eval import outputs
from eval import scenarios as scores
from eval.example import ExampleOutput

CONTROL_CONFIGS = ("retain_perturbed", "real_faces", "real_world")
EXAMPLES_FILE, RESULT_FILE = "examples.json", "result.json"


def sample(records: list[Record], n: int, seed: str) -> list[Record]:
    """``n`` of ``records`` drawn by ``seed`` (all of them when there are no more), in id order; n = 0: all."""
    recs = sorted(records, key=lambda r: r.id)
    return recs if not n or len(recs) <= n else sorted(random.Random(seed).sample(recs, n), key=lambda r: r.id)


def controls(world, n: int, seed: int) -> dict[str, list[Record]]:
    """``n`` records of each control config the world has (retain, real faces, real world)."""
    return {c: sample(world.records(c), n, f"{seed}:{c}") for c in CONTROL_CONFIGS if c in world.configs}


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


def check_methods(cfg: BenchConfig, section: str, methods: list[str], variant: str) -> list[str]:
    """A scenario's methods ([]: study.methods) and study variant, checked by name (did you mean)."""
    from baselines import get_method

    if variant not in cfg.study.variants:
        raise ConfigError(f"{section}.variant: {unknown_name_message('study variant', variant, cfg.study.variants)}")
    for i, method in enumerate(methods):
        try:
            get_method(method)
        except ValueError as exc:
            raise ConfigError(f"{section}.methods[{i}]: {exc}") from None
    return methods or cfg.study.methods


def unlearn_section(cfg: BenchConfig, variant: str, what: str, **fields: Any) -> dict[str, Any]:
    """The unlearn section of a scenario's run: the study variant's overrides, then ``fields`` (method, forget,
    forget_batch or forget_config, ...). ``what`` names the scenario in errors."""
    section = deep_merge(to_dict(cfg.unlearn), cfg.study.variants[variant]) | fields
    stop = section.get("stop", {})
    if stop.get("rule", "fixed") != "fixed" and stop.get("threshold") == "gold":
        raise ConfigError(f"{what}: unlearn.stop.threshold=gold has no gold model here; use a numeric threshold or "
                          f"stop.rule=fixed")
    return section
