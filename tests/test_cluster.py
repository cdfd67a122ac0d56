"""``clearbench run --executor local|slurm``: stages as submitit jobs. On a copy of the --jobs smoke study with some
stages removed, the local executor reruns exactly those as jobs (after a Ctrl-C of the driver that cancels them),
in the order their needs set, with the --jobs study's stage keys and results; a failing job names its stage and
log; the resources of the ``cluster`` section reach Slurm's sbatch lines and enter no stage key."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from clearbench.cluster import check_executors, executor_for
from clearbench.config import BenchConfig, ConfigError, load_config
from clearbench.executor import StageFailed, run_study
from clearbench.run import build_study, check_config, plan_study
from study_fixtures import SMOKE_OVERRIDES, alive, failing_copy, interrupt_once_started

OVERRIDES = SMOKE_OVERRIDES + ["cluster.default.cpus=1"]  # one torch thread per job, as the --jobs 2 workers had
UNLEARN = "unlearn/grad_ascent-lora-l1-multimodal-10"
REDO = (UNLEARN, "evaluate/grad_ascent-lora-l1-multimodal-10", "evaluate/target-10", "report")


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]


def _remove(stages: dict, names) -> None:
    """Delete the outputs, markers and evaluation caches of ``names``, as if they had never run."""
    for name in names:
        stage = stages[name]
        for path in (stage.path, stage.marker.parent, stage.path.with_suffix(".cache")):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _preempt_once_started(folder: Path, preempted: list[int]) -> None:
    """Send SIGUSR2 (Slurm's preemption signal, as submitit asks for it) to the first new job of ``folder`` once its
    stage process is up; its pid goes to ``preempted``."""
    old = set(folder.glob("*_log.out"))
    deadline = time.time() + 300
    while time.time() < deadline:
        for log in set(folder.glob("*_log.out")) - old:
            pids = [int(l.split("pid ")[1].split()[0]) for l in log.read_text().splitlines()
                    if l.startswith("clearbench job (pid")]
            if pids:
                os.kill(pids[0], signal.SIGUSR2)
                preempted.append(pids[0])
                return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def rerun(parallel, tmp_path_factory):
    """The --jobs study with REDO's stages removed: a driver interrupted once the unlearning job is at work, then the
    study run to the end with --executor local --jobs 2, its unlearning job preempted once on the way. Returns
    (out, cfg, interrupted, outcome, lines, preempted pids)."""
    out = tmp_path_factory.mktemp("cluster") / "smoke"
    shutil.copytree(parallel[0], out)
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES)
    stages = {s.name: s for s in build_study(cfg, out)}
    _remove(stages, REDO)
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out),
           "--executor", "local", "--jobs", "2", *OVERRIDES]
    interrupted = interrupt_once_started(cmd, stages[UNLEARN].path / "config.json")
    lines: list[str] = []
    preempted: list[int] = []
    watch = threading.Thread(target=_preempt_once_started, args=(out / "logs" / "jobs" / UNLEARN, preempted))
    watch.start()
    outcome = run_study(cfg, out, echo=lines.append, jobs=2, executor="local")
    watch.join()
    return out, cfg, interrupted, outcome, lines, preempted


def test_ctrl_c_cancels_the_jobs_and_leaves_them_resumable(rerun):
    out, _, interrupted, outcome, *_ = rerun
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert "interrupted; re-run the same command to resume" in interrupted.stderr
    assert "cancelled" in interrupted.stdout
    events = _events(out)
    submitted = {e["job_id"]: e for e in events if e["event"] == "submit"}
    cancelled = [e for e in events if e["event"] == "cancel"]
    assert UNLEARN in {e["stage"] for e in cancelled}
    for event in cancelled:  # the job (its controller's pid) and the stage's process are gone
        log = Path(submitted[event["job_id"]]["log"]).read_text()
        pids = [int(event["job_id"])] + [int(l.split("pid ")[1].split()[0]) for l in log.splitlines()
                                         if l.startswith("clearbench job (pid")]
        assert not any(alive(pid) for pid in pids), (event, log[-2000:])
    assert outcome[UNLEARN] == "resumed"  # its directory was left partial; the next run resumed it


def test_local_executor_runs_the_missing_stages_as_jobs_with_the_jobs_studys_keys_and_results(rerun, parallel):
    out, cfg, _, outcome, lines, _ = rerun
    assert {n for n, o in outcome.items() if o != "skipped"} == set(REDO)
    # the stage keys of the --jobs study (the cluster section is in none of them)
    for stage in build_study(cfg, out):
        mine, theirs = (json.loads((d / stage.marker.relative_to(out)).read_text()) for d in (out, parallel[0]))
        assert mine["key"] == theirs["key"], stage.name
    # each stage a job with its own log, submitted once the stages it needs had ended
    last_run = _events(out)
    last_run = last_run[max(i for i, e in enumerate(last_run) if e["event"] == "cancel") + 1:]
    when = {(e["event"], e["stage"]): i for i, e in enumerate(last_run)}
    assert when[("submit", "evaluate/grad_ascent-lora-l1-multimodal-10")] > when[("end", UNLEARN)]
    assert when[("submit", "report")] > max(when[("end", n)] for n in REDO[1:3])
    log = Path(next(e["log"] for e in last_run if e["event"] == "submit" and e["stage"] == UNLEARN))
    assert log.is_relative_to(out / "logs" / "jobs" / UNLEARN) and f"stage {UNLEARN}, 1 torch thread\n" in log.read_text()
    assert any(f"job {log.name.split('_')[0]} submitted" in line for line in lines)
    # the same model and scores as the --jobs study (one thread per process in both)
    from safetensors.torch import load_file

    a, b = (load_file(next((d / UNLEARN / "model").glob("*.safetensors"))) for d in (parallel[0], out))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    for name in ("target-10", "grad_ascent-lora-l1-multimodal-10"):
        ma, mb = (json.loads((d / "results" / f"{name}.json").read_text())["aggregates"]["metrics"]
                  for d in (parallel[0], out))
        probs = [k for k in ma if k.endswith("/probability")]
        assert ma.keys() == mb.keys() and len(probs) >= 5
        assert all(mb[k] == pytest.approx(ma[k], abs=0.01) for k in probs), name
    assert (out / "report" / "index.html").exists()


def test_a_preempted_job_is_requeued_and_resumes_its_stage(rerun):
    """submitit requeues a job on SIGUSR2 (preemption) with the arguments it was submitted with; the stage resumes
    what the first attempt left (the results equal the --jobs study's: the test above)."""
    out, preempted = rerun[0], rerun[-1]
    assert len(preempted) == 1
    log = next(p for p in (out / "logs" / "jobs" / UNLEARN).glob("*_log.out") if f"(pid {preempted[0]} " in p.read_text())
    text = log.read_text()
    assert "this job is preempted" in text and "Requeued job" in text
    assert text.count("clearbench job (pid ") == 2 and "Job completed successfully" in text


def test_a_rerun_with_the_local_executor_skips_everything_and_submits_nothing(rerun):
    out, cfg, *_ = rerun
    before = len(_events(out))
    assert set(run_study(cfg, out, echo=lambda s: None, jobs=2, executor="local").values()) == {"skipped"}
    assert {e["event"] for e in _events(out)[before:]} == {"skip"}


def test_a_failing_job_names_its_stage_and_its_log(parallel, tmp_path):
    out, cfg = failing_copy(parallel, tmp_path, OVERRIDES)
    lines: list[str] = []
    with pytest.raises(StageFailed, match=r"stage unlearn/\S+ failed in its job \d+; its log is ") as err:
        run_study(cfg, out, echo=lines.append, jobs=1, executor="local")
    assert "needs unlearn.stop.gold_model" in str(err.value)
    log = Path(str(err.value).split("its log is ")[1].split(";")[0])
    assert log.is_relative_to(out / "logs" / "jobs" / "unlearn") and "Traceback" in log.read_text()
    assert any(": FAILED (job " in line for line in lines)
    assert (out / "target" / "stage.json").exists()


def test_the_cluster_section_reaches_sbatch_and_the_evaluation_processes_and_no_stage_key(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    overrides = ["cluster.default.partition=gpu", "cluster.default.slurm={account: lab, qos: high}",
                 "cluster.default.setup=['module load cuda']",
                 "cluster.kinds.finetune={gpus: 2, cpus: 16, mem_gb: 120, time_min: 600}"]
    cfg = load_config(BenchConfig, "tiny-smoke", overrides + ["cluster.kinds.evaluate.gpus=2"])
    plain = load_config(BenchConfig, "tiny-smoke")
    assert [s.key for s in build_study(cfg, tmp_path)] == [s.key for s in build_study(plain, tmp_path)]
    # two GPUs for an evaluation: two processes score it (an argument of the stage, not part of its key)
    assert {s.args.get("shards") for s in plan_study(cfg, tmp_path)[0] if s.kind == "evaluate"} == {2}
    assert all("shards" not in s.args for s in plan_study(plain, tmp_path)[0])
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun here
    sbatch = {kind: executor_for("slurm", cfg.cluster.resources(kind), tmp_path, f"clearbench:{kind}")
              ._executor._make_submission_file_text("python -m job", "uid") for kind in ("finetune", "report")}
    for line in ("--gpus-per-node=2", "--cpus-per-task=16", "--mem=120GB", "--time=600", "--partition=gpu",
                 "--account=lab", "--qos=high", "--job-name=clearbench:finetune"):
        assert f"#SBATCH {line}\n" in sbatch["finetune"], line
    assert "module load cuda" in sbatch["finetune"]
    assert "--gpus-per-node" not in sbatch["report"] and "#SBATCH --cpus-per-task=2\n" in sbatch["report"]
    # a misspelt kind or field fails when the study is planned, naming the key
    for bad, message in ((["cluster.kinds.finetun={gpus: 1}"], "Did you mean 'finetune'"),
                         (["cluster.kinds.finetune={gpu: 1}"], "cluster.kinds.finetune.gpu")):
        with pytest.raises(ConfigError, match=message):
            check_config(load_config(BenchConfig, "tiny-smoke", bad))
    kinds = {"finetune", "report"}
    check_executors(cfg.cluster, "slurm", kinds, tmp_path)
    typo = load_config(BenchConfig, "tiny-smoke", ["cluster.kinds.report.slurm={acount: lab}"])
    with pytest.raises(ConfigError, match="kind report.*'acount'"):
        check_executors(typo.cluster, "slurm", kinds, tmp_path)
    monkeypatch.undo()  # no Slurm on this machine: said before anything runs
    with pytest.raises(ConfigError, match="--executor slurm: .*srun"):
        check_executors(cfg.cluster, "slurm", kinds, tmp_path)
    with pytest.raises(ValueError, match="Unknown executor"):
        run_study(plain, tmp_path / "x", echo=lambda s: None, executor="pbs")
