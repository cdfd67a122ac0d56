"""``clearbench run`` on the tiny-smoke preset: the whole study, stage skipping, downstream re-runs,
a killed study finishing on re-run without redoing finished work, and replicate seeds (one study
per seed, resumable per seed, a combined mean ± sd report)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clearbench.config import BenchConfig, load_config, to_dict
from clearbench.executor import StageFailed, run_study
from clearbench.run import build_study
from clearbench.study import seed_config
from study_fixtures import SMOKE_OVERRIDES, failing_copy

OVERRIDES = SMOKE_OVERRIDES  # the grid of the `parallel` study (tests/study_fixtures.py, shared with test_cluster)


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
    assert "unlearn/grad_ascent-multimodal-10" in names and "unlearn/grad_ascent-lora-l1-multimodal-10" in names
    from eval.results import recompute, validate

    results = {name: json.loads((out / "results" / f"{name}.json").read_text()) for name in (
        "gold-10", "base-10", "target-10", "grad_ascent-multimodal-10", "grad_ascent-lora-l1-multimodal-10")}
    for name, result in results.items():  # every aggregate recomputes from the stored per-example values
        assert validate(result, None if name == "gold-10" else results["gold-10"]) == [], name
        fresh, stored = recompute(result)["metrics"], result["aggregates"]["metrics"]
        assert fresh.keys() == stored.keys() and all(fresh[k] == pytest.approx(stored[k], abs=1e-12) for k in stored)
    m = {name: r["aggregates"]["metrics"] for name, r in results.items()}
    # the gold against itself: the same distribution, KS p = 1 in every modality
    assert [m["gold-10"][f"forget/{x}/forget_quality"] for x in ("all", "text", "image", "joint")] == [1.0] * 4
    # four finetuning steps on every author (the target) vs the retain authors only (the gold)
    assert m["target-10"]["forget/all/probability"] > m["gold-10"]["forget/all/probability"]
    # gradient ascent on the forget set lowers its answers' probability below the target's
    assert m["grad_ascent-multimodal-10"]["forget/all/probability"] < m["target-10"]["forget/all/probability"]
    html = (out / "report" / "index.html").read_text()
    assert "grad_ascent-lora-l1-multimodal-10" in html
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
    assert redone == {f"{kind}/grad_ascent{v}-multimodal-10" for kind in ("unlearn", "evaluate")
                      for v in ("", "-lora", "-lora-l1")} | {"report"}
    assert all(outcome[k] == "redone" for k in redone)
    # and the stage list of an unchanged config is unchanged in order
    assert [s.name for s in build_study(cfg, out)] == list(first)


def test_a_stage_interrupted_under_other_settings_starts_again(parallel, tmp_path):
    """A stage left unfinished (no marker) and then re-keyed by a changed setting is run from scratch, not resumed
    from the other settings' checkpoints (before: the stage refused to resume and the study stopped there)."""
    import shutil

    out = tmp_path / "smoke"
    shutil.copytree(parallel[0], out)
    name = "unlearn/grad_ascent-multimodal-10"
    (out / name / "stage.json").unlink()  # as if killed before its end; run.jsonl has its start with the old key
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES + ["unlearn.train.max_steps=3"])
    key = next(s.key for s in build_study(cfg, out) if s.name == name)
    with open(out / "run.jsonl", "a") as f:  # and a failed attempt to resume it under the new settings since
        f.write(json.dumps({"time": 0.0, "event": "start", "stage": name, "kind": "unlearn", "key": key,
                            "resume": True}) + "\n")
    lines = []
    outcome = run_study(cfg, out, echo=lines.append)
    assert outcome[name] == "redone" and outcome[name.replace("unlearn/", "evaluate/")] == "redone"
    assert any(name in l and "other settings: starting again" in l for l in lines), lines
    assert json.loads((out / name / "run.json").read_text())["train"]["steps"] == 3
    again = run_study(cfg, out, echo=lambda s: None)  # and the next run skips it
    assert set(again.values()) == {"skipped"}


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


