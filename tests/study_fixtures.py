"""The tiny-smoke study run by ``clearbench run --jobs 2`` once per session: tests/test_run.py checks the side-by-side
runner with it and tests/test_cluster.py compares the submitit executor's outputs with it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
