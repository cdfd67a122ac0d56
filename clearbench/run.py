"""The study runner: where the core, baselines/ and eval/ meet (DESIGN.md, "Layering").

The planners (clearbench.study, .calibration, .metaeval, .scenarios) describe a study as stages, data that names
no code of eval/ or baselines/. This module checks a config against their registries (``check_config``), hands the
planners the versions of eval's scorers that enter stage keys (``build_study``) and names the function that makes
each kind of stage (``STAGE_FUNCTIONS``, which ``clearbench.executor`` calls as ``fn(**stage.args, resume=...)``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from clearbench import interrupt, study
from clearbench.calibration import VALIDATION_FILE, select_stage
from clearbench.cluster_config import check_accelerate_config
from clearbench.config import (BenchConfig, ConfigError, RestoreConfig, SequentialConfig, TrainConfig, from_dict,
                               to_dict)
from clearbench.data import open_world
from clearbench.eval_config import AttackConfig, EvalConfig
from clearbench.metaeval import manifest_of
from clearbench.models import FAMILIES
from clearbench.models.tiny_llava import TinyConfig
from clearbench.plan import ScorerVersions, Stage
from clearbench.provenance import write_json_atomic
from clearbench.scenarios.restore import corrupt_phase, corrupt_stage, corrupted_fields, restore_records
from clearbench.scenarios.restore import score_view as restore_view
from clearbench.scenarios.sequential import score_view as sequential_view
from clearbench.scenarios.sequential import sequential_records
from clearbench.stages import finetune, pretrain
from clearbench.types import check_name, forget_percent, forget_split, unknown_name_message
from clearbench.unlearn import author_batches, check_method_names, check_method_tables, resolve_method, unlearn
from data_gen import generate as data_gen_generate
from eval import scenarios as scenario_scores
from eval.aggregate import MetricOptions
from eval.attacks import attack, attack_versions, get_attack, options_of
from eval.evaluate import evaluate, load_gold, merge, write_shard
from eval.leaderboard import build_report, make_reference
from eval.metaeval import VERSION as METAEVAL_VERSION
from eval.metaeval_report import build_report as build_metaeval_report
from eval.metrics import metric_versions
from eval.replicates import build_replicate_report
from eval.scenario_io import RESULT_FILE, read_scored, score_into, write_result
from eval.scenario_report import build_scenario_report
from eval.validation import validate_model


# ------------------------------------------------------------------------------------ the plan
def scorer_versions() -> ScorerVersions:
    """The versions of eval's metrics, attacks, meta-evaluation and scenario scores (they enter stage keys)."""
    return ScorerVersions(metrics=metric_versions(), attacks=attack_versions(), metaeval=METAEVAL_VERSION,
                          restore=scenario_scores.RESTORE_VERSION, sequential=scenario_scores.SEQUENTIAL_VERSION)


def build_study(cfg: BenchConfig, out: Path) -> list[Stage]:
    """The ordered stages of the study described by ``cfg`` under directory ``out`` (with ``study.seeds``: every
    replicate's stages, then the combined report), after checking the config (``check_config``)."""
    check_config(cfg)
    return study.build_stages(cfg, Path(out), scorer_versions())


def plan_study(cfg: BenchConfig, out: Path, only_seed: int | None = None) -> tuple[list[Stage], Path]:
    """The stages to run and the run log they go to. ``only_seed``: that replicate's stages only (no combined
    report), logged in its own directory so that replicates can run in parallel processes."""
    stages = build_study(cfg, out)  # validates the grid before anything runs
    shards = cfg.cluster.resources("evaluate").processes()
    for stage in stages:  # how many processes score an evaluation: an argument, never part of its key
        if stage.kind == "evaluate" and shards > 1:
            stage.args["shards"] = shards
    if only_seed is None:
        return stages, Path(out) / "run.jsonl"
    if only_seed not in cfg.study.seeds:
        raise ConfigError(f"--only-seed {only_seed} is not one of study.seeds {cfg.study.seeds}")
    return [s for s in stages if s.name.startswith(f"seed-{only_seed}/")], study.seed_dir(out, only_seed) / "run.jsonl"