def _kill_once_finished(cmd: list[str], env: dict, out: Path, stage: str, timeout: float) -> list[str]:
    """Start ``clearbench run`` and SIGKILL its process group as soon as ``stage`` has ended (or the
    run exits, or ``timeout`` passes); returns the stages that had ended by then."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, finished = time.time() + timeout, []
    while time.time() < deadline and proc.poll() is None:
        if (out / "run.jsonl").exists():
            finished = [e["stage"] for e in _events(out) if e["event"] == "end"]
            if stage in finished:
                break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return finished


def test_killed_study_finishes_on_rerun_without_redoing_work(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out), *OVERRIDES]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    finished = _kill_once_finished(cmd, env, out, "target", timeout=240)  # mid-study
    assert "target" in finished
    done_before = [e["stage"] for e in _events(out) if e["event"] == "end"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    events = _events(out)
    rerun = events[len(events) - next(i for i, e in enumerate(reversed(events)) if e.get("stage") == "world") - 1:]
    skipped = {e["stage"] for e in rerun if e["event"] == "skip"}
    assert set(done_before) <= skipped  # nothing finished was redone
    assert (out / "report" / "index.html").exists()



def test_every_stage_needs_the_stages_it_reads(tmp_path):
    """--jobs starts a stage once its needs are done: each need is an earlier stage (the sequential order
    stays valid), the models need their base, evaluations their model and the gold's, unlearning the target."""
    cfg = load_config(BenchConfig, "tiny-smoke", ["study.methods=[grad_ascent,npo]"])
    stages = build_study(cfg, tmp_path)
    order = {s.name: i for i, s in enumerate(stages)}
    for s in stages:
        assert all(order[n] < order[s.name] for n in s.needs), s.name
    needs = {s.name: set(s.needs) for s in stages}
    assert needs["world"] == set() and needs["base"] == {"world"}
    assert needs["target"] == needs["gold-10"] == {"world", "base"}
    assert needs["evaluate/gold-10"] == {"world", "gold-10"}
    assert needs["evaluate/target-10"] == {"world", "target", "evaluate/gold-10"}
    assert needs["unlearn/npo-lora-l1-multimodal-10"] == {"world", "target"}
    assert needs["evaluate/npo-lora-l1-multimodal-10"] == {"world", "unlearn/npo-lora-l1-multimodal-10", "evaluate/gold-10"}
    assert needs["report"] == {s.name for s in stages if s.kind == "evaluate"}
    # an early-stopping rule with a gold threshold reads the gold model; the fixed rule reads no threshold
    def unlearn_needs(*stop):
        cfg = load_config(BenchConfig, "tiny-smoke", ["study.methods=[npo]", *stop])
        return {s.name: set(s.needs) for s in build_study(cfg, tmp_path)}["unlearn/npo-multimodal-10"]
    gold_stop = ["unlearn.stop.threshold=gold", "unlearn.stop.gold_model=runs/gold-10"]
    assert unlearn_needs("unlearn.stop.rule=forget_prob_below", *gold_stop) == {"world", "target", "gold-10"}
    assert unlearn_needs("unlearn.stop.rule=fixed", *gold_stop) == {"world", "target"}
    seeded = build_study(load_config(BenchConfig, "tiny-smoke", ["study.seeds=[0,1]"]), tmp_path)
    assert {s.name: s.needs for s in seeded}["seed-1/target"] == ("seed-1/world", "seed-1/base")


