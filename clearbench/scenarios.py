"""Scenarios beyond one forget split (``study.scenarios``): their stage plans and stage functions.

sequential: ``sequential.steps`` deletion requests, the authors of ``sequential.forget`` in that many batches
(clearbench.unlearn.author_batches); request t is unlearned from request t-1's model (t = 1: the target) by an
ordinary unlearn stage with ``unlearn.forget_batch = [t, T]``, so each request is a stage: a killed study resumes
at the request it was in. After every request (and on the target: step 0) a fixed seeded subset of the forget
requests' records and the controls is scored through eval.outputs; the per-method result stage turns the
per-step examples into curves and scores (eval.scenarios) in ``scenarios/sequential/<method>/result/result.json``.
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from clearbench.config import BenchConfig, ConfigError, SequentialConfig, UnlearnConfig, deep_merge, from_dict, to_dict
from clearbench.data import open_world
from clearbench.models import load_model
from clearbench.models.common import default_device
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, write_json_atomic
from clearbench.types import Record, forget_percent, unknown_name_message
from clearbench.unlearn import author_batches
from data_gen.generate import WorldParams
from eval import outputs
from eval import scenarios as scores
from eval.example import ExampleOutput

CONTROL_CONFIGS = ("retain_perturbed", "real_faces", "real_world")
RESULT_FILE = "result.json"


# ---------------------------------------------------------------------------------------- records
def _sample(records: list[Record], n: int, seed: str) -> list[Record]:
    recs = sorted(records, key=lambda r: r.id)
    return recs if len(recs) <= n else sorted(random.Random(seed).sample(recs, n), key=lambda r: r.id)


def sequential_records(world, cfg: SequentialConfig) -> dict[str, list[Record]]:
    """The records scored at every step: ``n_per_request`` of each request's authors in ``forget``_perturbed
    (every modality) and ``n_control`` of each control config the world has; fixed by ``seed``."""
    config = f"{cfg.forget}_perturbed"
    if config not in world.configs:
        raise ValueError(f"world {world.path} has no {config}; generate it with {cfg.forget}'s percentage")
    forget: list[Record] = []
    for r, authors in enumerate(author_batches(world, cfg.forget, cfg.steps), 1):
        mine = [rec for rec in world.records(config) if rec.author_id in set(authors)]
        if not mine:
            raise ValueError(f"request {r} ({', '.join(authors)}) has no records in {config}")
        forget += _sample(mine, cfg.n_per_request, f"{cfg.seed}:{config}:{r}")
    out = {config: forget}
    for c in CONTROL_CONFIGS:
        if c in world.configs:
            out[c] = _sample(world.records(c), cfg.n_control, f"{cfg.seed}:{c}")
    return out


# ----------------------------------------------------------------------------------- stage functions
def _open_cache(out_dir: Path, key: dict[str, Any], resume: bool) -> Path:
    """``out_dir/cache`` of per-example outputs, kept when resuming the same model and settings."""
    cache, meta = out_dir / "cache", out_dir / "cache" / "meta.json"
    if not resume or not meta.is_file() or json.loads(meta.read_text()) != key:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta, key)
    return cache


def sequential_score_stage(model: Path, world: Path, out_dir: Path, cfg: SequentialConfig, resume: bool) -> None:
    """Score ``model`` on the scenario's records into ``out_dir/examples.json`` (resumes from its cache)."""
    world_ = open_world(world)
    records = sequential_records(world_, cfg)  # a bad split or request count fails before the model loads
    check_model_world(model, world_.fingerprint)
    fingerprint = model_fingerprint(model_dir(model))
    cache = _open_cache(Path(out_dir), {"model_fingerprint": fingerprint, "world_fingerprint": world_.fingerprint,
                                        "scoring": _score_view(cfg)}, resume)
    loaded = load_model(model_dir(model), device=default_device())
    examples: list[ExampleOutput] = []
    for config, recs in records.items():
        examples += outputs.score(loaded, recs, config, cache=cache / f"{config}.jsonl", batch_size=cfg.batch_size,
                                  run=outputs.ScoreRun(progress=False))
    write_json_atomic(Path(out_dir) / "examples.json", {
        "model": str(model), "model_fingerprint": fingerprint, "world_fingerprint": world_.fingerprint,
        "examples": [ex.to_dict() for ex in examples]}, compact=True)


def sequential_result_stage(scored: list[Path], world: Path, out_dir: Path, cfg: SequentialConfig,
                            run: dict[str, Any], resume: bool) -> None:
    """Curves and scores of one method's requests (``scored``: the score stages of steps 0..T) -> result.json."""
    world_ = open_world(world)
    steps = [json.loads((Path(p) / "examples.json").read_text()) for p in scored]
    result = scores.sequential_result(
        [[ExampleOutput.from_dict(d) for d in s["examples"]] for s in steps],
        author_batches(world_, cfg.forget, cfg.steps),
        run | {"world_fingerprint": world_.fingerprint, "sequential": to_dict(cfg), "models": [s["model"] for s in steps],
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        [s["model_fingerprint"] for s in steps])
    problems = scores.validate_scenario(result)
    if problems:
        raise ValueError("the sequential result does not validate: " + "; ".join(problems[:5]))
    write_json_atomic(Path(out_dir) / RESULT_FILE, result, compact=True)


# kind -> stage function, merged into clearbench.study.STAGE_FUNCTIONS; PRIOR_COST: the executor's ETA prior
STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sequential_score": sequential_score_stage,
    "sequential_result": sequential_result_stage,
}
PRIOR_COST = {"sequential_score": 0.3, "sequential_result": 0.05}


