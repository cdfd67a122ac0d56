"""``clearbench run --executor slurm`` (or ``local``): every stage a submitit job, a Slurm job or a process on
this machine, with the resources of its kind (the ``cluster`` section, clearbench.cluster_config).

The ``clearbench run`` process is the driver: it submits a stage once every stage it ``needs`` has finished (up
to ``jobs`` in flight; 0: no limit, the scheduler queues them), polls the jobs, and records starts, ends and
failures in ``run.jsonl`` as the builtin executor does. Skipping, resuming and keys are the executor's, so a
rerun of the same command skips the finished stages and resumes the interrupted ones. Each job's output is in
``logs/jobs/<stage name>/<job id>_0_log.out``. A Ctrl-C (or SIGTERM) of the driver cancels its jobs; their stages
resume on the next run. If the driver is killed outright, jobs on this host stop themselves; Slurm jobs on other
hosts do not (cancel them with ``scancel``, their ids are in run.jsonl, before running the study again).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from clearbench import interrupt, launch_stage
from clearbench.cluster_config import ClusterConfig, Resources
from clearbench.config import ConfigError
from clearbench.executor import Progress, StageFailed, state_of, stop_without, upstream_of
from clearbench.plan import Stage
from clearbench.run import STAGE_FUNCTIONS, TRAINING_KINDS, train_configs
from clearbench.train import accumulation_steps

POLL_S = {"local": 0.5, "slurm": 20.0}  # seconds between polls of the jobs (submitit rate-limits sacct itself)
CANCEL_WAIT_S = 60.0  # how long a stopped driver waits for its cancelled jobs to end


@dataclasses.dataclass
class _Submitted:
    job: Any  # a submitit Job
    stage: Stage
    started: Any  # executor.Progress.begin's record
    error: BaseException | None = None  # submitit's FailedJobError (the traceback) or UncompletedJobError


def run_stage(stage: Stage, resume: bool, threads: int, owner: tuple[str, int],
              launch: tuple[int, str] = (1, "")) -> None:
    """Body of a job: ``threads`` torch threads, then the stage's function; ``launch`` (processes, accelerate config)
    with more than one process: the function in that many processes under ``accelerate launch`` (a training stage,
    clearbench.launch_stage). It resumes whatever output the stage has: a job requeued after a preemption starts
    again with the arguments it was submitted with. A job on the driver's host stops when the driver process is gone
    (killed outright): a new run would otherwise resume beside it."""
    import torch

    torch.set_num_threads(threads)
    host = socket.gethostname()
    if owner[0] == host:
        threading.Thread(target=stop_without, args=(owner[1],), daemon=True, name="owner-watch").start()
    print(f"clearbench job (pid {os.getpid()} on {host}): stage {stage.name}, {threads} torch "
          f"thread{'s' * (threads > 1)}", flush=True)
    resume = resume or stage.path.exists()
    with interrupt.handling():  # SIGINT (a local job's cancel) and SIGTERM (scancel) unwind: the stage resumes later
        if launch[0] > 1:
            launch_stage.launch(stage, resume, threads, *launch)
        else:
            STAGE_FUNCTIONS[stage.kind](**stage.args, resume=resume)


def launch_of(stage: Stage, res: Resources) -> tuple[int, str]:
    """(processes, accelerate config as an absolute path or "") that run ``stage`` in its job: a training stage gets
    ``res.training_processes()``, any other one process."""
    if stage.kind not in TRAINING_KINDS or res.training_processes() < 2:
        return 1, ""
    return res.training_processes(), str(Path(res.accelerate_config).resolve()) if res.accelerate_config else ""


def executor_for(executor: str, res: Resources, folder: Path, name: str):
    """A submitit executor ("local" or "slurm") whose jobs get ``res`` and write their logs to ``folder``."""
    import submitit

    params: dict[str, Any] = {"name": name, "timeout_min": res.time_min, "mem_gb": res.mem_gb,
                              "cpus_per_task": res.cpus, "nodes": 1, "tasks_per_node": 1, "stderr_to_stdout": True}
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    if executor == "slurm":
        params |= {"slurm_partition": res.partition or None, "slurm_setup": list(res.setup) or None,
                   **{f"slurm_{k}": v for k, v in res.slurm.items()}}
    ex = submitit.AutoExecutor(folder=folder, cluster=executor)
    ex.update_parameters(**params)
    return ex


def check_executors(cluster: ClusterConfig, executor: str, kinds: set[str], folder: Path) -> None:
    """Every kind's job parameters checked by submitit before anything is submitted (a misspelt Slurm option fails
    now, not hours into the study), and Slurm's presence."""
    for kind in sorted(kinds):
        try:
            executor_for(executor, cluster.resources(kind), folder, kind)
        except NameError as exc:  # an option submitit's executor does not have
            raise ConfigError(f"cluster (the jobs of stage kind {kind}): {str(exc).splitlines()[0]}") from None
        except RuntimeError as exc:  # no srun here
            raise ConfigError(f"--executor {executor}: {exc}") from None


