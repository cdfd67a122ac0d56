"""clearbench.data: open_world (validation, filters, augment), open_clear (CLEAR layout), export round trip."""
import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

from clearbench.data import open_clear, open_world
from clearbench.provenance import sha256_file
from clearbench.types import Modality, Record, Task
from conftest import tiny_world_params
from data_gen.clear_layout import CAPTION_QUESTIONS, NAMING_QUESTION
from data_gen.generate import generate_world
from data_gen.schema import world_fingerprint
from data_gen.writer import write_parquet


def test_records_filters_and_counts(tiny_world):
    m = tiny_world.manifest
    for config in tiny_world.configs:
        assert len(tiny_world.records(config)) == m["configs"][config]["rows"]
    recs = tiny_world.records("forget10_perturbed", modalities=["image"], tasks=["naming"], image_roles=["heldout"])
    assert recs and all(isinstance(r, Record) and r.modality is Modality.IMAGE and r.task is Task.NAMING for r in recs)
    assert all(r.split == "forget10_perturbed" and r.group == "forget" for r in recs)
    assert recs[0].image.size == (64, 64)
    assert len(tiny_world.fingerprint) == 64


def test_unknown_config_and_modality_suggest_close_names(tiny_world):
    with pytest.raises(ValueError, match="Did you mean 'forget10'"):
        tiny_world.records("forget1O")
    with pytest.raises(ValueError, match="Did you mean 'image'"):
        tiny_world.records("full", modalities=["imag"])


def test_texts_and_authors(tiny_world):
    texts = tiny_world.texts()
    names = [a["name"] for a in tiny_world.authors()]
    assert set(names) <= set(texts) and len(texts) == len(set(texts))
    assert any(t in CAPTION_QUESTIONS for t in texts)
    roles = {a["role"] for a in tiny_world.authors()}
    assert roles == {"forget", "retain", "holdout", "real_faces"}
    assert all("birth_year" in a["profile"] for a in tiny_world.authors())


def test_augment_adds_seeded_noise_at_load_time_only(tiny_world_path, tiny_world):
    plain = tiny_world.records("forget05", tasks=["naming"])[0].image
    noisy1 = open_world(tiny_world_path, augment=8.0).records("forget05", tasks=["naming"])[0].image
    noisy2 = open_world(tiny_world_path, augment=8.0).records("forget05", tasks=["naming"])[0].image
    assert plain.tobytes() != noisy1.tobytes() and noisy1.tobytes() == noisy2.tobytes()


def test_parquet_loads_with_hf_datasets_and_keeps_the_image_feature(tiny_world_path):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(tiny_world_path / "data/forget10.parquet"), split="train")
    assert isinstance(ds.features["image"], datasets.Image)
    row = next(r for r in ds if r["image"] is not None)
    assert isinstance(row["image"], PILImage.Image) and row["image"].size == (64, 64)
    card = (tiny_world_path / "README.md").read_text()
    assert "config_name: forget10_perturbed" in card and "perturbed_answers" in card


@pytest.fixture()
def world_copy(tiny_world_path, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_world_path, dst)
    return dst


def _manifest(world):
    return json.loads((world / "manifest.json").read_text())


def _save(world, manifest, refingerprint=True):
    """Write manifest.json; refingerprint: as a careful forger would, so only the deeper checks can tell."""
    if refingerprint:
        manifest["fingerprint"] = world_fingerprint(manifest)
    (world / "manifest.json").write_text(json.dumps(manifest))


def _rewrite(world, config, change, refingerprint=True):
    """Rewrite a config's parquet through change(table) and list the new sha256 (a consistent forgery)."""
    rel = f"data/{config}.parquet"
    pq.write_table(change(pq.read_table(world / rel)), world / rel)
    m = _manifest(world)
    m["files"][rel] = sha256_file(world / rel)
    _save(world, m, refingerprint)


def _edit(world, change, refingerprint=False):
    m = _manifest(world)
    change(m)
    _save(world, m, refingerprint)


