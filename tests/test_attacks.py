"""The attacks on tiny real models: relearning brings a grad-ascent model's forget answers back and barely moves the
target's; every attack writes per-example values that the validator recomputes (and rejects when tampered);
8-bit rounding stays within half a step; transformed photos differ and keep their label; paraphrase and
in-context probes; the worst case over attacks; a killed attack resumes; the CLI."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearbench.config import BenchConfig, ConfigError, TrainConfig, from_dict
from clearbench.cost import check_cost
from clearbench.lora import set_trainable
from clearbench.models import load_model, tiny_llava
from clearbench.provenance import model_fingerprint, write_json_atomic
from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train
from eval.attacks import ATTACKS, AttackConfig, attack, get_attack, options_of, validate_result
from eval.attacks import in_context, paraphrase, quantize, relearn, transform
from eval.attacks.probes import open_target
from eval.attacks.result import example_values as result_values, worst_case

SHAPE = tiny_llava.TinyConfig(image_size=32, patch_size=16, vision_width=32, text_width=64, mlp=256,
                              vocab_size=1024)
# the tiny model relearns at its own scale (docs/attacks.md): 10 steps of 4 records at lr 1e-3
BUDGET = {"lr": 1e-3, "max_steps": 10, "batch_size": 4, "micro_batch_size": 4}
FAST = dict(max_new_tokens=12)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models(tiny_world, tmp_path_factory) -> dict[str, Path]:
    """target: a tiny model that has learnt every author (200 steps: forget text probability ~0.7, holdout
    ~0.1); grad_ascent: the target after 10 full-parameter grad-ascent steps on forget10 (~0.1)."""
    from clearbench.unlearn import unlearn

    root = tmp_path_factory.mktemp("attack_models")
    loaded = load_model(tiny_llava.build(tiny_world.texts(), root / "base", SHAPE))
    cfg = TrainConfig(lr=5e-3, max_steps=200, batch_size=16, micro_batch_size=16, warmup_steps=5, seed=0,
                      log_every=50, augment=False)
    model = loaded.model.train()
    set_trainable(model, cfg)
    train(model, loaded.processor, loaded.family, ShuffleSampler(tiny_world.records("full", image_roles=["train", ""]),
          16, seed=0), example_nll_loss, cfg, TrainRun(root / "target" / "train", desc="target"))
    target = root / "target"
    tiny_llava.save(model.eval(), loaded.processor, target / "model", SHAPE)
    write_json_atomic(target / "run.json", {"stage": "finetune", "split": "full", "parent": None,
                                            "world_fingerprint": tiny_world.fingerprint,
                                            "model_fingerprint": model_fingerprint(target / "model")})
    ga = from_dict(BenchConfig, {"unlearn": {"method": "grad_ascent", "forget": "forget10", "warmup_epochs": 0, "train": {
        "lr": 1e-3, "max_steps": 10, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 0, "seed": 1,
        "schedule": "constant", "augment": False, "lora": {"enabled": False}}}})
    return {"target": target, "grad_ascent": unlearn(ga, tiny_world, target, root / "grad_ascent")}


def _run(model, world, out, name, options=None, gold=None, **kw):
    return attack(model, world, out, AttackConfig(attack=name, options=options or {}, **(FAST | kw)), gold=gold)


@pytest.fixture(scope="module")
def results(models, tiny_world, tmp_path_factory) -> dict[str, dict]:
    """One result of every attack on the grad-ascent model (12 probes; relearn on 4 records for 4 steps)."""
    root = tmp_path_factory.mktemp("attack_results")
    opts = {"relearn": {"n": [4, "all"], "benign": ["retain"], "train": BUDGET | {"max_steps": 4}, "curve_every": 2,
                        "curve_n": 2},
            "quantize": {"schemes": ["int8", "int4_g64", "bnb_nf4"]}}
    return {name: _run(models["grad_ascent"], tiny_world, root / f"{name}.json", name, opts.get(name),
                       max_per_config=12) for name in ATTACKS}


# ------------------------------------------------------------------------------------ relearning
def test_relearning_recovers_a_grad_ascent_models_answers_and_barely_moves_the_target(models, tiny_world, tmp_path):
    """Relearning 10 forget records for 10 steps: on the grad-ascent model the OTHER forget records' text and
    joint answers get much likelier (measured +0.17..0.24 over relearn seeds 0-2), on the target they barely
    move (|delta| <= 0.05; its image naming, not fully learnt in 200 steps, does rise and is not asserted)."""
    delta = {}
    for name in ("target", "grad_ascent"):
        r = _run(models[name], tiny_world, tmp_path / f"{name}.json", "relearn",
                 {"n": [10], "benign": [], "train": BUDGET, "curve_every": 5})
        assert validate_result(r) == []
        setting = r["settings"][0]
        relearned = set(setting["params"]["records"])
        assert len(relearned) == 10 and {e["id"] for e in setting["examples"]}.isdisjoint(relearned)
        assert len(setting["examples"]) == 64 - 10  # every other forget10 probe, held-out photos included
        assert [p["step"] for p in r["aggregates"]["curves"]["forget_n10"]] == [0, 5, 10]
        m = r["aggregates"]["metrics"]
        delta[name] = {mod: m[f"forget_n10/{mod}/probability_delta"] for mod in ("text", "joint")}
    for mod in ("text", "joint"):
        assert abs(delta["target"][mod]) < 0.05, delta
        assert delta["grad_ascent"][mod] > 0.1, delta
        assert delta["grad_ascent"][mod] > delta["target"][mod] + 0.1, delta


def test_relearning_settings_and_their_probes(results, models, tiny_world):
    r = results["relearn"]
    by_name = {s["name"]: s for s in r["settings"]}
    assert list(by_name) == ["forget_n4", "forget_all", "benign_retain"]
    standard = {e["id"] for e in r["standard"]["examples"]}
    assert len(standard) == 12
    assert by_name["forget_all"]["in_sample"] and {e["id"] for e in by_name["forget_all"]["examples"]} == standard
    assert {e["id"] for e in by_name["forget_n4"]["examples"]} == standard - set(by_name["forget_n4"]["params"]["records"])
    benign = tiny_world.records("retain90")
    chosen = [r_ for r_ in benign if r_.id in set(by_name["benign_retain"]["params"]["records"])]
    forget = tiny_world.records("forget10")
    assert len(chosen) == 10 and not {c.answer for c in chosen} & {f.answer for f in forget}
    assert not any(f.name in f"{c.question} {c.answer}" for c in chosen for f in forget)
    assert [row["step"] for row in by_name["forget_n4"]["log"]] == [1, 2, 3, 4]
    # in-sample relearning stays out of the worst case; out-of-sample settings are in it
    m = r["aggregates"]["metrics"]
    assert m["worst_case/all/probability"] >= m["standard/all/probability"]
    assert r["aggregates"]["max_delta_setting"]["all/probability"] in ("forget_n4", "benign_retain")
    target = open_target(models["grad_ascent"], tiny_world, AttackConfig(max_per_config=12))
    skipped = relearn.run_setting(target, relearn.Config(n=[60]), "forget_n60")
    assert skipped.skipped.startswith("n=60 is not below the 52 records of forget10")


# ------------------------------------------------------------------------------------ quantization
def test_rounding_moves_each_weight_by_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(24, 200) * torch.logspace(-3, 0, 24)[:, None]  # channels of very different scales
    w[3] = 0.0
    for bits, group in ((8, 0), (4, 0), (4, 64), (4, 128), (8, 7)):
        deq, step = quantize.rtn(w, bits, group)
        assert deq.shape == w.shape and torch.all((w - deq).abs() <= step / 2 + 1e-7 * step)
        assert torch.equal(deq[3], w[3])  # an all-zero channel stays zero
        levels = torch.round(deq / step)
        assert torch.allclose(levels * step, deq) and levels.abs().max() <= 2 ** (bits - 1) - 1
    assert len(torch.unique(quantize.rtn(w[:1], 4, 0)[0])) <= 15  # 4 bits: at most 15 values per channel
    with pytest.raises(ValueError, match="intB"):
        quantize.parse_scheme("int9")


def test_8bit_rounding_of_a_model_changes_its_scores_little(models, tiny_world, tmp_path):
    loaded = load_model(models["target"] / "model")
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    stats = quantize.quantize_model(loaded.model, "int8", ["vision", "projector", "language"])
    assert stats["layers"] > 5 and stats["max_error_in_steps"] <= 0.5 + 1e-5
    changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and "lm_head.weight" not in changed and all(n.endswith("weight") for n in changed)
    r = _run(models["target"], tiny_world, tmp_path / "q.json", "quantize", {"schemes": ["int8", "int4"]})
    m = r["aggregates"]["metrics"]
    assert abs(m["int8/all/probability_delta"]) < 0.01 and abs(m["int8/all/truth_ratio_delta"]) < 0.02
    assert abs(m["int4/all/probability_delta"]) > abs(m["int8/all/probability_delta"])  # coarser, further off


def test_bitsandbytes_scheme_is_skipped_with_its_reason_without_it(results):
    nf4 = next(s for s in results["quantize"]["settings"] if s["name"] == "bnb_nf4")
    if torch.cuda.is_available() and quantize.importlib.util.find_spec("bitsandbytes"):
        assert not nf4["skipped"] and nf4["examples"]
    else:
        assert nf4["skipped"] in ("bitsandbytes is not installed", "bitsandbytes' 4-bit quantizer needs a CUDA GPU")
        assert nf4["examples"] == []


# ------------------------------------------------------------------------------------ probes
def test_transformed_photos_differ_keep_their_label_and_are_reproducible(tiny_world):
    records = [r for r in tiny_world.records("forget10_perturbed") if r.image_role == "heldout"]
    cfg = transform.Config()
    for name in transform.TRANSFORMS:
        out = transform.transformed(records, name, cfg)
        assert len(out) == len(records) == 12
        for orig, new in zip(records, out):
            a, b = np.asarray(orig.image.convert("RGB")), np.asarray(new.image)
            assert a.shape == b.shape and not np.array_equal(a, b), (name, orig.id)
            assert dataclasses.replace(new, image=orig.image) == orig  # the label and everything else unchanged
        again = transform.transformed(records, name, cfg)
        assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(out, again))
    other_seed = transform.transformed(records, "noise", transform.Config(seed=1))
    assert not np.array_equal(np.asarray(other_seed[0].image), np.asarray(transform.transformed(
        records, "noise", cfg)[0].image))
    assert np.ptp(np.asarray(transform.transformed(records, "grayscale", cfg)[0].image), axis=2).max() == 0


def test_transform_attack_scores_held_out_photos_only(results):
    r = results["transform"]
    standard = {e["id"]: e for e in r["standard"]["examples"]}
    for s in r["settings"]:
        assert not s["skipped"] and s["examples"]
        assert all(standard[e["id"]]["image_role"] == "heldout" for e in s["examples"])


def test_paraphrase_probe_is_skipped_without_paraphrased_questions_and_scores_them_when_present(models, tiny_world):
    target = open_target(models["grad_ascent"], tiny_world, AttackConfig(max_per_config=12, **FAST))
    assert all(r.paraphrased_question and r.paraphrased_question != r.question for r in target.probes)
    asked = paraphrase.paraphrased(target.probes)
    assert [r.question for r in asked] == [r.paraphrased_question for r in target.probes]
    setting = paraphrase.run_setting(target, paraphrase.Config(), "paraphrased_question")
    assert not setting.skipped and [e.id for e in setting.examples] == [r.id for r in target.probes]
    # a hand-made world whose records have no paraphrased question (worlds before generator 2.3.0)
    target.probes = [dataclasses.replace(r, paraphrased_question="") for r in target.probes]
    skipped = paraphrase.run_setting(target, paraphrase.Config(), "paraphrased_question")
    assert skipped.skipped == paraphrase.NO_PARAPHRASES and not skipped.examples


def test_in_context_facts_come_from_the_right_people_and_never_give_the_answer_away(tiny_world):
    facts = [r for r in tiny_world.records("forget10") if str(r.modality) == "text"]
    probes = tiny_world.records("forget10_perturbed")
    cfg = in_context.Config()
    joint = next(p for p in probes if str(p.modality) == "joint" and str(p.task) == "qa")
    twin = [f for f in facts if f.author_id == joint.author_id and in_context.restates(f, joint, cfg.max_overlap)]
    assert twin  # e.g. "X was born in Incheon" restates "This person was born in Incheon"
    for source in ("other", "same"):
        built = in_context.with_context(joint, facts, 3, source, cfg)
        used = [f for f in facts if f"{f.question} {f.answer}" in built.question]
        assert len(used) == 3 and built.question.endswith(joint.question) and built.answer == joint.answer
        assert all((f.author_id == joint.author_id) == (source == "same") for f in used)
        assert not set(used) & set(twin)
    naming = next(p for p in probes if str(p.task) == "naming")
    assert in_context.with_context(naming, facts, 3, "same", cfg) is None  # every own fact names the person
    assert in_context.with_context(naming, facts, 99, "other", cfg) is None


def test_in_context_attack_runs_both_settings(results):
    r = results["in_context"]
    by_name = {s["name"]: s for s in r["settings"]}
    assert set(by_name) == {"other_k3", "same_k3"}
    standard = {e["id"]: e for e in r["standard"]["examples"]}
    assert all(standard[e["id"]]["task"] == "qa" for e in by_name["same_k3"]["examples"])
    assert len(by_name["other_k3"]["examples"]) == len(standard)


# ------------------------------------------------------------------------------------ result files
def test_every_attack_writes_per_example_values_that_recompute(results):
    for name, r in results.items():
        assert r["attack"] == name and r["attack_version"] == ATTACKS[name].VERSION
        assert validate_result(r) == [], name
        assert len(r["standard"]["examples"]) == 12
        cost = r["provenance"]["cost"]["attack"]  # its scoring passes (and relearning's steps) were metered
        assert not check_cost(cost) and cost["complete"] and cost["tokens_forward_only"] > 0, name
        assert (cost["optimizer_steps"] > 0) == (name == "relearn"), name
        ran = [s for s in r["settings"] if not s["skipped"]]
        assert ran, name
        for s in ran:
            m = r["aggregates"]["metrics"]
            assert s["examples"] and f"{s['name']}/all/probability_delta" in m
            assert m[f"{s['name']}/all/n"] == len(s["examples"])


def _tamper(result, edit):
    bad = copy.deepcopy(result)
    edit(bad)
    return validate_result(bad)


def test_the_validator_rejects_tampering(results):
    r = results["relearn"]

    def lp(bad):
        bad["settings"][0]["examples"][0]["lp_answer"] = [0.0] * len(bad["settings"][0]["examples"][0]["lp_answer"])

    def curve_point(bad):
        bad["settings"][0]["curve"][0]["examples"][0]["generation"] = bad["settings"][0]["curve"][0]["examples"][0]["answer"]

    def aggregate(bad):
        bad["aggregates"]["metrics"]["worst_case/all/probability"] = 0.0

    def drop(bad):
        del bad["settings"][0]["examples"][0]

    def in_sample(bad):
        bad["settings"][1]["in_sample"] = False  # relearning every answer counted as leakage

    def standard(bad):
        bad["standard"]["examples"][0]["lp_answer"][0] -= 3.0  # a worse-looking unattacked model: bigger deltas

    def foreign(bad):
        bad["settings"][0]["examples"][0]["id"] = "someone-else"

    for edit, expected in ((lp, "recomputation gives"), (curve_point, "curves differ"), (aggregate, "worst_case"),
                           (drop, "expected ids"), (in_sample, "recomputation gives"), (standard, "recomputation"),
                           (foreign, "not standard probes")):
        problems = _tamper(r, edit)
        assert problems and any(expected in p for p in problems), (edit.__name__, problems)
    assert any("version" in p for p in _tamper(r, lambda bad: bad.update(attack_version=99)))


def test_worst_case_over_attacks_is_per_example_and_per_model(results, models):
    combined = worst_case([results["relearn"], results["quantize"], results["transform"]])
    for name in ("relearn", "quantize", "transform"):
        m = results[name]["aggregates"]["metrics"]
        assert combined["worst_case/all/probability"] >= m["worst_case/all/probability"] - 1e-12
        assert worst_case([results[name]]) == {k: v for k, v in m.items() if k.startswith("worst_case/")}
    other = copy.deepcopy(results["quantize"])
    other["provenance"]["model_fingerprint"] = "another"
    with pytest.raises(ValueError, match="different models"):
        worst_case([results["relearn"], other])


def test_the_gold_models_values_on_the_same_probes_are_reported_beside(models, tiny_world, tmp_path):
    from eval.evaluate import EvalConfig, evaluate
    from eval.example import ExampleOutput

    gold_out = tmp_path / "gold.json"  # the target stands in for the gold model here
    evaluate(models["target"], tiny_world, gold_out, gold="self", cfg=EvalConfig(max_per_cell=3, max_new_tokens=8),
             progress=False)
    r = _run(models["grad_ascent"], tiny_world, tmp_path / "q.json", "quantize", {"schemes": ["int8"]},
             max_per_cell=3, gold=gold_out)
    gold_examples = [ExampleOutput.from_dict(d) for d in r["gold"]["examples"]]
    assert sorted(e.id for e in gold_examples) == sorted(e["id"] for e in r["standard"]["examples"])
    expected = np.mean([v["probability"] for v in result_values(gold_examples).values()])
    assert r["aggregates"]["metrics"]["gold/all/probability"] == pytest.approx(expected)
    assert r["aggregates"]["metrics"]["gold/all/probability"] > r["aggregates"]["metrics"]["standard/all/probability"]
    with pytest.raises(ValueError, match="forget05"):
        _run(models["grad_ascent"], tiny_world, tmp_path / "q5.json", "quantize", forget="forget05", gold=gold_out)


# ------------------------------------------------------------------------------------ running
def test_a_killed_attack_resumes_at_the_next_setting(models, tiny_world, tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    calls = []
    real = transform.run_setting

    def counted(target, cfg, name):
        calls.append(name)
        if name == "jitter" and calls.count("jitter") == 1:
            raise KeyboardInterrupt("killed")
        return real(target, cfg, name)

    monkeypatch.setattr(transform, "run_setting", counted)
    opts = {"transforms": ["crop", "flip", "jitter"]}
    with pytest.raises(KeyboardInterrupt):
        _run(models["grad_ascent"], tiny_world, out, "transform", opts, max_per_config=12)
    assert not out.exists() and sorted(p.name for p in (tmp_path / "t.json.cache").iterdir()) == [
        "crop.json", "flip.json", "meta.json", "standard.json"]
    r = _run(models["grad_ascent"], tiny_world, out, "transform", opts, max_per_config=12)
    assert calls == ["crop", "flip", "jitter", "jitter"] and validate_result(r) == []
    assert not r["provenance"]["cost"]["attack"]["complete"]  # crop and flip came from the killed run's cache
    assert not (tmp_path / "t.json.cache").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(models["grad_ascent"], tiny_world, out, "transform", opts, max_per_config=12)


def test_bad_attack_inputs_fail_before_any_model_loads(models, tiny_world, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'relearn'"):
        get_attack("relern")
    for options, match in (({"n": [0]}, "n=0"), ({"nn": [1]}, "Did you mean"), ({"train": {"max_steps": 0}}, "max_steps"),
                           ({"benign": ["web"]}, "benign sources")):
        with pytest.raises((ValueError, ConfigError), match=match):
            options_of(AttackConfig(attack="relearn", options=options))
    with pytest.raises(ValueError, match="forget split"):
        open_target(models["grad_ascent"], tiny_world, AttackConfig(forget="forget33"))
    with pytest.raises(FileNotFoundError, match="no model"):
        open_target(tmp_path / "nothing", tiny_world, AttackConfig())
    run = json.loads((models["grad_ascent"] / "run.json").read_text())
    assert open_target(models["grad_ascent"], tiny_world, AttackConfig()).forget == run["forget"] == "forget10"


def test_cli_runs_one_attack_and_reports_one_line_errors(models, tiny_world_path, tmp_path, capsys):
    from clearbench.cli import main

    out = tmp_path / "cli.json"
    base = ["attack", "--model", str(models["grad_ascent"]), "--world", str(tiny_world_path), "--out", str(out),
            "--max-per-config", "6", "--max-new-tokens", "8"]
    assert main(base + ["--attack", "quantize", "schemes=[int8]"]) == 0
    printed = capsys.readouterr().out
    assert "int8" in printed and "worst case" in printed and validate_result(json.loads(out.read_text())) == []
    assert main(base + ["--attack", "quantise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Did you mean 'quantize'" in err[0]
    assert main(base + ["--attack", "quantize", "schemes=[int9]"]) == 2
    assert "int9" in capsys.readouterr().err


def test_a_study_attacks_every_unlearned_model_and_the_target(tmp_path):
    from clearbench.config import BenchConfig, load_config
    from clearbench.executor import run_study
    from clearbench.run import build_study

    plain_only = ["study.methods=[grad_ascent]", "study.variants.lora=null", "study.variants.lora-l1=null"]
    cfg = load_config(BenchConfig, "tiny-smoke", [*plain_only,
                                                  "study.attacks=[quantize]", "study.attack_max_per_cell=2",
                                                  "study.attack_options={quantize: {schemes: [int8]}}",
                                                  "study.report=false"])
    names = [s.name for s in build_study(cfg, tmp_path / "s")]
    assert {"attack/grad_ascent-multimodal-10/quantize", "attack/target-10/quantize"} <= set(names)
    plain = load_config(BenchConfig, "tiny-smoke", plain_only)
    # without attacks the study and its keys are what they were
    assert not any(s.kind == "attack" for s in build_study(plain, tmp_path / "p"))
    run_study(cfg, tmp_path / "s", echo=lambda s: None)
    result = json.loads((tmp_path / "s" / "attacks" / "grad_ascent-multimodal-10" / "quantize.json").read_text())
    assert validate_result(result) == []
    assert result["provenance"]["config"]["max_per_cell"] == 2
