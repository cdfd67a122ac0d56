"""collate: the label-masking, padding and image-row contract, for every model family."""
from __future__ import annotations

import pytest
import torch

from clearbench.models import FAMILIES
from clearbench.types import Modality, Record, Task
from model_fixtures import sample_records

FAMILY_NAMES = list(FAMILIES)
# Image tokens one 64 px image expands to: tiny 64/16 -> 16; llava fixture 56/14 -> 16; qwen 56/14 -> 4x4 / 2x2.
IMAGE_TOKENS = {"tiny-llava": 16, "llava": 16, "qwen2-vl": 4}


@pytest.fixture(params=FAMILY_NAMES)
def fam(request, loaded_families):
    return loaded_families[request.param]


def supervised_text(loaded, batch, i):
    labels = batch["labels"][i]
    return loaded.processor.tokenizer.decode(labels[labels != -100])


def test_labels_are_exactly_answer_plus_end_token(fam):
    records = sample_records()
    batch = fam.collate(records)
    end = fam.family.end_token(fam.processor)
    for i, r in enumerate(records):
        assert supervised_text(fam, batch, i).strip() == r.answer + end
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        sup = labels != -100
        # supervised positions are one contiguous run that ends with the end token
        pos = sup.nonzero().flatten()
        assert (pos == torch.arange(pos[0], pos[-1] + 1)).all()
        assert labels[pos[-1]] == fam.processor.tokenizer.convert_tokens_to_ids(end)
        assert torch.equal(labels[sup], ids[sup])
        assert not (sup & (batch["attention_mask"][i] == 0)).any()  # padding never supervised
        assert not (sup & (ids == fam.model.config.image_token_id)).any()  # image tokens never supervised


def test_prompt_length_counts_expanded_image_tokens(fam):
    records = sample_records()
    batch = fam.collate(records)
    image_id = fam.model.config.image_token_id
    for i, r in enumerate(records):
        n_image = int((batch["input_ids"][i] == image_id).sum())
        assert n_image == (IMAGE_TOKENS[fam.name] if r.image is not None else 0)
        # everything before the answer is masked, including the whole expanded image span
        first_sup = int((batch["labels"][i] != -100).nonzero()[0])
        if n_image:
            last_image = int((batch["input_ids"][i] == image_id).nonzero()[-1])
            assert last_image < first_sup
        assert (batch["labels"][i][:first_sup] == -100).all()


def test_answers_override_record_answers(fam):
    records = sample_records()
    alt = [r.answer.upper() + " Indeed." for r in records]
    base, over = fam.collate(records), fam.collate(records, answers=alt)
    end = fam.family.end_token(fam.processor)
    for i in range(len(records)):
        assert supervised_text(fam, over, i).strip() == alt[i] + end
        n_prompt = int((base["labels"][i] != -100).nonzero()[0])
        assert torch.equal(over["input_ids"][i][:n_prompt], base["input_ids"][i][:n_prompt])
    with pytest.raises(ValueError, match="answers has 1 entries for 4 records"):
        fam.collate(records, answers=["x"])


def test_right_padding_for_training_left_for_generation(fam):
    records = sample_records()
    train, gen = fam.collate(records), fam.collate(records, for_generation=True)
    assert "labels" not in gen
    pad = fam.processor.tokenizer.pad_token_id
    for i in range(len(records)):
        m_train, m_gen = train["attention_mask"][i], gen["attention_mask"][i]
        n, k = int(m_train.sum()), int(m_gen.sum())
        assert m_train[:n].all() and not m_train[n:].any()  # 1...1 0...0
        assert m_gen[-k:].all() and not m_gen[:-k].any()  # 0...0 1...1
        assert (train["input_ids"][i][n:] == pad).all() and (gen["input_ids"][i][:-k] == pad).all()
        # the generation prompt is exactly the masked prefix of the training row
        n_prompt = int((train["labels"][i] != -100).nonzero()[0])
        assert k == n_prompt
        assert torch.equal(gen["input_ids"][i][-k:], train["input_ids"][i][:n_prompt])
        if "mm_token_type_ids" in gen:
            assert torch.equal(gen["mm_token_type_ids"][i][-k:], train["mm_token_type_ids"][i][:n_prompt])


def test_mixed_batch_passes_pixels_only_for_image_rows_in_order(fam):
    records = sample_records()  # text, image, joint, text
    batch = fam.collate(records)
    image_rows = [r for r in records if r.image is not None]
    singles = [fam.collate([r]) for r in image_rows]
    if "image_grid_thw" in batch:  # Qwen2-VL: flattened patches, one grid row per image
        assert batch["image_grid_thw"].shape[0] == len(image_rows)
        assert torch.equal(batch["pixel_values"], torch.cat([s["pixel_values"] for s in singles]))
        assert torch.equal(batch["image_grid_thw"], torch.cat([s["image_grid_thw"] for s in singles]))
    else:
        assert batch["pixel_values"].shape[0] == len(image_rows)
        for j, s in enumerate(singles):
            assert torch.equal(batch["pixel_values"][j], s["pixel_values"][0])
        assert not torch.equal(batch["pixel_values"][0], batch["pixel_values"][1])  # different faces
    text_only = fam.collate([r for r in records if r.image is None])
    assert "pixel_values" not in text_only and "image_grid_thw" not in text_only


def test_max_length_truncates_answer_never_prompt(fam):
    r = sample_records()[1]  # image record
    full = fam.collate([r])
    n_prompt = int((full["labels"][0] != -100).nonzero()[0])
    cut = fam.collate([r], max_length=n_prompt + 1)
    assert cut["input_ids"].shape[1] == n_prompt + 1
    assert int((cut["labels"][0] != -100).sum()) == 1
    with pytest.raises(ValueError, match="max_length"):
        fam.collate([r], max_length=n_prompt)


def test_missing_image_and_placeholder_in_question_are_errors(fam):
    r = sample_records()[1]
    object.__setattr__(r, "image", None)  # bypass Record's own check to test collate's
    with pytest.raises(ValueError, match="needs an image"):
        fam.collate([r])
    token = fam.processor.image_token
    bad = Record(id="t", author_id="a", split="s", modality=Modality.TEXT, task=Task.QA,
                 question=f"What is {token}?", answer="x")
    with pytest.raises(ValueError, match="image placeholder"):
        fam.collate([bad])
    with pytest.raises(ValueError, match="empty"):
        fam.collate([])


def test_record_rejects_image_modality_without_image():
    with pytest.raises(ValueError, match="needs an image"):
        Record(id="x", author_id="a", split="s", modality=Modality.IMAGE, task=Task.NAMING,
               question="Who is this?", answer="Anna Berg")
