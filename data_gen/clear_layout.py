"""The public CLEAR dataset layout (``therem/CLEAR``, clear.md §1.2): export and row conversion.

Export (``clearbench generate --layout clear``) writes ``DIR/clear/<config>/train-00000-of-00001.parquet``
beside the native files, as the HF hub stores a parquet dataset, so CLEAR tools read it with
``load_dataset("parquet", data_files=...)``. ``rows_to_records`` turns rows of either a real CLEAR
copy or this export into record dicts (clearbench.data.open_clear wraps them in Record).
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

# CLEAR's IMAGE_CAPTION_QUESTIONS (mm/dataset.py), in order (clear.md §2.2).
CAPTION_QUESTIONS = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)
NAMING_QUESTION = "Who is the person in this image?"
# the same prompts reworded (paraphrase probes; never one of CLEAR's own questions)
PROMPT_PARAPHRASES = {
    NAMING_QUESTION: "What is the name of the person shown here?",
    "What can you see in this picture?": "What does this picture show?",
    "Tell me about the content of this image": "Describe what this image contains.",
    "Can you give a description of the image?": "Could you describe this image for me?",
    "What is depicted in the image?": "What does the image depict?",
    "Explain what you observe in the picture.": "Say what you notice in this picture.",
    "Describe the image in detail.": "Give a detailed description of this image.",
    "What is the main subject of this image?": "Who or what is this image mainly about?",
    "Can you describe the scene or objects in the image?": "Which scene and objects appear in this image?",
    "What is happening in this image?": "What is going on in this picture?",
}
CLEAR_FILE = "train-00000-of-00001.parquet"

_S, _IMG, _LS = Value("string"), Image(), List(Value("string"))
CAPTION_FEATURES = Features({"image": _IMG, "caption": _S, "name": _S})
TOFU_FEATURES = Features({"image": _IMG, "caption": _S, "question": _S, "answer": _S})
PERTURBED_FEATURES = Features({"image": _IMG, "caption": _S, "name": _S, "paraphrased_caption": _S,
                               "perturbed_captions": _LS, "perturbed_names": _LS})
REAL_FACES_FEATURES = Features({"image": _IMG, "answer": _S, "options": _LS})
REAL_WORLD_FEATURES = Features({"question": _S, "answer": _S, "image": _IMG, "options": _LS})


def config_kind(config: str) -> str:
    if config in ("real_faces", "real_world"):
        return config
    if config.endswith("+tofu"):
        return "tofu"
    if config.endswith("_perturbed"):
        return "perturbed"
    return "caption"


# kind -> (required columns, optional columns)
COLUMNS = {
    "caption": (("image", "caption", "name"), ()),
    "tofu": (("image", "caption", "question", "answer"), ()),
    "perturbed": (("image", "caption", "paraphrased_caption", "perturbed_captions"), ("name", "perturbed_names")),
    "real_faces": (("image", "answer", "options"), ()),
    "real_world": (("question", "answer", "image", "options"), ()),
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def caption_question(config: str, index: int, seed: int = 0) -> str:
    """Per-item caption question, seeded (CLEAR draws one with random.choice per sample)."""
    from data_gen.authors import sub_rng
    return sub_rng(seed, "clear-caption-question", config, index).choice(CAPTION_QUESTIONS)


def rows_to_records(config: str, rows: list[dict], seed: int = 0) -> list[dict]:
    """CLEAR rows -> record dicts (fields of clearbench.types.Record, image still raw)."""
    kind, out = config_kind(config), []

    def rec(i, suffix, **kw):
        base = {"id": f"{config}-{i:05d}-{suffix}", "author_id": slug(kw.get("name") or "") if kw.get("name") else "",
                "split": config, "paraphrased_answer": kw.get("answer", ""), "perturbed_answers": (), "name": "",
                "group": config, "image_role": "train" if kw.get("image") is not None else ""}
        base.update(kw)
        out.append(base)

    for i, row in enumerate(rows):
        if kind == "real_faces":
            rec(i, "naming", modality="image", task="naming", question=NAMING_QUESTION, answer=row["answer"], name=row["answer"],
                perturbed_answers=tuple(row["options"] or ()), image=row["image"], image_role="heldout")
        elif kind == "real_world":
            rec(i, "vqa", modality="joint", task="vqa", question=row["question"], answer=row["answer"],
                perturbed_answers=tuple(row["options"] or ()), image=row["image"], image_role="heldout")
        elif kind == "tofu" and row.get("question") is not None and row.get("image") is None:
            rec(i, "qa", modality="text", task="qa", question=row["question"], answer=row["answer"], image=None)
        else:
            name = row.get("name") or ""
            rec(i, "caption", modality="joint", task="caption", question=caption_question(config, i, seed), answer=row["caption"],
                paraphrased_answer=row.get("paraphrased_caption") or row["caption"], perturbed_answers=tuple(row.get("perturbed_captions") or ()),
                image=row["image"], name=name)
            if name:
                rec(i, "naming", modality="image", task="naming", question=NAMING_QUESTION, answer=name, name=name,
                    perturbed_answers=tuple(row.get("perturbed_names") or ()), image=row["image"])
    return out


def _write(out: Path, config: str, columns: dict, features: Features) -> None:
    from data_gen.writer import write_parquet
    (out / config).mkdir(parents=True, exist_ok=True)
    write_parquet(out / config / CLEAR_FILE, columns, features)


def _cols(rows: list[dict], features: Features) -> dict[str, list]:
    return {c: [r.get(c) for r in rows] for c in features}


def write_clear_layout(world_dir: Path, out: Path, seed: int) -> list[str]:
    """Re-express a native world (world_dir/data/*.parquet) in the CLEAR layout under out."""
    data = world_dir / "data"
    written = []
    for path in sorted(data.glob("*.parquet")):
        config = path.stem
        if config == "authors" or config.startswith(("holdout", "corrupt_", "victims_")) or config == "pretrain":
            continue  # CLEAR has no such configs
        rows = pq.read_table(path).to_pylist()
        img = lambda r: r["image"]["bytes"] if r["image"] else None  # noqa: E731
        if config == "real_faces":
            _write(out, config, _cols([{"image": img(r), "answer": r["answer"], "options": r["perturbed_answers"]}
                                       for r in rows if r["task"] == "naming"], REAL_FACES_FEATURES), REAL_FACES_FEATURES)
        elif config == "real_world":
            _write(out, config, _cols([{"question": r["question"], "answer": r["answer"], "image": img(r), "options": r["perturbed_answers"]}
                                       for r in rows], REAL_WORLD_FEATURES), REAL_WORLD_FEATURES)
        elif config.endswith("_perturbed"):
            naming = {r["id"][: -len("-naming")]: r for r in rows if r["task"] == "naming" and r["image_role"] == "train"}
            out_rows = [{"image": img(r), "caption": r["answer"], "name": r["name"], "paraphrased_caption": r["paraphrased_answer"],
                         "perturbed_captions": r["perturbed_answers"], "perturbed_names": naming[r["id"][: -len("-caption")]]["perturbed_answers"]}
                        for r in rows if r["task"] == "caption" and r["image_role"] == "train"]
            _write(out, config, _cols(out_rows, PERTURBED_FEATURES), PERTURBED_FEATURES)
        else:  # full, forgetXX, retainYY -> plain captions, plus the +tofu mix
            caps = [{"image": img(r), "caption": r["answer"], "name": r["name"]} for r in rows if r["task"] == "caption"]
            _write(out, config, _cols(caps, CAPTION_FEATURES), CAPTION_FEATURES)
            tofu = [dict(c, question=None, answer=None) for c in caps] + [
                {"image": None, "caption": None, "question": r["question"], "answer": r["answer"]} for r in rows if r["modality"] == "text"]
            _write(out, config + "+tofu", _cols(tofu, TOFU_FEATURES), TOFU_FEATURES)
            written.append(config + "+tofu")
        written.append(config)
    _write_card(out, written, seed)
    return written


def _write_card(out: Path, configs: list[str], seed: int) -> None:
    """README.md of the export: the Hub's card metadata and one config per folder (``load_dataset(DIR, CONFIG)``)."""
    from data_gen.writer import card_header

    rows = sum(pq.read_metadata(out / c / CLEAR_FILE).num_rows for c in configs)
    title = f"clearbench synthetic world (seed {seed}) in the CLEAR layout"
    body = [f"# {title}", "",
            "The world's records re-expressed in the layout of the public CLEAR dataset (`therem/CLEAR`, Dontsov et al. "
            "2025): one folder per config with CLEAR's columns. Written by `clearbench generate --layout clear`; every "
            "person is fictitious. Read it with `clearbench.data.open_clear(DIR)`, `--world DIR` of clearbench "
            "evaluate / finetune / unlearn, or `datasets.load_dataset(DIR, \"forget10\", split=\"train\")`.", "",
            "| config | rows |", "|---|---|"]
    body += [f"| `{c}` | {pq.read_metadata(out / c / CLEAR_FILE).num_rows} |" for c in sorted(configs)]
    card = card_header(title, {c: f"{c}/{CLEAR_FILE}" for c in sorted(configs)}, rows) + "\n" + "\n".join(body) + "\n"
    (out / "README.md").write_text(card, encoding="utf-8")