# ---------------------------------------------------------------------------------- validation
def check_config(cfg: BenchConfig) -> BenchConfig:
    """The sections the config types keep as plain mappings, checked against the types and registries that read
    them, and the study grid against the world its params generate: a mistake fails when the config is loaded,
    not an hour in, as one ConfigError naming the key (with "did you mean")."""
    from_dict(MetricOptions, cfg.study.metric_options, "study.metric_options")
    _checked(check_name, "model.family", "model family", cfg.model.family, list(FAMILIES))
    from_dict(TinyConfig, cfg.model.tiny, "model.tiny")
    params = from_dict(data_gen_generate.WorldParams, {**cfg.world.params, "seed": cfg.world.seed}, "world.params")
    _checked(params.validate, "world.params")
    check_method_tables(cfg.unlearn)
    if cfg.unlearn.method:
        resolve_method(cfg.unlearn)
    known = [forget_split(p) for p in params.forget_percents]
    for i, forget in enumerate(cfg.study.forget_splits):
        if forget not in known:
            raise ConfigError(f"study.forget_splits[{i}]: {unknown_name_message('forget split', forget, known)} The "
                              f"world of world.params has these; add {forget_percent(forget)} to "
                              f"world.params.forget_percents to make it")
    check_method_names(cfg.study.methods, "study.methods")
    for i, name in enumerate(cfg.study.attacks):
        _checked(get_attack, f"study.attacks[{i}]", name)
    for name, options in cfg.study.attack_options.items():
        _checked(get_attack, f"study.attack_options.{name}", name)
        options_of(AttackConfig(attack=name, options=options))
    if cfg.metaeval.enabled:  # the pool's attacks (clearbench.metaeval.check_pool checks the rest when planning)
        for i, name in enumerate(cfg.metaeval.attacks):
            _checked(_attack_options, f"metaeval.attacks[{i}]", name, cfg.metaeval.attack_options.get(name, {}))
    for kind in cfg.cluster.kinds:  # a job's resources: a known stage kind, Resources fields
        _checked(check_name, f"cluster.kinds.{kind}", "stage kind", kind, list(STAGE_FUNCTIONS))
        cfg.cluster.resources(kind)
    for where, fields in [("cluster.default", {"accelerate_config": cfg.cluster.default.accelerate_config}),
                          *((f"cluster.kinds.{kind}", fields) for kind, fields in cfg.cluster.kinds.items())]:
        if fields.get("accelerate_config"):  # the file the training stages' processes run under
            _checked(check_accelerate_config, f"{where}.accelerate_config", fields["accelerate_config"])
    return cfg


def _attack_options(name: str, options: dict[str, Any]) -> Any:
    get_attack(name)
    return options_of(AttackConfig(attack=name, options=options))


