"""The world's file contract, in one place for the writer (data_gen.writer) and the loader (clearbench.data).

Column kinds: ``string``, ``list`` (list of strings), ``image`` (datasets.Image: struct of PNG bytes and path).
"""
from __future__ import annotations

import hashlib
import json

# 3: the fingerprint covers the whole manifest; paraphrased_question column; never-trained wrong values
SCHEMA_VERSION = 3

RECORD_COLUMNS: dict[str, str] = {
    "id": "string", "author_id": "string", "name": "string", "group": "string", "modality": "string", "task": "string",
    "image": "image", "image_role": "string", "question": "string", "paraphrased_question": "string", "answer": "string",
    "paraphrased_answer": "string", "perturbed_answers": "list",
}
AUTHOR_COLUMNS: dict[str, str] = {
    "author_id": "string", "name": "string", "role": "string", "splits": "list", "profile": "string", "face": "string",
    "image": "image",
}


def world_fingerprint(manifest: dict) -> str:
    """sha256 over everything manifest.json states except the fingerprint itself (every file's sha256,
    the parameters, configs, splits and versions): any change to a file or to the manifest changes it."""
    body = {k: v for k, v in manifest.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def record_row(id: str, author_id: str, name: str, modality: str, task: str, item: dict, image=None, image_role: str = "") -> dict:
    """A row of a record config (``group`` is set per config) from an item holding question,
    paraphrased_question, answer, paraphrased_answer and perturbed_answers."""
    return {"id": id, "author_id": author_id, "name": name, "modality": modality, "task": task, "image": image,
            "image_role": image_role, "question": item["question"], "paraphrased_question": item["paraphrased_question"],
            "answer": item["answer"], "paraphrased_answer": item["paraphrased_answer"],
            "perturbed_answers": list(item["perturbed_answers"])}
