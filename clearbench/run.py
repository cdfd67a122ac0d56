"""``clearbench run``: the whole study from one preset, skipping stages whose outputs are up to date.

The study is a list of stages (generate, pretrain, finetune target and golds, evaluate, unlearn x
method x L1 x forget modality, evaluate each, report). Each stage's *key* hashes its own config
section with the keys of the stages it reads, so a changed setting re-runs exactly the stages
downstream of it. A finished stage writes ``stage.json`` (its key) last; a directory without it was
interrupted and is resumed (training checkpoints, the evaluation cache), one with another key is
redone from scratch. ``run.jsonl`` in the study directory logs every stage start, skip and end.

Replicates (``study.seeds: [s0, s1, ...]``): one complete study per seed in ``OUT/seed-<s>/`` (its
config, from ``seed_config``, sets world.seed and every train.seed to s), all run as one stage list
whose names are prefixed ``seed-<s>/`` (one ETA over every seed, one ``OUT/run.jsonl``), then
``OUT/report/``: each table's cells as mean ± sd over the seeds (``eval.replicates``). A seed's
stage keys do not depend on the other seeds, so adding a seed runs only that seed and the report.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from clearbench.config import BenchConfig, ConfigError, from_dict, to_dict
from clearbench.provenance import write_json_atomic

STAGE_FILE = "stage.json"
# Rough relative cost of each stage kind (tiny preset, CPU), used for the ETA until one of a kind ran.
PRIOR_COST = {"generate": 1.0, "pretrain": 8.0, "finetune": 10.0, "unlearn": 0.5, "evaluate": 0.5, "report": 0.1}


@dataclasses.dataclass
class Stage:
    name: str  # e.g. "unlearn/npo-l1-multimodal-forget10"
    kind: str  # generate | pretrain | finetune | evaluate | unlearn | report
    path: Path  # output directory or file
    key: str
    action: Callable[[bool], Any]  # action(resume) produces ``path``
    needs: tuple[str, ...] = ()  # names of the stages whose outputs ``action`` reads (for --jobs)

    @property
    def marker(self) -> Path:
        return (self.path if self.kind not in ("evaluate",) else self.path.parent / f".{self.path.stem}") / STAGE_FILE


# Fields added after studies existed, left out of stage keys while they hold these values, so that
# adding them does not re-run finished stages (phase objective; study.seeds of a single study;
# train.group_by_length).
# Their values here must never change meaning.
KEY_OMITTED_DEFAULTS = {"objective": "lm", "seeds": [], "group_by_length": 0}


def _key_view(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _key_view(v) for k, v in obj.items()
                if not (k in KEY_OMITTED_DEFAULTS and v == KEY_OMITTED_DEFAULTS[k])}
    if isinstance(obj, list):
        return [_key_view(v) for v in obj]
    return obj


def stage_key(kind: str, section: Any, *upstream: str) -> str:
    blob = json.dumps({"kind": kind, "config": _key_view(to_dict(section)), "upstream": list(upstream)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _unlearn_key(ucfg: Any) -> dict[str, Any]:
    """The unlearn section as one method's stage key sees it: the per-method tables narrowed to that
    method, so tuning one method in a preset does not re-run the others (``options_by_method`` is left
    out when it has no (non-empty) entry for the method: keys of runs made before it existed stay valid)."""
    section = to_dict(ucfg)
    section["lr_by_method"] = {k: v for k, v in section["lr_by_method"].items() if k == ucfg.method}
    options = {k: v for k, v in section.pop("options_by_method").items() if k == ucfg.method and v}
    if options:
        section["options_by_method"] = options
    return section


def state_of(stage: Stage) -> str:
    """'done' (same key), 'stale' (finished with another key), 'partial' (interrupted) or 'new'."""
    if stage.marker.exists():
        return "done" if json.loads(stage.marker.read_text()).get("key") == stage.key else "stale"
    if stage.path.exists():
        return "partial"
    return "new"


def _clear(stage: Stage) -> None:
    if stage.path.is_dir():
        shutil.rmtree(stage.path)
    elif stage.path.exists():
        stage.path.unlink()
    # an evaluation's per-example cache stays: it is keyed by the model and scoring settings and
    # discards itself when they change, so a metric-option change re-aggregates without model passes
    if stage.marker.exists():
        stage.marker.unlink()


class RunLog:
    def __init__(self, path: Path, total: int):
        self.path, self.total, self.t0 = path, total, time.time()
        self.durations: dict[str, list[float]] = {}

    def write(self, **event: Any) -> None:
        event = {"time": round(time.time() - self.t0, 2), **event}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def eta(self, remaining: list[Stage]) -> float:
        """Seconds left: the mean duration of finished stages of the same kind, else the kind's
        prior relative cost scaled by how long the finished stages took against their priors."""
        done = [(k, d) for k, ds in self.durations.items() for d in ds]
        if not done:
            return 0.0
        scale = sum(d for _, d in done) / sum(PRIOR_COST[k] for k, _ in done)
        return sum(sum(self.durations[s.kind]) / len(self.durations[s.kind]) if self.durations.get(s.kind)
                   else PRIOR_COST[s.kind] * scale for s in remaining)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


class StageFailed(RuntimeError):
    """A stage run in a worker process (``jobs`` > 1) failed; its traceback is in its log file."""


def execute(stages: list[Stage], log_path: Path, echo: Callable[[str], None] = print, jobs: int = 1,
            rebuild: Callable[[], list[Stage]] | None = None) -> dict[str, str]:
    """Run the stages; returns {stage name: what happened}.

    ``jobs`` = 1 runs them in order in this process. ``jobs`` > 1 runs up to that many at once, each in
    its own worker process with this process's torch threads divided among them (all of them for a stage
    that every pending stage waits for, such as the base model), a stage starting once every stage it
    ``needs`` has finished (list order breaks ties); a worker's output goes to
    ``<log dir>/logs/<stage name>.log``. Workers come from a fork server (a clean process: a child forked
    from a process whose torch thread pool has run hangs in its first multi-threaded op), so they cannot
    inherit the stages' closures: ``rebuild``, a picklable callable, gives them the same stage list.

    Why: the tiny models use a second core poorly within one process. On the 2-core machine the tiny
    finetune runs 10.9 steps/s on 2 threads and 6.8 steps/s on each of two side-by-side 1-thread
    workers (13.7 together), so the target and the gold take 18.3 min side by side against 22.4 min one
    after the other (world seed 0, the tiny preset's 20 epochs).
    """
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: run at least one stage at a time")
    log = RunLog(log_path, len(stages))
    outcome: dict[str, str] = {}
    if jobs == 1:
        for i, stage in enumerate(stages):
            start = _begin(stage, i, stages, log, echo, outcome, jobs)
            if start is None:
                continue
            resume, state, t0 = start
            stage.action(resume)
            _finish(stage, i, stages, log, echo, outcome, state, t0)
    else:
        if rebuild is None:
            raise ValueError("jobs > 1 needs rebuild: a picklable callable returning the same stages")
        _execute_parallel(stages, log, echo, outcome, jobs, Path(log_path).parent / "logs", rebuild)
    echo(f"study finished in {_fmt(time.time() - log.t0)}")
    return outcome


def _begin(stage: Stage, i: int, stages: list[Stage], log: RunLog, echo, outcome: dict[str, str],
           jobs: int, note: str = "") -> tuple[bool, str, float] | None:
    """Skip ``stage`` (returns None) if it is done, else clear it if stale and log its start."""
    state = state_of(stage)
    prefix = f"[{i + 1}/{len(stages)}] {stage.name}"
    if state == "done":
        outcome[stage.name] = "skipped"
        log.write(event="skip", stage=stage.name, key=stage.key)
        echo(f"{prefix}: up to date, skipped")
        return None
    if state == "stale":
        _clear(stage)
    resume = state == "partial"
    eta = log.eta([s for s in stages[i:] if s.name not in outcome]) / jobs
    echo(f"{prefix}: {'resuming' if resume else 'running'}" + (f" (ETA {_fmt(eta)})" if eta else "") + note)
    log.write(event="start", stage=stage.name, kind=stage.kind, key=stage.key, resume=resume)
    return resume, state, time.time()


def _finish(stage: Stage, i: int, stages: list[Stage], log: RunLog, echo, outcome: dict[str, str],
            state: str, t0: float) -> None:
    took = time.time() - t0
    log.durations.setdefault(stage.kind, []).append(took)
    write_json_atomic(stage.marker, {"key": stage.key, "stage": stage.name, "seconds": took})
    log.write(event="end", stage=stage.name, seconds=round(took, 2))
    outcome[stage.name] = "resumed" if state == "partial" else ("redone" if state == "stale" else "ran")
    echo(f"[{i + 1}/{len(stages)}] {stage.name}: done in {_fmt(took)}")


def _worker(rebuild: Callable[[], list[Stage]], name: str, resume: bool, log_file: Path, threads: int) -> None:
    """Body of a worker process: output to ``log_file``, ``threads`` torch threads, run stage ``name``
    (an exception's traceback lands in the log, and the process exits with code 1)."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import torch

    torch.set_num_threads(threads)
    print(f"clearbench run worker: stage {name}, {threads} torch thread{'s' * (threads > 1)}", flush=True)
    next(s for s in rebuild() if s.name == name).action(resume)
    sys.stdout.flush()
    sys.stderr.flush()


def _execute_parallel(stages: list[Stage], log: RunLog, echo, outcome: dict[str, str], jobs: int,
                      logs_dir: Path, rebuild: Callable[[], list[Stage]]) -> None:
    import multiprocessing
    from multiprocessing.connection import wait

    import torch

    names = {s.name for s in stages}
    for s in stages:
        missing = [n for n in s.needs if n not in names]
        if missing:
            raise ValueError(f"stage {s.name} needs {missing}, which are not stages of this study")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["clearbench.run", "clearbench.stages", "clearbench.unlearn", "eval.evaluate"])
    all_threads = torch.get_num_threads()
    threads = max(1, all_threads // jobs)
    # a stage that every other pending stage waits for (the world, the base) runs alone: it gets every thread
    upstream: dict[str, set[str]] = {}
    for s in stages:  # needs are earlier stages (build order), so one pass gives the transitive closure
        upstream[s.name] = set(s.needs).union(*(upstream.get(n, set()) for n in s.needs))
    index = {s.name: i for i, s in enumerate(stages)}
    pending = list(stages)
    running: dict[Any, tuple[Any, Stage, str, float, Path]] = {}  # sentinel -> (process, stage, state, t0, log)
    failed: list[tuple[Stage, int, Path]] = []
    try:
        while True:
            while not failed and len(running) < jobs:
                ready = next((s for s in pending if all(n in outcome for n in s.needs)), None)
                if ready is None:
                    break
                pending.remove(ready)
                log_file = logs_dir / f"{ready.name}.log"
                start = _begin(ready, index[ready.name], stages, log, echo, outcome, jobs,
                               note=f", log: {log_file}")
                if start is None:
                    continue
                resume, state, t0 = start
                log_file.parent.mkdir(parents=True, exist_ok=True)
                log_file.write_text("")
                alone = not running and all(ready.name in upstream[s.name] for s in pending)
                proc = ctx.Process(target=_worker, args=(rebuild, ready.name, resume, log_file,
                                                         all_threads if alone else threads),
                                   name=ready.name)
                proc.start()
                running[proc.sentinel] = (proc, ready, state, t0, log_file)
            if not running:
                break
            for sentinel in wait(list(running)):
                proc, stage, state, t0, log_file = running.pop(sentinel)
                proc.join()
                if proc.exitcode == 0:
                    _finish(stage, index[stage.name], stages, log, echo, outcome, state, t0)
                else:
                    log.write(event="fail", stage=stage.name, exitcode=proc.exitcode)
                    echo(f"[{index[stage.name] + 1}/{len(stages)}] {stage.name}: FAILED "
                         f"(exit code {proc.exitcode}); waiting for the stages still running")
                    failed.append((stage, proc.exitcode, log_file))
    finally:
        for proc, *_ in running.values():  # interrupted (Ctrl-C) or an error here: stop the workers;
            proc.terminate()               # their partial outputs resume on the next run
            proc.join()
    if failed:
        stage, code, log_file = failed[0]
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:]) if log_file.exists() else ""
        raise StageFailed(f"stage {stage.name} failed in its worker process (exit code {code}); "
                          f"its log is {log_file}; last lines:\n{tail}")
    if pending:
        raise RuntimeError(f"stages {[s.name for s in pending]} never became ready: their needs form a cycle")


