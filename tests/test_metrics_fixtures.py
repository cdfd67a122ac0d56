"""Handcrafted ExampleOutputs for the metric and result tests (no tests here).

Loaded by path from test_metrics*.py / test_results.py so it works under any pytest import mode.
"""
from __future__ import annotations

import numpy as np

from eval.example import ExampleOutput


def make_example(
    id: str = "x",
    split: str = "retain_perturbed",
    modality: str = "text",
    task: str = "qa",
    lp_answer=(-1.0,),
    lp_paraphrased=None,
    lp_perturbed=((-2.0,),),
    generation: str = "",
    answer: str = "an answer",
    name: str = "Ann Lee",
    mu=None,
    sigma=None,
    image_role: str | None = None,
) -> ExampleOutput:
    lp_answer = [float(x) for x in lp_answer]
    lp_perturbed = [[float(x) for x in row] for row in lp_perturbed]
    return ExampleOutput(
        id=id, author_id="a0001", split=split, group="", modality=modality, task=task, name=name,
        answer=answer, paraphrased_answer=answer, perturbed_answers=[f"wrong {k}" for k in range(len(lp_perturbed))],
        image_role=image_role if image_role is not None else ("" if modality == "text" else "train"),
        generation=generation,
        lp_answer=lp_answer,
        lp_paraphrased=[float(x) for x in (lp_paraphrased if lp_paraphrased is not None else lp_answer)],
        lp_perturbed=lp_perturbed,
        minkpp_mu=[float(x) for x in (mu if mu is not None else [min(x, 0.0) for x in lp_answer])],
        minkpp_sigma=[float(x) for x in (sigma if sigma is not None else [1.0] * len(lp_answer))],
    )


# (config, modality, task) cells of the synthetic world; a naming answer is the bare name.
CELLS = [
    ("forget10_perturbed", "text", "qa"), ("forget10_perturbed", "image", "naming"),
    ("forget10_perturbed", "joint", "caption"), ("forget10_perturbed", "joint", "qa"),
    ("retain_perturbed", "text", "qa"), ("retain_perturbed", "image", "naming"),
    ("retain_perturbed", "joint", "caption"),
    ("holdout10", "text", "qa"), ("holdout10", "image", "naming"), ("holdout10", "joint", "caption"),
    ("real_faces", "image", "naming"), ("real_faces", "text", "qa"),
    ("real_world", "joint", "vqa"),
]
NAMES = ["Ann Lee", "Ji-Yeon Park", "Omar Haddad", "Lena Vogel", "Tomás Rivera", "Mei Chen"]


def synthetic_examples(seed: int = 0, memorised: float = 1.0, per_cell: int = 6) -> list[ExampleOutput]:
    """A small deterministic world; ``memorised`` scales how much likelier forget answers are
    than holdout answers (0 = forget looks like holdout, as for a gold model)."""
    rng = np.random.default_rng(seed)
    out = []
    for config, modality, task in CELLS:
        for i in range(per_cell):
            name = NAMES[i % len(NAMES)]
            answer = name if task == "naming" else f"{name} wrote the book number {i} about rivers"
            T = len(answer.split()) + 1
            base = -rng.uniform(0.2, 2.5, size=T)
            pert = [-rng.uniform(0.5, 3.0, size=T + int(rng.integers(0, 3))) for _ in range(3)]
            para = -rng.uniform(0.2, 2.5, size=T + 1)
            if config.startswith("forget"):  # memorised: true answers closer to log-prob 0
                base, para = base * (1.0 - 0.8 * memorised), para * (1.0 - 0.8 * memorised)
            correct = rng.random() < 0.6
            gen = (f"This is {name}." if task == "naming" else answer) if correct else "I do not know this."
            out.append(make_example(
                id=f"{config}-{modality}-{task}-{i}", split=config, modality=modality, task=task,
                lp_answer=base, lp_paraphrased=para, lp_perturbed=pert, generation=gen, answer=answer,
                name="" if task == "vqa" else name,
                mu=base - rng.uniform(0.0, 1.0, size=T), sigma=rng.uniform(0.1, 2.0, size=T),
                image_role="" if modality == "text" else ("heldout" if i % 3 == 2 else "train"),
            ))
    return out


def provenance() -> dict:
    return {
        "config": {"model": "runs/npo-10", "eval": {"batch_size": 2}},
        "config_hash": "0" * 64,
        "world_fingerprint": "f" * 64,
        "forget_split": "forget10",
        "model_fingerprint": "m" * 16,
        "parents": ["runs/target", "runs/base"],
        "library_versions": {"torch": "2.5.0", "transformers": "5.0.0", "peft": "0.13.0"},
        "seed": 0,
        "device": "cpu",
    }