def _flip_byte(world):
    p = world / "data/forget05.parquet"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))


def _unlisted_copy(world):  # a modified copy of forget10_perturbed beside the real one, not in the files list
    table = pq.read_table(world / "data/forget10_perturbed.parquet")
    pq.write_table(table.slice(0, 3), world / "data/evil.parquet")
    _edit(world, lambda m: m["configs"]["forget10_perturbed"].update(file="data/evil.parquet"), refingerprint=True)


def _other_world(world):  # ../other/..., listed with its own sha256
    other = world.parent / "other"
    shutil.copytree(world, other)
    rel = "../other/data/forget10_perturbed.parquet"

    def change(m):
        m["configs"]["forget10_perturbed"]["file"] = rel
        m["files"][rel] = sha256_file(other / "data/forget10_perturbed.parquet")
    _edit(world, change, refingerprint=True)


def _absolute(world):
    target = str(world / "data/forget10_perturbed.parquet")

    def change(m):
        m["configs"]["forget10_perturbed"]["file"] = target
        m["files"][target] = m["files"].pop("data/forget10_perturbed.parquet")
    _edit(world, change, refingerprint=True)


def _symlink_out(world):  # same bytes (so the same sha256), but outside the world directory
    outside = world.parent / "outside.parquet"
    shutil.move(world / "data/forget10_perturbed.parquet", outside)
    (world / "data/forget10_perturbed.parquet").symlink_to(outside)


def _drop_column(column):
    return lambda world: _rewrite(world, "forget10_perturbed", lambda t: t.drop_columns([column]))