def save_config(cfg: BenchConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", to_dict(cfg))


# ----------------------------------------------------------------------------------- the study
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


def _check_seeds(seeds: list[int]) -> None:
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ConfigError(f"study.seeds lists {dup} more than once; give each replicate seed once")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"study.seeds {seeds}: seeds must be >= 0 (they seed numpy generators)")


def build_study(cfg: BenchConfig, out: Path) -> list[Stage]:
    """The ordered stages of the study described by ``cfg`` under directory ``out`` (with
    ``study.seeds``: every replicate's stages, then the combined report)."""
    if cfg.study.seeds:
        return _build_replicates(cfg, Path(out))
    return _build_one(cfg, Path(out))


def _build_replicates(cfg: BenchConfig, out: Path) -> list[Stage]:
    _check_seeds(cfg.study.seeds)
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
        report_dir = out / "report"

        def rep(resume: bool) -> None:
            from eval.replicates import build_replicate_report

            for forget in cfg.study.forget_splits:
                pct = _pct(forget)
                runs = {seed: ([e.path for e in es if e.path.stem.endswith(f"-{pct}")],
                               seed_dir(out, seed) / "results" / f"gold-{pct}.json") for seed, es in evals.items()}
                build_replicate_report(runs, report_dir if len(cfg.study.forget_splits) == 1 else report_dir / forget)

        keys = [e.key for es in evals.values() for e in es]
        stages.append(Stage("report", "report", report_dir, stage_key("report", cfg.study, *keys), rep,
                            tuple(e.name for es in evals.values() for e in es)))
    return stages


