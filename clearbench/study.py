"""The study plan of ``clearbench run``: the stages of a preset's study, what each reads, and its key.

A study is a list of stages: generate, pretrain (tiny base), finetune the target and one gold per forget
split, evaluate, unlearn (method x variant x forget modality) and evaluate each, report. A stage is data:
its ``kind`` names the function that makes its output (``clearbench.run.STAGE_FUNCTIONS``), ``args`` are that
function's arguments (paths and config dataclasses, so a worker process receives them pickled), ``needs`` the
stages whose outputs it reads. Its *key* hashes its own config section with the keys of the stages it reads, so a
changed setting re-runs exactly the stages downstream of it (``clearbench.executor`` runs them).

Replicates (``study.seeds: [s0, s1, ...]``): one complete study per seed in ``OUT/seed-<s>/`` (config from
``seed_config``), one stage list whose names are prefixed ``seed-<s>/``, then ``OUT/report/``: each table's
cells as mean ± sd over the seeds. A seed's stage keys do not depend on the other seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clearbench import calibration, metaeval, scenarios
from clearbench.config import BenchConfig, WorldConfig, deep_merge, from_dict, to_dict
from clearbench.eval_config import AttackConfig
from clearbench.plan import (ScorerVersions, Stage, attack_stage, eval_config, evaluation_stage, finetune_stage,
                             stage_key, unlearn_stage)
from clearbench.types import retain_split
from data_gen import generate as data_gen_generate

# ------------------------------------------------------------------------------- stage functions
def generate_stage(out: Path, cfg: WorldConfig, resume: bool) -> None:
    """The world of the preset's ``world`` section (an interrupted one is written again, whole)."""
    params = from_dict(data_gen_generate.WorldParams, {**cfg.params, "seed": cfg.seed})
    data_gen_generate.generate_world(out, params, overwrite=True)


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


# ------------------------------------------------------------------------------------ the plan
def build_stages(cfg: BenchConfig, out: Path, versions: ScorerVersions) -> list[Stage]:
    """The ordered stages of the study described by ``cfg`` under directory ``out`` (with ``study.seeds``: every
    replicate's stages, then the combined report); ``versions`` enter the keys of what eval/ scores. The config
    is checked first by the study runner (``clearbench.run.build_study``)."""
    if cfg.study.seeds:
        return _build_replicates(cfg, Path(out), versions)
    return _build_one(cfg, Path(out), versions)


def _build_replicates(cfg: BenchConfig, out: Path, versions: ScorerVersions) -> list[Stage]:
    stages: list[Stage] = []
    evals: dict[int, list[Stage]] = {}
    for seed in cfg.study.seeds:
        sub = _build_one(seed_config(cfg, seed), seed_dir(out, seed), versions)
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


def _build_one(cfg: BenchConfig, out: Path, versions: ScorerVersions) -> list[Stage]:
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
        return stages + metaeval.pool_stages(cfg, out, base, versions)
    target = finetune_stage(cfg, out, "target", out / "target", "full", base)
    stages.append(target)
    if cfg.calibration.enabled:  # a learning-rate sweep instead of the study
        return stages + calibration.sweep_stages(cfg, out, target)
    for forget in cfg.study.forget_splits if "forget" in cfg.study.scenarios else ():
        stages += _forget_split_stages(cfg, out, forget, (base, target), versions)
    evals = [s for s in stages if s.kind == "evaluate"]
    if cfg.study.report and evals:
        stages.append(_report_stage(cfg, out, evals, [s for s in stages if s.kind == "attack"]))
    return stages + scenarios.scenario_stages(cfg, out, base, target, versions)


def _forget_split_stages(cfg: BenchConfig, out: Path, forget: str, models: tuple[Stage | None, Stage],
                         versions: ScorerVersions) -> list[Stage]:
    """The gold of ``forget`` and its evaluation, the (base and) target evaluations, every unlearning run and its
    evaluation (``models``: the base stage or None, and the target)."""
    (base, target), pct = models, _pct(forget)
    gold = finetune_stage(cfg, out, f"gold-{pct}", out / f"gold-{pct}", retain_split(forget), base)
    gold_eval = _eval_stage(cfg, out, f"gold-{pct}", gold, forget, None, versions)
    stages = [gold, gold_eval]
    if cfg.study.evaluate_base:
        stages += [_eval_stage(cfg, out, f"{m.name}-{pct}", m, forget, gold_eval, versions) for m in (base, target) if m]
    # what attacks do to a model that knows
    stages += _attack_stages(cfg, out, f"target-{pct}", target, forget, gold_eval, versions)
    for modality in cfg.study.forget_modalities:
        for variant, overrides in cfg.study.variants.items():
            for method in cfg.study.methods:
                name = unlearn_run_name(method, variant, modality, forget)
                section = deep_merge(to_dict(cfg.unlearn), overrides) | {
                    "method": method, "forget": forget, "forget_modality": modality}
                u = _unlearn_stage(cfg, out, name, section, target)
                stages += [u, _eval_stage(cfg, out, name, u, forget, gold_eval, versions)]
                stages += _attack_stages(cfg, out, name, u, forget, gold_eval, versions)
    return stages


def _unlearn_stage(cfg: BenchConfig, out: Path, name: str, section: dict[str, Any], target: Stage) -> Stage:
    # a stop rule with a gold threshold reads a gold model: wait for this study's golds
    stop = section.get("stop", {})
    golds = tuple(f"gold-{_pct(f)}" for f in cfg.study.forget_splits) \
        if stop.get("rule", "fixed") != "fixed" and stop.get("threshold") == "gold" else ()
    return unlearn_stage(cfg, out / "world", out / "unlearn" / name, f"unlearn/{name}", section, target, golds)


def _eval_stage(cfg: BenchConfig, out: Path, name: str, model: Stage, forget: str, gold: Stage | None,
                versions: ScorerVersions) -> Stage:
    """The evaluation of ``model``'s output against the gold's result (``gold`` None: it is the gold)."""
    return evaluation_stage(f"evaluate/{name}", out / "results" / f"{name}.json", eval_config(cfg.study, forget), model,
                            gold, out / "world", versions)


def _attack_stages(cfg: BenchConfig, out: Path, name: str, model: Stage, forget: str, gold: Stage,
                   versions: ScorerVersions) -> list[Stage]:
    """Every attack of ``study.attacks`` on ``model``, probes capped like the evaluation (or tighter)."""
    study = cfg.study
    cap = study.attack_max_per_cell or study.eval_max_per_cell
    return [attack_stage(f"attack/{name}/{a}", out / "attacks" / name / f"{a}.json",
                         AttackConfig(attack=a, forget=forget, max_per_cell=cap,
                                      max_per_config=0 if cap else study.eval_max_per_config,
                                      batch_size=study.eval_batch_size, options=study.attack_options.get(a, {})),
                         model, gold, out / "world", versions)
            for a in study.attacks]


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