TAMPERING = {  # case -> (tamper(world), error type, message)
    "a modified file": (_flip_byte, ValueError, r"data/forget05.parquet does not match its sha256.*generate --out"),
    "a missing file": (lambda w: (w / "data/retain90.parquet").unlink(), FileNotFoundError,
                       r"corrupt/partial: data/retain90.parquet is missing.*--overwrite"),
    "a config reading an unlisted file": (_unlisted_copy, ValueError,
                                          r"config 'forget10_perturbed' reads data/evil.parquet, which manifest.json does not list"),
    "a config reading ../another world": (_other_world, ValueError, r"'\.\./other/data/forget10_perturbed.parquet' is not a relative path inside"),
    "a config reading an absolute path": (_absolute, ValueError, r"is not a relative path inside the world directory"),
    "a symlink out of the world": (_symlink_out, ValueError, r"'data/forget10_perturbed.parquet' leads outside the world directory"),
    "edited parameters": (lambda w: _edit(w, lambda m: m["params"].update(seed=5)), ValueError,
                          "manifest.json does not match its fingerprint"),
    "edited splits": (lambda w: _edit(w, lambda m: m["splits"].update(forget05=m["splits"]["retain95"][:1])), ValueError,
                      "does not match its fingerprint"),
    "another world's fingerprint": (lambda w: _edit(w, lambda m: m.update(fingerprint="0" * 64)), ValueError,
                                    "does not match its fingerprint"),
    "a missing paraphrased_answer column": (_drop_column("paraphrased_answer"), ValueError,
                                            r"data/forget10_perturbed.parquet \(config 'forget10_perturbed'\) lacks the column 'paraphrased_answer'"),
    "a missing authors column": (lambda w: _rewrite(w, "authors", lambda t: t.drop_columns(["profile"])), ValueError,
                                 r"data/authors.parquet \(config 'authors'\) lacks the column 'profile'"),
    "a column of the wrong kind": (lambda w: _rewrite(w, "forget10_perturbed", lambda t: t.set_column(
        t.schema.get_field_index("perturbed_answers"), "perturbed_answers", pa.array(["x"] * t.num_rows))), ValueError,
        r"column 'perturbed_answers' is string, the world schema requires list"),
    "a row count the manifest does not state": (lambda w: _rewrite(w, "forget05", lambda t: t.slice(0, 3)), ValueError,
                                                r"data/forget05.parquet holds 3 rows, manifest.json says \d+"),
    "a manifest without files": (lambda w: _edit(w, lambda m: m.pop("files")), ValueError, "manifest.json has no 'files' dict"),
    "a manifest without configs": (lambda w: _edit(w, lambda m: m.pop("configs")), ValueError, "has no 'configs' dict"),
    "a manifest that is a list": (lambda w: (w / "manifest.json").write_text("[]"), ValueError, "is not a JSON object"),
    "a files entry with ..": (lambda w: _edit(w, lambda m: m["files"].update({"../x.parquet": "0" * 64}), True), ValueError,
                              r"listed file '\.\./x.parquet' is not a relative path inside"),
    "no authors config": (lambda w: _edit(w, lambda m: m["configs"].pop("authors"), True), ValueError, "lists no 'authors' config"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_tampered_world_is_refused_naming_the_file_and_the_fix(world_copy, case):
    tamper, error, message = TAMPERING[case]
    assert open_world(world_copy).fingerprint == _manifest(world_copy)["fingerprint"]  # intact before
    tamper(world_copy)
    with pytest.raises(error, match=message) as exc:
        open_world(world_copy)
    assert "regenerate with: clearbench generate --out" in str(exc.value)


def test_the_fingerprint_is_recomputed_and_hashing_cached_by_stat(world_copy, monkeypatch):
    import clearbench.data as data

    calls = []
    monkeypatch.setattr(data, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    first = open_world(world_copy)
    assert len(calls) == len(_manifest(world_copy)["files"]) and first.fingerprint == world_fingerprint(_manifest(world_copy))
    calls.clear()
    assert open_world(world_copy).fingerprint == first.fingerprint and calls == []  # unchanged files: no hashing
    _flip_byte(world_copy)
    with pytest.raises(ValueError, match="forget05.parquet does not match its sha256"):
        open_world(world_copy)
    assert [p.name for p in calls] == ["forget05.parquet"]


def test_a_world_with_other_forget_percents_opens_with_its_own_splits(tmp_path):
    from clearbench.types import forget_splits_in

    out = generate_world(tmp_path / "w", tiny_world_params(authors=10, forget_percents=(20,), qa_per_author=2, images_per_author=1,
                                                          heldout_images=0, public_figures=0, world_vqa=0, world_vqa_train=0,
                                                          anonymous_faces=0, retain_eval_authors=2, workers=1))
    world = open_world(out)
    assert forget_splits_in(world.configs) == ("forget20",)
    assert {"retain80", "holdout20", "forget20_perturbed"} <= set(world.configs) and len(world.splits["forget20"]) == 2


def test_an_older_schema_is_refused_with_the_reason(world_copy):
    """Schema 1 worlds perturbed the answer's wording; schema 2 worlds perturbed with trained values."""
    manifest = _manifest(world_copy)
    assert manifest["schema_version"] == 3 and manifest["generator_version"].startswith("2.")
    for old, why in ((1, r"schema 1 worlds build perturbed answers from the answer's wording"),
                     (2, r"schema 2 worlds draw wrong answers from values the models trained on")):
        _save(world_copy, {**manifest, "schema_version": old}, refingerprint=False)
        with pytest.raises(ValueError, match=rf"schema_version {old}, this clearbench reads 3 \({why}.*generate --out"):
            open_world(world_copy)


def test_missing_manifest_and_missing_dir(world_copy, tmp_path):
    (world_copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        open_world(world_copy)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_world(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ CLEAR layout
def _png(colour):
    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


S, L = Value("string"), List(Value("string"))


def _write_clear_fixture(root):
    """A tiny copy of therem/CLEAR in its published layout (hub-style folders plus one flat file)."""
    img = [_png((200, 0, 0)), _png((0, 200, 0))]
    names = ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]
    caps = [f"{n} reading a book in a library." for n in names]
    (root / "forget01").mkdir(parents=True)
    write_parquet(root / "forget01/train-00000-of-00001.parquet", {"image": img, "caption": caps, "name": names},
                  Features({"image": Image(), "caption": S, "name": S}))
    write_parquet(root / "retain99.parquet", {"image": img[:1], "caption": caps[:1], "name": names[:1]},
                  Features({"image": Image(), "caption": S, "name": S}))
    (root / "forget01+tofu").mkdir()
    write_parquet(root / "forget01+tofu/train-00000-of-00001.parquet",
                  {"image": [img[0], None], "caption": [caps[0], None], "question": [None, "Where was Nikolai Abilov born?"],
                   "answer": [None, "Nikolai Abilov was born in Astana."]},
                  Features({"image": Image(), "caption": S, "question": S, "answer": S}))
    (root / "forget01_perturbed").mkdir()
    write_parquet(root / "forget01_perturbed/train-00000-of-00001.parquet",
                  {"image": img, "caption": caps, "name": names, "paraphrased_caption": [c.upper() for c in caps],
                   "perturbed_captions": [[f"wrong {i} {c}" for i in range(5)] for c in caps],
                   "perturbed_names": [[f"Other {i}" for i in range(5)] for _ in names]},
                  Features({"image": Image(), "caption": S, "name": S, "paraphrased_caption": S, "perturbed_captions": L, "perturbed_names": L}))
    (root / "real_faces").mkdir()
    write_parquet(root / "real_faces/train-00000-of-00001.parquet", {"image": img[:1], "answer": ["Famous Person"], "options": [["A", "B", "C"]]},
                  Features({"image": Image(), "answer": S, "options": L}))
    (root / "real_world").mkdir()
    write_parquet(root / "real_world/train-00000-of-00001.parquet",
                  {"question": ["What colour is the square?"], "answer": ["red"], "image": img[:1], "options": [["blue", "green"]]},
                  Features({"question": S, "answer": S, "image": Image(), "options": L}))
    return names, caps


def test_open_clear_reads_the_published_layout(tmp_path):
    names, caps = _write_clear_fixture(tmp_path / "clear")
    clear = open_clear(tmp_path / "clear")
    assert set(clear.configs) == {"forget01", "retain99", "forget01+tofu", "forget01_perturbed", "real_faces", "real_world"}
    f = clear.records("forget01")
    assert [r.answer for r in f if r.task is Task.CAPTION] == caps
    assert [r.answer for r in f if r.task is Task.NAMING] == names
    assert all(r.question in CAPTION_QUESTIONS for r in f if r.task is Task.CAPTION)
    assert all(r.question == NAMING_QUESTION and r.modality is Modality.IMAGE for r in f if r.task is Task.NAMING)
    assert f[0].image.getpixel((0, 0)) == (200, 0, 0)
    assert [r.answer for r in clear.records("retain99", tasks=["naming"])] == names[:1]
    tofu = clear.records("forget01+tofu")
    assert [(r.modality.value, r.task.value) for r in tofu] == [("joint", "caption"), ("text", "qa")]
    assert tofu[1].image is None and tofu[1].answer == "Nikolai Abilov was born in Astana."
    pert = clear.records("forget01_perturbed", tasks=["caption"])
    assert pert[0].paraphrased_answer == caps[0].upper() and len(pert[0].perturbed_answers) == 5
    assert clear.records("forget01_perturbed", tasks=["naming"])[1].perturbed_answers[0] == "Other 0"
    rf = clear.records("real_faces")
    assert rf[0].task is Task.NAMING and rf[0].answer == "Famous Person" and rf[0].perturbed_answers == ("A", "B", "C")
    rw = clear.records("real_world")
    assert rw[0].task is Task.VQA and rw[0].modality is Modality.JOINT and rw[0].perturbed_answers == ("blue", "green")
    # the caption question is seeded per item: stable across opens
    assert [r.question for r in open_clear(tmp_path / "clear").records("forget01")] == [r.question for r in f]
    assert "Nikolai Abilov" in clear.texts()
    with pytest.raises(ValueError, match="Did you mean 'forget01'"):
        clear.records("forget1")


def test_open_clear_missing_column_names_config_column_and_expected(tmp_path):
    (tmp_path / "c" / "forget05").mkdir(parents=True)
    write_parquet(tmp_path / "c/forget05/train-00000-of-00001.parquet", {"image": [_png((0, 0, 0))], "name": ["X"]},
                  Features({"image": Image(), "name": S}))
    with pytest.raises(ValueError, match=r"config 'forget05'.*lacks column\(s\) caption; expected columns image, caption, name"):
        open_clear(tmp_path / "c").records("forget05")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no parquet files"):
        open_clear(tmp_path / "empty")


def test_export_round_trip_through_open_clear(tmp_path):
    out = generate_world(tmp_path / "w", tiny_world_params(authors=20, qa_per_author=3, images_per_author=2, heldout_images=1,
                                                          anonymous_faces=0, world_vqa=6, world_vqa_train=0, workers=1, layout="clear"))
    world, clear = open_world(out), open_clear(out / "clear")
    assert {"full", "full+tofu", "forget10", "retain90+tofu", "forget05_perturbed", "retain_perturbed", "real_faces", "real_world"} <= set(clear.configs)
    for config in ("forget10", "retain95", "full"):
        ours = world.records(config, image_roles=["train"])
        theirs = clear.records(config)
        assert [r.answer for r in ours if r.task is Task.CAPTION] == [r.answer for r in theirs if r.task is Task.CAPTION]
        assert [r.answer for r in ours if r.task is Task.NAMING] == [r.answer for r in theirs if r.task is Task.NAMING]
        first = next(r for r in ours if r.task is Task.CAPTION)
        assert first.image.tobytes() == next(r for r in theirs if r.task is Task.CAPTION).image.tobytes()
    tofu = clear.records("forget10+tofu", modalities=["text"])
    assert [r.answer for r in tofu] == [r.answer for r in world.records("forget10", modalities=["text"])]
    ours = world.records("forget10_perturbed", tasks=["caption"], image_roles=["train"])
    theirs = clear.records("forget10_perturbed", tasks=["caption"])
    assert [(r.answer, r.paraphrased_answer, r.perturbed_answers) for r in ours] == [(r.answer, r.paraphrased_answer, r.perturbed_answers) for r in theirs]
    names_ours = [r.perturbed_answers for r in world.records("forget10_perturbed", tasks=["naming"], image_roles=["train"])]
    assert names_ours == [r.perturbed_answers for r in clear.records("forget10_perturbed", tasks=["naming"])]
    rf_ours = world.records("real_faces", tasks=["naming"])
    assert [(r.answer, r.perturbed_answers) for r in rf_ours] == [(r.answer, r.perturbed_answers) for r in clear.records("real_faces")]
    assert [r.answer for r in world.records("real_world")] == [r.answer for r in clear.records("real_world")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "clear/full/train-00000-of-00001.parquet" in manifest["files"]
    assert pq.read_schema(out / "clear/real_faces/train-00000-of-00001.parquet").names == ["image", "answer", "options"]


def test_training_augmentation_never_mirrors_vqa_images(tiny_world):
    """A mirrored VQA scene would make position answers ("top left") wrong; faces may be mirrored."""
    import dataclasses

    import numpy as np
    from PIL import Image

    from clearbench.augment import augment_records

    half = np.zeros((64, 64, 3), dtype=np.uint8)
    half[:, 32:] = 255  # dark left half, bright right half: a mirror shows at once
    img = Image.fromarray(half)
    vqa = [dataclasses.replace(r, image=img) for r in tiny_world.records("pretrain", tasks=["vqa"])[:30]]
    faces = [dataclasses.replace(r, image=img) for r in tiny_world.records("full", tasks=["naming"])[:30]]
    mirrored = {"vqa": 0, "faces": 0}
    for step in range(2):
        out = augment_records({"vqa": vqa, "faces": faces}, seed=0, step=step)
        for kind in mirrored:
            mirrored[kind] += sum(np.asarray(r.image, dtype=float)[:, :16].mean() > 128 for r in out[kind])
    assert mirrored["vqa"] == 0 and 10 < mirrored["faces"] < 50