# ------------------------------------------------------------------------------------------ plans
def _score_view(cfg: SequentialConfig) -> dict[str, Any]:
    """The settings the scored records and their outputs depend on (not the methods, variant or modality)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("methods", "variant", "forget_modality")}


def _request_config(cfg: BenchConfig, method: str, t: int) -> BenchConfig:
    """The config of request ``t``'s unlearn stage: the unlearn section with the variant's overrides, the method,
    and the t-th author batch of ``sequential.forget``."""
    seq = cfg.sequential
    section = deep_merge(to_dict(cfg.unlearn), cfg.study.variants[seq.variant]) | {
        "method": method, "forget": seq.forget, "forget_modality": seq.forget_modality, "forget_batch": [t, seq.steps]}
    ucfg = from_dict(UnlearnConfig, section, "unlearn")
    if ucfg.stop.rule != "fixed" and ucfg.stop.threshold == "gold":
        raise ConfigError("sequential requests: unlearn.stop.threshold=gold has no gold model per request; use a "
                          "numeric threshold or stop.rule=fixed")
    return dataclasses.replace(cfg, unlearn=ucfg)


def _check(cfg: BenchConfig) -> list[str]:
    """The sequential section against the study and the world its params generate; returns the methods."""
    seq = cfg.sequential
    params = from_dict(WorldParams, {**cfg.world.params, "seed": cfg.world.seed}, "world.params").validate()
    if forget_percent(seq.forget) not in params.forget_percents:
        raise ConfigError(f"sequential.forget={seq.forget}: the world of world.params has no such split; add "
                          f"{forget_percent(seq.forget)} to world.params.forget_percents")
    authors = params.authors * forget_percent(seq.forget) // 100
    if seq.steps > authors:
        raise ConfigError(f"sequential.steps={seq.steps}: {seq.forget} has {authors} authors, too few for "
                          f"{seq.steps} requests of at least one author each; use at most {authors} steps")
    if seq.variant not in cfg.study.variants:
        raise ConfigError(f"sequential.variant: {unknown_name_message('study variant', seq.variant, cfg.study.variants)}")
    methods = seq.methods or cfg.study.methods
    from baselines import get_method  # a typo fails when the study is planned (did you mean)

    for i, method in enumerate(methods):
        try:
            get_method(method)
        except ValueError as exc:
            raise ConfigError(f"sequential.methods[{i}]: {exc}") from None
    return methods


def sequential_stages(cfg: BenchConfig, out: Path, target) -> list:
    """Per method: T unlearn stages (request t from request t-1's model), a score stage after each, one result
    stage; plus the target's score stage (step 0, shared by the methods)."""
    from clearbench.study import Stage, stage_key, unlearn_key  # the study imports this module: import at call

    methods, seq, root = _check(cfg), cfg.sequential, out / "scenarios" / "sequential"
    view = _score_view(seq)

    def score(model, rel: str) -> Stage:
        return Stage(f"scenarios/sequential/{rel}", "sequential_score", root / rel,
                     stage_key("sequential_score", view, model.key),
                     {"model": model.path, "world": out / "world", "out_dir": root / rel, "cfg": seq},
                     ("world", model.name))

    start = score(target, "score-00")
    stages = [start]
    for method in methods:
        prev, scored = target, [start]
        for t in range(1, seq.steps + 1):
            rcfg, rel = _request_config(cfg, method, t), f"{method}/step-{t:02d}"
            step = Stage(f"scenarios/sequential/{rel}", "unlearn", root / rel,
                         stage_key("unlearn", unlearn_key(rcfg.unlearn), prev.key),
                         {"cfg": rcfg, "world": out / "world", "target": prev.path, "out_dir": root / rel},
                         ("world", prev.name))
            scored.append(score(step, f"{method}/score-{t:02d}"))
            stages += [step, scored[-1]]
            prev = step
        unlearn = {k: v for k, v in to_dict(rcfg.unlearn).items() if k != "forget_batch"}
        run = {"scenario": "sequential", "method": method, "variant": seq.variant, "unlearn": unlearn}
        stages.append(Stage(f"scenarios/sequential/{method}/result", "sequential_result", root / method / "result",
                            stage_key("sequential_result", view, f"scores {scores.SEQUENTIAL_VERSION}",
                                      *[s.key for s in scored]),
                            {"scored": [s.path for s in scored], "world": out / "world",
                             "out_dir": root / method / "result", "cfg": seq, "run": run},
                            ("world", *[s.name for s in scored])))
    return stages


def scenario_stages(cfg: BenchConfig, out: Path, base, target) -> list:
    """The stages of ``study.scenarios`` other than ``forget`` (clearbench.study adds them after its own)."""
    stages = []
    if "sequential" in cfg.study.scenarios:
        stages += sequential_stages(cfg, Path(out), target)
    return stages
