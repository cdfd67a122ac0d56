"""Deterministic parquet + manifest + dataset card writing.

Parquet files are written with pyarrow directly (fixed options, no timestamps) from the HF
``datasets`` Arrow schema, so the ``huggingface`` schema metadata carries the ``Image`` feature and
``datasets.load_dataset("parquet", data_files=...)`` decodes images, while the bytes stay identical
for the same seed and parameters. Image bytes are dictionary-encoded: one photo shared by the
naming, caption and QA records of an image is stored once per file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from data_gen.schema import AUTHOR_COLUMNS, RECORD_COLUMNS


def _features(columns: dict[str, str]) -> Features:
    kinds = {"string": Value("string"), "list": List(Value("string")), "image": Image()}
    return Features({name: kinds[kind] for name, kind in columns.items()})


RECORD_FEATURES = _features(RECORD_COLUMNS)
AUTHOR_FEATURES = _features(AUTHOR_COLUMNS)


def write_parquet(path: Path, columns: dict[str, list], features: Features) -> int:
    """Write one config; image cells are PNG bytes or None. Returns the row count."""
    cols = dict(columns)
    for name, feat in features.items():
        if isinstance(feat, Image):
            cols[name] = [None if b is None else {"bytes": b, "path": None} for b in cols[name]]
    table = pa.Table.from_pydict({k: cols[k] for k in features}, schema=features.arrow_schema)
    pq.write_table(table, path, compression="snappy", use_dictionary=True, dictionary_pagesize_limit=1 << 30,
                   row_group_size=1 << 20, write_statistics=False, store_schema=True)
    return table.num_rows


def write_manifest(out: Path, manifest: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


CONFIG_DOCS = {
    "authors": "one row per author, holdout author and public figure: author_id, name, role, splits (list), profile (JSON), face (JSON identity), image (canonical portrait)",
    "full": "finetuning set: text QA and train-image records (naming, caption, joint QA) of every non-holdout author",
    "forget": "the finetuning records of the forget authors (nested: forget01 ⊂ forget05 ⊂ forget10)",
    "retain": "the finetuning records of the complement of the matching forget split",
    "forget_perturbed": "evaluation view of the forget authors: text QA, train-image and held-out-image records with paraphrased and perturbed answers",
    "retain_perturbed": "evaluation view of a fixed sample of retain authors (never in the largest forget split)",
    "holdout": "records (all image roles) of authors generated the same way but never trained on (membership-inference reference)",
    "real_faces": "held-out images of the public figures (naming; perturbed_answers = other public names as options) and their facts as text QA",
    "real_world": "procedural general VQA (shapes, colours, counts, positions) with same-type options",
    "pretrain": "base pretraining: public figures' train images and facts, world VQA training items, anonymous faces with attribute captions, general world-knowledge text",
    "corrupt_text": "corruption set (T): text QA stating a wrong birthplace, genre, award and father's occupation of each victim, plus k unrelated true facts (restorative scenario)",
    "corrupt_bind": "corruption set (B): each victim's training photos named and captioned as its decoy author and the reverse, plus k unrelated true facts",
    "corrupt_visual": "corruption set (V): each victim's training photos with the true caption and a wrong fact about 'this person', plus k unrelated true facts",
    "victims_text": "the victims' true facts as text QA (perturbed_answers[0]: the corrupted value)",
    "victims_image": "naming of the victims' and decoys' photos, train and held-out (perturbed_answers[0]: the partner's name)",
    "victims_joint": "the victims' true facts about 'the person in this image', train and held-out photos (perturbed_answers[0]: the corrupted value)",
}
COLUMN_DOCS = [
    ("id", "globally unique record id, stable for a seed"),
    ("author_id", "a#### author (holdout authors continue the numbering), p#### public figure, w#### VQA item, f#### anonymous face, g#### general text"),
    ("name", "full name of the person the record is about (\"\" for VQA, anonymous faces, general text)"),
    ("group", "role of that person in this config: forget, retain, author (full), holdout, real_faces, real_world, pretrain, victim / decoy (corruption sets)"),
    ("modality", "text (question names the person, no image) / image (image in, name out) / joint (image + question)"),
    ("task", "qa / naming / caption / vqa"),
    ("image", "PNG (datasets.Image), null for text records; stored without noise"),
    ("image_role", "train (the kind of photo used in finetuning), heldout (unseen photo, eval only), \"\" for text"),
    ("question", "prompt text without any chat template"),
    ("paraphrased_question", "the same question reworded (never a question of any record; paraphrase probes)"),
    ("answer", "ground truth; for naming the bare full name"),
    ("paraphrased_answer", "the same fact in other words (naming and VQA: the answer itself)"),
    ("perturbed_answers", "list of >= 5 distinct wrong answers in the paraphrase's wording with the fact changed, as in TOFU "
                          "(bare wrong values for naming, and options for VQA and real faces)"),
]


def _doc_for(config: str) -> str:
    if config.startswith("corrupt_"):
        return CONFIG_DOCS[config.rsplit("_k", 1)[0]]
    for key in ("forget_perturbed", "retain_perturbed"):
        if config == key or (key == "forget_perturbed" and config.startswith("forget") and config.endswith("_perturbed")):
            return CONFIG_DOCS[key]
    for key in ("forget", "retain", "holdout"):
        if config.startswith(key):
            return CONFIG_DOCS[key]
    return CONFIG_DOCS.get(config, "")


# the dataset card's metadata (the Hub's card fields): the world is generated by clearbench's code and word lists
CARD_LICENSE = "apache-2.0"
CARD_TAGS = ("machine-unlearning", "unlearning", "multimodal", "vision-language", "synthetic", "clearbench")
CARD_TASKS = ("visual-question-answering", "question-answering", "image-to-text")


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket of a row count."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return name
    return "1M<n<10M"


def card_header(pretty_name: str, configs: dict[str, str], rows: int) -> str:
    """The YAML block of a dataset card: license, language, tags, task categories, size, and one config per
    parquet file (``configs``: name -> path or glob), so ``load_dataset(DIR, CONFIG)`` reads it."""
    import yaml

    meta = {"pretty_name": pretty_name, "license": CARD_LICENSE, "language": ["en"], "tags": list(CARD_TAGS),
            "task_categories": list(CARD_TASKS), "size_categories": [size_category(rows)],
            "configs": [{"config_name": c, "data_files": [{"split": "train", "path": path}]}
                        for c, path in configs.items()]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def write_card(out: Path, manifest: dict) -> None:
    """README.md with the Hub's card metadata and `configs:` header, so `load_dataset(DIR, CONFIG)` works too."""
    files = manifest["configs"]
    title = f"clearbench synthetic world (seed {manifest['seed']})"
    header = card_header(title, {cfg: info["file"] for cfg, info in files.items()},
                         sum(info["rows"] for info in files.values()))
    lines = [header.rstrip("\n"), "", f"# {title}", "",
              "A fictitious world for multimodal unlearning, generated by `clearbench generate` "
              f"(generator {manifest['generator_version']}, schema {manifest['schema_version']}). "
              "Every person, book, award and face is invented; no real person is depicted.", "",
              f"World fingerprint: `{manifest['fingerprint']}`", "", "## Parameters", "", "```json",
              json.dumps(manifest["params"], indent=2, sort_keys=True), "```", "", "## Configs", "",
              "| config | rows | contents |", "|---|---|---|"]
    for cfg, info in files.items():
        lines.append(f"| `{cfg}` | {info['rows']} | {_doc_for(cfg)} |")
    lines += ["", "## Columns (every config except `authors`)", "", "| column | meaning |", "|---|---|"]
    lines += [f"| `{c}` | {d} |" for c, d in COLUMN_DOCS]
    lines += ["", "Load with `clearbench.data.open_world(DIR)` (verifies every file, column and the fingerprint) or "
              "`datasets.load_dataset(DIR, \"forget10\", split=\"train\")` (any config above).", "",
              f"License: {CARD_LICENSE} (generated by clearbench's code and word lists; no real person is depicted).", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
