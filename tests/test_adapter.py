"""Adapter-only checkpoints (``train.save_merged: false``): what is written, that ``load_model`` gives back
the model training ended with (also for an adapter on an adapter), fingerprints, and the errors for a
missing, moved or changed parent."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import clearbench.stages as stages
from clearbench.config import BenchConfig, LoraConfig, TrainConfig, deep_merge, from_dict
from clearbench.lora import apply_lora
from clearbench.models import adapter, detect_family, load_model
from clearbench.provenance import ADAPTER_MARKER, model_fingerprint

LORA = {"enabled": True, "r": 4, "alpha": 16, "target_modules": "all-linear"}
FINETUNE = {"lr": 3e-3, "max_steps": 3, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 0, "log_every": 1,
            "augment": False, "lora": LORA, "save_merged": False}
UNLEARN = {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "warmup_steps": 0, "seed": 1,
           "schedule": "constant", "log_every": 1, "augment": False, "lora": LORA, "save_merged": False}


@pytest.fixture()
def captured(monkeypatch) -> list:
    """The merged in-memory models the stages saved (what training ended with), in order."""
    models, real = [], stages.save_model

    def spy(*args, **kwargs):
        models.append(real(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(stages, "save_model", spy)
    return models


def _logits(model, family, processor, records) -> torch.Tensor:
    batch = family.collate(processor, records)
    with torch.no_grad():
        return model.eval()(**batch).logits  # (B, T, V)


def _records(world):
    recs = sorted(world.records("forget10"), key=lambda r: r.id)
    return [next(r for r in recs if str(r.modality) == m) for m in ("text", "image", "joint")]


def _finetune(parent, world, out, **train):
    cfg = from_dict(BenchConfig, {"finetune": {"phase": {"data": [{"config": "full"}],
                                                         "train": deep_merge(FINETUNE, train)}}})
    return stages.finetune(cfg, world, parent, "full", out)


@pytest.fixture(scope="module")
def adapter_target(tiny_llava_dir, tiny_world, tmp_path_factory) -> Path:
    """A target run whose model/ is a LoRA adapter on the tiny-llava test checkpoint."""
    return _finetune(tiny_llava_dir, tiny_world, tmp_path_factory.mktemp("adapter") / "target")


def test_finetune_writes_the_adapter_only_and_loads_back_as_trained(tiny_llava_dir, tiny_world, tmp_path, captured):
    out = _finetune(tiny_llava_dir, tiny_world, tmp_path / "target")
    files = sorted(p.name for p in (out / "model").iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files and ADAPTER_MARKER in files
    assert not [f for f in files if f.endswith(".safetensors") and f != "adapter_model.safetensors"]  # no full weights
    assert "tokenizer.json" in files and "chat_template.jinja" in files
    marker = json.loads((out / "model" / ADAPTER_MARKER).read_text())
    assert marker["parent"]["path"] == str(tiny_llava_dir) and marker["family"] == "tiny-llava"
    assert marker["parent"]["model_fingerprint"] == model_fingerprint(tiny_llava_dir)
    size = sum(p.stat().st_size for p in (out / "model").glob("*.safetensors"))
    assert size < (tiny_llava_dir / "model.safetensors").stat().st_size

    loaded = load_model(out / "model")
    assert loaded.name == "tiny-llava" and detect_family(out / "model") == "tiny-llava"
    assert not hasattr(loaded.model, "peft_config")
    (in_memory,) = captured
    recs = _records(tiny_world)
    torch.testing.assert_close(_logits(loaded.model, loaded.family, loaded.processor, recs),
                               _logits(in_memory, loaded.family, loaded.processor, recs), rtol=0, atol=1e-5)
    # in bf16 (as evaluated on a GPU): the weights of the merged fp32 checkpoint save_merged: true writes
    loaded.family.save(in_memory, loaded.processor, tmp_path / "merged")
    half, merged = load_model(out / "model", dtype=torch.bfloat16), load_model(tmp_path / "merged", dtype=torch.bfloat16)
    for (n, p), (_, q) in zip(half.model.named_parameters(), merged.model.named_parameters()):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q), n
    base = load_model(tiny_llava_dir)
    assert not torch.allclose(_logits(base.model, base.family, base.processor, recs[:1]),
                              _logits(loaded.model, base.family, base.processor, recs[:1]))  # training did something
    run = json.loads((out / "run.json").read_text())
    assert run["model_fingerprint"] == model_fingerprint(out / "model") != run["parent"]["model_fingerprint"]


def test_unlearned_adapter_on_an_adapter_target_loads_back_as_trained(adapter_target, tiny_world, tmp_path, captured):
    from clearbench.unlearn import unlearn

    cfg = from_dict(BenchConfig, {"unlearn": {"method": "grad_diff", "forget": "forget10", "warmup_epochs": 0,
                                              "train": UNLEARN}})
    out = unlearn(cfg, tiny_world, adapter_target, tmp_path / "gd")
    assert not [p for p in (out / "model").glob("*.safetensors") if p.name != "adapter_model.safetensors"]
    marker = json.loads((out / "model" / ADAPTER_MARKER).read_text())
    target_fp = model_fingerprint(adapter_target / "model")
    assert [c["model_fingerprint"] for c in marker["chain"]] == [
        target_fp, json.loads((adapter_target / "model" / ADAPTER_MARKER).read_text())["parent"]["model_fingerprint"]]
    assert [c["adapter"] for c in marker["chain"]] == [True, False]
    run = json.loads((out / "run.json").read_text())
    assert run["parent"]["model_fingerprint"] == target_fp and run["model_fingerprint"] == model_fingerprint(out / "model")

    loaded = load_model(out / "model")
    (in_memory,) = captured
    recs = _records(tiny_world)
    after = _logits(loaded.model, loaded.family, loaded.processor, recs)
    torch.testing.assert_close(after, _logits(in_memory, loaded.family, loaded.processor, recs), rtol=0, atol=1e-5)
    target = load_model(adapter_target / "model")
    assert not torch.allclose(after, _logits(target.model, target.family, target.processor, recs))


def test_adapter_only_phases_chain_and_resume(tiny_llava_dir, tiny_world, tmp_path, captured):
    train = deep_merge(FINETUNE, {"lora": {"target_modules": "language"}})
    cfg = from_dict(BenchConfig, {"finetune": {"phases": [
        {"name": "faces", "data": [{"config": "full", "tasks": ["naming"]}], "train": train},
        {"name": "facts", "data": [{"config": "full", "tasks": ["qa"], "modalities": ["text"]}], "train": train}]}})
    out = stages.finetune(cfg, tiny_world, tiny_llava_dir, "full", tmp_path / "a")
    faces, facts = out / "train" / "0-faces" / "model", out / "train" / "1-facts" / "model"
    assert adapter.resolve_parent(faces) == str(tiny_llava_dir)
    assert adapter.resolve_parent(facts) == adapter.resolve_parent(out / "model") == str(faces)
    recs = _records(tiny_world)
    tiny = load_model(tiny_llava_dir)
    want = _logits(captured[-1], tiny.family, tiny.processor, recs)  # what the last phase ended with
    for model_dir in (facts, out / "model"):
        got = load_model(model_dir)
        torch.testing.assert_close(_logits(got.model, got.family, got.processor, recs), want, rtol=0, atol=1e-5)
    # killed after the last phase finished, before the stage's model/: resume copies it (parent path re-anchored)
    cut = tmp_path / "b"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "model")
    (cut / "run.json").unlink()
    stages.finetune(cfg, tiny_world, tiny_llava_dir, "full", cut, resume=True)
    assert adapter.resolve_parent(cut / "model") == str(cut / "train" / "0-faces" / "model")
    assert model_fingerprint(cut / "model") == model_fingerprint(out / "model")


def test_save_merged_true_still_saves_full_weights(adapter_target, tiny_world, tmp_path):
    """A merged LoRA finetune on an adapter parent is a plain checkpoint, standalone."""
    out = _finetune(adapter_target, tiny_world, tmp_path / "merged", save_merged=True)
    assert (out / "model" / "model.safetensors").is_file() and not adapter.is_adapter_dir(out / "model")
    assert load_model(out / "model").name == "tiny-llava"


def _bump(path: Path, key_has: str, delta: float) -> None:
    """Change one tensor of a safetensors file (written to a temp file, then renamed over it)."""
    weights = {k: v.clone() for k, v in load_file(str(path)).items()}
    key = next(k for k in weights if key_has in k)
    weights[key] += delta
    save_file(weights, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)


def _adapter_on(parent: Path, out: Path, seed: int = 0, scale: float = 0.0) -> Path:
    """A LoRA adapter (projector frozen, so only LoRA weights) saved on ``parent``; B = scale * randn."""
    loaded = load_model(parent)
    cfg = TrainConfig(lora=LoraConfig(**LORA), train_projector=False)
    torch.manual_seed(seed)
    model = apply_lora(loaded.model, cfg.lora, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(scale * torch.randn_like(p))
    _adapter_on.last = model
    return adapter.save(model, loaded.processor, out, parent, loaded.name)


@pytest.mark.parametrize("family", ["tiny-llava", "llava", "qwen2-vl"])
def test_every_family_loads_an_adapter_as_its_merged_checkpoint(family, family_checkpoints, tmp_path):
    from model_fixtures import sample_records

    parent = family_checkpoints[family]
    ad = _adapter_on(parent, tmp_path / "adapter", scale=0.1)
    peft_model = _adapter_on.last  # the model it was saved from: merge it and save the merged checkpoint
    loaded = load_model(parent)
    loaded.family.save(stages.finish_model(peft_model), loaded.processor, tmp_path / "merged")
    for dtype in (torch.float32, torch.bfloat16):
        a, m = load_model(ad, dtype=dtype), load_model(tmp_path / "merged", dtype=dtype)
        assert a.name == family
        tensors = [dict(x.model.named_parameters()) | dict(x.model.named_buffers()) for x in (a, m)]
        assert tensors[0].keys() == tensors[1].keys()
        for n, p in tensors[0].items():  # the weights and the computed buffers (rotary inv_freq) alike
            q = tensors[1][n]
            assert p.dtype == q.dtype and torch.equal(p, q), n
        assert a.model.dtype == m.model.dtype == dtype
        recs = sample_records()
        torch.testing.assert_close(_logits(a.model, a.family, a.processor, recs),
                                   _logits(m.model, m.family, m.processor, recs), rtol=0, atol=1e-5)


def test_fingerprint_covers_the_adapter_and_the_parent(tiny_llava_dir, tmp_path):
    from model_fixtures import build_tiny_default

    other_base = build_tiny_default(tmp_path / "other-base", seed=1)
    a = _adapter_on(tiny_llava_dir, tmp_path / "a")
    b = _adapter_on(other_base, tmp_path / "b")  # the same adapter weights on another parent
    assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()
    fa, fb = model_fingerprint(a), model_fingerprint(b)
    assert fa != fb and fa != model_fingerprint(tiny_llava_dir)
    assert model_fingerprint(a) == fa  # stable
    _bump(a / "adapter_model.safetensors", "lora_B", 1e-3)
    assert model_fingerprint(a) not in (fa, fb)  # the adapter changed
    fa = model_fingerprint(a)
    tok = json.loads((a / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<PAD>"
    (a / "tokenizer.json").write_text(json.dumps(tok))  # the adapter dir's own tokenizer is what loads
    assert model_fingerprint(a) != fa


def test_fingerprint_covers_weights_config_and_tokenizer_files(tiny_llava_dir, tmp_path):
    """A swapped tokenizer, processor or config is another model (it changed 64 aggregates under one
    fingerprint when only *.safetensors were hashed); files a load never reads are not."""
    base = model_fingerprint(tiny_llava_dir)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "processor_config.json", "chat_template.jinja", "clearbench_model.json"):
        copy = tmp_path / name
        shutil.copytree(tiny_llava_dir, copy)
        with open(copy / name, "ab") as f:
            f.write(b" ")  # one byte more: still loads (JSON allows trailing whitespace), another file
        assert model_fingerprint(copy) != base, name
    same = tmp_path / "readme"
    shutil.copytree(tiny_llava_dir, same)
    (same / "README.md").write_text("notes")
    assert model_fingerprint(same) == base


def test_missing_moved_or_changed_parent_is_a_clear_error(tiny_llava_dir, tmp_path):
    study = tmp_path / "study"
    base = study / "base"
    shutil.copytree(tiny_llava_dir, base)
    ad = _adapter_on(base, study / "runs" / "target" / "model", scale=0.1)
    recs_ok = load_model(ad)

    moved = tmp_path / "elsewhere"
    shutil.move(str(base), str(moved))
    with pytest.raises(adapter.ParentModelError, match="missing") as err:
        load_model(ad)
    assert str(ad) in str(err.value) and str(base) in str(err.value)
    assert model_fingerprint(ad)  # provenance needs no parent

    shutil.move(str(moved), str(base))
    _bump(base / "model.safetensors", "", 1.0)
    with pytest.raises(adapter.ParentModelError, match="fingerprint") as err:
        load_model(ad)
    assert str(ad) in str(err.value) and str(base) in str(err.value)

    # the study moved as a whole (adapter and parent together): found again through the relative path
    shutil.copytree(tiny_llava_dir, base, dirs_exist_ok=True)
    shutil.move(str(study), str(tmp_path / "study2"))
    again = load_model(tmp_path / "study2" / "runs" / "target" / "model")
    for (n, p), (_, q) in zip(recs_ok.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n


def test_pretrain_refuses_adapter_only_phases(tiny_world, tmp_path):
    cfg = from_dict(BenchConfig, {"pretrain": {"phases": [{"train": {"lora": {"enabled": True}, "save_merged": False}}]}})
    with pytest.raises(ValueError, match="save_merged: true"):
        stages.pretrain(cfg, tiny_world, tmp_path / "base")


def test_evaluate_runs_on_an_adapter_dir(adapter_target, tiny_world, tmp_path):
    from eval.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(forget="forget10", batch_size=8, max_new_tokens=4, max_per_config=2)
    result = evaluate(adapter_target, tiny_world, tmp_path / "target.json", gold="self", cfg=cfg, progress=False)
    prov = result["provenance"]
    assert prov["family"] == "tiny-llava"
    assert prov["model_fingerprint"] == json.loads((adapter_target / "run.json").read_text())["model_fingerprint"]
    assert result["examples"]
