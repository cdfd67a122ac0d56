"""Multi-phase finetuning (finetune.phases): each phase trains on its own mix, in order, and resumes."""
import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clearbench.config import BenchConfig, from_dict, to_dict
from clearbench.cost import check_cost


def _phases_cfg():
    train = {"lr": 3e-3, "max_steps": 3, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 1, "log_every": 1}
    return from_dict(BenchConfig, {"finetune": {"phases": [
        {"name": "faces", "data": [{"config": "full", "tasks": ["naming"]}], "train": train},
        {"name": "facts", "data": [{"config": "full", "tasks": ["qa"], "modalities": ["text"]}], "train": train},
    ]}})


def test_finetune_phases_run_in_order_on_their_own_data(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.stages import finetune

    out = finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "retain90", tmp_path / "gold")
    run = json.loads((out / "run.json").read_text())
    assert [p["phase"] for p in run["phases"]] == ["faces", "facts"]
    # "full" in each mix stands for the finetuned split: retain90 naming, then retain90 text QA
    assert run["phases"][0]["records"] == len(tiny_world.records("retain90", tasks=["naming"]))
    assert run["phases"][1]["records"] == len(tiny_world.records("retain90", tasks=["qa"], modalities=["text"]))
    assert run["train"]["steps"] == 6 and run["records"] == sum(p["records"] for p in run["phases"])
    for i, name in enumerate(["faces", "facts"]):
        log = (out / "train" / f"{i}-{name}" / "log.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in log] == [1, 2, 3]
    w0 = load_file(str(tiny_llava_dir / "model.safetensors"))
    w1 = load_file(str(out / "train" / "0-faces" / "model" / "model.safetensors"))
    w2 = load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0) and any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_interrupted_phases_resume_without_redoing_finished_phases(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.stages import finetune

    full = finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "full", tmp_path / "a")
    # the same run killed during its second phase: phase 0 finished, phase 1 and the final model not
    cut = tmp_path / "b"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "train" / "1-facts")
    shutil.rmtree(cut / "model")
    (cut / "run.json").unlink()
    first_log = (cut / "train" / "0-faces" / "log.jsonl").read_text()
    finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "full", cut, resume=True)
    assert (cut / "train" / "0-faces" / "log.jsonl").read_text() == first_log  # not trained again
    costs = [json.loads((d / "run.json").read_text())["cost"] for d in (full, cut)]
    assert costs[0]["complete"] and costs[0]["optimizer_steps"] == 6 and costs[0]["tokens_backward"] > 0
    assert not costs[1]["complete"] and costs[1]["optimizer_steps"] == 3  # the resumed run did the second phase only
    a, b = load_file(str(full / "model" / "model.safetensors")), load_file(str(cut / "model" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_finetune_resume_refuses_changed_settings_and_names_the_first(tiny_llava_dir, tiny_world, tmp_path):
    """Weights trained with one lr must not be continued with another (unlearn --resume refuses the same)."""
    from clearbench.stages import finetune

    cut = tmp_path / "cut"
    finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "full", cut)
    shutil.rmtree(cut / "train" / "1-facts")
    (cut / "run.json").unlink()
    changed = from_dict(BenchConfig, {"finetune": {"phases": [dict(p, train=dict(p["train"], lr=4e-3)) for p in
                                                              to_dict(_phases_cfg().finetune)["phases"]]}})
    with pytest.raises(ValueError, match=r"--resume: finetune.phases \(.*'lr': 0.003.*-> .*'lr': 0.004.*\) differs"):
        finetune(changed, tiny_world, tiny_llava_dir, "full", cut, resume=True)
    # a run interrupted before a later suite added a field (here train.report_to) at its off-default resumes
    saved = json.loads((cut / "config.json").read_text())
    for phase in saved["finetune"]["phases"]:
        del phase["train"]["report_to"]
    (cut / "config.json").write_text(json.dumps(saved))
    other_section = from_dict(BenchConfig, {**to_dict(_phases_cfg()), "study": {"methods": ["npo"]}})
    out = finetune(other_section, tiny_world, tiny_llava_dir, "full", cut, resume=True)  # the study section: no matter
    assert (out / "run.json").exists()
    with pytest.raises(ValueError, match="Unknown finetune split 'retain80'. Did you mean 'retain90'"):
        finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "retain80", tmp_path / "g")
    assert not (tmp_path / "g").exists()


