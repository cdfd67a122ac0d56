"""The tiny-smoke study run by ``clearbench run --jobs 2`` once per session: tests/test_run.py checks the side-by-side
runner with it, tests/test_cluster.py and tests/test_launch_stage.py compare the submitit executor's outputs with it;
and the helpers that interrupt a driver and check that its processes are gone."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMOKE_OVERRIDES = ["study.methods=[grad_ascent]"]


@pytest.fixture(scope="session")
def parallel(tmp_path_factory):
    """(study directory, stdout) of the smoke study run by the CLI with --jobs 2 (treat as read-only: copy it)."""
    out = tmp_path_factory.mktemp("jobs") / "smoke"
    done = subprocess.run([sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out),
                           "--jobs", "2", *SMOKE_OVERRIDES], env=dict(os.environ, OMP_NUM_THREADS="2"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def failing_copy(parallel, tmp_path, overrides):
    """(a copy of the ``parallel`` study, a config of it whose unlearning stages fail when they start): a
    gold-threshold stop rule without a gold model is a valid config that the stage refuses."""
    from clearbench.config import BenchConfig, load_config

    out = tmp_path / "smoke"
    shutil.copytree(parallel[0], out)
    cfg = load_config(BenchConfig, "tiny-smoke", list(overrides) + ["unlearn.stop.rule=forget_prob_below",
                                                                    "unlearn.stop.threshold=gold"])
    return out, cfg


def alive(pid: int) -> bool:
    """``pid`` is a running process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def interrupt_once_started(cmd: list[str], started: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the driver ``cmd``; once ``started`` exists (a job is at work), press Ctrl-C in the driver only."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even under `pytest &`
    deadline = time.time() + timeout
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