def test_jobs_run_independent_stages_side_by_side_with_the_same_results(study, parallel):
    out, stdout = parallel
    events = _events(out)
    when = {(e["event"], e["stage"]): i for i, e in enumerate(events)}
    # the target and the gold (both ready once the base is) trained at the same time
    assert when[("start", "gold-10")] < when[("end", "target")] and when[("start", "target")] < when[("end", "gold-10")]
    assert {e["stage"] for e in events if e["event"] == "end"} == set(study[2])
    assert "logs/unlearn/grad_ascent-multimodal-10.log" in stdout
    # the base, which every other stage waits for, had both threads; the target shared them with the gold
    assert "stage base, 2 torch threads" in (out / "logs" / "base.log").read_text()
    assert "stage target, 1 torch thread\n" in (out / "logs" / "target.log").read_text()
    assert "unlearn" in (out / "logs" / "unlearn" / "grad_ascent-multimodal-10.log").read_text()
    # one torch thread per worker instead of two: the same models and scores up to float rounding
    from safetensors.torch import load_file
    for name in ("target", "gold-10"):
        a, b = (load_file(next((d / name / "model").glob("*.safetensors"))) for d in (study[0], out))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-3) for k in a), name
    for name in ("gold-10", "target-10", "grad_ascent-lora-l1-multimodal-10"):
        ra, rb = (json.loads((d / "results" / f"{name}.json").read_text()) for d in (study[0], out))
        ma, mb = ra["aggregates"]["metrics"], rb["aggregates"]["metrics"]
        assert ma.keys() == mb.keys()
        # the mean answer probabilities (continuous); rank metrics such as the MIA AUC on a few dozen
        # records can flip a pair under 1e-4 weight differences (one pair of 36 moves the AUC by 0.028)
        probs = [k for k in ma if k.endswith("/probability")]
        assert len(probs) >= 5
        for k in probs:
            assert mb[k] == pytest.approx(ma[k], abs=0.01), (name, k)
    # and a rerun with any number of jobs skips everything
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES)
    assert set(run_study(cfg, out, echo=lambda s: None, jobs=2).values()) == {"skipped"}


def test_a_failing_stage_under_jobs_names_itself_and_its_log(parallel, tmp_path):
    """A stage that fails in its worker stops the study: the error names it and its log holds the
    traceback; the stages that ended keep their markers and are skipped on the next run."""
    out, cfg = failing_copy(parallel, tmp_path, OVERRIDES)
    lines: list[str] = []
    with pytest.raises(StageFailed, match=r"stage unlearn/grad_ascent-(lora-)?(l1-)?multimodal-10 failed.*logs/unlearn") as err:
        run_study(cfg, out, echo=lines.append, jobs=2)
    name = str(err.value).split()[1]
    assert f"its log is {out / 'logs' / name}.log" in str(err.value)
    log = (out / "logs" / f"{name}.log").read_text()
    assert "needs unlearn.stop.gold_model" in log and "Traceback" in log
    assert any("FAILED (exit code 1)" in l for l in lines)
    assert not (out / "report" / "stage.json").exists() or json.loads(
        (out / "report" / "stage.json").read_text())["key"] != build_study(cfg, out)[-1].key
    assert (out / "target" / "stage.json").exists()
    with pytest.raises(ValueError, match="jobs=0"):
        run_study(cfg, out, echo=lambda s: None, jobs=0)

# ------------------------------------------------------------------------------ replicate seeds
SEEDS = ["study.seeds=[0,1]"]


@pytest.fixture(scope="module")
def replicates(tmp_path_factory):
    """A two-seed study killed once seed 1's target model is done, then finished by the same command."""
    out = tmp_path_factory.mktemp("seeds") / "smoke"
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out),
           *OVERRIDES, *SEEDS]
    finished = _kill_once_finished(cmd, dict(os.environ, OMP_NUM_THREADS="1"), out, "seed-1/target", timeout=300)
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES + SEEDS)
    lines: list[str] = []
    outcome = run_study(cfg, out, echo=lines.append)
    return out, cfg, finished, outcome, lines


def test_seeds_parse_from_a_dotted_override_and_validate():
    assert load_config(BenchConfig, "tiny-smoke", ["study.seeds=[0,1,2]"]).study.seeds == [0, 1, 2]
    assert load_config(BenchConfig, "tiny-smoke").study.seeds == []
    with pytest.raises(ValueError, match="expected a list"):
        load_config(BenchConfig, "tiny-smoke", ["study.seeds=3"])
    with pytest.raises(ValueError, match="more than once"):
        build_study(load_config(BenchConfig, "tiny-smoke", ["study.seeds=[1,1]"]), Path("x"))


