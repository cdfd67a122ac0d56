"""The unlearning stage on a tiny real target: every method end to end, modality filters, resume,
early stopping, L1, the CLI, and one clear error per bad input (raised before training starts)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baselines import METHODS, needs_reference_for
from clearbench.config import BenchConfig, deep_merge, from_dict
from clearbench.cost import check_cost
from clearbench.train import Interrupt
from clearbench.unlearn import UnlearnSampler, plan, unlearn

FAST = {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "warmup_steps": 0, "seed": 1,
        "schedule": "constant", "log_every": 1, "augment": False, "lora": {"enabled": True, "r": 4, "alpha": 16}}


def _cfg(**unlearn) -> BenchConfig:
    base = {"method": "grad_ascent", "forget": "forget10", "warmup_epochs": 0, "train": FAST}
    return from_dict(BenchConfig, {"unlearn": deep_merge(base, unlearn)})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run / "model").glob("*.safetensors")):
        out |= load_file(str(f))
    return out


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ================================================================= fixture: the unlearning target
@pytest.fixture(scope="session")
def unlearn_target(tiny_llava_dir, tiny_world, tmp_path_factory) -> Path:
    """The tiny-llava test checkpoint briefly finetuned on every author of the tiny world (a run dir)."""
    from clearbench.stages import finetune

    cfg = from_dict(BenchConfig, {"finetune": {"phase": {"data": [{"config": "full"}], "train": {
        "lr": 3e-3, "max_steps": 12, "batch_size": 16, "micro_batch_size": 16, "warmup_steps": 2, "log_every": 4}}}})
    return finetune(cfg, tiny_world, tiny_llava_dir, "full", tmp_path_factory.mktemp("unlearn") / "target")
# ============================================================== end fixture: the unlearning target


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_through_the_stage(method, unlearn_target, tiny_world, tmp_path):
    out = unlearn(_cfg(method=method), tiny_world, unlearn_target, tmp_path / method)
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == method and run["steps"] == 2 and run["forget"] == "forget10"
    assert run["world_fingerprint"] == tiny_world.fingerprint
    assert run["parent"]["model_fingerprint"] == json.loads((unlearn_target / "run.json").read_text())["model_fingerprint"]
    expected_ref = "adapter-disabled" if needs_reference_for(method, run_cfg(method)) else None
    assert run["reference"] == expected_ref and run["stop"] == {"rule": "fixed", "chosen_step": 2}
    assert [r["step"] for r in _log(out)] == [1, 2]
    before, after = _weights(unlearn_target), _weights(out)
    assert before.keys() == after.keys()  # merged: a plain checkpoint, no adapter names
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / "config.json").read_text())["unlearn"]["method"] == method
    cost = run["cost"]  # compute accounting (clearbench.cost): every field, plausible
    assert not check_cost(cost) and cost["complete"] and cost["optimizer_steps"] == 2
    assert cost["wall_seconds"] > 0 and cost["cpu_seconds"] > 0 and cost["peak_memory_mb"] > 100
    assert cost["tokens_backward"] > 0 and (cost["tokens_forward_only"] > 0) == (expected_ref is not None)
    if method in ("grad_ascent", "grad_diff"):  # one forward+backward per record seen: the count is exact
        assert cost["tokens_backward"] == _tokens_seen(_cfg(method=method), tiny_world, unlearn_target, 2)


def _tokens_seen(cfg, world, target, steps):
    """Token positions of the batches the run's sampler gives in ``steps`` steps, as collated for the model."""
    from clearbench.models import load_model

    p = plan(cfg.unlearn, world, target)
    loaded = load_model(target / "model")
    sampler = UnlearnSampler(p.forget, p.retain, p.kinds, p.train.batch_size, p.train.seed, p.refusals)
    return sum(loaded.family.collate(loaded.processor, recs, max_length=p.train.max_length or None)["input_ids"].numel()
               for step in range(steps) for recs in sampler.global_batch(step).values() if recs)


def run_cfg(method):
    from baselines import method_config

    return method_config(method)


def test_forget_modality_selects_records(unlearn_target, tiny_world):
    seen = {}
    for modality in ("text", "visual", "multimodal"):
        p = plan(_cfg(forget_modality=modality).unlearn, tiny_world, unlearn_target)
        seen[modality] = {str(r.modality) for r in p.forget}
        assert {str(r.modality) for r in p.retain} == {"text", "image", "joint"}  # retain always mixes both
        assert {r.group for r in p.forget} == {"forget"}
    assert seen == {"text": {"text"}, "visual": {"image", "joint"}, "multimodal": {"text", "image", "joint"}}


