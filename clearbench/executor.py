"""Running a study's stages (``clearbench run``): skip what is done, resume what was interrupted, redo what is stale.

A finished stage writes ``stage.json`` (its key) last; a directory without it was interrupted and is resumed
(training checkpoints, the evaluation cache), one with another key is redone from scratch, and so is an interrupted
one whose last fresh start in the run log had another key (its settings changed since). ``run.jsonl`` in
the study directory logs every stage start, skip and end; the progress lines give an ETA.

``jobs`` > 1 runs up to that many stages at once, each in a worker process that receives the stage's kind and
arguments and calls ``STAGE_FUNCTIONS[kind]``; a stage starts once every stage it ``needs`` has finished.
``executor`` "slurm" or "local" submits each stage as a submitit job instead (clearbench.cluster).
With a stage store (clearbench.stage_store) a world, base or finetune another study made with the same key and code
is copied in instead of being made again, and each one made here is copied to the store.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from clearbench import interrupt
from clearbench.cluster_config import EXECUTORS
from clearbench.config import BenchConfig, to_dict
from clearbench.provenance import write_json_atomic
from clearbench.scenarios import PRIOR_COST as SCENARIO_COST
from clearbench.plan import Stage
from clearbench.run import STAGE_FUNCTIONS, plan_study
from clearbench.stage_store import StageStore
from clearbench.study_lock import study_lock
from clearbench.study import seed_config, seed_dir
from clearbench.types import unknown_name_message

# Rough relative cost of each stage kind (tiny preset, CPU), used for the ETA until one of a kind ran (other
# kinds: 0.5).
PRIOR_COST = {"generate": 1.0, "pretrain": 8.0, "finetune": 10.0, "unlearn": 0.5, "evaluate": 0.5, "report": 0.1,
              "replicate_report": 0.1, "validate": 0.1, "calibrate_select": 0.1,
              "attack": 0.5, "metaeval_report": 0.1, **SCENARIO_COST}
# Imported once by the fork server, so that each worker starts with them loaded: with the embedded default's model,
# processor, chat-template and adapter modules too, loading a model in a worker takes 0.2 s instead of 1.7 s (the
# fork server skips a module that does not import).
WORKER_PRELOAD = ["clearbench.executor", "clearbench.run", "clearbench.stages", "clearbench.unlearn", "eval.evaluate",
                  "transformers.models.llava.modeling_llava", "transformers.models.llava.processing_llava",
                  "transformers.models.llava.image_processing_llava", "transformers.models.clip.image_processing_clip",
                  "transformers.models.llama.modeling_llama", "transformers.models.clip.modeling_clip",
                  "transformers.generation.utils", "accelerate", "peft", "jinja2"]


class StageFailed(ChildProcessError):
    """A stage run in a worker process (``jobs`` > 1) failed; its traceback is in its log file."""


def state_of(stage: Stage) -> str:
    """'done' (same key), 'stale' (finished with another key), 'partial' (interrupted) or 'new'."""
    if stage.marker.exists():
        return "done" if json.loads(stage.marker.read_text()).get("key") == stage.key else "stale"
    if stage.path.exists():
        return "partial"
    return "new"


def _started_keys(log_path: Path) -> dict[str, str]:
    """The key each stage last started afresh with (its directory's settings: a resumed start adds nothing to them),
    from the run log (an unreadable line is skipped: a log cut by a kill)."""
    keys: dict[str, str] = {}
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "start" and "key" in event and not event.get("resume"):
                keys[str(event.get("stage"))] = str(event["key"])
    return keys


def _clear(stage: Stage) -> None:
    if stage.path.is_dir():
        shutil.rmtree(stage.path)
    elif stage.path.exists():
        stage.path.unlink()
    # an evaluation's per-example cache stays: it is keyed by the model and scoring settings and
    # discards itself when they change, so a metric-option change re-aggregates without model passes
    if stage.marker.exists():
        stage.marker.unlink()


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def save_config(cfg: BenchConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", to_dict(cfg))


@dataclasses.dataclass
class _Started:
    resume: bool
    state: str
    t0: float


class Progress:
    """The outcome, the run log (``run.jsonl``) and the progress lines of one execution."""

    def __init__(self, stages: list[Stage], log_path: Path, echo: Callable[[str], None], jobs: int,
                 store: StageStore | None = None):
        self.stages, self.log_path, self.echo, self.jobs, self.store = stages, Path(log_path), echo, jobs, store
        self.index = {s.name: i for i, s in enumerate(stages)}
        self.outcome: dict[str, str] = {}
        self.durations: dict[str, list[float]] = {}
        self.t0 = time.time()
        self.started_keys = _started_keys(self.log_path)  # stage name -> the key its output was started with

    def write(self, **event: Any) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"time": round(time.time() - self.t0, 2), **event}) + "\n")

    def eta(self, remaining: list[Stage]) -> float:
        """Seconds left: the mean duration of finished stages of the same kind, else the kind's
        prior relative cost scaled by how long the finished stages took against their priors."""
        done = [(k, d) for k, ds in self.durations.items() for d in ds]
        if not done:
            return 0.0
        scale = sum(d for _, d in done) / sum(PRIOR_COST.get(k, 0.5) for k, _ in done)
        return sum(sum(self.durations[s.kind]) / len(self.durations[s.kind]) if self.durations.get(s.kind)
                   else PRIOR_COST.get(s.kind, 0.5) * scale for s in remaining)

    def prefix(self, stage: Stage) -> str:
        return f"[{self.index[stage.name] + 1}/{len(self.stages)}] {stage.name}"

    def begin(self, stage: Stage, note: str = "") -> _Started | None:
        """Skip ``stage`` (returns None) if it is done or the store has it (copied in), else clear it if stale
        and log its start."""
        state = state_of(stage)
        if state == "done":
            self.outcome[stage.name] = "skipped"
            self.write(event="skip", stage=stage.name, key=stage.key)
            self.echo(f"{self.prefix(stage)}: up to date, skipped")
            return None
        if self.store is not None and self.store.has(stage):  # a finished copy beats resuming a partial one
            if self._fetch(stage):
                return None
            state = state_of(stage)
        if state == "partial" and self.started_keys.get(stage.name, stage.key) != stage.key:
            state = "stale"  # interrupted under other settings: its checkpoints are not this stage's
            note = note + " (its interrupted run had other settings: starting again)"
        if state == "stale":
            _clear(stage)
        resume = state == "partial"
        if not resume:
            self.started_keys[stage.name] = stage.key
        eta = self.eta([s for s in self.stages[self.index[stage.name]:] if s.name not in self.outcome]) / self.jobs
        self.echo(f"{self.prefix(stage)}: {'resuming' if resume else 'running'}"
                  + (f" (ETA {_fmt(eta)})" if eta else "") + note)
        self.write(event="start", stage=stage.name, kind=stage.kind, key=stage.key, resume=resume)
        return _Started(resume, state, time.time())

    def _fetch(self, stage: Stage) -> bool:
        """Replace ``stage``'s output with the store's copy; a copy that fails (disk full) only warns: the stage
        is then made here."""
        t0, entry = time.time(), self.store.entry(stage)
        _clear(stage)
        try:
            if not self.store.fetch(stage):  # the entry went away since ``has`` (deleted by hand)
                return False
        except OSError as exc:
            self.echo(f"{self.prefix(stage)}: WARNING: could not copy it from the stage store ({exc}); making it")
            return False
        self.outcome[stage.name] = "fetched"
        self.write(event="fetch", stage=stage.name, kind=stage.kind, key=stage.key, source=str(entry),
                   seconds=round(time.time() - t0, 2))
        self.echo(f"{self.prefix(stage)}: copied from the stage store ({entry})")
        return True

    def finish(self, stage: Stage, started: _Started) -> None:
        took = time.time() - started.t0
        self.durations.setdefault(stage.kind, []).append(took)
        write_json_atomic(stage.marker, {"key": stage.key, "stage": stage.name, "seconds": took})
        self.write(event="end", stage=stage.name, seconds=round(took, 2))
        self.outcome[stage.name] = {"partial": "resumed", "stale": "redone"}.get(started.state, "ran")
        self.echo(f"{self.prefix(stage)}: done in {_fmt(took)}")
        if self.store is not None:
            try:
                if self.store.put(stage):
                    self.echo(f"{self.prefix(stage)}: stored in {self.store.entry(stage)}")
            except OSError as exc:  # the study's own output is complete: a store that cannot take it only warns
                self.echo(f"{self.prefix(stage)}: WARNING: not stored in {self.store.root}: {exc}")


def run_study(cfg: BenchConfig, out: str | Path, echo: Callable[[str], None] = print,
              only_seed: int | None = None, jobs: int = 1, executor: str = "builtin",
              store: StageStore | None = None) -> dict[str, str]:
    """Run the study ``cfg`` in ``out``; returns {stage name: skipped | fetched | ran | resumed | redone}.

    ``only_seed``: just that replicate's stages (no combined report), so that the replicates of one study can
    run in parallel processes or machines; a later run without it finds them done and writes the combined
    report. ``jobs`` = 1 runs the stages in order in this process; ``jobs`` > 1 see ``_run_parallel``.
    ``executor`` "local" or "slurm": each stage a submitit job, up to ``jobs`` at once (0: no limit), see
    clearbench.cluster. ``store``: the stage store worlds, bases and finetunes are copied from and to (None: none).
    """
    if executor not in EXECUTORS:
        raise ValueError(unknown_name_message("executor", executor, EXECUTORS))
    if jobs < (0 if executor != "builtin" else 1):
        raise ValueError(f"jobs={jobs}: run at least one stage at a time")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give the study a directory")
    stages, log_path = plan_study(cfg, out, only_seed)  # the config is validated before anything runs
    locked = [seed_dir(out, only_seed)] if only_seed is not None else [out, *(seed_dir(out, s) for s in cfg.study.seeds)]
    with study_lock(locked, echo):
        save_config(cfg, out)
        for seed in cfg.study.seeds:  # each replicate directory is a complete study with its own config
            save_config(seed_config(cfg, seed), seed_dir(out, seed))
        run = Progress(stages, log_path, echo, jobs or len(stages), store)
        if executor != "builtin":
            from clearbench.cluster import run_jobs

            run_jobs(run, cfg.cluster, executor, log_path.parent / "logs", jobs)
        elif jobs > 1:
            _run_parallel(run, log_path.parent / "logs")
        else:
            for stage in stages:
                interrupt.check()  # between stages: a Ctrl-C lost inside the last one stops here
                started = run.begin(stage)
                if started:
                    STAGE_FUNCTIONS[stage.kind](**stage.args, resume=started.resume)
                    run.finish(stage, started)
    echo(f"study finished in {_fmt(time.time() - run.t0)}")
    return run.outcome


# --------------------------------------------------------------------------------- --jobs N
def _worker(kind: str, args: dict[str, Any], name: str, resume: bool, log_file: Path, threads: int,
            owner: int) -> None:
    """Body of a worker process: output to ``log_file``, ``threads`` torch threads, run the stage's function
    (an exception's traceback lands in the log, and the process exits with code 1). The worker stops when the
    study process ``owner`` is gone (killed outright): a new run would otherwise resume its stage beside it."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    threading.Thread(target=stop_without, args=(owner,), daemon=True, name="owner-watch").start()
    import torch

    torch.set_num_threads(threads)
    print(f"clearbench run worker (pid {os.getpid()}): stage {name}, {threads} torch thread{'s' * (threads > 1)}",
          flush=True)
    with interrupt.handling():  # SIGTERM (terminate(), the watch) unwinds: finalisers release the semaphores
        STAGE_FUNCTIONS[kind](**args, resume=resume)
    sys.stdout.flush()
    sys.stderr.flush()


def stop_without(owner: int, every: float = 1.0, who: str = "clearbench run worker: the study process") -> None:
    """Poll the study process (``who``: this process and what ``owner`` is, for the message); once it is gone, end
    this worker as SIGTERM does (its stage resumes next run)."""
    while True:
        time.sleep(every)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            print(f"{who} {owner} is gone; stopping", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except PermissionError:  # alive, under another user (a reused pid): keep going
            pass


def upstream_of(stages: list[Stage]) -> dict[str, set[str]]:
    """Every stage's transitive needs (needs are earlier stages, so one pass in order closes them)."""
    names = {s.name for s in stages}
    upstream: dict[str, set[str]] = {}
    for s in stages:
        missing = [n for n in s.needs if n not in names]
        if missing:
            raise ValueError(f"stage {s.name} needs {missing}, which are not stages of this study")
        upstream[s.name] = set(s.needs).union(*(upstream.get(n, set()) for n in s.needs))
    return upstream


def _run_parallel(run: Progress, logs_dir: Path) -> None:
    """Up to ``run.jobs`` stages at once, each in a worker process with this process's torch threads divided
    among them (all of them for a stage that every pending stage waits for, such as the base model); a stage
    starts once every stage it needs has finished (list order breaks ties); a worker's output goes to
    ``logs_dir/<stage name>.log``. Workers come from a fork server: a child forked from a process whose torch
    thread pool has run hangs in its first multi-threaded op. The tiny models use a second core poorly within
    one process, so side-by-side stages finish sooner (docs/presets.md)."""
    import multiprocessing
    from multiprocessing.connection import wait

    import torch

    upstream = upstream_of(run.stages)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    all_threads = torch.get_num_threads()
    pending = list(run.stages)
    running: dict[Any, tuple[Any, Stage, _Started, Path]] = {}  # sentinel -> (process, stage, started, log)
    failed: list[tuple[Stage, int, Path]] = []
    try:
        while True:
            interrupt.check()
            while not failed and len(running) < run.jobs:
                ready = next((s for s in pending if all(n in run.outcome for n in s.needs)), None)
                if ready is None:
                    break
                pending.remove(ready)
                alone = not running and all(ready.name in upstream[s.name] for s in pending)
                threads = all_threads if alone else max(1, all_threads // run.jobs)
                _launch(ctx, run, ready, logs_dir / f"{ready.name}.log", threads, running)
            if not running:
                break
            for sentinel in wait(list(running)):
                proc, stage, started, log_file = running.pop(sentinel)
                proc.join()
                if proc.exitcode == 0:
                    run.finish(stage, started)
                    continue
                run.write(event="fail", stage=stage.name, exitcode=proc.exitcode)
                run.echo(f"{run.prefix(stage)}: FAILED (exit code {proc.exitcode}); waiting for the stages still running")
                failed.append((stage, proc.exitcode, log_file))
    finally:
        for proc, *_ in running.values():  # interrupted (Ctrl-C) or an error here: stop the workers;
            proc.terminate()               # their partial outputs resume on the next run
            proc.join()
    _raise_failed(failed, pending)


def _launch(ctx, run: Progress, stage: Stage, log_file: Path, threads: int, running: dict) -> None:
    """Start ``stage`` in a worker process unless it is done (then it is recorded as skipped)."""
    started = run.begin(stage, note=f", log: {log_file}")
    if started is None:
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    proc = ctx.Process(target=_worker, name=stage.name,
                       args=(stage.kind, stage.args, stage.name, started.resume, log_file, threads, os.getpid()))
    proc.start()
    running[proc.sentinel] = (proc, stage, started, log_file)


def _raise_failed(failed: list[tuple[Stage, int, Path]], pending: list[Stage]) -> None:
    if failed:
        stage, code, log_file = failed[0]
        lines = [line for line in log_file.read_text().splitlines() if line.strip()] if log_file.exists() else []
        raise StageFailed(f"stage {stage.name} failed in its worker process (exit code {code}); its log is "
                          f"{log_file}" + (f"; it ended with: {lines[-1].strip()}" if lines else ""))
    if pending:
        raise RuntimeError(f"stages {[s.name for s in pending]} never became ready: their needs form a cycle")