# ------------------------------------------------------------------ vision-tower attribute pretraining
def test_attribute_phrases_parse_face_descriptions():
    from clearbench.vision_pretrain import attribute_phrases

    assert attribute_phrases("a person with short brown hair, fair skin, blue eyes and a cap") == [
        "short brown hair", "fair skin", "blue eyes", "a cap"]
    assert attribute_phrases("a person with a bald head, deep brown skin and grey eyes.") == [
        "a bald head", "deep brown skin", "grey eyes"]


def test_vision_attributes_phase_trains_the_vision_tower_only(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.models import load_model
    from clearbench.stages import select_records
    from clearbench.config import DataMix, TrainConfig
    from clearbench.vision_pretrain import train_vision_attributes

    loaded = load_model(tiny_llava_dir)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    records = select_records(tiny_world, [DataMix(config="pretrain", tasks=["caption"])])
    assert len(records) == 40  # the tiny world's anonymous faces
    cfg = TrainConfig(lr=3e-3, max_steps=30, batch_size=16, warmup_steps=2, log_every=1)
    result = train_vision_attributes(loaded.model, loaded.processor, records, cfg, tmp_path / "vis")
    losses = [json.loads(x)["loss"] for x in (tmp_path / "vis" / "log.jsonl").read_text().splitlines()]
    assert result.steps == 30 and len(losses) == 30
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns the attributes
    changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("vision_tower" in n for n in changed)  # projector and LM untouched
    assert all(p.requires_grad for p in loaded.model.parameters())  # switches restored


def test_vision_attributes_rejects_records_that_are_not_face_descriptions(tiny_llava_dir, tiny_world, tmp_path):
    import pytest

    from clearbench.config import TrainConfig
    from clearbench.models import load_model
    from clearbench.vision_pretrain import train_vision_attributes

    loaded = load_model(tiny_llava_dir)
    text = tiny_world.records("full", tasks=["qa"], modalities=["text"])[:4]
    with pytest.raises(ValueError, match="needs image records"):
        train_vision_attributes(loaded.model, loaded.processor, text, TrainConfig(max_steps=1), tmp_path)
    naming = tiny_world.records("full", tasks=["naming"])[:4]
    with pytest.raises(ValueError, match="not an attribute description"):
        train_vision_attributes(loaded.model, loaded.processor, naming, TrainConfig(max_steps=1), tmp_path)
    cfg = from_dict(BenchConfig, {"finetune": {"phases": [{"name": "x", "objective": "vision_attributes"}]}})
    from clearbench.stages import finetune

    with pytest.raises(ValueError, match="is for pretrain phases"):
        finetune(cfg, tiny_world, tiny_llava_dir, "full", tmp_path / "ft")


def test_answer_targets_classify_within_each_question():
    from clearbench.types import Modality, Record, Task
    from clearbench.vision_pretrain import answer_targets

    img = Image.new("RGB", (8, 8))
    rec = lambda i, q, a: Record(id=f"w{i}", author_id="w", split="t", modality=Modality.JOINT, task=Task.VQA,
                                 question=q, answer=a, image=img)
    records = [rec(0, "What shape?", "star"), rec(1, "What shape?", "circle"), rec(2, "How many?", "two"),
               rec(3, "How many?", "one"), rec(4, "What shape?", "star")]
    classes, y, mask = answer_targets(records)
    assert classes == [("How many?", "one"), ("How many?", "two"), ("What shape?", "circle"), ("What shape?", "star")]
    assert y.tolist() == [3, 2, 1, 0, 3]
    assert mask.tolist()[0] == [False, False, True, True] and mask.tolist()[2] == [True, True, False, False]
    with pytest.raises(ValueError, match="single answer"):
        answer_targets([rec(0, "What shape?", "star"), rec(1, "How many?", "two")])


def test_vision_answers_phase_learns_the_world_vqa_with_the_tower_only(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.config import DataMix, TrainConfig
    from clearbench.models import load_model
    from clearbench.stages import select_records
    from clearbench.vision_pretrain import train_vision_answers

    loaded = load_model(tiny_llava_dir)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    records = select_records(tiny_world, [DataMix(config="pretrain", tasks=["vqa"])])
    assert len(records) == 60
    cfg = TrainConfig(lr=3e-3, max_steps=40, batch_size=16, warmup_steps=2, log_every=1)
    result = train_vision_answers(loaded.model, loaded.processor, records, cfg, tmp_path / "vqa")
    losses = [json.loads(x)["loss"] for x in (tmp_path / "vqa" / "log.jsonl").read_text().splitlines()]
    assert result.steps == 40 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("vision_tower" in n for n in changed)
    with pytest.raises(ValueError, match="needs image records"):
        train_vision_answers(loaded.model, loaded.processor, tiny_world.records("full", tasks=["qa"], modalities=["text"])[:4],
                             TrainConfig(max_steps=1), tmp_path / "bad")


def test_vision_multitask_learns_face_attributes_and_vqa_answers_together(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.config import DataMix, TrainConfig
    from clearbench.models import load_model
    from clearbench.stages import select_records
    from clearbench.vision_pretrain import train_vision_multitask

    loaded = load_model(tiny_llava_dir)
    records = select_records(tiny_world, [DataMix(config="pretrain", tasks=["caption", "vqa"])])
    assert len(records) == 100  # 40 anonymous faces + 60 VQA
    cfg = TrainConfig(lr=3e-3, max_steps=40, batch_size=16, warmup_steps=2, log_every=1)
    train_vision_multitask(loaded.model, loaded.processor, records, cfg, tmp_path / "mt")
    losses = [json.loads(x)["loss"] for x in (tmp_path / "mt" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    with pytest.raises(ValueError, match="caption and 0 other"):
        train_vision_multitask(loaded.model, loaded.processor, [r for r in records if r.task.value == "caption"],
                               TrainConfig(max_steps=1), tmp_path / "bad")


def test_pretrain_runs_a_vision_attributes_phase_before_the_lm_phases(tiny_world, tmp_path):
    from clearbench.config import load_config
    from clearbench.stages import pretrain

    cfg = load_config(BenchConfig, "tiny-smoke", [
        "pretrain.phases=[{name: faces, objective: vision_attributes, data: [{config: pretrain, tasks: [caption]}],"
        " train: {max_steps: 3, batch_size: 8}},"
        " {name: vqa_tower, objective: vision_multitask, data: [{config: pretrain, tasks: [caption, vqa]}],"
        " train: {max_steps: 3, batch_size: 8}}, {name: instruct, data: [{config: pretrain}],"
        " train: {max_steps: 2, batch_size: 8, micro_batch_size: 8}}]"])
    out = pretrain(cfg, tiny_world, tmp_path / "base")
    run = json.loads((out / "run.json").read_text())
    assert [(p["phase"], p["steps"]) for p in run["phases"]] == [("faces", 3), ("vqa_tower", 3), ("instruct", 2)]
    # its cost: every phase's steps; the vision phases' images (batch 8) and the LM phase's tokens are counted
    assert not check_cost(run["cost"]) and run["cost"]["complete"] and run["cost"]["optimizer_steps"] == 8
    assert run["cost"]["images"] >= 6 * 8 and run["cost"]["tokens_backward"] > 0
    v0, v1, v2 = (load_file(str(out / "phases" / d / "model" / "model.safetensors"))
                  for d in ("0-faces", "1-vqa_tower", "2-instruct"))
    # every non-LM objective the config accepts runs its own trainer
    import typing
    from clearbench.config import PhaseConfig
    from clearbench.vision_pretrain import TRAINERS
    objectives = [o for o in typing.get_args(typing.get_type_hints(PhaseConfig)["objective"]) if o != "lm"]
    assert objectives and {o: TRAINERS[o].__name__ for o in objectives} == {o: f"train_{o}" for o in objectives}
    # the multitask phase (the tiny preset's second phase) trains the vision tower only
    changed = {k for k in v0 if not torch.equal(v0[k], v1[k])}
    assert changed and all("vision_tower" in k for k in changed)
    assert any(not torch.equal(v1[k], v2[k]) for k in v1 if "language_model" in k)
