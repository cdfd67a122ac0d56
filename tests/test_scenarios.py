"""Scenarios (clearbench.scenarios, eval.scenarios): scores by hand on handmade values, the validator, and the
scenarios run by ``clearbench run`` on tiny-smoke (sequential requests: T = 3 steps, resumed after a kill)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from clearbench.config import BenchConfig, ConfigError, load_config
from clearbench.unlearn import author_batches
from eval import scenarios as sc
from eval.example import ExampleOutput


def _ex(id_: str, split: str, *, author: str = "a", task: str = "qa", lp=(-1.0,), para=(-1.0,), pert=((-2.0,),),
        generation: str = "", answer: str = "the answer") -> ExampleOutput:
    return ExampleOutput(id=id_, author_id=author, split=split, group="", modality="text", task=task, name="Ann Lee",
                         answer=answer, paraphrased_answer=answer, perturbed_answers=["x"] * len(pert),
                         image_role="", generation=generation, lp_answer=list(lp), lp_paraphrased=list(para),
                         lp_perturbed=[list(p) for p in pert], minkpp_mu=[-1.0] * len(lp), minkpp_sigma=[0.0] * len(lp))


# ============================================================================ per-example values by hand
def test_example_values_by_hand():
    v = sc.example_values(_ex("q", "forget10_perturbed", lp=(-1.0, -3.0), para=(-1.0,), pert=((-0.5,), (-4.0,)),
                              generation="the answer is here", answer="the answer"))
    assert v["prob"] == pytest.approx(math.exp(-2.0))  # raw on forget QA: exp(mean token log p)
    assert v["known"] == 0.0  # a perturbed answer (-0.5) beats the paraphrase (-1.0)
    assert v["rouge_l"] == pytest.approx(1.0)  # both answer words are in the generation
    naming = sc.example_values(_ex("n", "real_faces", task="naming", lp=(-1.0,), para=(-1.0,), pert=((-2.0,),)))
    assert naming["prob"] == pytest.approx(math.exp(-1) / (math.exp(-1) + math.exp(-2)))  # normalised
    assert naming["known"] == 1.0


# ================================================================================= sequential by hand
def _values(rows: dict[str, list[tuple[float, float]]]) -> list[dict[str, dict[str, float]]]:
    """{id: [(prob, known) at t = 0..T]} -> one {id: values} per step (rouge_l = prob)."""
    steps = len(next(iter(rows.values())))
    return [{i: {"prob": r[t][0], "known": r[t][1], "rouge_l": r[t][0]} for i, r in rows.items()} for t in range(steps)]


# two requests of one record each (f1: request 1, f2: request 2), one retain record; T = 2
ROWS = {"f1": [(0.9, 1), (0.1, 0), (0.5, 1)],
        "f2": [(0.7, 1), (0.6, 1), (0.2, 0)],
        "r": [(0.8, 1), (0.6, 1), (0.4, 0)]}
SCOPE = {"f1": "forget", "f2": "forget", "r": "retain"}
REQUEST = {"f1": 1, "f2": 2}


def test_sequential_curves_and_areas_by_hand():
    curves = sc.sequential_curves(_values(ROWS), SCOPE, REQUEST)
    assert curves["forget"]["prob"] == [None, pytest.approx(0.1), pytest.approx((0.5 + 0.2) / 2)]
    assert curves["retain"]["known"] == [1, 1, 0]
    s = sc.sequential_scores(_values(ROWS), SCOPE, REQUEST)
    assert s["forget/prob/start"] == pytest.approx(0.8)  # every forget record on the target
    assert s["forget/prob/auc"] == pytest.approx((0.1 + 0.35) / 2)
    assert s["forget/prob/end"] == pytest.approx(0.35)
    assert s["retain/prob/start"] == 0.8 and s["retain/prob/auc"] == pytest.approx(0.5)
    assert "real_faces/prob/auc" not in s  # no such records: no key, never a silent None


def test_reemergence_by_hand():
    # f1 was known by the target, forgotten at its step (1) and known again at step 2: it re-emerged;
    # f2 belongs to the last request (no later step) and does not count
    assert sc.reemergence(_values(ROWS), REQUEST) == {
        "reemergence/known/forgotten": 1.0, "reemergence/known/reemerged": 1.0, "reemergence/known/rate": 1.0}
    stays = dict(ROWS, f1=[(0.9, 1), (0.1, 0), (0.1, 0)])
    assert sc.reemergence(_values(stays), REQUEST)["reemergence/known/rate"] == 0.0
    never_known = dict(ROWS, f1=[(0.1, 0), (0.1, 0), (0.9, 1)])  # unknown to the target: never "forgotten"
    assert sc.reemergence(_values(never_known), REQUEST) == {
        "reemergence/known/forgotten": 0.0, "reemergence/known/reemerged": 0.0, "reemergence/known/rate": None}


def _handmade_result() -> dict:
    steps = []
    for t, known in enumerate([1, 0, 1]):  # request 1's record: known, forgotten at step 1, back at step 2
        good, bad = (-0.5,), (-3.0,)
        steps.append([
            _ex("f1", "forget10_perturbed", author="a1", para=good if known else bad, pert=((-1.0,),)),
            _ex("f2", "forget10_perturbed", author="a2", lp=(-1.0 - t,), pert=((-1.0,),)),
            _ex("r", "retain_perturbed", author="a9", lp=(-0.2 * (t + 1),))])
    return sc.sequential_result(steps, [["a1"], ["a2"]], {"method": "handmade", "sequential": {"forget": "forget10"}},
                                ["m0", "m1", "m2"])


def test_sequential_result_validates_and_catches_tampering():
    result = json.loads(json.dumps(_handmade_result()))  # as read back from its file
    assert sc.validate_scenario(result) == []
    assert result["scores"]["reemergence/known/rate"] == 1.0
    assert result["scores"]["forget/prob/auc"] == pytest.approx((math.exp(-1.0) + (math.exp(-1.0) + math.exp(-3.0)) / 2) / 2)
    bad = copy.deepcopy(result)
    bad["scores"]["forget/prob/auc"] += 0.01
    assert any("forget/prob/auc" in p for p in sc.validate_scenario(bad))
    bad = copy.deepcopy(result)
    bad["steps"][2]["examples"][0]["lp_paraphrased"] = [-3.0]  # the outputs change: the stored numbers are stale
    problems = sc.validate_scenario(bad)
    assert any("reemergence/known/rate" in p for p in problems) and any("values" in p for p in problems)
    bad = copy.deepcopy(result)
    del bad["steps"][1]["examples"][2]
    assert any("other examples than step 0" in p for p in sc.validate_scenario(bad))
    assert sc.validate_scenario(dict(result, scenario="sequentail")) == [
        "unknown scenario 'sequentail' (known: sequential, restore)"]


# ================================================================================== restoration by hand
def test_victim_values_by_hand():
    v = sc.victim_values(_ex("t", "victims_text", para=(-1.0,), pert=((-0.5,), (-2.0,))))
    z = math.exp(-1.0) + math.exp(-0.5) + math.exp(-2.0)
    assert v == pytest.approx({"share": math.exp(-1.0) / z, "corrupt_share": math.exp(-0.5) / z, "known": 0.0,
                               "prefers_corrupted": 1.0})
    face = sc.victim_values(_ex("i", "victims_image", task="naming", para=(-1.0,), pert=((-3.0,),),
                                generation="This is Ann Lee."))
    assert face["known"] == 1.0 and face["prefers_corrupted"] == 0.0 and face["naming_acc"] == 1.0


def _levels(**overrides) -> dict:
    keys = [f"{m}/{v}" for m in ("text", "image", "joint") for v in sc.LEVELS] + ["image/naming_acc"]
    keys += [f"{s}/{v}" for s in sc.CONTROLS for v in ("prob", "known")]
    return {k: 0.5 for k in keys} | overrides


def test_restore_scores_by_hand():
    levels = {"clean": _levels(**{"text/share": 0.6, "text/corrupt_share": 0.1, "joint/share": 0.30,
                                  "image/naming_acc": 0.8, "retain/prob": 0.7}),
              "corrupted": _levels(**{"text/share": 0.2, "text/corrupt_share": 0.5, "joint/share": 0.31,
                                      "image/naming_acc": 0.0}),
              "npo/full": _levels(**{"text/share": 0.5, "text/corrupt_share": 0.2, "joint/share": 0.9,
                                     "image/naming_acc": 0.4, "retain/prob": 0.6})}
    s = sc.restore_scores(levels, "npo/full")
    assert s["restoration/text/share"] == pytest.approx((0.5 - 0.2) / (0.6 - 0.2))
    assert s["residual/text/corrupt_share"] == pytest.approx((0.2 - 0.1) / (0.5 - 0.1))
    assert s["binding/image/naming_acc"] == pytest.approx(0.5)
    assert s["collateral/retain/prob"] == pytest.approx(-0.1)
    # the corruption moved the joint share by 0.01 < MIN_EFFECT, the image share not at all: nothing to restore
    assert s["restoration/joint/share"] is None and s["restoration/image/share"] is None


def test_leak_by_hand():
    config = {"t1": "victims_text", "t2": "victims_text", "j1": "victims_joint", "j2": "victims_joint",
              "j3": "victims_joint"}
    field = {"t1": "genre", "t2": "award", "j1": "genre", "j2": "genre", "j3": "award"}
    author = dict.fromkeys(config, "v1")
    x = {i: {"prefers_corrupted": float(i != "t2")} for i in config}  # the corrupted model took t1, j1, j2, j3
    u = {"t1": 0.0, "t2": 0.0, "j1": 1.0, "j2": 0.0, "j3": 1.0}  # t1 restored in text; j1 still corrupted
    values = {"corrupted": x, "npo/full": {i: {"prefers_corrupted": v} for i, v in u.items()}}
    # pairs of the restored text fact t1: j1, j2 (same victim and field); j3 asks about another field
    assert sc.leak(values, field, author, config, "npo/full") == {"leak/pairs": 2.0, "leak/leaked": 1.0,
                                                                  "leak/rate": 0.5}


def _restore_models() -> dict:
    def model(truth: float, corrupt: float, said: str) -> list:
        return [_ex("t", "victims_text", author="v", para=(truth,), pert=((corrupt,), (-4.0,))),
                _ex("j", "victims_joint", author="v", para=(truth,), pert=((corrupt,), (-4.0,))),
                _ex("i", "victims_image", author="v", task="naming", para=(truth,), pert=((corrupt,),), generation=said),
                _ex("r", "retain_perturbed", author="w", lp=(truth,))]
    return {"clean": model(-0.5, -2.0, "Ann Lee"), "corrupted": model(-2.0, -0.5, "Bo"),
            "npo/full": model(-1.0, -1.5, "Ann Lee")}


def test_restore_result_validates_and_catches_tampering():
    result = json.loads(json.dumps(sc.restore_result(
        _restore_models(), {"clean": "c", "corrupted": "x", "npo/full": "u"}, {"t": "genre", "j": "genre"},
        {"corruption": "text"})))
    assert sc.validate_scenario(result) == []
    s = result["scores"]["npo/full"]
    assert s["binding/image/naming_acc"] == 1.0 and s["leak/rate"] == 0.0 and s["leak/pairs"] == 1.0
    assert 0 < s["restoration/text/share"] < 1 and 0 < s["residual/text/corrupt_share"] < 1
    bad = copy.deepcopy(result)
    bad["scores"]["npo/full"]["restoration/text/share"] = 1.0
    assert any(p.startswith("score npo/full/restoration/text/share = 1.0") for p in sc.validate_scenario(bad))
    bad = copy.deepcopy(result)
    bad["models"]["npo/full"]["examples"][0]["lp_paraphrased"] = [-0.1]
    assert any("values" in p for p in sc.validate_scenario(bad))
    bad = copy.deepcopy(result)
    del bad["fields"]["j"]
    assert any("no corrupted field" in p for p in sc.validate_scenario(bad))


def test_report_shows_validated_results(tmp_path):
    from eval.scenario_report import build_scenario_report

    files = {}
    for name, result in (("restore", sc.restore_result(
            _restore_models(), {"clean": "c", "corrupted": "x", "npo/full": "u"}, {"t": "genre", "j": "genre"},
            {"corruption": "text", "k": 0})), ("sequential", _handmade_result())):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(result))
    out = build_scenario_report([files["restore"]], [files["sequential"]], tmp_path / "report")
    assert {p.name for p in out.iterdir()} == {"index.html", "tables.md", "restore.csv", "restore_levels.csv",
                                              "sequential.csv", "restore_text-k0.png", "sequential.png"}
    md = (out / "tables.md").read_text()
    r = json.loads(files["restore"].read_text())["scores"]["npo/full"]
    assert f"| text-k0 | npo/full | {r['restoration/text/share']:.3f} |" in md
    assert "| forget10 in 2 | handmade | " in md and "| 1 | 1 |" in md  # forgotten 1, re-emerged 1
    assert "data:image/png;base64," in (out / "index.html").read_text()
    bad = json.loads(files["restore"].read_text())
    bad["scores"]["npo/full"]["leak/rate"] = 0.5
    files["restore"].write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="leak/rate"):
        build_scenario_report([files["restore"]], [], tmp_path / "again")


# ====================================================================================== author batches
def _world(splits: dict[str, list[str]]):
    return SimpleNamespace(splits=splits, configs=tuple(splits))


def test_author_batches_put_smaller_nested_splits_first():
    world = _world({"forget01": ["a7"], "forget05": ["a2", "a7", "a9"],
                    "forget10": ["a1", "a2", "a3", "a5", "a7", "a9"]})
    assert author_batches(world, "forget10", 3) == [["a7", "a2"], ["a9", "a1"], ["a3", "a5"]]
    assert author_batches(world, "forget10", 4) == [["a7", "a2"], ["a9", "a1"], ["a3"], ["a5"]]
    assert sum(author_batches(world, "forget10", 6), []) == ["a7", "a2", "a9", "a1", "a3", "a5"]
    with pytest.raises(ValueError, match="forget10 has 6 authors, too few for 7 requests"):
        author_batches(world, "forget10", 7)


# ============================================================================ the study (tiny-smoke)
BASE = ["study.methods=[grad_ascent]", "world.params.forget_percents=[5,10,15]", "world.params.corruption_victims=2",
        "unlearn.train.save_every=1"]
SEQ = [*BASE, "study.scenarios=[sequential]", "sequential.forget=forget15", "sequential.steps=3",
       "sequential.n_per_request=6", "sequential.n_control=6"]
# a budget that corrupts reliably (20 steps at 3e-3 on the corruption set) and unlearns visibly (6 steps at 1e-3)
RESTORE = [*BASE, "study.scenarios=[restore]", "restore.corruptions=[text,bind]", "restore.contexts=[0,2]",
           "restore.n_control=6", "restore.phase.train.lr=3.0e-3", "restore.phase.train.max_steps=20",
           "unlearn.train.lr=1.0e-3", "unlearn.train.max_steps=6"]


def test_sequential_plan_keeps_the_forget_grid_and_checks_its_section(tmp_path):
    from clearbench.run import build_study

    grid = [o for o in SEQ if not o.startswith("study.scenarios")]
    plain = {s.name: s.key for s in build_study(load_config(BenchConfig, "tiny-smoke", grid), tmp_path)}
    both = {s.name: s.key for s in build_study(load_config(
        BenchConfig, "tiny-smoke", [*grid, "study.scenarios=[forget,sequential]"]), tmp_path)}
    # the forget grid's stages and keys are unchanged (the report's key hashes the study section, scenarios included)
    assert {k: v for k, v in both.items() if k in plain and k != "report"} == {k: v for k, v in plain.items() if k != "report"}
    assert "report" in both
    steps = [n for n in both if n.startswith("scenarios/sequential/grad_ascent/step-")]
    assert len(steps) == 3 and "scenarios/sequential/score-00" in both
    for i, stage in enumerate(seq := build_study(load_config(BenchConfig, "tiny-smoke", SEQ), tmp_path)):
        assert set(stage.needs) <= {s.name for s in seq[:i]}, stage.name  # --jobs starts a stage after its needs
    only = [s.name for s in seq]
    assert only[:3] == ["world", "base", "target"] and not any(n.startswith(("unlearn/", "evaluate/")) for n in only)
    for bad, match in ((["sequential.steps=4"], "forget15 has 3 authors"),
                       (["sequential.variant=lora-l2"], "Did you mean 'lora-l1'"),
                       (["sequential.methods=[npp]"], "Did you mean 'npo'")):
        with pytest.raises(ConfigError, match=match):
            build_study(load_config(BenchConfig, "tiny-smoke", SEQ + bad), tmp_path)


def test_a_scenario_unlearn_section_reaches_its_runs_only(tmp_path):
    """restore.unlearn / sequential.unlearn go over the study's unlearn section in the scenario's runs and nowhere
    else; a misspelt key is reported under the scenario's field."""
    from clearbench.run import build_study

    both = [*RESTORE, "study.scenarios=[forget,restore,sequential]", "sequential.forget=forget15",
            "sequential.steps=3"]
    over = "{train: {epochs: 3, batch_size: 4, micro_batch_size: 4}}"  # not tiny's own restore.unlearn
    plain = {s.name: s for s in build_study(load_config(BenchConfig, "tiny-smoke", both), tmp_path)}
    tuned = {s.name: s for s in build_study(load_config(
        BenchConfig, "tiny-smoke", [*both, f"restore.unlearn={over}", "sequential.unlearn.train.epochs=3"]), tmp_path)}
    assert plain.keys() == tuned.keys()
    changed = {n for n in plain if plain[n].key != tuned[n].key}
    runs = {n for n, s in plain.items() if s.kind == "unlearn" and n.startswith("scenarios/")}
    assert runs and runs <= changed and not any(n.startswith(("unlearn/", "evaluate/")) for n in changed)
    for name in runs:
        train = tuned[name].args["cfg"].unlearn.train
        if name.startswith("scenarios/restore/"):
            assert (train.epochs, train.batch_size, train.micro_batch_size, train.lr) == (3, 4, 4, 1.0e-3), name
        else:
            assert (train.epochs, train.batch_size) == (3, plain[name].args["cfg"].unlearn.train.batch_size), name
    for bad, match in ((["restore.unlearn.train.epochz=1"], "'restore.unlearn.train.epochz'"),
                       (["sequential.unlearn.methd=npo"], "'sequential.unlearn.methd'")):
        with pytest.raises(ConfigError, match=match):
            build_study(load_config(BenchConfig, "tiny-smoke", both + bad), tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """world, base and target of the sequential study (no scenario stage run yet)."""
    from clearbench.executor import run_study

    out = tmp_path_factory.mktemp("seq") / "study"
    run_study(load_config(BenchConfig, "tiny-smoke", [*BASE, "study.scenarios=[]"]), out, echo=lambda s: None)
    return out


@pytest.fixture(scope="module")
def sequential(trained, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from clearbench.executor import run_study

    out = tmp_path_factory.mktemp("seq-full") / "study"
    shutil.copytree(trained, out)
    return out, run_study(load_config(BenchConfig, "tiny-smoke", SEQ), out, echo=lambda s: None)


def _result(out: Path) -> dict:
    return json.loads((out / "scenarios" / "sequential" / "grad_ascent" / "result" / "result.json").read_text())


def test_sequential_requests_run_three_steps_and_validate(sequential):
    out, outcome = sequential
    assert {k for k, v in outcome.items() if v == "ran"} >= {
        f"scenarios/sequential/grad_ascent/{x}-{t:02d}" for x in ("step", "score") for t in (1, 2, 3)}
    result = _result(out)
    assert sc.validate_scenario(result) == []
    assert result["requests"] == [["a0005"], ["a0010"], ["a0013"]]  # forget05 first, then by id
    assert len(result["steps"]) == 4 and len({s["model_fingerprint"] for s in result["steps"]}) == 4
    for t in (1, 2, 3):  # each request unlearned its own authors, from the previous request's model
        run = json.loads((out / "scenarios/sequential/grad_ascent" / f"step-{t:02d}" / "run.json").read_text())
        assert run["forget_authors"] == result["requests"][t - 1] and run["forget_batch"] == [t, 3]
        assert run["parent"]["path"].endswith("target" if t == 1 else f"step-{t - 1:02d}")
    forget = [e for e in result["steps"][0]["examples"] if e["split"] == "forget15_perturbed"]
    assert len(forget) == 3 * 6 and {e["author_id"] for e in forget} == {"a0005", "a0010", "a0013"}
    # gradient ascent on request 1 lowers its records' probability below the target's
    f1 = [e["id"] for e in forget if e["author_id"] == "a0005"]
    assert sum(result["values"][1][i]["prob"] for i in f1) < sum(result["values"][0][i]["prob"] for i in f1)


def test_sequential_report_and_jobs_give_the_same_scores(trained, sequential, tmp_path):
    """The report page shows the method's curves; the same study with --jobs 2 (stages side by side in worker
    processes) reaches the same scores."""
    from clearbench.executor import run_study

    out, _ = sequential
    report = out / "report" / "scenarios"
    assert (report / "sequential.png").stat().st_size > 1000
    assert "grad_ascent" in (report / "index.html").read_text() and "forget15 in 3" in (report / "tables.md").read_text()
    parallel = tmp_path / "study"
    shutil.copytree(trained, parallel)
    outcome = run_study(load_config(BenchConfig, "tiny-smoke", SEQ), parallel, echo=lambda s: None, jobs=2)
    assert outcome["scenarios/sequential/grad_ascent/result"] == "ran"
    ref, got = _result(out)["scores"], _result(parallel)["scores"]
    assert got.keys() == ref.keys() and all(got[k] == pytest.approx(ref[k], abs=1e-6) for k in ref if ref[k] is not None)


@pytest.mark.parametrize("killed", ["step-02", "score-02", "result"])
def test_a_killed_request_resumes_to_the_same_result(trained, sequential, killed, tmp_path, monkeypatch):
    """Interrupt one stage of the chain mid-way (training: after a checkpoint; scoring: after one config's outputs
    were cached), run again: the finished stages are skipped, the interrupted one resumes, the scores match."""
    from clearbench import run as runner
    from eval import outputs
    from clearbench.executor import run_study
    from clearbench.train import Interrupt

    out = tmp_path / "study"
    shutil.copytree(trained, out)
    name = f"scenarios/sequential/grad_ascent/{killed}"
    kind = {"step": "unlearn", "score": "sequential_score", "result": "sequential_result"}[killed.split("-")[0]]
    real = runner.STAGE_FUNCTIONS[kind]

    def cut(**args):
        if not str(args["out_dir"]).endswith(killed.replace("result", "grad_ascent/result")):
            return real(**args)
        if kind == "unlearn":
            real(**args, stop_at_step=1)  # raises Interrupt after step 0's checkpoint
        if kind == "sequential_score":
            monkeypatch.setattr(outputs, "score", _score_then_die(outputs.score))
        real(**args)
        raise Interrupt(f"killed in {name} after its output, before its marker")

    monkeypatch.setitem(runner.STAGE_FUNCTIONS, kind, cut)
    cfg = load_config(BenchConfig, "tiny-smoke", SEQ)
    with pytest.raises(Interrupt):
        run_study(cfg, out, echo=lambda s: None)
    monkeypatch.undo()
    outcome = run_study(cfg, out, echo=lambda s: None)
    order = list(outcome)
    assert outcome[name] == "resumed"
    assert all(outcome[n] == "skipped" for n in order[:order.index(name)])
    assert all(outcome[n] == "ran" for n in order[order.index(name) + 1:])
    ref, got = _result(sequential[0])["scores"], _result(out)["scores"]
    assert got.keys() == ref.keys() and all(got[k] == pytest.approx(ref[k], abs=1e-6) for k in ref if ref[k] is not None)


def _score_then_die(score):
    from clearbench.train import Interrupt

    calls = []

    def wrapped(*args, **kwargs):
        if calls:
            raise Interrupt("killed while scoring")
        calls.append(1)
        return score(*args, **kwargs)
    return wrapped


def test_sequential_study_survives_sigkill(trained, tmp_path):
    """A real kill (SIGKILL of `clearbench run`) once request 1 has finished; the re-run skips what was done."""
    out = tmp_path / "study"
    shutil.copytree(trained, out)
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out", str(out), *SEQ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log, deadline = out / "run.jsonl", time.time() + 240
    ended: list[str] = []
    while time.time() < deadline and proc.poll() is None and "scenarios/sequential/grad_ascent/score-01" not in ended:
        time.sleep(0.2)
        ended = [e["stage"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "end"]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "scenarios/sequential/grad_ascent/score-01" in ended
    first = len(log.read_text().splitlines())
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    rerun = [json.loads(line) for line in log.read_text().splitlines()[first:]]
    skipped = {e["stage"] for e in rerun if e["event"] == "skip"}
    assert set(ended) <= skipped
    assert sc.validate_scenario(_result(out)) == []


# =========================================================================== the restorative scenario
@pytest.fixture(scope="module")
def restored(trained, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from clearbench.executor import run_study

    out = tmp_path_factory.mktemp("restore") / "study"
    shutil.copytree(trained, out)
    return out, run_study(load_config(BenchConfig, "tiny-smoke", RESTORE), out, echo=lambda s: None)


def _restore_result(out: Path, name: str) -> dict:
    return json.loads((out / "scenarios" / "restore" / name / "result" / "result.json").read_text())


def _mean_of(result: dict, model: str, config: str, value: str) -> float:
    ids = [e["id"] for e in result["models"]["clean"]["examples"] if e["split"] == config]
    return sum(result["values"][model][i][value] for i in ids) / len(ids)


def test_the_corrupted_model_prefers_the_wrong_answers(restored):
    """Finetuning the clean model on the corruption set moves the victims' answers to the corrupted values: text
    counterfactuals in text QA, face <-> name rebinding in naming; gradient ascent on the set moves them back."""
    out, _ = restored
    text = _restore_result(out, "text-k0")
    for model in ("clean", "corrupted"):
        assert text["levels"][model]["text/corrupt_share"] == pytest.approx(
            _mean_of(text, model, "victims_text", "corrupt_share"))
    clean, corrupted = (_mean_of(text, m, "victims_text", "corrupt_share") for m in ("clean", "corrupted"))
    assert corrupted > clean + 0.1
    assert _mean_of(text, "corrupted", "victims_text", "prefers_corrupted") > \
        _mean_of(text, "clean", "victims_text", "prefers_corrupted")
    bind = _restore_result(out, "bind-k0")
    assert _mean_of(bind, "corrupted", "victims_image", "corrupt_share") > \
        _mean_of(bind, "clean", "victims_image", "corrupt_share") + 0.1
    assert text["levels"]["grad_ascent/full"]["text/corrupt_share"] < corrupted
    assert 0 < text["scores"]["grad_ascent/full"]["restoration/text/share"] < 1


def test_restore_runs_both_settings_and_results_validate(restored):
    from clearbench.data import open_world
    from clearbench.unlearn import plan

    out, outcome = restored
    root = out / "scenarios" / "restore"
    assert "scenarios/restore/text-k0/grad_ascent-full" in outcome
    assert "scenarios/restore/text-k0/grad_ascent-wrong_only" not in outcome  # k = 0: the same set
    for setting, config in (("full", "corrupt_text_k2"), ("wrong_only", "corrupt_text_k0")):
        run = json.loads((root / "text-k2" / f"grad_ascent-{setting}" / "run.json").read_text())
        assert run["forget_config"] == config and run["parent"]["path"].endswith("text-k2/corrupted")
    world = open_world(out / "world")
    victims = set(world.manifest["corruption"]["victims"])
    cfg = load_config(BenchConfig, "tiny-smoke", RESTORE)
    ucfg = dataclasses.replace(cfg.unlearn, method="grad_ascent", forget_config="corrupt_text_k2")
    p = plan(ucfg, world, root / "text-k2" / "corrupted")
    assert {r.id for r in p.forget} == {r.id for r in world.records("corrupt_text_k2")}
    assert p.retain and not {r.author_id for r in p.retain} & victims  # the victims' truths are not retain data
    for name in ("text-k0", "text-k2", "bind-k0", "bind-k2"):
        result = _restore_result(out, name)
        assert sc.validate_scenario(result) == [], name
        assert set(result["models"]) == {"clean", "corrupted", "grad_ascent/full"} | (
            {"grad_ascent/wrong_only"} if name.endswith("k2") else set())
        text_fields = {i: f for i, f in result["fields"].items() if "-true-" in i}
        assert text_fields and all(i.endswith(f"-true-{f}") for i, f in text_fields.items())
    report = out / "report" / "scenarios"
    assert {f"restore_{n}.png" for n in ("text-k0", "text-k2", "bind-k0", "bind-k2")} <= {p.name for p in report.iterdir()}
    assert "| text-k2 | grad_ascent/wrong_only |" in (report / "tables.md").read_text()