def test_seed_config_sets_the_world_and_every_training_seed():
    cfg = load_config(BenchConfig, "tiny-smoke", ["study.seeds=[0,7]"])
    s = seed_config(cfg, 7)
    assert s.world.seed == 7 and s.study.seeds == []
    assert [p.train.seed for p in s.pretrain.phases] == [7] * len(cfg.pretrain.phases)
    assert s.finetune.phase.train.seed == 7 and s.unlearn.train.seed == 7
    assert s.world.params == cfg.world.params and s.study.methods == cfg.study.methods
    assert cfg.world.seed == 0  # the original is not modified
    phased = load_config(BenchConfig, "tiny-smoke", ["finetune.phases=[{name: a}, {name: b}]"])
    assert [p.train.seed for p in seed_config(phased, 7).finetune.phases] == [7, 7]


def test_adding_a_seed_keeps_the_other_seeds_stage_keys(tmp_path):
    two = {s.name: s.key for s in build_study(load_config(BenchConfig, "tiny-smoke", SEEDS), tmp_path)}
    three = {s.name: s.key for s in build_study(load_config(BenchConfig, "tiny-smoke", ["study.seeds=[0,1,2]"]),
                                                tmp_path)}
    assert {k: v for k, v in three.items() if not k.startswith("seed-2/")}.keys() == two.keys()
    assert all(three[k] == v for k, v in two.items() if k != "report") and three["report"] != two["report"]
    # a replicate of seed s is the single study of seed_config(s), stage for stage
    one = build_study(seed_config(load_config(BenchConfig, "tiny-smoke", SEEDS), 1), tmp_path / "seed-1")
    assert [(f"seed-1/{s.name}", s.key, s.path) for s in one] == \
        [(s.name, s.key, s.path) for s in build_study(load_config(BenchConfig, "tiny-smoke", SEEDS), tmp_path)
         if s.name.startswith("seed-1/")]


def test_killed_multiseed_study_resumes_in_seed_1_without_redoing_seed_0(replicates):
    out, _, finished, outcome, lines = replicates
    assert "seed-1/target" in finished and "seed-1/report" not in finished  # killed inside seed 1
    assert any(v != "skipped" for k, v in outcome.items() if k.startswith("seed-1/"))
    assert all(v == "skipped" for k, v in outcome.items() if k.startswith("seed-0/"))
    assert all(outcome[k] == "skipped" for k in finished)
    assert {v for k, v in outcome.items() if k not in finished} <= {"ran", "resumed"}
    assert outcome["report"] == "ran" and outcome["seed-1/report"] == "ran"
    # progress names the seed
    assert any(l.startswith(f"[{len(outcome)}/{len(outcome)}] report") for l in lines)
    assert any("] seed-1/evaluate/grad_ascent-multimodal-10: running" in l for l in lines)


def test_replicates_are_complete_studies_on_different_worlds(replicates):
    out, *_ = replicates
    fps = []
    for seed in (0, 1):
        d = out / f"seed-{seed}"
        fps.append(json.loads((d / "world" / "manifest.json").read_text())["fingerprint"])
        conf = json.loads((d / "config.json").read_text())
        assert conf["world"]["seed"] == seed and conf["unlearn"]["train"]["seed"] == seed
        assert conf["finetune"]["phase"]["train"]["seed"] == seed and conf["study"]["seeds"] == []
        for name in ("gold-10", "base-10", "target-10", "grad_ascent-multimodal-10", "grad_ascent-lora-l1-multimodal-10"):
            assert (d / "results" / f"{name}.json").exists()
        assert (d / "report" / "index.html").exists() and (d / "unlearn" / "grad_ascent-multimodal-10").is_dir()
    assert fps[0] != fps[1]
    assert json.loads((out / "config.json").read_text())["study"]["seeds"] == [0, 1]
    assert not (out / "world").exists() and not (out / "results").exists()


