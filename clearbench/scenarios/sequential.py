"""Sequential deletion requests (issue 17): ``sequential.steps`` requests, the authors of ``sequential.forget`` in
that many batches (clearbench.unlearn.author_batches). Request t is unlearned from request t-1's model (t = 1: the
target) by an ordinary unlearn stage with ``unlearn.forget_batch = [t, T]``, so each request is a stage and a killed
study resumes at the request it was in. After every request, and on the target (step 0), a fixed seeded subset of
every request's records and the controls is scored; the per-method result stage turns the per-step examples into
curves and scores (eval.scenarios) in ``scenarios/sequential/<method>/result/result.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clearbench.config import BenchConfig, ConfigError, SequentialConfig, from_dict, to_dict
from clearbench.plan import ScorerVersions, Stage, stage_key, unlearn_stage
from clearbench.scenarios.common import check_methods, controls, sample, unlearn_section
from clearbench.types import Record, forget_percent
from clearbench.unlearn import author_batches
from data_gen.generate import WorldParams


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
        forget += sample(mine, cfg.n_per_request, f"{cfg.seed}:{config}:{r}")
    return {config: forget} | controls(world, cfg.n_control, cfg.seed)


def score_view(cfg: SequentialConfig) -> dict[str, Any]:
    """The settings the scored records and their outputs depend on (not the methods, variant or modality)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("methods", "variant", "forget_modality")}


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
    return check_methods(cfg, "sequential", seq.methods, seq.variant)


def sequential_stages(cfg: BenchConfig, out: Path, target: Stage, versions: ScorerVersions) -> list[Stage]:
    """Per method: T unlearn stages (request t from request t-1's model), a score stage after each, one result
    stage; plus the target's score stage (step 0, shared by the methods)."""
    methods, seq, root, world = _check(cfg), cfg.sequential, out / "scenarios" / "sequential", out / "world"
    view = score_view(seq)

    def score(model: Stage, rel: str) -> Stage:
        return Stage(f"scenarios/sequential/{rel}", "sequential_score", root / rel,
                     stage_key("sequential_score", view, model.key),
                     {"model": model.path, "world": world, "out_dir": root / rel, "cfg": seq}, ("world", model.name))

    start = score(target, "score-00")
    stages = [start]
    for method in methods:
        prev, scored = target, [start]
        for t in range(1, seq.steps + 1):
            section = unlearn_section(cfg, seq.variant, "sequential requests", ("sequential.unlearn", seq.unlearn),
                                      method=method, forget=seq.forget,
                                      forget_modality=seq.forget_modality, forget_batch=[t, seq.steps])
            rel = f"{method}/step-{t:02d}"
            step = unlearn_stage(cfg, world, root / rel, f"scenarios/sequential/{rel}", section, prev)
            scored.append(score(step, f"{method}/score-{t:02d}"))
            stages += [step, scored[-1]]
            prev = step
        unlearn = {k: v for k, v in to_dict(prev.args["cfg"].unlearn).items() if k != "forget_batch"}
        run = {"scenario": "sequential", "method": method, "variant": seq.variant, "unlearn": unlearn}
        stages.append(Stage(f"scenarios/sequential/{method}/result", "sequential_result", root / method / "result",
                            stage_key("sequential_result", view, f"scores {versions.sequential}",
                                      *[s.key for s in scored]),
                            {"scored": [s.path for s in scored], "world": world, "out_dir": root / method / "result",
                             "cfg": seq, "run": run}, ("world", *[s.name for s in scored])))
    return stages
