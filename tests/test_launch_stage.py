"""Training stages in several processes (``cluster.kinds.<kind>.train_processes``; clearbench.launch_stage runs them
under ``accelerate launch``), on CPU: gloo and plain DDP. accelerate does not shard on a CPU (an FSDP config runs as
DDP there), so configs/accelerate/fsdp.yaml is only checked to load; tests/test_fsdp.py shards the loop itself.

On a copy of the tiny-smoke study (tests/study_fixtures.py, 1 process per stage), the L1-LoRA unlearning stage runs
again through the local executor in 2 processes, with half the micro-batch (the same effective batch; its key changes,
so it and the stages after it run again): a Ctrl-C of the driver stops the launched processes, the next run resumes
the stage and trains the weights of the 1-process run, and its evaluation scores that model. Pretrain and finetune in
2 processes (launched directly) train the weights of 1 process too; a bad accelerate config fails when the study is
planned."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clearbench.cluster import launch_of
from clearbench.config import BenchConfig, ConfigError, load_config
from clearbench.executor import run_study
from clearbench.launch_stage import launch, launch_command
from clearbench.provenance import model_fingerprint
from clearbench.run import build_study, check_config
from study_fixtures import SMOKE_OVERRIDES, alive, interrupt_once_started

ROOT = Path(__file__).resolve().parent.parent
UNLEARN = "unlearn/grad_ascent-lora-l1-multimodal-10"
AFTER = ("evaluate/grad_ascent-lora-l1-multimodal-10", "report")  # the stages that read its model
# one torch thread per stage process, as the --jobs 2 study's workers had; micro-batch 2 of the batch of 4 (1 x 4 there)
OVERRIDES = SMOKE_OVERRIDES + ["cluster.default.cpus=2", "cluster.kinds.unlearn.train_processes=2",
                               "study.variants.lora-l1.train.micro_batch_size=2"]
# LoRA + L1 runs differed by 3e-8 at most (measured); test_fsdp's full-parameter bound, where Adam amplifies the
# summation-order noise of parameters without a true gradient, leaves room for other libraries' kernels
ATOL = 1e-4


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(next((run_dir / "model").glob("*.safetensors")))


def _assert_same_weights(mine: Path, theirs: Path) -> None:
    a, b = _weights(mine), _weights(theirs)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=ATOL, msg=name)


def _stage_pids(log: str) -> list[tuple[int, str]]:
    """(pid, "rank r of n") of every launched stage process a job log names."""
    lines = [line for line in log.splitlines() if line.startswith("clearbench stage process (pid ")]
    return [(int(line.split("pid ")[1].split(",")[0]), line.split(", ")[1].split(")")[0]) for line in lines]


@pytest.fixture(scope="module")
def launched(parallel, tmp_path_factory):
    """The study copy: a driver with --executor local interrupted once the 2-process unlearning stage is at work, then
    the study run to the end. Returns (out, cfg, interrupted driver, outcome)."""
    out = tmp_path_factory.mktemp("launch") / "smoke"
    shutil.copytree(parallel[0], out)
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES)
    stages = {s.name: s for s in build_study(cfg, out)}
    shutil.rmtree(stages[UNLEARN].path)  # its config.json is the sign that the new run's processes are at work
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out),
           "--executor", "local", *OVERRIDES]
    interrupted = interrupt_once_started(cmd, stages[UNLEARN].path / "config.json", timeout=900)  # a busy machine
    outcome = run_study(cfg, out, echo=lambda s: None, executor="local")
    return out, cfg, interrupted, outcome


def _job_logs(out: Path) -> list[str]:
    """The unlearning stage's job logs, oldest first."""
    return [p.read_text() for p in sorted((out / "logs" / "jobs" / UNLEARN).glob("*_log.out"),
                                          key=lambda p: p.stat().st_mtime)]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