def _build_one(cfg: BenchConfig, out: Path) -> list[Stage]:
    from baselines import get_method
    from clearbench.config import deep_merge, UnlearnConfig
    from clearbench.types import FORGET_MODALITIES, check_forget_split, check_name, retain_split
    from eval.evaluate import EvalConfig

    study = cfg.study
    for forget in study.forget_splits:
        check_forget_split(forget)
    for method in study.methods:
        get_method(method)  # unknown names fail now, with a suggestion, not an hour in
    for modality in study.forget_modalities:
        check_name("forget modality", modality, list(FORGET_MODALITIES))

    world_dir, results = out / "world", out / "results"
    stages: list[Stage] = []
    from data_gen import generate as _gen

    # the generator's version is an input too: a world written by another generator is regenerated,
    # and everything trained or scored on it re-runs (open_world would refuse an older schema anyway)
    world_key = stage_key("generate", cfg.world, f"generator {_gen.GENERATOR_VERSION}")

    def world():
        from clearbench.data import open_world

        return open_world(world_dir)

    def gen(resume: bool) -> None:
        from data_gen.generate import WorldParams, generate_world
        params = from_dict(WorldParams, {**cfg.world.params, "seed": cfg.world.seed})
        generate_world(world_dir, params, overwrite=True)

    stages.append(Stage("world", "generate", world_dir, world_key, gen))

    base_dir = out / "base"
    if cfg.model.family == "tiny-llava":
        base_key = stage_key("pretrain", {"model": cfg.model, "pretrain": cfg.pretrain}, world_key)

        def pre(resume: bool) -> None:
            from clearbench.stages import pretrain

            pretrain(cfg, world(), base_dir, resume=resume, overwrite=not resume)

        stages.append(Stage("base", "pretrain", base_dir, base_key, pre, ("world",)))
        base_ref: Path = base_dir
        base_needs: tuple[str, ...] = ("world", "base")
    else:  # a real checkpoint (local dir or hub id) is the base
        base_key = stage_key("checkpoint", cfg.model)
        base_ref = Path(cfg.model.path)
        base_needs = ("world",)

    def finetune_stage(name: str, split: str) -> Stage:
        path = out / name

        def act(resume: bool) -> None:
            from clearbench.stages import finetune

            finetune(cfg, world(), base_ref, split, path, resume=resume, overwrite=not resume)

        return Stage(name, "finetune", path, stage_key("finetune", {"finetune": cfg.finetune, "split": split},
                                                      base_key), act, base_needs)

    target = finetune_stage("target", "full")
    stages.append(target)

    def eval_stage(name: str, model_stage: Stage | Path, forget: str, gold: Stage | None, upstream: str) -> Stage:
        path = results / f"{name}.json"
        ecfg = EvalConfig(forget=forget, batch_size=study.eval_batch_size, max_per_config=study.eval_max_per_config,
                          options={**study.metric_options, "require_gold": True})
        model_path = model_stage.path if isinstance(model_stage, Stage) else model_stage

        def act(resume: bool) -> None:
            from eval.evaluate import evaluate

            evaluate(model_path, world(), path, gold="self" if gold is None else gold.path, cfg=ecfg, progress=True)

        needs = ("world",) + ((model_stage.name,) if isinstance(model_stage, Stage) else ()) + \
            ((gold.name,) if gold else ())
        return Stage(f"evaluate/{name}", "evaluate", path,
                     stage_key("evaluate", ecfg, upstream, gold.key if gold else "self"), act, needs)

    evals: list[Stage] = []
    gold_names = [f"gold-{_pct(f)}" for f in study.forget_splits]
    for forget in study.forget_splits:
        pct = _pct(forget)
        gold = finetune_stage(f"gold-{pct}", retain_split(forget))
        stages.append(gold)
        gold_eval = eval_stage(f"gold-{pct}", gold, forget, None, gold.key)
        stages.append(gold_eval)
        evals.append(gold_eval)
        if study.evaluate_base:
            for s in ([stages[1]] if cfg.model.family == "tiny-llava" else []) + [target]:
                e = eval_stage(f"{s.name}-{pct}", s, forget, gold_eval, s.key)
                stages.append(e)
                evals.append(e)
        for modality in study.forget_modalities:
            for variant, overrides in study.variants.items():
                for method in study.methods:
                    name = unlearn_run_name(method, variant, modality, forget)
                    section = deep_merge(to_dict(cfg.unlearn), overrides)
                    section.update(method=method, forget=forget, forget_modality=modality)
                    ucfg = dataclasses.replace(cfg, unlearn=from_dict(UnlearnConfig, section, "unlearn"))
                    path = out / "unlearn" / name

                    def act(resume: bool, ucfg=ucfg, path=path) -> None:
                        from clearbench.unlearn import unlearn

                        unlearn(ucfg, world(), target.path, path, resume=resume, overwrite=not resume)

                    # a stop rule with a gold threshold reads a gold model: wait for this study's golds
                    stop = ucfg.unlearn.stop
                    golds = tuple(gold_names) if stop.rule != "fixed" and stop.threshold == "gold" else ()
                    u = Stage(f"unlearn/{name}", "unlearn", path, stage_key("unlearn", _unlearn_key(ucfg.unlearn), target.key),
                              act, ("world", target.name) + golds)
                    e = eval_stage(name, u, forget, gold_eval, u.key)
                    stages += [u, e]
                    evals.append(e)
    if study.report:
        report_dir = out / "report"

        def rep(resume: bool) -> None:
            from eval.leaderboard import build_report, make_reference

            for forget in study.forget_splits:
                pct = _pct(forget)
                paths = [e.path for e in evals if e.path.stem.endswith(f"-{pct}")]
                dest = report_dir if len(study.forget_splits) == 1 else report_dir / forget
                curves = [out / "unlearn" / p.stem for p in paths if (out / "unlearn" / p.stem).is_dir()]
                build_report(paths, dest, make_reference(results / f"gold-{pct}.json"), curves)

        stages.append(Stage("report", "report", report_dir,
                            stage_key("report", study, *[e.key for e in evals]), rep, tuple(e.name for e in evals)))
    return stages