def _checked(fn: Callable[..., Any], where: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------- stage functions
def evaluate_stage(model: Path, world: Path, out: Path, gold: Path | str, cfg: EvalConfig, resume: bool,
                   shards: int = 1) -> None:
    """Score ``model`` into ``out`` (gold "self": it is the gold); an interrupted one resumes from its cache.
    ``shards`` > 1: that many processes score a share of the records each, merged into the same result."""
    if shards <= 1:
        evaluate(model, open_world(world), out, gold=gold, cfg=cfg, progress=True)
        return
    load_gold(gold, cfg, open_world(world).fingerprint)  # a gold of another world or split fails before scoring
    merge(score_shards(model, world, Path(out), cfg, shards), Path(out), gold)


def score_shards(model: Path, world: Path, out: Path, cfg: EvalConfig, n: int) -> list[Path]:
    """Shard files ``out.shards/shard-i-of-n.json`` of the evaluation ``out``, scored by ``n`` spawned processes at
    once: one GPU each (round robin over the visible ones), else this process's CPU threads divided among them.
    Each resumes from its own cache; a Ctrl-C or a failed shard stops the others."""
    import multiprocessing

    import torch

    devices, threads = _shard_devices(n), max(1, torch.get_num_threads() // n)
    parts = [out.with_suffix(".shards") / f"shard-{i}-of-{n}.json" for i in range(n)]
    ctx = multiprocessing.get_context("spawn")  # a forked child of a process whose torch threads ran can hang
    procs = [ctx.Process(target=_score_shard, name=f"shard {i}/{n}",
                         args=(model, world, parts[i], cfg, (i, n), devices[i], threads)) for i in range(n)]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    failed = [f"{i}/{n} (exit code {proc.exitcode})" for i, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"evaluation shard {', '.join(failed)} of {out} failed; its traceback is printed above")
    return parts


def _shard_devices(n: int) -> list[str | None]:
    """Each shard's GPU (a CUDA_VISIBLE_DEVICES entry, round robin), or None for each without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return [None] * n
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [ids[i % len(ids)] for i in range(n)]


def _score_shard(model: Path, world: Path, out: Path, cfg: EvalConfig, shard: tuple[int, int], device: str | None,
                 threads: int) -> None:
    """Body of a shard process: its GPU (set before CUDA starts) or its CPU threads, then its share of the records."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    import torch

    torch.set_num_threads(threads)
    with interrupt.handling():
        write_shard(model, open_world(world), out, cfg, shard, progress=shard[0] == 0)


def report_stage(reports: list[dict[str, Any]], resume: bool) -> None:
    """One leaderboard report per forget split: {results, gold, dest, curves[, attacks: {run: [files]}]}."""
    for r in reports:
        extra = {"attacks": r["attacks"]} if r.get("attacks") else {}
        ref = make_reference(r["gold"], world=r["world"]) if r.get("world") else make_reference(r["gold"])
        build_report(r["results"], r["dest"], ref, r["curves"], **extra)


def attack_stage(model: Path, world: Path, out: Path, cfg: AttackConfig, gold: Path, resume: bool) -> None:
    """One attack on one model (a killed attack resumes at its next setting from its cache)."""
    attack(model, world, out, cfg, gold=gold, overwrite=True)


def replicate_report_stage(reports: list[dict[str, Any]], resume: bool) -> None:
    """One mean ± sd report per forget split: {runs: {seed: (results, gold)}, dest}."""
    for r in reports:
        build_replicate_report(r["runs"], r["dest"])


def validate_stage(model: Path, world: Path, out_dir: Path, spec: dict[str, Any], resume: bool) -> None:
    """Score a model's validation records (``spec``: forget, forget_modality, eval_cfg, n_per_cell) into
    ``out_dir/validation.json`` (the calibration's)."""
    scores = validate_model(model, open_world(world), spec["forget"], spec["forget_modality"], spec["eval_cfg"],
                            spec["n_per_cell"])
    write_json_atomic(Path(out_dir) / VALIDATION_FILE, scores)


def metaeval_report_stage(pool: dict[str, Any], out_dir: Path, resume: bool) -> None:
    """``metaeval/report/``: ``manifest.json`` (the pool's provenance), then eval.metaeval_report's files."""
    manifest = manifest_of(pool)
    write_json_atomic(Path(out_dir) / "manifest.json", manifest)
    build_metaeval_report(manifest, Path(out_dir), pool["bootstrap"], pool["seed"])


def restore_score_stage(model: Path, world: Path, out_dir: Path, cfg: RestoreConfig, resume: bool) -> None:
    """Score ``model`` on the victims' true facts and the controls into ``out_dir/examples.json``."""
    world_ = open_world(world)
    score_into(model, world_, restore_records(world_, cfg), out_dir, restore_view(cfg), cfg.batch_size, resume)


def restore_result_stage(scored: dict[str, Path], world: Path, out_dir: Path, run: dict[str, Any],
                         resume: bool) -> None:
    """The restoration scores of one corruption set (``scored``: clean, corrupted and each run's score stage)."""
    world_ = open_world(world)
    models = {name: read_scored(path) for name, path in scored.items()}
    write_result(out_dir, scenario_scores.restore_result(
        {name: examples for name, (examples, _) in models.items()},
        {name: info["model_fingerprint"] for name, (_, info) in models.items()},
        corrupted_fields(world_, models["clean"][0]),
        run | {"world_fingerprint": world_.fingerprint, "models": {n: info["model"] for n, (_, info) in models.items()},
               "world_corruption": world_.manifest["corruption"], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def sequential_score_stage(model: Path, world: Path, out_dir: Path, cfg: SequentialConfig, resume: bool) -> None:
    """Score ``model`` on the scenario's records into ``out_dir/examples.json`` (resumes from its cache)."""
    world_ = open_world(world)
    score_into(model, world_, sequential_records(world_, cfg), out_dir, sequential_view(cfg), cfg.batch_size, resume)


def sequential_result_stage(scored: list[Path], world: Path, out_dir: Path, cfg: SequentialConfig,
                            run: dict[str, Any], resume: bool) -> None:
    """Curves and scores of one method's requests (``scored``: the score stages of steps 0..T) -> result.json."""
    world_ = open_world(world)
    steps = [read_scored(p) for p in scored]
    write_result(out_dir, scenario_scores.sequential_result(
        [examples for examples, _ in steps], author_batches(world_, cfg.forget, cfg.steps),
        run | {"world_fingerprint": world_.fingerprint, "sequential": to_dict(cfg),
               "models": [info["model"] for _, info in steps], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        [info["model_fingerprint"] for _, info in steps]))


def scenario_report_stage(restore: list[Path], sequential: list[Path], dest: Path, resume: bool) -> None:
    """``report/scenarios/``: the scenarios' tables, plots and page (eval.scenario_report)."""
    build_scenario_report([Path(p) / RESULT_FILE for p in restore], [Path(p) / RESULT_FILE for p in sequential], dest)


# kind -> the function that makes a stage's output, called as fn(**stage.args, resume=...)
STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "generate": study.generate_stage,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate_stage,
    "unlearn": unlearn,
    "report": report_stage,
    "replicate_report": replicate_report_stage,
    "attack": attack_stage,
    "validate": validate_stage,
    "calibrate_select": select_stage,
    "metaeval_report": metaeval_report_stage,
    "sequential_score": sequential_score_stage,
    "sequential_result": sequential_result_stage,
    "corrupt": corrupt_stage,
    "restore_score": restore_score_stage,
    "restore_result": restore_result_stage,
    "scenario_report": scenario_report_stage,
}
# the kinds whose function runs the training loop in every process of ``accelerate launch``, one of them writing:
# a job runs them in ``Resources.training_processes()`` processes (clearbench.cluster, clearbench.launch_stage)
TRAINING_KINDS = ("pretrain", "finetune", "unlearn", "corrupt")


def train_configs(stage: Stage) -> list[TrainConfig]:
    """The train sections the training loop runs with in a stage of TRAINING_KINDS (a pretrain phase with a vision
    objective trains without it)."""
    cfg = stage.args["cfg"]
    if stage.kind == "unlearn":
        return [cfg.unlearn.train]
    phases = {"pretrain": lambda: [p for p in cfg.pretrain.phases if p.objective == "lm"],
              "finetune": cfg.finetune.resolved_phases, "corrupt": lambda: [corrupt_phase(cfg.restore)]}[stage.kind]()
    return [p.train for p in phases]
