"""The study plan of ``clearbench run``: the stages of a preset's study, what each reads, and its key.

A study is a list of stages: generate, pretrain (tiny base), finetune the target and one gold per forget
split, evaluate, unlearn (method x variant x forget modality) and evaluate each, report. A stage is data:
its ``kind`` names the function that makes its output (``STAGE_FUNCTIONS``), ``args`` are that function's
arguments (paths and config dataclasses, so a worker process receives them pickled), ``needs`` the stages
whose outputs it reads. Its *key* hashes its own config section with the keys of the stages it reads, so a
changed setting re-runs exactly the stages downstream of it (``clearbench.executor`` runs them).

Replicates (``study.seeds: [s0, s1, ...]``): one complete study per seed in ``OUT/seed-<s>/`` (config from
``seed_config``), one stage list whose names are prefixed ``seed-<s>/``, then ``OUT/report/``: each table's
cells as mean ± sd over the seeds. A seed's stage keys do not depend on the other seeds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from baselines import get_method
from clearbench import calibration, metaeval, scenarios
from clearbench.config import BenchConfig, ConfigError, WorldConfig, deep_merge, from_dict, to_dict
from clearbench.data import open_world
from clearbench.models import FAMILIES
from clearbench.models.tiny_llava import TinyConfig
from clearbench.plan import Stage, eval_config, stage_key, unlearn_stage
from clearbench.stages import finetune, pretrain
from clearbench.types import check_name, forget_percent, forget_split, retain_split, unknown_name_message
from clearbench.unlearn import check_method_tables, resolve_method, unlearn
from data_gen import generate as data_gen_generate
from eval.aggregate import MetricOptions
from eval.attacks import AttackConfig, attack, attack_versions, get_attack, options_of
from eval.evaluate import EvalConfig, evaluate
from eval.leaderboard import build_report, make_reference
from eval.metrics import metric_versions
from eval.replicates import build_replicate_report

# ------------------------------------------------------------------------------- stage functions
def generate_stage(out: Path, cfg: WorldConfig, resume: bool) -> None:
    """The world of the preset's ``world`` section (an interrupted one is written again, whole)."""
    params = from_dict(data_gen_generate.WorldParams, {**cfg.params, "seed": cfg.seed})
    data_gen_generate.generate_world(out, params, overwrite=True)


def evaluate_stage(model: Path, world: Path, out: Path, gold: Path | str, cfg: EvalConfig, resume: bool) -> None:
    """Score ``model`` into ``out`` (gold "self": it is the gold); an interrupted one resumes from its cache."""
    evaluate(model, open_world(world), out, gold=gold, cfg=cfg, progress=True)


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


# kind -> the function that makes a stage's output, called as fn(**stage.args, resume=...)
STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "generate": generate_stage,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate_stage,
    "unlearn": unlearn,
    "report": report_stage,
    "replicate_report": replicate_report_stage,
    "attack": attack_stage,
    "validate": calibration.validate_stage,
    "calibrate_select": calibration.select_stage,
    **scenarios.STAGE_FUNCTIONS,
    **metaeval.STAGE_FUNCTIONS,
}

# ------------------------------------------------------------------------------------ names
def _pct(forget: str) -> str:
    return forget.removeprefix("forget")


def unlearn_run_name(method: str, variant: str, modality: str, forget: str) -> str:
    return "-".join(x for x in (method, variant, modality, _pct(forget)) if x)


def seed_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def seed_config(cfg: BenchConfig, seed: int) -> BenchConfig:
    """The single-study config of replicate ``seed``: world.seed, every pretrain and finetune
    phase's and the unlearn section's train.seed all set to ``seed``; study.seeds emptied. (A variant
    that pins unlearn train.seed keeps its pin; method options such as rmu's ``seed`` are not touched.)"""
    d = to_dict(cfg)
    d["world"]["seed"] = seed
    for phase in d["pretrain"]["phases"]:
        phase["train"]["seed"] = seed
    for phase in [d["finetune"]["phase"], *d["finetune"]["phases"]]:
        phase["train"]["seed"] = seed
    d["unlearn"]["train"]["seed"] = seed
    d["study"]["seeds"] = []
    return from_dict(BenchConfig, d)


# ---------------------------------------------------------------------------------- validation
def check_config(cfg: BenchConfig) -> BenchConfig:
    """The sections the config types keep as plain mappings, checked against the types that read them, and the
    study grid against the world its params generate: a mistake fails when the config is loaded, not an hour in,
    as one ConfigError naming the key (with "did you mean")."""
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
    for i, method in enumerate(cfg.study.methods):
        _checked(get_method, f"study.methods[{i}]", method)
    for i, name in enumerate(cfg.study.attacks):
        _checked(get_attack, f"study.attacks[{i}]", name)
    for name, options in cfg.study.attack_options.items():
        _checked(get_attack, f"study.attack_options.{name}", name)
        options_of(AttackConfig(attack=name, options=options))
    return cfg


