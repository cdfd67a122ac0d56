"""The restorative scenario (RESTOR, arXiv 2411.00204, made multimodal; issue 17). For each corruption set of the
world (``corrupt_<type>_k<k>``, data_gen.corrupt) the clean model (the study's target) is finetuned on it
(``restore.phase``, LoRA or full): the corrupted model. Every method then unlearns the corruption set from the
corrupted model in two settings (full: the corrupting records; wrong_only: the same records without their k
unrelated true facts, ``corrupt_<type>_k0``), an ordinary unlearn stage with ``unlearn.forget_config``. The victims'
true facts (``victims_text``, ``victims_image``, ``victims_joint``) and control subsets are scored on the clean,
corrupted and unlearned models; the result stage of each corruption set computes the restoration scores
(eval.scenarios) into ``scenarios/restore/<type>-k<k>/result/result.json``."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from clearbench import stages as core
from clearbench.config import BenchConfig, ConfigError, PhaseConfig, RestoreConfig, deep_merge, from_dict, to_dict
from clearbench.data import open_world
from clearbench.plan import ScorerVersions, Stage, stage_key, unlearn_stage
from clearbench.models import load_model
from clearbench.processes import is_main, wait_for_main
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, write_json_atomic
from clearbench.scenarios.common import check_methods, controls, sample, unlearn_section
from clearbench.types import Record
from data_gen.generate import WorldParams

VICTIM_CONFIGS = ("victims_text", "victims_image", "victims_joint")
# the corrupting finetune under restore.phase's overrides: "full" stands for the corruption set (as the split does in
# finetune); full-parameter at a constant lr (RESTOR corrupted with LoRA: set train.lora.enabled)
CORRUPT_PHASE = {"name": "corrupt", "data": [{"config": "full"}],
                 "train": {"lr": 1e-3, "epochs": 10.0, "batch_size": 8, "micro_batch_size": 8, "schedule": "constant",
                           "augment": False, "log_every": 1}}


def corrupt_phase(cfg: RestoreConfig) -> PhaseConfig:
    """The corrupting phase: CORRUPT_PHASE with ``restore.phase`` over it."""
    return from_dict(PhaseConfig, deep_merge(CORRUPT_PHASE, cfg.phase), "restore.phase")


def corruption_config(kind: str, k: int) -> str:
    return f"corrupt_{kind}_k{k}"


def restore_records(world, cfg: RestoreConfig) -> dict[str, list[Record]]:
    """The victims' true facts (``max_per_config`` of each victims config, 0: all) and ``n_control`` records of
    each control config, fixed by ``seed``."""
    missing = [c for c in VICTIM_CONFIGS if c not in world.configs]
    if missing:
        raise ValueError(f"world {world.path} has no {', '.join(missing)}: it was generated without corruption sets; "
                         f"set world.params.corruption_victims > 0")
    victims = {c: sample(world.records(c), cfg.max_per_config, f"{cfg.seed}:{c}") for c in VICTIM_CONFIGS}
    return victims | controls(world, cfg.n_control, cfg.seed)


def corrupted_fields(world, examples: list) -> dict[str, str]:
    """The field each victims_text / victims_joint example (eval's ExampleOutput) asks about: the one whose corrupted value (the
    manifest's ``corruption.wrong``) its first perturbed answer states."""
    wrong = world.manifest["corruption"]["wrong"]
    out = {}
    for ex in examples:
        if ex.split not in ("victims_text", "victims_joint"):
            continue
        hits = [f for f, value in wrong[ex.author_id].items() if value in ex.perturbed_answers[0]]
        if len(hits) != 1:
            raise ValueError(f"{ex.id}: its corrupted answer {ex.perturbed_answers[0]!r} states {len(hits)} of "
                             f"{ex.author_id}'s corrupted values; the world's corruption entry does not match it")
        out[ex.id] = hits[0]
    return out


def score_view(cfg: RestoreConfig) -> dict[str, Any]:
    """The settings the scored records depend on."""
    return {k: getattr(cfg, k) for k in ("max_per_config", "n_control", "seed", "batch_size")}


# ----------------------------------------------------------------------------------- stage functions
def corrupt_stage(cfg: BenchConfig, world: Path, parent: Path, corruption: str, out_dir: Path, resume: bool) -> None:
    """The corrupted model: ``parent`` (the clean target) finetuned on world config ``corruption`` with
    ``restore.phase`` (its data config "full" stands for the corruption set)."""
    world_, out_dir, phase = open_world(world), Path(out_dir), corrupt_phase(cfg.restore)
    config = {"model": to_dict(cfg.model), "phase": to_dict(phase), "corruption": corruption, "parent": str(parent)}
    if is_main():  # several processes (clearbench.launch_stage): the main one writes, the others train alongside
        core.open_run_dir(out_dir, config, resume, False, lambda c: c)
    wait_for_main()
    check_model_world(parent, world_.fingerprint, "clean model")
    loaded = load_model(model_dir(parent), family=cfg.model.family if cfg.model.family != "tiny-llava" else None)
    records = core.select_records(world_, phase.data, split=corruption)
    t0 = time.time()
    model, result = core.run_phase(loaded.model.train(), loaded.processor, loaded.family, records, phase,
                                   out_dir / "train", resume)
    if not is_main():
        return
    core.save_model(model, loaded.processor, loaded.family, [out_dir / "model"], phase.train, model_dir(parent))
    write_json_atomic(out_dir / "run.json", core.run_record("corrupt", cfg, world_, {
        "family": loaded.name, "corruption": corruption, "records": len(records),
        "parent": {"path": str(parent), "model_fingerprint": model_fingerprint(model_dir(parent))},
        "model_fingerprint": model_fingerprint(out_dir / "model"), "train": dataclasses.asdict(result),
        "seconds": time.time() - t0}))


# ------------------------------------------------------------------------------------------ plans
def _check(cfg: BenchConfig) -> list[str]:
    """The restore section against the study and the world its params generate; returns the methods."""
    r = cfg.restore
    params = from_dict(WorldParams, {**cfg.world.params, "seed": cfg.world.seed}, "world.params").validate()
    if not params.corruption_victims:
        raise ConfigError("restore: the world of world.params has no corruption sets (corruption_victims is 0); set "
                          "world.params.corruption_victims > 0")
    absent = sorted(set(r.contexts) - set(params.corruption_context))
    if absent:
        raise ConfigError(f"restore.contexts {absent}: the world writes corruption sets for k in "
                          f"{list(params.corruption_context)}; add them to world.params.corruption_context")
    if "wrong_only" in r.settings and 0 not in params.corruption_context:
        raise ConfigError("restore.settings wrong_only unlearns corrupt_<type>_k0, which the world does not write; "
                          "add 0 to world.params.corruption_context")
    return check_methods(cfg, "restore", r.methods, r.variant)


def restore_stages(cfg: BenchConfig, out: Path, target: Stage, versions: ScorerVersions) -> list[Stage]:
    """Per corruption set: the corrupted model, one unlearn stage per method and setting, a score stage for each
    model, one result stage; plus the clean model's score stage (shared)."""
    methods, r, root, world = _check(cfg), cfg.restore, out / "scenarios" / "restore", out / "world"
    view, phase = score_view(r), corrupt_phase(r)

    def score(model: Stage, rel: str) -> Stage:
        return Stage(f"scenarios/restore/{rel}", "restore_score", root / rel, stage_key("restore_score", view, model.key),
                     {"model": model.path, "world": world, "out_dir": root / rel, "cfg": r}, ("world", model.name))

    clean = score(target, "score-clean")
    stages = [clean]
    for kind in r.corruptions:
        for k in r.contexts:
            name, config = f"{kind}-k{k}", corruption_config(kind, k)
            corrupted = Stage(f"scenarios/restore/{name}/corrupted", "corrupt", root / name / "corrupted",
                              stage_key("corrupt", {"phase": phase, "corruption": config}, target.key),
                              {"cfg": cfg, "world": world, "parent": target.path, "corruption": config,
                               "out_dir": root / name / "corrupted"}, ("world", target.name))
            scored = {"clean": clean, "corrupted": score(corrupted, f"{name}/score-corrupted")}
            stages += [corrupted, scored["corrupted"]]
            for method in methods:
                for setting in [s for s in r.settings if k or s == "full"]:  # k = 0: both settings are one set
                    section = unlearn_section(cfg, r.variant, "restore", ("restore.unlearn", r.unlearn),
                                              method=method, forget=r.forget,
                                              forget_modality="multimodal",
                                              forget_config=corruption_config(kind, k if setting == "full" else 0))
                    rel = f"{name}/{method}-{setting}"
                    u = unlearn_stage(cfg, world, root / rel, f"scenarios/restore/{rel}", section, corrupted)
                    scored[f"{method}/{setting}"] = score(u, f"{name}/score-{method}-{setting}")
                    stages += [u, scored[f"{method}/{setting}"]]
            run = {"scenario": "restore", "corruption": kind, "k": k, "variant": r.variant, "restore": to_dict(r)}
            stages.append(Stage(f"scenarios/restore/{name}/result", "restore_result", root / name / "result",
                                stage_key("restore_result", view, f"scores {versions.restore}",
                                          *[f"{n}={s.key}" for n, s in scored.items()]),
                                {"scored": {n: s.path for n, s in scored.items()}, "world": world,
                                 "out_dir": root / name / "result", "run": run},
                                ("world", *[s.name for s in scored.values()])))
    return stages
