"""A training stage in several processes (``Resources.training_processes()``, docs/cluster.md). The job body
(clearbench.cluster.run_stage) calls ``launch``, which runs ``accelerate launch ... -m clearbench.launch_stage`` and
waits for it; each launched process runs ``main``: the stage's function, which trains in every process and writes
from the main one (clearbench.processes). The stage reaches them as a pickle in a private temporary directory of
the job, as submitit passes it to the job: between a job and its own processes only.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from clearbench import interrupt
from clearbench.processes import end_group
from clearbench.provenance import write_text_atomic

STOP_WAIT_S = 60.0  # how long a stopped job waits for its launched processes to unwind before killing the launcher
ERROR_FILE = "error.txt"  # beside the stage's pickle: the main process's exception, for the job's own error


def launch_command(processes: int, config: str = "") -> list[str]:
    """``accelerate launch`` for ``processes`` processes on this node: under the accelerate config file ``config``, or
    plain DDP without one (an explicit ``--multi_gpu``: the user's default accelerate config does not choose it).
    Port 0: a free one, so that jobs sharing a node do not collide."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--main_process_port", "0"]
    return cmd + (["--config_file", config] if config else ["--multi_gpu", "--mixed_precision", "no",
                                                            "--dynamo_backend", "no"])


def launch(stage, resume: bool, threads: int, processes: int, config: str = "") -> None:
    """Run ``stage`` in ``processes`` processes (``config``: their accelerate config; "": DDP) with ``threads`` torch
    threads shared among them; their output goes to this process's (the job's log). An interrupt of this process
    (SIGINT, SIGTERM, a preemption's exit) stops them first; a failure raises with the main process's error."""
    with tempfile.TemporaryDirectory(prefix="clearbench-stage-") as tmp:
        spec = Path(tmp) / "stage.pkl"
        spec.write_bytes(pickle.dumps(stage))
        cmd = launch_command(processes, config) + ["-m", "clearbench.launch_stage", str(spec), str(int(resume)),
                                                   str(max(1, threads // processes)), str(os.getpid())]
        print(f"clearbench job: stage {stage.name} in {processes} processes: {' '.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                _stop(proc)
        if code:
            error = Path(tmp, ERROR_FILE)
            why = error.read_text() if error.exists() else "see the processes' output above in this log"
            raise RuntimeError(f"stage {stage.name} failed in its {processes} processes (accelerate launch exit code "
                               f"{code}): {why}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the launcher, which passes it on to its processes (each unwinds as from a Ctrl-C); killed after
    STOP_WAIT_S. A process left behind stops itself once this job is gone (``main``'s watch)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str]) -> None:
    """One launched process: STAGE_PICKLE RESUME(0|1) THREADS JOB_PID."""
    spec, resume, threads, job = Path(argv[0]), argv[1] == "1", int(argv[2]), int(argv[3])
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # Slurm's preemption notice is the job's to act on (submitit)
    import torch
    from accelerate import PartialState

    from clearbench.executor import stop_without
    from clearbench.run import STAGE_FUNCTIONS

    torch.set_num_threads(threads)
    # the process group, before the stage's first barrier (cpu: as clearbench.train.get_accelerator sets it)
    state = PartialState(cpu=not torch.cuda.is_available())
    threading.Thread(target=stop_without, args=(job, 1.0, "clearbench stage process: the job"), daemon=True,
                     name="job-watch").start()
    stage = pickle.loads(spec.read_bytes())
    print(f"clearbench stage process (pid {os.getpid()}, rank {state.process_index} of {state.num_processes}): "
          f"stage {stage.name}, {threads} torch thread{'s' * (threads > 1)}", flush=True)
    try:
        with interrupt.handling():  # SIGTERM (the job stopping us) unwinds; the stage resumes on the next run
            STAGE_FUNCTIONS[stage.kind](**stage.args, resume=resume)
    except BaseException as exc:
        if state.is_main_process and isinstance(exc, Exception):
            write_text_atomic(spec.with_name(ERROR_FILE), f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        end_group(barrier=False)
        raise
    end_group()


if __name__ == "__main__":
    main(sys.argv[1:])
