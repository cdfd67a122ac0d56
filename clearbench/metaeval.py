"""The meta-evaluation's model pool as stages of ``clearbench run`` (``metaeval.enabled``; issue 18, docs/metaeval.md).

Every pool model is finetuned from the study's base by the ordinary finetune stage with the preset's finetune
phases, changed by its group's seed (every phase's train.seed), length (epochs, or max_steps, times the length),
parameterisation (PhaseConfig fields, e.g. LoRA) and exposure: ``all`` trains on every author (the target's data),
``none`` on the retain authors (the gold's), ``text`` / ``visual`` on the retain authors plus the forget authors'
records of those modalities only (each data mix of the split gets a twin on the forget split restricted to them).
Each model is evaluated with the study's evaluation against the study's gold (``gold-XX``, the preset's own
finetune, never a pool member) and attacked with ``metaeval.attacks``. The report stage counts in the world what
each model's phases selected (its exposure, from its training data), writes the pool manifest and lets
eval.metaeval_report judge every metric on the pool.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clearbench.config import BenchConfig, ConfigError, PhaseConfig, deep_merge, from_dict, to_dict
from clearbench.metaeval_config import EXPOSURES
from clearbench.eval_config import AttackConfig
from clearbench.plan import (ScorerVersions, Stage, attack_stage, eval_config, evaluation_stage, finetune_stage,
                             stage_key)
from clearbench.provenance import read_run
from clearbench.stages import as_world, select_records
from clearbench.types import retain_split

RUN_SUMMARY = ("stage", "split", "records", "model_fingerprint", "world_fingerprint", "config_hash", "parent", "train",
               "seconds")


@dataclasses.dataclass(frozen=True)
class Member:
    """One pool model: its group's exposure and one (parameterisation, seed, length) of the group's grid."""

    group: str
    exposure: str
    parameterisation: str
    seed: int
    length: float

    @property
    def name(self) -> str:
        return f"{self.group}-{self.parameterisation}-s{self.seed}-x{self.length:g}"


def members(cfg: BenchConfig) -> list[Member]:
    return [Member(name, g.exposure, p, s, x) for name, g in cfg.metaeval.pool_groups().items()
            for p in g.parameterisations for s in g.seeds for x in g.lengths]


def forget_of(cfg: BenchConfig) -> str:
    return cfg.metaeval.forget or cfg.study.forget_splits[0]


def split_of(member: Member, forget: str) -> str:
    """The finetune split: ``full`` for exposure all, else the forget split's retain split."""
    return "full" if member.exposure == "all" else retain_split(forget)


def member_phase(cfg: BenchConfig, phase: PhaseConfig, member: Member, forget: str) -> PhaseConfig:
    """One finetune phase of ``member``: its parameterisation's fields over ``phase``, its seed and length, and
    for a one-modality exposure a twin of each mix of the split on ``forget`` restricted to those modalities."""
    where = f"metaeval.parameterisations.{member.parameterisation}"
    phase = from_dict(PhaseConfig, deep_merge(to_dict(phase), cfg.metaeval.parameterisations[member.parameterisation]),
                      where)
    train = phase.train
    steps = max(1, round(train.max_steps * member.length)) if train.max_steps else 0
    train = dataclasses.replace(train, seed=member.seed, max_steps=steps,
                                epochs=train.epochs if steps else train.epochs * member.length)
    data = list(phase.data)
    if member.exposure not in ("all", "none"):
        allowed = EXPOSURES[member.exposure]
        for mix in phase.data:
            modalities = [m for m in (mix.modalities or allowed) if m in allowed]
            if mix.config == "full" and modalities:
                data.append(dataclasses.replace(mix, config=forget, modalities=modalities))
    return dataclasses.replace(phase, train=train, data=data)


def member_config(cfg: BenchConfig, member: Member, forget: str) -> BenchConfig:
    """``cfg`` with its finetune phases made ``member``'s (a single phase stays ``phase``, so keys keep their form)."""
    ft = cfg.finetune
    phases = [member_phase(cfg, p, member, forget) for p in ft.resolved_phases()]
    ft = dataclasses.replace(ft, phases=phases) if ft.phases else dataclasses.replace(ft, phase=phases[0])
    return dataclasses.replace(cfg, finetune=ft)


def exposure_counts(world, phases: list[PhaseConfig], split: str, forget: str) -> dict[str, int]:
    """The forget authors' records per modality that the finetune ``phases`` select on ``split`` (repeats counted):
    what the model saw of them."""
    world = as_world(world)
    authors = {r.author_id for r in world.records(forget)}
    counts = {m: 0 for m in EXPOSURES["all"]}
    for phase in phases:
        for r in select_records(world, phase.data, split=split):
            if r.author_id in authors:
                counts[str(r.modality)] += 1
    return counts


# ------------------------------------------------------------------------------------ the stages
def _eval_stage(cfg: BenchConfig, out: Path, name: str, model: Stage, gold: Stage | None,
                versions: ScorerVersions) -> Stage:
    """The study's evaluation of ``model`` (into ``results/NAME.json``) against the reference gold's result (None: it
    is the gold), keyed as the study keys its evaluations."""
    ecfg = eval_config(cfg.study, forget_of(cfg))
    return evaluation_stage(f"evaluate/{name}", out / "results" / f"{name}.json", ecfg, model, gold, out / "world",
                            versions)