def test_multiseed_rerun_skips_everything(replicates):
    out, cfg, *_ = replicates
    assert set(run_study(cfg, out, echo=lambda s: None).values()) == {"skipped"}


def test_only_seed_runs_one_replicate_and_no_combined_report(replicates):
    out, cfg, *_ = replicates
    outcome = run_study(cfg, out, echo=lambda s: None, only_seed=1)
    assert outcome and all(name.startswith("seed-1/") for name in outcome) and "report" not in outcome
    assert len(outcome) == len([s for s in build_study(cfg, out) if s.name.startswith("seed-1/")])
    with pytest.raises(ValueError, match="only-seed 7"):
        run_study(cfg, out, echo=lambda s: None, only_seed=7)


def _csv_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r[key]).stem: r for r in csv.DictReader(f)}


def test_combined_table_cells_are_mean_and_sd_of_the_seed_tables(replicates):
    out, *_ = replicates
    combined = _csv_rows(out / "report" / "table_multimodal.csv", "run")
    seeds = [_csv_rows(out / f"seed-{s}" / "report" / "table_multimodal.csv", "file") for s in (0, 1)]
    assert set(combined) == set(seeds[0]) == set(seeds[1])  # gold, base, target, grad_ascent with and without L1
    run = "grad_ascent-lora-l1-multimodal-10"
    assert combined[run]["model"] == "grad_ascent + LoRA + L1" and combined[run]["n"] == "2"
    checked = 0
    for key in (k for k in seeds[0][run] if "/" in k and seeds[0][run][k] != ""):
        a, b = float(seeds[0][run][key]), float(seeds[1][run][key])
        assert float(combined[run][key]) == pytest.approx((a + b) / 2, rel=1e-12, abs=1e-300)
        assert float(combined[run][f"{key}:sd"]) == pytest.approx(abs(a - b) / 2 ** 0.5, rel=1e-9, abs=1e-300)
        assert combined[run][f"{key}:n"] == "2"
        checked += 1
    assert checked >= 10
    md = (out / "report" / "tables.md").read_text()
    assert "## multimodal forgetting" in md and " ± " in md and "## findings" in md
    assert "grad_ascent + LoRA + L1" in (out / "report" / "index.html").read_text()


def test_cli_seeds_flag_is_study_seeds(tmp_path, capsys):
    from clearbench.cli import main

    assert main(["run", "--preset", "tiny-smoke", "--out", str(tmp_path / "d"), *OVERRIDES, "--dry-run",
                 "--seeds", "3", "5"]) == 0
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert names[0] == "seed-3/world" and "seed-5/evaluate/grad_ascent-lora-l1-multimodal-10" in names
    assert names[-1] == "report" and not (tmp_path / "d").exists()


def test_phase_objective_counts_in_stage_keys_only_when_not_the_default(tmp_path):
    from clearbench.plan import stage_key

    cfg = load_config(BenchConfig, "tiny-smoke")  # its phases all use the default objective
    d = to_dict(cfg.pretrain)
    legacy = {"phases": [{k: v for k, v in p.items() if k != "objective"} for p in d["phases"]]}
    assert stage_key("pretrain", cfg.pretrain) == stage_key("pretrain", legacy)  # studies made before the field
    other = load_config(BenchConfig, "tiny", ["pretrain.phases=[{name: v, objective: vision_attributes}]"])
    assert stage_key("pretrain", other.pretrain) != stage_key(
        "pretrain", load_config(BenchConfig, "tiny", ["pretrain.phases=[{name: v}]"]).pretrain)


