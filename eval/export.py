"""A result file in other tools' formats. ``open-unlearning``: ``<NAME>_EVAL.json`` and ``<NAME>_SUMMARY.json`` as
open-unlearning's evaluator writes them (locuslab/open-unlearning, src/evals/base.py).

EVAL maps each metric name to ``{"agg_value": float, "value_by_index": {"0": {...}, ...}}`` (sorted keys, indent 4);
SUMMARY maps the benchmark's headline metrics to their ``agg_value``. The names are open-unlearning's TOFU ones,
each read from the clearbench cell that TOFU's data corresponds to (``CELLS``: forget / retain text QA, real
faces' text QA for TOFU's real authors, real-world VQA for its world facts), with TOFU's definitions
(``eval.metrics``): ``*_Q_A_Prob`` P(answer) with ``avg_loss``; ``*_Q_A_PARA_Prob`` / ``*_Q_A_PERT_Prob``;
``*_Q_A_ROUGE`` ROUGE-L recall with ground truth and generation; ``*_Truth_Ratio`` whose per-index ``score`` is
P(perturbed)/P(true) (open-unlearning's orientation, 1/TR) aggregated closer-to-1 on forget and true-better
elsewhere; ``forget_quality`` (KS p on forget text-QA truth ratios), ``model_utility``, ``privleak`` and
``mia_*`` (text, forget vs holdout) from the result's aggregates; CLEAR's paper columns as ``clear_real``,
``clear_retain``, ``clear_forget``, ``clear_fq``. ``forget_truth_ratio`` repeats ``forget_Truth_Ratio`` under the
name open-unlearning's forget_quality reads from retain-model logs, so an exported gold result can serve as its
``retain_logs_path``. Index keys are positions in id order; every entry also carries the clearbench ``id``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clearbench.provenance import write_text_atomic
from eval.example import ExampleOutput
from eval.metrics.probability import normalised_probability, probability
from eval.metrics.rouge_l import rouge_l_recall
from eval.metrics.truth_ratio import forget_stat, keep_stat, reference_of, truth_ratios
from eval.results import validate

# open-unlearning's TOFU prefix -> the clearbench (split, modality) cell it reads
CELLS: dict[str, tuple[str, str]] = {"forget": ("forget", "text"), "retain": ("retain", "text"),
                                     "ra": ("real_faces", "text"), "wf": ("real_world", "joint")}
# open-unlearning metric name -> clearbench aggregate key (the definitions agree: docs/metrics.md)
AGGREGATES: dict[str, str] = {"forget_quality": "forget/all/forget_quality", "model_utility": "all/all/model_utility",
                              "privleak": "mia/text/min_k_privleak", "clear_real": "clear/all/real",
                              "clear_retain": "clear/all/retain", "clear_forget": "clear/all/forget",
                              "clear_fq": "clear/all/fq"}
MIA = {"mia_loss": "loss", "mia_zlib": "zlib", "mia_min_k": "min_k", "mia_min_k_plus_plus": "min_k_pp"}
# what open-unlearning's TOFU evaluator summarises (configs/eval/tofu.yaml), with CLEAR's columns
SUMMARY = ("forget_Truth_Ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility", "privleak",
           "clear_real", "clear_retain", "clear_forget", "clear_fq")


def _metric(exs: list[ExampleOutput], value: Callable[[ExampleOutput], dict[str, Any]], agg) -> dict[str, Any]:
    by_index = {str(i): {**value(ex), "id": ex.id} for i, ex in enumerate(exs)}
    return {"agg_value": float(agg([v for v in by_index.values()])), "value_by_index": by_index}


def _mean_of(field: str):
    return lambda values: np.mean([np.mean(v[field]) for v in values])


def _prob(lp) -> dict[str, Any]:
    return {"prob": probability(lp), "avg_loss": float(-np.mean(lp))}


def _cell_logs(prefix: str, exs: list[ExampleOutput]) -> dict[str, Any]:
    """The per-example metrics of one TOFU data set (one clearbench cell)."""
    split = exs[0].eval_split
    true = "lp_answer" if reference_of(split, "tofu") == "answer" else "lp_paraphrased"
    inverse = 1.0 / truth_ratios([getattr(ex, true) for ex in exs], [ex.lp_perturbed for ex in exs], "tofu")
    scores = dict(zip((ex.id for ex in exs), inverse))  # P(perturbed)/P(true): open-unlearning's orientation
    pert = lambda ex: {"prob": [probability(r) for r in ex.lp_perturbed],  # noqa: E731
                       "avg_loss": [float(-np.mean(r)) for r in ex.lp_perturbed]}
    logs = {f"{prefix}_Q_A_Prob": _metric(exs, lambda ex: _prob(ex.lp_answer), _mean_of("prob")),
            f"{prefix}_Q_A_PERT_Prob": _metric(exs, pert, _mean_of("prob")),
            f"{prefix}_Q_A_ROUGE": _metric(exs, lambda ex: {"rougeL_recall": rouge_l_recall(ex.generation, ex.answer),
                                                              "ground_truth": ex.answer, "generation": ex.generation},
                                           _mean_of("rougeL_recall")),
            f"{prefix}_Truth_Ratio": _metric(exs, lambda ex: {"score": float(scores[ex.id])},
                                             lambda v: (forget_stat if split == "forget" else keep_stat)(
                                                 1.0 / np.array([e["score"] for e in v])))}
    if true == "lp_paraphrased":
        logs[f"{prefix}_Q_A_PARA_Prob"] = _metric(exs, lambda ex: _prob(ex.lp_paraphrased), _mean_of("prob"))
    else:  # TOFU normalises on real authors and world facts
        logs[f"{prefix}_Q_A_Prob_normalised"] = _metric(
            exs, lambda ex: {"prob": normalised_probability(ex.lp_answer, ex.lp_perturbed)}, _mean_of("prob"))
    return logs


def open_unlearning_logs(result: dict[str, Any], source: str = "") -> dict[str, Any]:
    """The EVAL logs of a (validated) result: see the module docstring."""
    exs = sorted((ExampleOutput.from_dict(d) for d in result["examples"]), key=lambda ex: ex.id)
    logs: dict[str, Any] = {}
    for prefix, (split, modality) in CELLS.items():
        cell = [ex for ex in exs if ex.eval_split == split and str(ex.modality) == modality]
        if cell:
            logs |= _cell_logs(prefix, cell)
    if "forget_Truth_Ratio" in logs:
        logs["forget_truth_ratio"] = logs["forget_Truth_Ratio"]
    metrics = result["aggregates"]["metrics"]
    logs |= {name: {"agg_value": metrics[k]} for name, k in AGGREGATES.items() if k in metrics}
    logs |= {name: {"agg_value": metrics[k], "auc": metrics[k]}
             for name, attack in MIA.items() if (k := f"mia/text/{attack}_auc") in metrics}
    prov = result["provenance"]
    logs["clearbench_source"] = {"result": source, "model_fingerprint": prov.get("model_fingerprint"),
                                 "world_fingerprint": prov.get("world_fingerprint"),
                                 "forget_split": prov.get("forget_split"), "run": prov.get("run"),
                                 "clearbench_version": prov.get("clearbench_version")}
    return dict(sorted(logs.items()))


def export_open_unlearning(result_path: str | Path, out_dir: str | Path, name: str = "CLEARBENCH",
                           overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/<name>_EVAL.json`` and ``<name>_SUMMARY.json`` for the result file; an invalid result or an
    existing output (without ``overwrite``) is refused before anything is written."""
    result_path, out_dir = Path(result_path), Path(out_dir)
    if not result_path.is_file():
        raise FileNotFoundError(f"no result file at {result_path}; write one with clearbench evaluate")
    raw = result_path.read_bytes()
    result = json.loads(raw)
    problems = validate(result)
    if problems:
        raise ValueError(f"{result_path} is not a valid result file ({problems[0]}"
                         f"{f'; and {len(problems) - 1} more' if len(problems) > 1 else ''}): nothing exported")
    paths = (out_dir / f"{name}_EVAL.json", out_dir / f"{name}_SUMMARY.json")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace, or choose another --out")
    logs = open_unlearning_logs(result, f"{result_path} (sha256 {hashlib.sha256(raw).hexdigest()})")
    summary = {k: logs[k]["agg_value"] for k in SUMMARY if k in logs}
    write_text_atomic(paths[0], json.dumps(logs, indent=4))
    write_text_atomic(paths[1], json.dumps(summary, indent=4))
    return paths


FORMATS: dict[str, Callable[..., tuple[Path, ...]]] = {"open-unlearning": export_open_unlearning}
