"""Configs are checked when they are loaded, and the CLI reports every expected failure in one line.

Each case is a bad input given to ``clearbench run --dry-run`` (or a command) in-process: one line on stderr
naming the key or the path and the fix, exit code 2, no traceback, and nothing written anywhere."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clearbench.cli import main
from clearbench.config import BenchConfig, ConfigError, TrainConfig, load_config
from clearbench.run import build_study, check_config

# (overrides of tiny-smoke, what the one line must say)
BAD_CONFIGS = [
    # loose sections, checked against the types that read them
    (["study.metric_options.tr_mod=clear"], "Did you mean 'study.metric_options.tr_mode'?"),
    (["study.metric_options.tr_mode=tofuu"], "study.metric_options: Unknown tr_mode 'tofuu'"),
    (["model.tiny.hiden=3"], "Unknown config key 'model.tiny.hiden'"),
    (["model.tiny.heads=3"], "model.tiny: text_width 32 is not divisible by heads 3"),
    (["model.family=lava"], "model.family: Unknown model family 'lava'. Did you mean 'llava'?"),
    (["world.params.autors=20"], "Did you mean 'world.params.authors'?"),
    (["world.params.authors=21"], "world.params: forget percentage 5 % of 21 authors"),
    (["world.params.seed=3"], "world.params.seed=3: set world.seed instead"),
    (["unlearn.options_by_method.npo.betaa=1"], "unlearn.options_by_method.npo: Unknown option for method 'npo': "
                                                "'betaa'. Did you mean 'beta'?"),
    (["unlearn.options_by_method.npo.beta=x"], "unlearn.options_by_method.npo: method 'npo': option 'beta' must be float"),
    (["unlearn.lr_by_method.grad_diffs=1e-4"], "Did you mean 'grad_diff'?"),
    (["unlearn.method_options.beta=0.5"], "method 'grad_ascent' takes no options, got 'beta'. (stage unlearn/"),
    (["study.variants.lora.lr_by_method.rmuu=1e-3"], "'rmuu'. Did you mean 'rmu'?"),
    # the study grid: forget splits of the world the params generate, known methods and modalities
    (["study.forget_splits=[forget20]"], "Unknown forget split 'forget20'. Did you mean 'forget10'? Known: forget05, "
                                         "forget10. The world of world.params has these; add 20"),
    (["study.forget_splits=[forget1]"], "study.forget_splits[0]='forget1': is not a forget split name (forgetNN"),
    (["study.methods=[npp]"], "study.methods[0]: Unknown method 'npp'. Did you mean 'npo'?"),
    (["study.forget_modalities=[visal]"], "study.forget_modalities[0]='visal': Unknown forget modality 'visal'. "
                                          "Did you mean 'visual'?"),
    (["study.seeds=[1,1]"], "study.seeds=[1, 1]: lists [1] more than once"),
    # sanity: numbers that cannot train or evaluate
    (["unlearn.train.lr=.inf"], "unlearn.train.lr=inf: must be a finite number > 0"),
    (["finetune.phase.train.lr=.nan"], "finetune.phase.train.lr=nan: must be a finite number > 0"),
    (["unlearn.train.lr=0"], "unlearn.train.lr=0.0: must be a finite number > 0"),
    (["unlearn.lr_by_method.rmu=-1e-3"], "unlearn.lr_by_method.rmu=-0.001: must be a finite number > 0"),
    (["finetune.phase.train.max_steps=-3"], "finetune.phase.train.max_steps=-3: must be an integer >= 0"),
    (["finetune.phase.train.max_steps=0", "finetune.phase.train.epochs=0"],
     "finetune.phase.train.epochs=0.0: train for epochs > 0, or set max_steps > 0"),
    (["finetune.phase.train.epochs=-1"], "finetune.phase.train.epochs=-1.0: must be a finite number >= 0"),
    (["unlearn.train.batch_size=0"], "unlearn.train.batch_size=0: must be an integer > 0"),
    (["unlearn.train.micro_batch_size=0"], "unlearn.train.micro_batch_size=0: must be an integer > 0"),
    (["pretrain.phases=[{train: {batch_size: -4}}]"], "pretrain.phases[0].train.batch_size=-4: must be an integer > 0"),
    (["study.eval_batch_size=0"], "study.eval_batch_size=0: must be an integer > 0"),
    (["study.eval_max_per_config=-1"], "study.eval_max_per_config=-1: must be an integer >= 0"),
    (["unlearn.stop.threshold=gol"], "unlearn.stop.threshold='gol': a probability in [0, 1] or 'gold'"),
    (["unlearn.random_k=0"], "unlearn.random_k=0: must be an integer > 0"),
    (["finetune.warmup_epochs=-1"], "finetune.warmup_epochs=-1.0: must be a finite number >= 0"),
    # malformed input
    (["study.methods=npo"], "study.methods: expected a list, got 'npo'"),
    (["unlearn.train.lr=[1,"], "override 'unlearn.train.lr=[1,': the value is not valid YAML"),
    (["unlearn.train.lr"], "is not of the form key.sub=value"),
]


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _one_line(err: str, command: str = "run") -> str:
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"clearbench {command}: "), err
    return err


@pytest.mark.parametrize("overrides, message", BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_a_bad_config_fails_at_load_in_one_line(overrides, message, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("untouched")
    before = _files(tmp_path)
    code, err = _cli(["run", "--preset", "tiny-smoke", "--out", str(tmp_path / "study"), "--dry-run", *overrides], capsys)
    assert code == 2 and message in _one_line(err), err
    assert _files(tmp_path) == before  # nothing written, the output directory not even made


def test_the_preset_and_the_gpu_presets_pass_the_checks():
    for preset in ("tiny", "tiny-smoke", "llava-1.5-7b", "qwen2-vl-2b", "paper"):
        check_config(load_config(BenchConfig, preset))


def test_yaml_booleans_read_as_the_choice_they_spell(tmp_path):
    """YAML 1.1 reads a bare `no` as false: `mixed_precision=no` (a command-line override or a preset line) means the
    choice "no", not a type error; a boolean no choice spells is still refused."""
    cfg = load_config(BenchConfig, "tiny-smoke", ["finetune.phase.train.mixed_precision=no"])
    assert cfg.finetune.phase.train.mixed_precision == "no"
    preset = tmp_path / "p.yaml"
    preset.write_text("inherit: tiny-smoke\nunlearn:\n  train: {mixed_precision: no}\n")
    assert load_config(BenchConfig, str(preset)).unlearn.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="True is not one of"):
        load_config(BenchConfig, "tiny-smoke", ["finetune.phase.train.mixed_precision=yes"])


def test_config_objects_built_in_code_are_checked_too():
    with pytest.raises(ValueError, match="lr=inf: must be a finite number > 0"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="betas=\\[0.9, 1.0\\]: Adam's two betas"):
        TrainConfig(betas=[0.9, 1.0])


def test_a_preset_that_inherits_itself_is_one_line(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"inherit: {b}\n")
    b.write_text(f"inherit: {a}\nstudy: {{methods: [npo]}}\n")
    code, err = _cli(["run", "--preset", str(a), "--out", str(tmp_path / "s"), "--dry-run"], capsys)
    assert code == 2 and "inherits itself (a -> b -> a)" in _one_line(err)
    (tmp_path / "c.yaml").write_text("study: {methods: [npo]\n")
    code, err = _cli(["run", "--preset", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "s"), "--dry-run"], capsys)
    assert code == 2 and "c.yaml is not valid YAML" in _one_line(err)


def test_output_paths_that_cannot_be_written_are_one_line(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _cli(["run", "--preset", "tiny-smoke", "--out", str(afile)], capsys)
    assert code == 2 and f"--out {afile} is a file; give the study a directory" in _one_line(err)
    assert afile.read_text() == "x"
    code, err = _cli(["run", "--preset", "tiny-smoke", "--out", str(afile / "study")], capsys)
    assert code == 2 and "not a directory; a part of the path is a file" in _one_line(err)
    code, err = _cli(["run", "--preset", "tiny-smoke", "--out", "/sys/clearbench-study"], capsys)  # not writable
    assert code == 2 and "/sys/clearbench-study: operation not permitted; choose a path you may write to" in _one_line(err)
    import clearbench.executor as executor

    def full(cfg, out):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "config.json"))

    monkeypatch.setattr(executor, "save_config", full)
    code, err = _cli(["run", "--preset", "tiny-smoke", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "config.json: no space left on device; the disk is full" in _one_line(err)
    assert not (tmp_path / "s" / "run.lock").exists()  # the lock went with the failed run


def test_missing_inputs_are_one_line(tmp_path, capsys):
    code, err = _cli(["finetune", "--preset", "tiny-smoke", "--world", str(tmp_path / "nowhere"), "--model", "x",
                      "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(tmp_path / "nowhere") in _one_line(err, "finetune")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="tr_mode"):
        main(["--debug", "run", "--preset", "tiny-smoke", "--out", str(tmp_path), "--dry-run",
              "study.metric_options.tr_mod=clear"])
    with pytest.raises(ConfigError, match="tr_mode"):
        main(["run", "--preset", "tiny-smoke", "--out", str(tmp_path), "--dry-run", "--debug",
              "study.metric_options.tr_mod=clear"])


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_is_one_line_and_releases_the_lock(presses, tmp_path):
    """A real SIGINT to ``clearbench run`` while it trains: one line, exit code 130, the lock released; pressed
    twice (the second while the first unwinds), the same."""
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out),
           "study.methods=[grad_ascent]"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,  # Ctrl-C live even if pytest runs as `cmd &`
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "run.jsonl").exists() and '"base"' in (out / "run.jsonl").read_text()):
        time.sleep(0.2)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "clearbench run: interrupted; re-run the same command to resume"
    assert "Traceback" not in err and not (out / "run.lock").exists()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")  # a zombie is gone


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_study_leaves_no_worker_running(sig, tmp_path):
    """``clearbench run --jobs 2`` killed while a worker makes its first stage: SIGTERM stops it as Ctrl-C does (one
    line, exit code 143, lock released, workers stopped); after SIGKILL the worker notices and stops by itself, so a
    new run never resumes a stage beside a worker that still writes it."""
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log, deadline, worker = out / "logs" / "world.log", time.time() + 120, None
    while time.time() < deadline and worker is None:
        found = re.search(r"clearbench run worker \(pid (\d+)\)", log.read_text()) if log.exists() else None
        worker = int(found.group(1)) if found else None
        time.sleep(0.2)
    assert worker and _pid_alive(worker)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.splitlines()[-1] == "clearbench run: terminated (SIGTERM); re-run the same command to resume"
        assert "Traceback" not in err and not (out / "run.lock").exists()
    deadline = time.time() + 30
    while time.time() < deadline and _pid_alive(worker):
        time.sleep(0.2)
    assert not _pid_alive(worker)


def test_study_grid_checks_name_the_stage(tmp_path):
    cfg = load_config(BenchConfig, "tiny-smoke", ["study.methods=[grad_ascent,npo]", "unlearn.method_options.beta=0.5"])
    with pytest.raises(ConfigError, match=r"grad_ascent.*\(stage unlearn/grad_ascent-multimodal-10\)"):
        build_study(cfg, tmp_path)
    assert build_study(load_config(BenchConfig, "tiny-smoke", ["study.methods=[npo]", "unlearn.method_options.beta=0.5"]),
                       tmp_path)