def check_training(stages: list[Stage], cluster: ClusterConfig) -> None:
    """The batch of every training stage still to run splits evenly over its processes (``accumulation_steps``),
    checked before anything is submitted, not when the job starts after its wait in the queue."""
    for stage in stages:
        if stage.kind not in TRAINING_KINDS or state_of(stage) == "done":
            continue
        processes = launch_of(stage, cluster.resources(stage.kind))[0]
        for train in train_configs(stage) if processes > 1 else []:
            try:
                accumulation_steps(train, processes)
            except ValueError as exc:
                raise ConfigError(f"stage {stage.name} in {processes} processes (cluster.kinds.{stage.kind}): "
                                  f"{exc}") from None


def run_jobs(run: Progress, cluster: ClusterConfig, executor: str, logs_dir: Path, jobs: int) -> None:
    """Run ``run.stages`` as jobs of ``executor``, up to ``jobs`` at once (0: all that are ready); a stage is submitted
    once every stage it needs has finished (list order breaks ties). After a failure no new stage starts, the jobs
    in flight finish, and StageFailed names the first failed stage and its log."""
    upstream_of(run.stages)  # every need is a stage of the study
    check_executors(cluster, executor, {s.kind for s in run.stages}, logs_dir / "jobs")
    check_training(run.stages, cluster)
    pending = list(run.stages)
    running: list[_Submitted] = []
    failed: list[_Submitted] = []
    try:
        while True:
            interrupt.check()
            while not failed and (not jobs or len(running) < jobs):
                ready = next((s for s in pending if all(n in run.outcome for n in s.needs)), None)
                if ready is None:
                    break
                pending.remove(ready)
                submitted = _submit(run, ready, cluster, executor, logs_dir)
                running += [submitted] if submitted else []
            if not running:
                break
            time.sleep(POLL_S[executor])
            for sub in [s for s in running if s.job.done()]:
                running.remove(sub)
                _collect(run, sub, failed)
    finally:
        _cancel(running, run)
    if failed:
        _raise_failed(failed[0])
    if pending:
        raise RuntimeError(f"stages {[s.name for s in pending]} never became ready: their needs form a cycle")


def _submit(run: Progress, stage: Stage, cluster: ClusterConfig, executor: str, logs_dir: Path) -> _Submitted | None:
    """Submit ``stage`` unless it is done (then it is recorded as skipped)."""
    import submitit

    folder = logs_dir / "jobs" / stage.name
    started = run.begin(stage)
    if started is None:
        return None
    res = cluster.resources(stage.kind)
    ex = executor_for(executor, res, folder, f"clearbench:{stage.name}")
    try:
        job = ex.submit(run_stage, stage, started.resume, res.cpus, (socket.gethostname(), os.getpid()),
                        launch_of(stage, res))
    except (submitit.core.utils.FailedJobError, OSError) as exc:  # sbatch refused it, or is not there
        run.write(event="fail", stage=stage.name, error=str(exc)[-1000:])
        raise StageFailed(f"stage {stage.name} could not be submitted to {executor}: {' '.join(str(exc).split())}; "
                          f"check its resources (cluster.default, cluster.kinds.{stage.kind})") from exc
    run.write(event="submit", stage=stage.name, executor=executor, job_id=job.job_id, log=str(job.paths.stdout))
    run.echo(f"{run.prefix(stage)}: job {job.job_id} submitted, log: {job.paths.stdout}")
    return _Submitted(job, stage, started)


def _collect(run: Progress, sub: _Submitted, failed: list[_Submitted]) -> None:
    """Record a finished job: the stage's marker when it succeeded, else a failure."""
    sub.error = sub.job.exception()
    if sub.error is None:
        run.finish(sub.stage, sub.started)
        return
    run.write(event="fail", stage=sub.stage.name, job_id=sub.job.job_id, state=sub.job.state)
    run.echo(f"{run.prefix(sub.stage)}: FAILED (job {sub.job.job_id}, {sub.job.state}); waiting for the jobs still "
             f"running")
    failed.append(sub)


def _cancel(running: list[_Submitted], run: Progress) -> None:
    """Cancel the jobs still in flight (the driver stops: Ctrl-C, an error) and wait a while for them to end, so
    that a rerun does not resume a stage beside its old job; their partial outputs resume on that rerun."""
    if not running:
        return
    for sub in running:
        sub.job.cancel(check=False)
        run.write(event="cancel", stage=sub.stage.name, job_id=sub.job.job_id)
    run.echo(f"cancelled {len(running)} job(s): {', '.join(s.job.job_id for s in running)}; their stages resume "
             f"when the study runs again")
    deadline = time.time() + CANCEL_WAIT_S
    while time.time() < deadline and not all(s.job.done(force_check=True) for s in running):
        time.sleep(1.0)


def _raise_failed(sub: _Submitted) -> None:
    """StageFailed naming the stage, its job and log, and the last line of the job's traceback or error stream."""
    import submitit

    text = str(sub.error)
    text = text.split("-" * 22 + "\n")[1] if "-" * 22 + "\n" in text else text  # submitit frames the trace in rules
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    how = "failed in its job" if isinstance(sub.error, submitit.core.utils.FailedJobError) else \
        f"stopped unfinished (state {sub.job.state}) in its job"  # killed: time limit, memory, scancel
    raise StageFailed(f"stage {sub.stage.name} {how} {sub.job.job_id}; its log is {sub.job.paths.stdout}"
                      + (f"; it ended with: {lines[-1]}" if lines else ""))
