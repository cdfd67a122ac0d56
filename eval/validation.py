"""Validation records for learning-rate calibration, disjoint from the evaluation's, and their scores.

forget-validation: the forget authors' training records (image role train, or text) that the evaluation's per-cell
sample leaves out (e.g. forget10's text QA beyond the 300 the headline scores), in the modalities the run forgets;
retain-validation: training records of retain authors outside ``retain_perturbed`` (the evaluation's retain
authors). Up to ``n_per_cell`` per (modality, task) cell, a seeded sample. The score of a cell is TOFU's Prob.,
the mean over its records of exp(mean token log p(answer)), teacher-forced (``clearbench.scoring``).
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from clearbench.models import load_model
from clearbench.models.common import Loaded, default_device
from clearbench.provenance import model_dir, model_fingerprint
from clearbench.scoring import answer_probability
from clearbench.types import FORGET_MODALITIES, Record, retain_split
from eval.evaluate import EvalConfig, select_records


def _cells(records: Sequence[Record], n: int, seed: str) -> dict[str, list[Record]]:
    """``{"modality/task": up to n records}``, each cell a seeded sample in id order."""
    cells: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        cells[f"{r.modality}/{r.task}"].append(r)
    return {c: sorted(random.Random(f"{seed}/{c}").sample(rs, min(n, len(rs))), key=lambda r: r.id)
            for c, rs in sorted(cells.items())}


def validation_records(world, forget: str, forget_modality: str, eval_cfg: EvalConfig,
                       n_per_cell: int) -> dict[str, dict[str, list[Record]]]:
    """``{"forget": {cell: records}, "retain": {cell: records}}``, none of them scored by an evaluation with
    ``eval_cfg`` (an error when a forget cell has no records left: lower the evaluation cap)."""
    config = f"{forget}_perturbed"
    everything = world.records(config)
    scored = {r.id for r in select_records(everything, config, eval_cfg)}
    modalities = FORGET_MODALITIES[forget_modality]
    free = [r for r in everything if r.id not in scored and r.image_role in ("", "train")
            and str(r.modality) in modalities]
    evaluated_retain = {r.author_id for r in world.records("retain_perturbed")}
    retain = [r for r in world.records(retain_split(forget)) if r.author_id not in evaluated_retain]
    out = {"forget": _cells(free, n_per_cell, f"{eval_cfg.seed}/forget"),
           "retain": _cells(retain, n_per_cell, f"{eval_cfg.seed}/retain")}
    if not out["forget"]:
        raise ValueError(f"{config}: the evaluation (max_per_cell={eval_cfg.max_per_cell}) scores every "
                         f"{forget_modality} training record; cap its cells below their size to leave "
                         f"forget-validation records")
    return out


def score_validation(model: Loaded, records: dict[str, dict[str, list[Record]]],
                     batch_size: int = 32) -> dict[str, Any]:
    """Per cell {prob, n}; per group the mean over its cells (every cell weighs the same)."""
    cells = {f"{group}/{cell}": {"prob": answer_probability(model, recs, batch_size), "n": len(recs)}
             for group, by_cell in records.items() for cell, recs in by_cell.items()}
    groups = {group: sum(cells[f"{group}/{c}"]["prob"] for c in by_cell) / len(by_cell)
              for group, by_cell in records.items() if by_cell}
    return {"cells": cells, **groups}


def validate_model(model_path: str | Path, world, forget: str, forget_modality: str, eval_cfg: EvalConfig,
                   n_per_cell: int) -> dict[str, Any]:
    """Load the model of a run (or model) directory and score its validation records."""
    mdir = model_dir(model_path)
    loaded = load_model(mdir, device=default_device())
    scores = score_validation(loaded, validation_records(world, forget, forget_modality, eval_cfg, n_per_cell),
                              eval_cfg.batch_size)
    return {"model": str(model_path), "model_fingerprint": model_fingerprint(mdir), "forget_split": forget,
            "forget_modality": forget_modality, "n_per_cell": n_per_cell, **scores}
