"""The presets under configs/: every one loads and builds its study; the values that must be CLEAR's are;
and the GPU presets (llava-1.5-7b, qwen2-vl-2b) run the whole study end to end on CPU against a tiny
random checkpoint of their architecture, served under the preset's own hub id from a local hub cache."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from clearbench.config import PRESET_DIR, BenchConfig, ConfigError, TrainConfig, load_config, load_yaml, preset_path
from clearbench.provenance import ADAPTER_MARKER, local_model_dir, model_fingerprint
from clearbench.executor import run_study
from clearbench.run import build_study

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
GPU_PRESETS = {"llava-1.5-7b": ("llava", "llava-hf/llava-1.5-7b-hf"), "qwen2-vl-2b": ("qwen2-vl", "Qwen/Qwen2-VL-2B-Instruct")}


# ------------------------------------------------------------------------------ (a) loading, values
def test_the_presets_are_there():
    assert {"tiny", "tiny-smoke", "llava-1.5-7b", "qwen2-vl-2b", "paper"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_and_builds_its_study(preset, tmp_path):
    cfg = load_config(BenchConfig, preset)  # unknown keys and wrong types raise ConfigError
    stages = build_study(cfg, tmp_path / "study")  # the grid's names (methods, splits, modalities) are valid
    last = "calibrate/select" if cfg.calibration.enabled else "report"
    assert stages[0].name == "world" and stages[-1].name == last
    assert not (tmp_path / "study").exists()  # building runs nothing


@pytest.mark.parametrize("preset", PRESETS)
def test_every_presets_metric_options_fit_the_world_schema_it_generates(preset, tiny_world):
    """Since world schema 2 the perturbed answers are the paraphrase's wording with a wrong fact (docs/metrics.md),
    so the truth ratio compares them with the paraphrase ("tofu" does, except on the real-faces/real-world
    controls); "answer" is for schema 1 data, which open_world refuses."""
    from data_gen.generate import SCHEMA_VERSION
    from eval.aggregate import MetricOptions

    assert SCHEMA_VERSION >= 2 and json.loads((tiny_world.path / "manifest.json").read_text())["schema_version"] == \
        SCHEMA_VERSION
    options = MetricOptions(**load_config(BenchConfig, preset).study.metric_options)
    assert options.tr_reference in ("paraphrase", "tofu"), (preset, options.tr_reference)
    text = next(r for r in tiny_world.records("forget10_perturbed", modalities=["text"]) if r.perturbed_answers)
    shared = [w for w in text.perturbed_answers[0].split() if w in text.paraphrased_answer.split()]
    assert len(shared) > len(text.perturbed_answers[0].split()) // 2  # the perturbation keeps the paraphrase's wording


def test_an_unknown_key_in_a_preset_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit: llava-1.5-7b\nunlearn:\n  train:\n    lora: {rank: 8}\n")
    with pytest.raises(ConfigError, match="unlearn.train.lora.rank"):
        load_config(BenchConfig, str(bad))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_l1_variant_differs_from_its_partner_only_by_the_l1_term(preset):
    """Issue 13: an L1 row says what L1 does only if nothing else changes: the same trainable parameters, lr, steps
    and seed. The partner of variant "x-l1" ("l1") is "x" (""); their resolved unlearn configs, for every method,
    differ in train.l1_lambda alone."""
    from clearbench.config import UnlearnConfig, deep_merge, from_dict, to_dict

    cfg = load_config(BenchConfig, preset)
    pairs = [(v, v.removesuffix("l1").removesuffix("-")) for v, o in cfg.study.variants.items()
             if o.get("train", {}).get("l1_lambda", cfg.unlearn.train.l1_lambda) > 0]
    assert pairs or preset in ("tiny-calibrate", "tiny-metaeval"), f"{preset} has no L1 variant"
    for l1, partner in pairs:
        assert partner in cfg.study.variants, f"{preset}: L1 variant {l1!r} has no partner {partner!r}"
        for method in cfg.study.methods:
            a, b = (to_dict(from_dict(UnlearnConfig, deep_merge(to_dict(cfg.unlearn), cfg.study.variants[v])
                                      | {"method": method}, "unlearn")) for v in (l1, partner))
            lr = [c["lr_by_method"].get(method, c["train"]["lr"]) for c in (a, b)]
            assert lr[0] == lr[1], (preset, l1, method, lr)
            assert a["train"].pop("l1_lambda") > 0 and b["train"].pop("l1_lambda") == 0
            assert a == b, (preset, l1, method)


@pytest.mark.parametrize("preset", ["llava-1.5-7b", "qwen2-vl-2b", "paper"])
def test_gpu_presets_hold_clears_hyperparameters(preset):
    """clear.md §2.3 (finetune) and §3.4 (unlearning)."""
    cfg = load_config(BenchConfig, preset)
    family, hub_id = GPU_PRESETS.get(preset, GPU_PRESETS["llava-1.5-7b"])
    assert (cfg.model.family, cfg.model.path) == (family, hub_id)
    ft, un = cfg.finetune.phase.train, cfg.unlearn.train
    assert ft.lr == 1e-5 and ft.epochs == 3 and ft.weight_decay == 0.01 and ft.schedule == "linear" and ft.seed == 42
    assert (ft.lora.enabled, ft.lora.r, ft.lora.alpha, ft.lora.dropout, ft.lora.target_modules) == (True, 8, 32, 0.0, "all-linear")
    assert cfg.finetune.warmup_epochs == 1.0 and cfg.unlearn.warmup_epochs == 1.0
    assert un.lr == 1e-5 and un.epochs == 5 and un.weight_decay == 0.01 and un.seed == 42
    assert (un.lora.r, un.lora.alpha, un.lora.dropout) == (8, 32, 0.0) and not un.train_vision_tower
    assert cfg.study.eval_max_per_cell == 300
    assert set(cfg.study.variants) == {"", "l1"} and cfg.study.variants["l1"]["train"]["l1_lambda"] > 0
    if family == "llava":  # @init: bs 8 x GA 2, max_length 1024; unlearning bs 2 x GA 2
        assert (ft.batch_size, ft.micro_batch_size, ft.max_length) == (16, 8, 1024)
        assert (un.batch_size, un.micro_batch_size, un.max_length) == (4, 2, 1024) and un.lora.enabled
    else:  # HEAD: bs 4 x GA 2, max_length 2048; unlearning r=0, bs 2 x GA 4
        assert (ft.batch_size, ft.micro_batch_size, ft.max_length) == (8, 4, 2048)
        assert (un.batch_size, un.micro_batch_size, un.max_length) == (8, 2, 2048) and not un.lora.enabled


@pytest.mark.parametrize("preset", ["llava-1.5-7b", "qwen2-vl-2b", "paper"])
def test_gpu_presets_save_lora_runs_adapter_only(preset):
    """Merged fp32 checkpoints do not fit a study on one disk (docs/presets.md, "Disk")."""
    cfg = load_config(BenchConfig, preset)
    assert not cfg.finetune.phase.train.save_merged and not cfg.unlearn.train.save_merged
    assert load_config(BenchConfig, "tiny").unlearn.train.save_merged  # the CPU presets keep merged checkpoints


def test_paper_preset_is_clears_grid_on_the_llava_preset(tmp_path):
    paper, llava = load_config(BenchConfig, "paper"), load_config(BenchConfig, "llava-1.5-7b")
    assert load_yaml(preset_path("paper"))["model"] == load_yaml(preset_path("llava-1.5-7b"))["model"]
    assert paper.finetune == llava.finetune and paper.unlearn.train == llava.unlearn.train
    assert paper.unlearn.clear_recipe
    study = paper.study
    assert study.forget_splits == ["forget01", "forget05", "forget10"]
    assert sorted(study.methods) == sorted(["retain_ft", "grad_ascent", "grad_diff", "kl", "idk", "dpo", "npo", "llmu",
                                            "rmu", "scrub"])  # paper v1's ten
    assert study.forget_modalities == ["text", "visual", "multimodal"]
    stages = build_study(paper, tmp_path)
    assert sum(s.kind == "unlearn" for s in stages) == 3 * 10 * 2 * 3 == 180
    assert [s.name for s in stages if s.kind == "finetune"] == ["target", "gold-01", "gold-05", "gold-10"]
    assert not any(s.kind == "pretrain" for s in stages)  # the checkpoint is the base


# ------------------------------------------------------------------------------ config fields the presets need
def test_finetune_warmup_epochs_is_one_epoch_of_the_selected_records():
    from clearbench.stages import finetune_phase

    cfg = load_config(BenchConfig, "llava-1.5-7b")
    assert finetune_phase(cfg, cfg.finetune.phase, 100).train.warmup_steps == 100 // 16
    assert finetune_phase(cfg, cfg.finetune.phase, 3).train.warmup_steps == 1  # CLEAR: max(1, ...)
    off = load_config(BenchConfig, "llava-1.5-7b", ["finetune.warmup_epochs=0", "finetune.phase.train.warmup_steps=7"])
    assert finetune_phase(off, off.finetune.phase, 100).train.warmup_steps == 7
    with pytest.raises(ValueError, match="warmup_epochs"):
        bad = load_config(BenchConfig, "llava-1.5-7b", ["finetune.warmup_epochs=-1"])
        finetune_phase(bad, bad.finetune.phase, 100)


def test_train_max_length_reaches_collate(loaded_families, tmp_path):
    """A max_length shorter than a prompt (image tokens included) is the collate error: the loop passes it on."""
    from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train
    from model_fixtures import sample_records

    loaded = loaded_families["llava"]
    model = copy.deepcopy(loaded.model)
    cfg = TrainConfig(max_length=8, max_steps=1, batch_size=4, micro_batch_size=4, augment=False)
    sampler = ShuffleSampler(sample_records(), 4, seed=0)
    with pytest.raises(ValueError, match="max_length=8"):
        train(model, loaded.processor, loaded.family, sampler, example_nll_loss, cfg, TrainRun(tmp_path / "short"))
    ok = train(model, loaded.processor, loaded.family, sampler, example_nll_loss,
               TrainConfig(max_length=1024, max_steps=1, batch_size=4, micro_batch_size=4, augment=False),
               TrainRun(tmp_path / "ok"))
    assert ok.steps == 1


def test_evaluation_runs_on_the_gpu_when_there_is_one(monkeypatch, tiny_world, family_checkpoints):
    """A 7B model must not be scored on the CPU: score_model loads it on cuda (bf16) when CUDA is available."""
    import clearbench.models
    from eval.evaluate import EvalConfig, score_model

    class Loaded(Exception):
        pass

    seen = {}

    def fake_load(path, **kwargs):
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(clearbench.models, "load_model", fake_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(Loaded):
        score_model(family_checkpoints["llava"], tiny_world, EvalConfig(), None)
    assert seen["device"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Loaded):
        score_model(family_checkpoints["llava"], tiny_world, EvalConfig(), None)
    assert seen["device"] == "cpu"


# ------------------------------------------------------------------------------ (b) the GPU presets, end to end
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(family_checkpoints, tmp_path_factory):
    """A local hub cache holding the tiny llava / qwen2-vl checkpoints under the presets' hub ids, so the
    presets run with their own ``model.path`` (hub id branch, offline) and no model.path override."""
    import huggingface_hub.constants

    cache = tmp_path_factory.mktemp("hub")
    for family, hub_id in GPU_PRESETS.values():
        repo = cache / ("models--" + hub_id.replace("/", "--"))
        shutil.copytree(family_checkpoints[family], repo / "snapshots" / SHA)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(SHA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        yield cache


def shrink(preset: str, methods: str) -> list[str]:
    """Dotted overrides that shrink a preset to seconds: tiny-smoke's world (64 px), 2 optimizer steps of
    2 x 2 examples per stage, a few records per eval config. Everything else is the preset's."""
    world = dict(load_yaml(preset_path("tiny-smoke"))["world"]["params"], image_size=64)
    return [f"world.params={json.dumps(world)}",
            "finetune.phase.train.max_steps=2", "finetune.phase.train.batch_size=4", "finetune.phase.train.micro_batch_size=2",
            "unlearn.train.max_steps=2", "unlearn.train.batch_size=4", "unlearn.train.micro_batch_size=2",
            f"study.methods={methods}", "study.eval_max_per_cell=2", "study.eval_batch_size=8"]