def test_options_by_method_apply_to_their_method_only(unlearn_target, tiny_world):
    by = {"rmu": {"alpha": 10.0, "layer_frac": 1.0}, "npo": {"beta": 0.5}}

    def resolved(**kw):
        return plan(_cfg(options_by_method=by, **kw).unlearn, tiny_world, unlearn_target).method_cfg

    assert (resolved(method="rmu").alpha, resolved(method="rmu").layer_frac) == (10.0, 1.0)
    assert resolved(method="npo").beta == 0.5
    assert resolved(method="rmu", method_options={"alpha": 3.0}).alpha == 3.0  # method_options win
    clear = resolved(method="rmu", clear_recipe=True)  # then CLEAR's recipe, over the preset's tuning
    assert (clear.alpha, clear.steering_scale, clear.layer_frac) == (1.0, "absolute", 1.0)


def test_sampler_is_deterministic_and_pairs_rows(unlearn_target, tiny_world):
    p = plan(_cfg(method="dpo").unlearn, tiny_world, unlearn_target)
    sampler = UnlearnSampler(p.forget, p.retain, ("forget", "idk", "retain", "random"), 4, seed=3,
                             refusals=p.refusals or ["I don't know."], random_k=2)
    a, b = sampler.global_batch(5), UnlearnSampler(p.forget, p.retain, sampler.kinds, 4, 3, ["I don't know."], 2).global_batch(5)
    assert [r.id for r in a["retain"]] == [r.id for r in b["retain"]]
    assert [r.question for r in a["idk"]] == [r.question for r in a["forget"]]
    assert [r.question for r in a["random"]] == [r.question for r in a["forget"] for _ in range(2)]
    epoch = [r.id for s in range(sampler.steps_per_epoch) for r in sampler.global_batch(s)["forget"]]
    assert len(set(epoch)) == len(epoch) == sampler.steps_per_epoch * 4  # one pass, no repeats


def test_random_answers_come_from_the_retain_or_the_forget_records(unlearn_target, tiny_world, monkeypatch):
    """"random": answers of the run's retain records (LLMU's normal data); "random_forget": of the other forget
    records (CLEAR's "other forget items")."""
    import baselines

    monkeypatch.setattr(baselines, "BATCH_KINDS", tuple(dict.fromkeys((*baselines.BATCH_KINDS, "random_forget"))))
    p = plan(_cfg().unlearn, tiny_world, unlearn_target)
    sampler = UnlearnSampler(p.forget, p.retain, ("forget", "random", "random_forget"), 4, seed=3, random_k=2)
    retain, forget = {r.answer for r in p.retain}, {r.answer for r in p.forget}
    batches = [sampler.global_batch(step) for step in range(3)]
    assert all(r.answer in retain for b in batches for r in b["random"])
    assert any(r.answer not in forget for b in batches for r in b["random"])
    assert all(r.answer in forget for b in batches for r in b["random_forget"])
    assert [r.question for r in batches[0]["random"]] == [r.question for r in batches[0]["forget"] for _ in range(2)]


def test_plan_resolves_method_options_through_baselines_once(unlearn_target, tiny_world, monkeypatch):
    """baselines.resolve_config(name, cfg, steps_per_epoch, total_steps) turns epoch-given options into steps."""
    import dataclasses

    import baselines

    calls = []

    def resolve(name, cfg, steps_per_epoch, total_steps):
        calls.append((name, steps_per_epoch, total_steps))
        return dataclasses.replace(cfg, beta=0.25)

    monkeypatch.setattr(baselines, "resolve_config", resolve, raising=False)
    p = plan(_cfg(method="npo", train=deep_merge(FAST, {"max_steps": 0, "epochs": 2})).unlearn, tiny_world,
             unlearn_target)
    per_epoch = len(p.forget) // 4
    assert calls == [("npo", per_epoch, 2 * per_epoch)] and p.method_cfg.beta == 0.25


