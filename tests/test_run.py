"""``clearbench run`` on the tiny-smoke preset: the whole study, stage skipping, downstream re-runs,
and a killed study finishing on re-run without redoing finished work."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clearbench.config import BenchConfig, load_config
from clearbench.run import build_study, run_study

OVERRIDES = ["study.methods=[grad_ascent]"]


def _events(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "run.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "smoke"
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES)
    first = run_study(cfg, out, echo=lambda s: None)
    return out, cfg, first


def test_study_produces_every_stage_and_a_report(study):
    out, cfg, first = study
    assert set(first.values()) == {"ran"}
    names = list(first)
    assert names[:3] == ["world", "base", "target"]
    assert "unlearn/grad_ascent-multimodal-10" in names and "unlearn/grad_ascent-l1-multimodal-10" in names
    for name in ("gold-10", "target-10", "grad_ascent-multimodal-10", "grad_ascent-l1-multimodal-10"):
        result = json.loads((out / "results" / f"{name}.json").read_text())
        assert result["schema_version"] >= 1
    html = (out / "report" / "index.html").read_text()
    assert "grad_ascent-l1-multimodal-10" in html
    assert json.loads((out / "config.json").read_text())["study"]["methods"] == ["grad_ascent"]


def test_second_run_skips_everything(study):
    out, cfg, _ = study
    again = run_study(cfg, out, echo=lambda s: None)
    assert set(again.values()) == {"skipped"}


def test_changed_setting_reruns_exactly_the_downstream_stages(study):
    out, _, first = study
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES + ["unlearn.train.max_steps=3"])
    outcome = run_study(cfg, out, echo=lambda s: None)
    redone = {k for k, v in outcome.items() if v != "skipped"}
    assert redone == {"unlearn/grad_ascent-multimodal-10", "evaluate/grad_ascent-multimodal-10",
                      "unlearn/grad_ascent-l1-multimodal-10", "evaluate/grad_ascent-l1-multimodal-10", "report"}
    assert all(outcome[k] == "redone" for k in redone)
    # and the stage list of an unchanged config is unchanged in order
    assert [s.name for s in build_study(cfg, out)] == list(first)


def test_tuning_one_method_keeps_the_other_methods_stage_keys(tmp_path):
    """options_by_method / lr_by_method entries re-key only their method's stages (and the report)."""
    def keys(extra):
        cfg = load_config(BenchConfig, "tiny-smoke", ["study.methods=[grad_ascent,rmu]", *extra])
        return {s.name: s.key for s in build_study(cfg, tmp_path)}

    base = keys([])
    for extra in (["unlearn.options_by_method.rmu.alpha=3.0"], ["unlearn.lr_by_method.rmu=2.0e-3"]):
        tuned = keys(extra)
        changed = {k for k in base if base[k] != tuned[k]}
        assert {"unlearn/rmu-multimodal-10", "evaluate/rmu-multimodal-10", "report"} <= changed, extra
        assert not any("grad_ascent" in k for k in changed), extra
    assert keys(["unlearn.options_by_method.grad_ascent={}"]) == base  # an empty entry changes nothing


def test_bad_grid_fails_before_anything_runs(tmp_path):
    cfg = load_config(BenchConfig, "tiny-smoke", ["study.methods=[npp]"])
    with pytest.raises(ValueError, match="Did you mean 'npo'"):
        run_study(cfg, tmp_path / "x", echo=lambda s: None)
    assert not (tmp_path / "x").exists()


def test_killed_study_finishes_on_rerun_without_redoing_work(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out), *OVERRIDES]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    finished: list[str] = []
    while time.time() < deadline:  # kill it once the target model is done, mid-study
        if (out / "run.jsonl").exists():
            finished = [e["stage"] for e in _events(out) if e["event"] == "end"]
            if "target" in finished:
                break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "target" in finished
    done_before = [e["stage"] for e in _events(out) if e["event"] == "end"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    events = _events(out)
    rerun = events[len(events) - next(i for i, e in enumerate(reversed(events)) if e.get("stage") == "world") - 1:]
    skipped = {e["stage"] for e in rerun if e["event"] == "skip"}
    assert set(done_before) <= skipped  # nothing finished was redone
    assert (out / "report" / "index.html").exists()
