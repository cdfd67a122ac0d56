"""Model families: loading, family detection, training steps, generation, build determinism, errors."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from clearbench.models import FAMILIES, Family, Loaded, detect_family, generate, get_family, load_model
from clearbench.models.common import MARKER_FILE
from model_fixtures import build_tiny_default, sample_records

FAMILY_NAMES = list(FAMILIES)


@pytest.fixture(params=FAMILY_NAMES)
def fam(request, loaded_families) -> Loaded:
    return loaded_families[request.param]


def test_registry_holds_one_spec_per_family():
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name
    with pytest.raises(ValueError, match="Did you mean 'llava'"):
        get_family("lava")
    # tiny-llava is a real LLaVA: the same parts, detected by its marker instead of its model_type
    tiny, llava = FAMILIES["tiny-llava"], FAMILIES["llava"]
    assert tiny.marker and not llava.marker
    assert (tiny.vision, tiny.projector, tiny.language, tiny.layers) == (llava.vision, llava.projector,
                                                                        llava.language, llava.layers)


def test_load_model_detects_each_family(family_checkpoints, loaded_families):
    for name, path in family_checkpoints.items():
        assert detect_family(path) == name
        loaded = loaded_families[name]
        assert loaded.family is FAMILIES[name] and loaded.name == name
        assert next(loaded.model.parameters()).dtype == torch.float32  # fp32 default on CPU
        assert not loaded.model.training


def test_forward_loss_finite_and_backward_step_changes_parameters(fam):
    model = copy.deepcopy(fam.model).train()
    batch = fam.collate(sample_records())
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).zero_grad()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any("language_model" in n for n in changed)
    assert any("vision" in n or "visual" in n for n in changed)  # the image rows reach the vision tower
    assert model(**batch).loss.item() < loss.item()


def test_generation_batched_equals_one_by_one(fam):
    records = sample_records()
    batched = generate(fam, records, max_new_tokens=6, batch_size=4)
    single = generate(fam, records, max_new_tokens=6, batch_size=1)
    assert len(batched) == len(records) and all(isinstance(s, str) for s in batched)
    assert batched == single


def test_language_layers_plain_and_peft(fam):
    import peft

    layers = fam.family.language_layers(fam.model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 2
    model = peft.get_peft_model(
        copy.deepcopy(fam.model), peft.LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    )
    wrapped = fam.family.language_layers(model)
    assert len(wrapped) == 2
    seen = []
    handle = wrapped[-1].register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(**fam.collate(sample_records()[:2]))
    handle.remove()
    assert seen and seen[0].shape[-1] == fam.model.config.text_config.hidden_size


def test_tiny_build_is_deterministic(tmp_path, tiny_llava_dir):
    again = build_tiny_default(tmp_path / "again", seed=0)
    other = build_tiny_default(tmp_path / "other", seed=1)
    assert (again / "tokenizer.json").read_bytes() == (tiny_llava_dir / "tokenizer.json").read_bytes()
    a, b = load_file(again / "model.safetensors"), load_file(tiny_llava_dir / "model.safetensors")
    c = load_file(other / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    marker = json.loads((again / MARKER_FILE).read_text())
    assert marker["clearbench_family"] == "tiny-llava" and marker["tiny_config"]["seed"] == 0


def test_tiny_default_shape_follows_feasibility(loaded_families):
    model = loaded_families["tiny-llava"].model
    cfg = model.config
    assert cfg.vision_feature_layer == -1 and cfg.vision_feature_select_strategy == "default"
    assert cfg.text_config.initializer_range == pytest.approx(128 ** -0.5)
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()  # untied
    assert 0.7e6 < sum(p.numel() for p in model.parameters()) < 1.3e6
    tok = loaded_families["tiny-llava"].processor.tokenizer
    text = "Ünïcödé ✓ text the corpus never saw"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: any text encodes


def test_save_load_round_trip(fam, tmp_path):
    out = fam.family.save(fam.model, fam.processor, tmp_path / "ckpt")
    assert not list(out.glob("*.bin")) and list(out.glob("*.safetensors"))
    again = load_model(out, family=fam.name)
    batch = fam.collate(sample_records())
    with torch.no_grad():
        assert torch.allclose(fam.model(**batch).logits, again.model(**batch).logits)
    assert again.processor.tokenizer.get_vocab() == fam.processor.tokenizer.get_vocab()
    assert again.processor.chat_template == fam.processor.chat_template
    assert [p for p in tmp_path.iterdir()] == [out]  # atomic write leaves no temp dir behind


def test_wrong_family_and_missing_files_are_errors(family_checkpoints, tmp_path):
    llava_dir = family_checkpoints["llava"]
    with pytest.raises(ValueError, match=r"asked for model family 'qwen2-vl' but the checkpoint is 'llava'") as e:
        load_model(llava_dir, family="qwen2-vl")
    assert str(llava_dir) in str(e.value)
    with pytest.raises(ValueError, match="checkpoint is 'tiny-llava'"):
        load_model(family_checkpoints["tiny-llava"], family="llava")
    with pytest.raises(ValueError, match="Unknown model family 'qwen'"):
        load_model(llava_dir, family="qwen")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(empty)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(llava_dir / "config.json", partial / "config.json")
    with pytest.raises(ValueError, match=r"missing \*\.safetensors weights, tokenizer files. Found: \['config.json'\]"):
        load_model(partial)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert' is not a supported family"):
        load_model(odd)
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        load_model(tmp_path / "nowhere")


def test_tokenizer_not_matching_model_is_an_error(family_checkpoints, tmp_path):
    # vocab mismatch: a tokenizer with more tokens than the model has embedding rows
    src = family_checkpoints["tiny-llava"]
    mixed = tmp_path / "mixed"
    shutil.copytree(src, mixed)
    tiny_vocab = json.loads((src / "config.json").read_text())["text_config"]["vocab_size"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens([f"extra{i}" for i in range(tiny_vocab)])
    tok.save_pretrained(mixed)
    with pytest.raises(ValueError, match="tokenizer has .* tokens but the model's embedding has"):
        load_model(mixed)
    # image token mismatch: the config expects a different image token id than the processor's
    bad = tmp_path / "bad_image_id"
    shutil.copytree(src, bad)
    config = json.loads((bad / "config.json").read_text())
    config["image_token_index"] = config.get("image_token_index", config.get("image_token_id")) + 1
    config.pop("image_token_id", None)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image token '<image>' has id"):
        load_model(bad)


def test_every_parameter_of_each_family_lies_in_its_parts(fam):
    parts = {n: fam.family.part_of(n) for n, _ in fam.model.named_parameters()}
    assert set(parts.values()) == {"vision", "projector", "language"}
    tower = "visual" if fam.name == "qwen2-vl" else "vision_tower"
    projector = "visual.merger" if fam.name == "qwen2-vl" else "multi_modal_projector"
    for name, part in parts.items():
        want = "projector" if f".{projector}." in name else "vision" if f".{tower}." in name else "language"
        assert part == want, name
    assert fam.family.part_of(f"base_model.model.{next(iter(parts))}") == parts[next(iter(parts))]  # under peft
    with pytest.raises(ValueError, match=r"'extra.weight' lies in no part of model family"):
        fam.family.part_of("extra.weight")


@pytest.fixture
def fake_family(monkeypatch):
    import fake_family

    monkeypatch.setitem(FAMILIES, fake_family.FAMILY.name, fake_family.FAMILY)  # the one registry line
    return fake_family


def test_a_new_family_is_one_module_and_one_registry_line(fake_family, tmp_path):
    """Parts, freezing, LoRA targets, the layer lookup and detection of a family whose vision tower is
    ``vision_model`` (the old hard-coded prefixes classed it as language: train_vision_tower=False froze nothing)."""
    from clearbench.config import LoraConfig, TrainConfig
    from clearbench.lora import apply_lora, set_trainable
    from clearbench.losses import language_layers
    from clearbench.models import family_of

    model = fake_family.build_model()
    assert family_of(model) is fake_family.FAMILY
    part = {n: fake_family.FAMILY.part_of(n) for n, _ in model.named_parameters()}
    assert {n.split(".")[1] for n, p in part.items() if p == "vision"} == {"vision_model"}
    assert {n.split(".")[1] for n, p in part.items() if p == "projector"} == {"connector"}

    set_trainable(model, TrainConfig(train_vision_tower=False))
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {n for n in part if part[n] == "vision"}

    cfg = TrainConfig(lora=LoraConfig(enabled=True, r=2, alpha=4), train_vision_tower=False)
    peft_model = apply_lora(copy.deepcopy(model), cfg.lora, cfg)
    set_trainable(peft_model, cfg)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".text_model.layers." in n for n in lora)  # not the SigLIP q/k/v_proj
    assert {n for n in trainable if "lora_" not in n} and all(
        ".connector.modules_to_save." in n for n in trainable if "lora_" not in n)  # the projector, a saved copy

    layers = language_layers(peft_model)
    assert layers is peft_model.get_base_model().model.text_model.layers and len(layers) == 2

    model.config.save_pretrained(tmp_path)
    assert detect_family(tmp_path) == "fake-idefics3"
    model.add_module("extra", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'extra.weight' lies in no part of model family 'fake-idefics3'"):
        set_trainable(model, TrainConfig())


def test_missing_or_unexpected_weights_fail_the_load(family_checkpoints, tmp_path):
    """transformers would fill a missing weight with random values and ignore an unexpected one."""
    src = family_checkpoints["tiny-llava"]
    weights = load_file(src / "model.safetensors")
    head = next(k for k in weights if k.endswith("lm_head.weight"))  # saved under the checkpoint's legacy name
    for case, edit in {"missing": lambda w: w.pop(head),
                       "unexpected": lambda w: w.__setitem__("extra.weight", torch.zeros(2))}.items():
        bad = tmp_path / case
        shutil.copytree(src, bad)
        changed = dict(weights)
        edit(changed)
        save_file(changed, bad / "model.safetensors", metadata={"format": "pt"})
        key = "lm_head.weight" if case == "missing" else "extra.weight"
        with pytest.raises(ValueError, match=rf"weights do not match LlavaForConditionalGeneration .*1 {case} \({key}\)"):
            load_model(bad)


def test_a_marker_on_another_familys_config_is_an_error(family_checkpoints, tmp_path):
    """The tiny marker on a Qwen2-VL checkpoint loaded it as a LLaVA with a random lm_head."""
    bad = tmp_path / "bad"
    shutil.copytree(family_checkpoints["qwen2-vl"], bad)
    shutil.copy(family_checkpoints["tiny-llava"] / MARKER_FILE, bad / MARKER_FILE)
    with pytest.raises(ValueError, match="names model family 'tiny-llava' .* config.json has model_type 'qwen2_vl'"):
        load_model(bad)