def test_resume_ends_with_same_weights(unlearn_target, tiny_world, tmp_path):
    cfg = _cfg(method="npo", train=deep_merge(FAST, {"max_steps": 4, "save_every": 1}),
               stop={"rule": "forget_prob_below", "every": 2, "n": 4, "threshold": 0.0})
    full = unlearn(cfg, tiny_world, unlearn_target, tmp_path / "full")
    with pytest.raises(Interrupt):
        unlearn(cfg, tiny_world, unlearn_target, tmp_path / "cut", stop_at_step=3)
    cut = unlearn(cfg, tiny_world, unlearn_target, tmp_path / "cut", resume=True)
    a, b = _weights(full), _weights(cut)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    runs = [json.loads((d / "run.json").read_text()) for d in (full, cut)]
    assert runs[1]["train"]["resumed_from"] == 3
    # the resumed run's cost covers its own part (step 3 to 4) and says so
    assert runs[0]["cost"]["complete"] and runs[0]["cost"]["optimizer_steps"] == 4
    assert not runs[1]["cost"]["complete"] and runs[1]["cost"]["optimizer_steps"] == 1
    rows = [[(r["step"], r["forget_prob"]) for r in run["stop"]["criterion"]] for run in runs]
    assert [s for s, _ in rows[1]] == [0, 2, 4]  # rows of the interrupted attempt survive the restart
    assert [v for _, v in rows[0]] == pytest.approx([v for _, v in rows[1]], abs=1e-6)


def test_resume_refuses_other_settings_but_not_other_methods_tuning(unlearn_target, tiny_world, tmp_path):
    cfg = _cfg(method="npo", train=deep_merge(FAST, {"max_steps": 3, "save_every": 1}))
    with pytest.raises(Interrupt):
        unlearn(cfg, tiny_world, unlearn_target, tmp_path / "cut", stop_at_step=1)
    with pytest.raises(ValueError, match=r"--resume: resolved.train.lr \(0.01 -> 0.02\) differs"):
        unlearn(_cfg(method="npo", train=deep_merge(FAST, {"max_steps": 3, "save_every": 1, "lr": 2e-2})),
                tiny_world, unlearn_target, tmp_path / "cut", resume=True)
    # another method's entry in the per-method tables (a study tuning rmu) does not change this run
    tuned = _cfg(method="npo", train=deep_merge(FAST, {"max_steps": 3, "save_every": 1}),
                 lr_by_method={"rmu": 1e-3}, options_by_method={"rmu": {"alpha": 3.0}})
    out = unlearn(tuned, tiny_world, unlearn_target, tmp_path / "cut", resume=True)
    assert json.loads((out / "run.json").read_text())["train"]["resumed_from"] == 1