@pytest.mark.parametrize("preset,methods", [("llava-1.5-7b", ["dpo", "rmu"]), ("qwen2-vl-2b", ["npo", "scrub"])])
def test_gpu_preset_runs_the_whole_study_on_a_tiny_checkpoint(preset, methods, hub_cache, tmp_path):
    family, hub_id = GPU_PRESETS[preset]
    cfg = load_config(BenchConfig, preset, shrink(preset, f"[{', '.join(methods)}]"))
    assert cfg.model.path == hub_id  # not overridden
    out = tmp_path / preset
    outcome = run_study(cfg, out, echo=lambda s: None)
    assert set(outcome.values()) == {"ran"}
    runs = [f"{m}{v}-multimodal-10" for v in ("", "-l1") for m in methods]
    assert list(outcome)[:3] == ["world", "target", "gold-10"]  # no pretrain: the checkpoint is the base
    assert {f"unlearn/{r}" for r in runs} | {f"evaluate/{r}" for r in runs} | {"evaluate/target-10", "report"} <= set(outcome)

    # target and gold are finetunes of the hub checkpoint, with the preset's recipe (LoRA, saved adapter-only)
    snapshot = local_model_dir(hub_id)
    assert snapshot == hub_cache / ("models--" + hub_id.replace("/", "--")) / "snapshots" / SHA
    for name in ("target", "gold-10"):
        run = json.loads((out / name / "run.json").read_text())
        assert run["family"] == family
        assert run["parent"] == {"path": hub_id, "model_fingerprint": model_fingerprint(snapshot)}
        assert run["warmup_steps"] == run["records"] // 4  # one epoch (CLEAR), 4 = the shrunk batch
        assert run["model_fingerprint"] != run["parent"]["model_fingerprint"]
        marker = json.loads((out / name / "model" / ADAPTER_MARKER).read_text())  # the adapter on the hub id
        assert marker["parent"] | {"path": hub_id, "abspath": None, "relpath": None} == marker["parent"]
        assert marker["parent"]["model_fingerprint"] == run["parent"]["model_fingerprint"]
        assert [p.name for p in (out / name / "model").glob("*.safetensors")] == ["adapter_model.safetensors"]

    lora_plain = cfg.unlearn.train.lora.enabled  # llava: LoRA in both variants; qwen2-vl: full parameters in both
    target_fp = json.loads((out / "target" / "run.json").read_text())["model_fingerprint"]
    for r in runs:
        run = json.loads((out / "unlearn" / r / "run.json").read_text())
        l1 = "-l1-" in r
        assert run["family"] == family and run["steps"] == 2 and run["lr"] == 1e-5
        assert run["lora"] == lora_plain and run["l1_lambda"] == (1e-4 if l1 else 0.0)  # L1: the one change
        if run["reference"]:
            assert run["reference"] == ("adapter-disabled" if run["lora"] else "copy")
        assert run["parent"]["model_fingerprint"] == target_fp and run["model_fingerprint"] != target_fp
        weights = sorted(p.name for p in (out / "unlearn" / r / "model").glob("*.safetensors"))
        assert (weights == ["adapter_model.safetensors"]) == run["lora"]  # LoRA runs: the adapter on the target's
        result = json.loads((out / "results" / f"{r}.json").read_text())
        assert result["provenance"]["family"] == family and result["provenance"]["run"]["method"] in methods
    assert (out / "report" / "index.html").exists()