def _attack_stages(cfg: BenchConfig, out: Path, member: str, model: Stage, gold: Stage,
                   versions: ScorerVersions) -> list[Stage]:
    """Every attack of ``metaeval.attacks`` on one pool model, probes capped as the study caps its attacks."""
    study = cfg.study
    cap = study.attack_max_per_cell or study.eval_max_per_cell
    return [attack_stage(f"attack/{member}/{name}", out / "attacks" / member / f"{name}.json",
                         AttackConfig(attack=name, forget=forget_of(cfg), max_per_cell=cap,
                                      max_per_config=0 if cap else study.eval_max_per_config,
                                      batch_size=study.eval_batch_size,
                                      options=cfg.metaeval.attack_options.get(name, {})),
                         model, gold, out / "world", versions)
            for name in cfg.metaeval.attacks]


def check_pool(cfg: BenchConfig) -> None:
    """The metaeval section against the study (a mistake fails when the study is planned; the attacks' names and
    options are checked against eval's registry by ``clearbench.run.check_config``)."""
    meta = cfg.metaeval
    if meta.forget and meta.forget not in cfg.study.forget_splits:
        raise ConfigError(f"metaeval.forget: {meta.forget!r} is not one of study.forget_splits "
                          f"{cfg.study.forget_splits}; add it there (the world must have it) or leave it empty")
    for name in meta.attack_options:
        if name not in meta.attacks:
            raise ConfigError(f"metaeval.attack_options.{name}: {name!r} is not in metaeval.attacks {meta.attacks}")


def pool_stages(cfg: BenchConfig, out: Path, base: Stage | None, versions: ScorerVersions) -> list[Stage]:
    """The reference gold and its evaluation, every pool model with its evaluation and attacks, and the report."""
    check_pool(cfg)
    out, forget = Path(out), forget_of(cfg)
    pct = forget.removeprefix("forget")
    gold = finetune_stage(cfg, out, f"gold-{pct}", out / f"gold-{pct}", retain_split(forget), base)
    gold_eval = _eval_stage(cfg, out, f"gold-{pct}", gold, None, versions)
    stages, models = [gold, gold_eval], []
    for member in members(cfg):
        mcfg, split = member_config(cfg, member, forget), split_of(member, forget)
        ft = finetune_stage(mcfg, out, f"pool/{member.name}", out / "pool" / member.name, split, base)
        if ft.key == gold.key:
            raise ConfigError(f"metaeval pool model {member.name} is the reference gold gold-{pct} itself (same "
                              f"finetune); its forget quality would compare it with itself: give the pool other seeds "
                              f"or lengths than the preset's finetune")
        ev = _eval_stage(cfg, out, member.name, ft, gold_eval, versions)
        attacks = _attack_stages(cfg, out, member.name, ft, gold_eval, versions)
        stages += [ft, ev, *attacks]
        models.append(dataclasses.asdict(member) | {
            "name": member.name, "split": split, "phases": mcfg.finetune.resolved_phases(), "model": ft.path,
            "result": ev.path, "attacks": {a.path.stem: a.path for a in attacks}})
    upstream = stages[1:]
    spec = {"version": versions.metaeval, "forget": forget, "world": out / "world", "models": models,
            "bootstrap": cfg.metaeval.bootstrap,
            "seed": cfg.metaeval.seed, "reference": {"model": gold.path, "result": gold_eval.path}}
    key = stage_key("metaeval_report", {"version": versions.metaeval, "bootstrap": cfg.metaeval.bootstrap,
                                        "seed": cfg.metaeval.seed}, *[s.key for s in upstream])
    stages.append(Stage("report", "metaeval_report", out / "report", key, {"pool": spec, "out_dir": out / "report"},
                        tuple(s.name for s in upstream)))
    return stages


def manifest_of(pool: dict[str, Any]) -> dict[str, Any]:
    """The pool manifest: every model's recipe, what it saw of the forget authors (counted from the records its
    phases select), its run record and its result files; the reference gold's."""
    world = as_world(pool["world"])
    models = []
    for m in pool["models"]:
        counts = exposure_counts(world, m["phases"], m["split"], pool["forget"])
        run = read_run(m["model"])
        models.append({k: v for k, v in m.items() if k not in ("phases", "model", "result", "attacks")} | {
            "forget_records": counts, "exposed": [x for x, c in counts.items() if c],
            "model": str(m["model"]), "result": str(m["result"]),
            "attacks": {a: str(p) for a, p in m["attacks"].items()},
            "phases": [to_dict(p) for p in m["phases"]], "run": {k: run.get(k) for k in RUN_SUMMARY if k in run}})
    ref = pool["reference"]
    return {"version": pool["version"], "forget": pool["forget"], "world_fingerprint": world.fingerprint,
            "reference": {"model": str(ref["model"]), "result": str(ref["result"]),
                          "run": {k: v for k, v in read_run(ref["model"]).items() if k in RUN_SUMMARY}},
            "models": models}