def test_a_new_generator_version_reruns_the_world_and_everything_downstream(tmp_path, monkeypatch):
    from data_gen import generate as gen

    cfg = load_config(BenchConfig, "tiny-smoke")
    before = {s.name: s.key for s in build_study(cfg, tmp_path)}
    monkeypatch.setattr(gen, "GENERATOR_VERSION", gen.GENERATOR_VERSION + "-next")
    after = {s.name: s.key for s in build_study(cfg, tmp_path)}
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)


# ----------------------------------------------------------------------------------- the lock
def test_a_study_being_run_by_a_live_process_is_refused_with_its_pid(tmp_path, capsys):
    from clearbench.cli import main
    from clearbench.study_lock import StudyLocked, study_lock

    out, notes = tmp_path / "study", []
    holder = subprocess.Popen(["sleep", "60"])
    try:
        with study_lock([out]):  # this process holds it: its pid is in the lock file
            assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
        assert not (out / "run.lock").exists()
        started = Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        lock = {"pid": holder.pid, "host": os.uname().nodename, "started": started}
        (out / "run.lock").write_text(json.dumps(lock))
        assert main(["run", "--preset", "tiny-smoke", "--out", str(out), *OVERRIDES]) == 2
        err = capsys.readouterr().err
        assert f"is being run by process {holder.pid}" in err and err.count("\n") == 1 and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # nothing ran, nothing written
        # the same pid with another start time is a reused pid: the lock is stale
        (out / "run.lock").write_text(json.dumps(lock | {"started": "1"}))
        with study_lock([out], notes.append):
            assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
        assert notes == [f"note: taking over {out / 'run.lock'} from process {holder.pid}, which is no longer running"]
    finally:
        holder.kill()
        holder.wait()
    (out / "run.lock").write_text(json.dumps(lock))  # its holder is gone now
    with study_lock([out], notes.append):
        pass
    assert len(notes) == 2 and not (out / "run.lock").exists()
    # replicates: a full run needs every seed's lock, so it waits for an --only-seed process of any seed
    with study_lock([out / "seed-1"]):
        with pytest.raises(StudyLocked, match=f"seed-1 is being run by process {os.getpid()}"):
            with study_lock([out, out / "seed-0", out / "seed-1"]):
                pass
        assert not (out / "run.lock").exists() and not (out / "seed-0" / "run.lock").exists()  # released on failure


# ------------------------------------------------------------------------------ a forget20 world
def test_a_forget20_world_runs_end_to_end(tmp_path):
    """Forget splits come from the world: a world generated with forget_percents [20] has forget20, retain80 and
    holdout20, and the whole study runs on it (gold on retain80, unlearning and evaluation on forget20)."""
    out = tmp_path / "f20"
    cfg = load_config(BenchConfig, "tiny-smoke", OVERRIDES + [
        "world.params.forget_percents=[20]", "study.forget_splits=[forget20]", "study.evaluate_base=false"])
    outcome = run_study(cfg, out, echo=lambda s: None)
    assert set(outcome.values()) == {"ran"} and "gold-20" in outcome and "unlearn/grad_ascent-multimodal-20" in outcome
    gold = json.loads((out / "gold-20" / "run.json").read_text())
    assert gold["split"] == "retain80"
    run = json.loads((out / "unlearn" / "grad_ascent-multimodal-20" / "run.json").read_text())
    assert (run["forget"], run["retain"], run["records"]["forget"] > 0) == ("forget20", "retain80", True)
    result = json.loads((out / "results" / "grad_ascent-multimodal-20.json").read_text())
    assert result["provenance"]["forget_split"] == "forget20"
    assert any(k.startswith("forget/") for k in result["aggregates"]["metrics"])
    assert "grad_ascent-multimodal-20" in (out / "report" / "index.html").read_text()


def test_worker_preload_names_modules_that_import():
    """The fork server silently skips a preload module that does not import: a misspelt name would quietly cost
    every worker its import time again."""
    import importlib

    from clearbench.executor import WORKER_PRELOAD

    for name in WORKER_PRELOAD:
        assert importlib.import_module(name).__name__ == name