def test_early_stopping_stops_at_the_rules_step(unlearn_target, tiny_world, tmp_path):
    stop = {"rule": "forget_prob_below", "every": 1, "n": 8, "source": "forget", "threshold": 0.0}
    probe = unlearn(_cfg(train=deep_merge(FAST, {"max_steps": 3}), stop=stop), tiny_world, unlearn_target, tmp_path / "probe")
    values = [r["forget_prob"] for r in json.loads((probe / "run.json").read_text())["stop"]["criterion"]]
    assert len(values) == 4 and values[0] > values[1] > values[2]  # steps 0..3; gradient ascent lowers it
    threshold = (values[1] + values[2]) / 2  # first step below it: 2
    out = unlearn(_cfg(train=deep_merge(FAST, {"max_steps": 6}), stop=stop | {"threshold": threshold}),
                  tiny_world, unlearn_target, tmp_path / "stop")
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == 2 and run["stop"]["chosen_step"] == 2 and run["stop"]["triggered"]
    assert [r["forget_prob"] for r in run["stop"]["criterion"]] == pytest.approx(values[:3])
    assert len(_log(out)) == 2
    # threshold "gold": the gold model's level on the same records (here the target itself: step 1 is below it)
    gold = unlearn(_cfg(stop=stop | {"threshold": "gold", "gold_model": str(unlearn_target)}, eval_every=1, curve_n=2),
                   tiny_world, unlearn_target, tmp_path / "gold")
    run = json.loads((gold / "run.json").read_text())
    assert run["stop"]["threshold_value"] == pytest.approx(values[0]) and run["stop"]["chosen_step"] == 1
    curve = [json.loads(line) for line in (gold / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [0, 1] and "forget/image/prob" in curve[0] and "retain/text/prob" in curve[0]
    # the fixed rule reads no threshold: "gold" without a gold model is not loaded (it loaded "." before)
    fixed = unlearn(_cfg(train=deep_merge(FAST, {"max_steps": 1}), stop={"rule": "fixed", "threshold": "gold"}),
                    tiny_world, unlearn_target, tmp_path / "fixed")
    assert json.loads((fixed / "run.json").read_text())["steps"] == 1


def test_l1_is_logged_and_full_parameter_uses_a_copy(unlearn_target, tiny_world, tmp_path):
    train = deep_merge(FAST, {"l1_lambda": 0.5})
    lora = unlearn(_cfg(train=train), tiny_world, unlearn_target, tmp_path / "lora")
    assert all(r["l1"] > 0 for r in _log(lora))  # sum |A| + |B| of the adapters
    full = unlearn(_cfg(method="kl", train=deep_merge(train, {"lora": {"enabled": False}, "lr": 1e-4})),
                   tiny_world, unlearn_target, tmp_path / "full")
    log = _log(full)
    assert log[0]["l1"] == 0.0 and log[1]["l1"] > 0  # |theta - theta0|: zero before the first update
    run = json.loads((full / "run.json").read_text())
    assert run["reference"] == "copy" and run["l1_lambda"] == 0.5 and run["lora"] is False


def test_cli(unlearn_target, tiny_world_path, tmp_path):
    from clearbench.cli import main

    out = tmp_path / "npo-10"
    args = ["unlearn", "--world", str(tiny_world_path), "--model", str(unlearn_target), "--method", "npo",
            "--forget", "forget10", "--forget-modality", "visual", "--out", str(out), "unlearn.train.max_steps=1",
            "unlearn.train.batch_size=4", "unlearn.train.micro_batch_size=4"]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["method"], run["forget_modality"], run["steps"]) == ("npo", "visual", 1)
    assert main(args) == 2  # exists: asks for --resume or --overwrite
    assert main(args[:1] + ["--world", str(tiny_world_path), "--model", str(unlearn_target), "--method", "npp",
                            "--out", str(tmp_path / "x")]) == 2


class _TextOnly:
    """The tiny world with its image records hidden (a world generated without images)."""

    def __init__(self, world):
        self._w = world

    def __getattr__(self, name):
        return getattr(self._w, name)

    def records(self, config, modalities=None, **kw):
        return [r for r in self._w.records(config, modalities=modalities, **kw) if str(r.modality) == "text"]


def test_bad_inputs_fail_before_training(unlearn_target, tiny_world, tmp_path):
    other = tmp_path / "other-world-target"
    (other).mkdir()
    (other / "model").symlink_to(unlearn_target / "model")
    run = json.loads((unlearn_target / "run.json").read_text())
    (other / "run.json").write_text(json.dumps(run | {"world_fingerprint": "f" * 64}))
    cases = [
        (dict(method="npp"), tiny_world, unlearn_target, "Did you mean 'npo'"),
        (dict(method="npo", method_options={"betaa": 1.0}), tiny_world, unlearn_target, "Did you mean 'beta'"),
        (dict(lr_by_method={"grad_diffs": 1e-4}), tiny_world, unlearn_target, "Did you mean 'grad_diff'"),
        (dict(options_by_method={"rmuu": {}}), tiny_world, unlearn_target, "Did you mean 'rmu'"),
        (dict(options_by_method={"npo": {"betaa": 1.0}}), tiny_world, unlearn_target, "Did you mean 'beta'"),
        (dict(method="idk", refusals=str(tmp_path / "none.txt")), tiny_world, unlearn_target, "refusal file"),
        (dict(method="npo", reference="adapter-disabled", train=deep_merge(FAST, {"lora": {"enabled": False}})),
         tiny_world, unlearn_target, "needs a reference model"),
        (dict(forget_modality="visual"), _TextOnly(tiny_world), unlearn_target, "has no image records"),
        (dict(), tiny_world, other, "trained on world ffffffffffff"),
        (dict(train=deep_merge(FAST, {"l1_lambda": -0.1})), tiny_world, unlearn_target, "l1_lambda=-0.1"),
        (dict(forget="forget01"), tiny_world, unlearn_target, "Unknown forget split 'forget01'"),
        (dict(stop={"rule": "forget_prob_below", "threshold": "gold"}), tiny_world, unlearn_target, "gold_model"),
        (dict(method=""), tiny_world, unlearn_target, "pass --method"),
    ]
    for i, (kw, world, target, message) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            unlearn(_cfg(**kw), world, target, out)
        assert not out.exists(), kw  # nothing written: the error came before training
    shutil.rmtree(other)