def run_study(cfg: BenchConfig, out: str | Path, echo: Callable[[str], None] = print,
              only_seed: int | None = None, jobs: int = 1) -> dict[str, str]:
    """Run the study. ``only_seed``: just that replicate's stages (no combined report), so that the
    replicates of one study can run in parallel processes or machines; a later run without it finds
    them done and writes the combined report. ``jobs``: stages run at once (see ``execute``)."""
    out = Path(out)
    stages = build_study(cfg, out)  # validates the grid before anything runs
    log = out / "run.jsonl"
    if only_seed is not None:
        if only_seed not in cfg.study.seeds:
            raise ConfigError(f"--only-seed {only_seed} is not one of study.seeds {cfg.study.seeds}")
        stages = [s for s in stages if s.name.startswith(f"seed-{only_seed}/")]
        log = seed_dir(out, only_seed) / "run.jsonl"  # one log per process: no interleaved appends
    save_config(cfg, out)
    for seed in cfg.study.seeds:  # each replicate directory is a complete study with its own config
        save_config(seed_config(cfg, seed), seed_dir(out, seed))
    return execute(stages, log, echo, jobs=jobs, rebuild=functools.partial(_rebuild, to_dict(cfg), str(out)))


def _rebuild(cfg: dict[str, Any], out: str) -> list[Stage]:
    """The stage list of the study ``cfg`` (a dict) under ``out``, as a worker process builds it."""
    return build_study(from_dict(BenchConfig, cfg), Path(out))