def _checked(fn: Callable[..., Any], where: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------------ the plan
def build_study(cfg: BenchConfig, out: Path) -> list[Stage]:
    """The ordered stages of the study described by ``cfg`` under directory ``out`` (with
    ``study.seeds``: every replicate's stages, then the combined report)."""
    check_config(cfg)
    if cfg.study.seeds:
        return _build_replicates(cfg, Path(out))
    return _build_one(cfg, Path(out))


def plan_study(cfg: BenchConfig, out: Path, only_seed: int | None = None) -> tuple[list[Stage], Path]:
    """The stages to run and the run log they go to. ``only_seed``: that replicate's stages only (no combined
    report), logged in its own directory so that replicates can run in parallel processes."""
    stages = build_study(cfg, out)  # validates the grid before anything runs
    if only_seed is None:
        return stages, Path(out) / "run.jsonl"
    if only_seed not in cfg.study.seeds:
        raise ConfigError(f"--only-seed {only_seed} is not one of study.seeds {cfg.study.seeds}")
    return [s for s in stages if s.name.startswith(f"seed-{only_seed}/")], seed_dir(out, only_seed) / "run.jsonl"


def _build_replicates(cfg: BenchConfig, out: Path) -> list[Stage]:
    stages: list[Stage] = []
    evals: dict[int, list[Stage]] = {}
    for seed in cfg.study.seeds:
        sub = _build_one(seed_config(cfg, seed), seed_dir(out, seed))
        for stage in sub:
            stage.name = f"seed-{seed}/{stage.name}"
            stage.needs = tuple(f"seed-{seed}/{n}" for n in stage.needs)
        stages += sub
        evals[seed] = [s for s in sub if s.kind == "evaluate"]
    if cfg.study.report:
        reports = []
        for forget in cfg.study.forget_splits:
            pct = _pct(forget)
            runs = {seed: ([e.path for e in es if e.path.stem.endswith(f"-{pct}")],
                           seed_dir(out, seed) / "results" / f"gold-{pct}.json") for seed, es in evals.items()}
            reports.append({"runs": runs, "dest": _report_dir(cfg, out, forget)})
        every = [e for es in evals.values() for e in es]
        stages.append(Stage("report", "replicate_report", out / "report",
                            stage_key("report", cfg.study, *[e.key for e in every]), {"reports": reports},
                            tuple(e.name for e in every)))
    return stages


def _build_one(cfg: BenchConfig, out: Path) -> list[Stage]:
    # the generator's version is an input too: a world written by another generator is regenerated,
    # and everything trained or scored on it re-runs (open_world would refuse an older schema anyway)
    world_key = stage_key("generate", cfg.world, f"generator {data_gen_generate.GENERATOR_VERSION}")
    stages = [Stage("world", "generate", out / "world", world_key, {"out": out / "world", "cfg": cfg.world})]
    base = None
    if cfg.model.family == "tiny-llava":  # else a real checkpoint (local dir or hub id) is the base
        base = Stage("base", "pretrain", out / "base",
                     stage_key("pretrain", {"model": cfg.model, "pretrain": cfg.pretrain}, world_key),
                     {"cfg": cfg, "world": out / "world", "out_dir": out / "base"}, ("world",))
        stages.append(base)
    if cfg.metaeval.enabled:  # the meta-evaluation's model pool instead of the study (clearbench.metaeval)
        return stages + metaeval.pool_stages(cfg, out, base)
    target = _finetune_stage(cfg, out, "target", "full", base)
    stages.append(target)
    if cfg.calibration.enabled:  # a learning-rate sweep instead of the study
        return stages + calibration.sweep_stages(cfg, out, target)
    for forget in cfg.study.forget_splits if "forget" in cfg.study.scenarios else ():
        stages += _forget_split_stages(cfg, out, forget, base, target)
    evals = [s for s in stages if s.kind == "evaluate"]
    if cfg.study.report and evals:
        stages.append(_report_stage(cfg, out, evals, [s for s in stages if s.kind == "attack"]))
    return stages + scenarios.scenario_stages(cfg, out, base, target)


def _finetune_stage(cfg: BenchConfig, out: Path, name: str, split: str, base: Stage | None) -> Stage:
    base_key = base.key if base else stage_key("checkpoint", cfg.model)
    parent = base.path if base else Path(cfg.model.path)
    args = {"cfg": cfg, "world": out / "world", "parent": parent, "split": split, "out_dir": out / name}
    return Stage(name, "finetune", out / name, stage_key("finetune", {"finetune": cfg.finetune, "split": split}, base_key),
                 args, ("world", "base") if base else ("world",))


def _forget_split_stages(cfg: BenchConfig, out: Path, forget: str, base: Stage | None, target: Stage) -> list[Stage]:
    """The gold of ``forget`` and its evaluation, the base and target evaluations, every unlearning run and its
    evaluation."""
    pct = _pct(forget)
    gold = _finetune_stage(cfg, out, f"gold-{pct}", retain_split(forget), base)
    gold_eval = _eval_stage(cfg, out, f"gold-{pct}", gold, forget, None)
    stages = [gold, gold_eval]
    if cfg.study.evaluate_base:
        stages += [_eval_stage(cfg, out, f"{m.name}-{pct}", m, forget, gold_eval) for m in (base, target) if m]
    stages += _attack_stages(cfg, out, f"target-{pct}", target, forget, gold_eval)  # what attacks do to a model that knows
    for modality in cfg.study.forget_modalities:
        for variant, overrides in cfg.study.variants.items():
            for method in cfg.study.methods:
                name = unlearn_run_name(method, variant, modality, forget)
                section = deep_merge(to_dict(cfg.unlearn), overrides) | {
                    "method": method, "forget": forget, "forget_modality": modality}
                u = _unlearn_stage(cfg, out, name, section, target)
                stages += [u, _eval_stage(cfg, out, name, u, forget, gold_eval)]
                stages += _attack_stages(cfg, out, name, u, forget, gold_eval)
    return stages


def _unlearn_stage(cfg: BenchConfig, out: Path, name: str, section: dict[str, Any], target: Stage) -> Stage:
    # a stop rule with a gold threshold reads a gold model: wait for this study's golds
    stop = section.get("stop", {})
    golds = tuple(f"gold-{_pct(f)}" for f in cfg.study.forget_splits) \
        if stop.get("rule", "fixed") != "fixed" and stop.get("threshold") == "gold" else ()
    return unlearn_stage(cfg, out / "world", out / "unlearn" / name, f"unlearn/{name}", section, target, golds)


def _eval_stage(cfg: BenchConfig, out: Path, name: str, model: Stage, forget: str, gold: Stage | None) -> Stage:
    """The evaluation of ``model``'s output against the gold's result (``gold`` None: it is the gold)."""
    ecfg = eval_config(cfg.study, forget)
    path = out / "results" / f"{name}.json"
    args = {"model": model.path, "world": out / "world", "out": path, "gold": gold.path if gold else "self",
            "cfg": ecfg}
    # the metric versions are inputs too: a changed formula re-aggregates (from the evaluation's cache)
    key = stage_key("evaluate", ecfg, model.key, gold.key if gold else "self", json.dumps(metric_versions()))
    return Stage(f"evaluate/{name}", "evaluate", path, key, args, ("world", model.name) + ((gold.name,) if gold else ()))


def _attack_stages(cfg: BenchConfig, out: Path, name: str, model: Stage, forget: str, gold: Stage) -> list[Stage]:
    """Every attack of ``study.attacks`` on ``model``, probes capped like the evaluation (or tighter)."""
    study, stages = cfg.study, []
    cap = study.attack_max_per_cell or study.eval_max_per_cell
    for name_ in study.attacks:
        acfg = AttackConfig(attack=name_, forget=forget, max_per_cell=cap,
                            max_per_config=0 if cap else study.eval_max_per_config, batch_size=study.eval_batch_size,
                            options=study.attack_options.get(name_, {}))
        path = out / "attacks" / name / f"{name_}.json"
        versions = json.dumps([attack_versions()[name_], metric_versions()])
        stages.append(Stage(f"attack/{name}/{name_}", "attack", path, stage_key("attack", acfg, model.key, gold.key, versions),
                            {"model": model.path, "world": out / "world", "out": path, "cfg": acfg, "gold": gold.path},
                            ("world", model.name, gold.name)))
    return stages


def _report_dir(cfg: BenchConfig, out: Path, forget: str) -> Path:
    return out / "report" if len(cfg.study.forget_splits) == 1 else out / "report" / forget


def _report_stage(cfg: BenchConfig, out: Path, evals: list[Stage], attacks: list[Stage]) -> Stage:
    reports = []
    for forget in cfg.study.forget_splits:
        pct = _pct(forget)
        mine = [e for e in evals if e.path.stem.endswith(f"-{pct}")]
        curves = [e.args["model"] for e in mine if e.args["model"].parent == out / "unlearn"]  # unlearning runs
        report = {"results": [e.path for e in mine], "gold": out / "results" / f"gold-{pct}.json",
                  "dest": _report_dir(cfg, out, forget), "curves": curves, "world": out / "world"}
        runs = {e.path.stem: [a.path for a in attacks if a.path.parent.name == e.path.stem] for e in mine}
        if attacks:
            report["attacks"] = {run: files for run, files in runs.items() if files}
        reports.append(report)
    upstream = evals + attacks
    return Stage("report", "report", out / "report", stage_key("report", cfg.study, *[e.key for e in upstream]),
                 {"reports": reports}, tuple(e.name for e in upstream))