def test_ctrl_c_stops_the_launched_processes_and_the_stage_resumes(launched):
    out, _, interrupted, outcome = launched
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    first = _job_logs(out)[0]
    assert "in 2 processes: " in first and "accelerate.commands.launch --num_processes 2" in first
    pids = _stage_pids(first)
    assert sorted(rank for _, rank in pids) == ["rank 0 of 2", "rank 1 of 2"], first[-3000:]
    deadline = time.time() + 30  # each unwinds on SIGTERM from its launcher, or on its job being gone (1 s polls)
    while any(alive(pid) for pid, _ in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid, _ in pids), first[-3000:]
    assert outcome[UNLEARN] == "resumed"


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
def test_two_processes_train_the_weights_of_one_and_the_next_stages_use_them(launched, parallel):
    out, cfg, _, outcome = launched
    assert {n for n, o in outcome.items() if o != "skipped"} == {UNLEARN, *AFTER}
    last = _job_logs(out)[-1]
    assert sorted(rank for _, rank in _stage_pids(last)) == ["rank 0 of 2", "rank 1 of 2"], last[-3000:]
    _assert_same_weights(out / UNLEARN, parallel[0] / UNLEARN)
    # the main process wrote the stage's files, once: one log line per step, the run record of the saved model
    assert [json.loads(line)["step"] for line in (out / UNLEARN / "log.jsonl").read_text().splitlines()] == [1, 2]
    run = json.loads((out / UNLEARN / "run.json").read_text())
    assert run["model_fingerprint"] == model_fingerprint(out / UNLEARN / "model") and run["steps"] == 2
    # its evaluation scored that model, with the scores of the 1-process model
    mine, theirs = (json.loads((d / "results" / "grad_ascent-lora-l1-multimodal-10.json").read_text())
                    for d in (out, parallel[0]))
    assert mine["provenance"]["model_fingerprint"] == run["model_fingerprint"]
    probs = [k for k in theirs["aggregates"]["metrics"] if k.endswith("/probability")]
    assert len(probs) >= 5
    for key in probs:
        assert mine["aggregates"]["metrics"][key] == pytest.approx(theirs["aggregates"]["metrics"][key], abs=0.01)
    assert (out / "report" / "index.html").exists()
    # the cluster section entered no key: every other stage was skipped
    assert all(o == "skipped" for n, o in outcome.items() if n not in {UNLEARN, *AFTER})


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
@pytest.mark.parametrize("name, override", [
    ("base", "pretrain.phases=[{name: instruct, data: [{config: pretrain}], train: {lr: 3.0e-3, max_steps: 4, "
             "batch_size: 16, micro_batch_size: 8, warmup_steps: 1, log_every: 1}}]"),
    ("target", "finetune.phase.train.micro_batch_size=8"),
])
def test_pretrain_and_finetune_in_two_processes_train_the_weights_of_one(parallel, tmp_path, name, override):
    """The base (each process builds the same tokenizer and model; the main one saves them) and the target, each in
    2 processes with half the micro-batch, against the study's 1-process stages."""
    cfg = load_config(BenchConfig, "tiny-smoke", SMOKE_OVERRIDES + [override])
    stage = {s.name: s for s in build_study(cfg, parallel[0])}[name]
    stage.args["out_dir"] = tmp_path / name  # the study's other stages are its inputs, read only
    launch(stage, resume=False, threads=2, processes=2)
    _assert_same_weights(tmp_path / name, parallel[0] / name)
    for f in ("tokenizer.json", "processor_config.json"):  # the base's: each process trained the same tokenizer
        assert (tmp_path / name / "model" / f).read_bytes() == (parallel[0] / name / "model" / f).read_bytes(), f
    log = tmp_path / name / ("phases/0-instruct" if name == "base" else "train") / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    run = json.loads((tmp_path / name / "run.json").read_text())
    assert run["model_fingerprint"] == model_fingerprint(tmp_path / name / "model")


def test_train_processes_and_the_accelerate_config_reach_the_jobs_of_training_stages_and_no_key(tmp_path):
    fsdp = ROOT / "configs" / "accelerate" / "fsdp.yaml"
    cfg = load_config(BenchConfig, "tiny-smoke", [f"cluster.kinds.finetune={{gpus: 4, accelerate_config: {fsdp}}}",
                                                  "cluster.kinds.unlearn.train_processes=2",
                                                  "cluster.kinds.evaluate.gpus=2"])
    plain = load_config(BenchConfig, "tiny-smoke")
    assert [s.key for s in build_study(cfg, tmp_path)] == [s.key for s in build_study(plain, tmp_path)]
    by_kind = {s.kind: launch_of(s, cfg.cluster.resources(s.kind)) for s in build_study(cfg, tmp_path)}
    assert by_kind["finetune"] == (4, str(fsdp)) and by_kind["unlearn"] == (2, "")
    assert by_kind["pretrain"] == by_kind["evaluate"] == by_kind["report"] == (1, "")  # evaluate: shards instead
    assert launch_command(4, str(fsdp))[-4:] == ["--main_process_port", "0", "--config_file", str(fsdp)]
    assert "--multi_gpu" in launch_command(2)  # no config: plain DDP, whatever the user's default config says


@pytest.mark.parametrize("fields, message", [
    ("{gpus: 2, accelerate_config: no/such.yaml}", r"cluster.kinds.finetune.accelerate_config: 'no/such.yaml' is not "
                                                   r"a file .*configs/accelerate/fsdp.yaml"),
    ("{gpus: 2, accelerate_config: NOT_ACCELERATE}", r"is not an accelerate config: A `distributed_type` must be"),
    ("{gpus: 2, accelerate_config: ZERO3}", r"runs DeepSpeed, which the training loop does not support yet"),
    ("{gpus: 2, train_processes: 3}", r"cluster.kinds.finetune.train_processes=3: must be at most gpus=2"),
])
def test_a_bad_training_set_up_is_one_config_error_before_anything_runs(tmp_path, fields, message):
    (tmp_path / "other.yaml").write_text("learning_rate: 1\n")
    fields = fields.replace("NOT_ACCELERATE", str(tmp_path / "other.yaml"))
    fields = fields.replace("ZERO3", str(ROOT / "configs" / "accelerate" / "zero3.yaml"))
    cfg = load_config(BenchConfig, "tiny-smoke", [f"cluster.kinds.finetune={fields}"])
    with pytest.raises(ConfigError, match=message) as err:
        run_study(cfg, tmp_path / "study", echo=lambda s: None, executor="local")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "study").exists()  # nothing written, nothing submitted
    check_config(load_config(BenchConfig, "tiny-smoke", [  # the shipped FSDP config is accepted
        f"cluster.default.accelerate_config={ROOT / 'configs' / 'accelerate' / 'fsdp.yaml'}"]))


def test_a_batch_that_does_not_split_over_the_processes_fails_before_anything_is_submitted(tmp_path):
    cfg = load_config(BenchConfig, "tiny-smoke", ["cluster.kinds.finetune.train_processes=2"])  # micro-batch = batch
    with pytest.raises(ConfigError, match=r"^stage target in 2 processes \(cluster.kinds.finetune\): batch_size=16 "
                                          r"\(effective\) is not a multiple of .* = 16 x 2") as err:
        run_study(cfg, tmp_path / "study", echo=lambda s: None, executor="local")
    assert "\n" not in str(err.value) and not list((tmp_path / "study").rglob("*_submitted.pkl"))  # no job
