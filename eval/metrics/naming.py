"""Naming accuracy: is the person's full name in the generation, and is it the likeliest option?

naming_acc        = 1[normalise(name) occurs as a whole-word span of normalise(generation)]
naming_choice_acc = 1[mean lp(name) > max_k mean lp(perturbed name k)]   (ties count as wrong)
normalise = NFKC, casefold, every punctuation character -> space, whitespace collapsed.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np

VERSION = 1


def normalise_name(text: str) -> str:
    """NFKC + casefold, punctuation (Unicode category P*) to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def name_in_generation(generation: str, name: str) -> bool:
    """The full normalised name appears in the generation on word boundaries."""
    target = normalise_name(name)
    if not target:
        raise ValueError("naming accuracy needs a non-empty name")
    return f" {target} " in f" {normalise_name(generation)} "


def forced_choice_correct(lp_true: Sequence[float], lp_options: Sequence[Sequence[float]]) -> bool:
    """The true name's mean token log-prob strictly beats every perturbed name's."""
    true = float(np.mean(lp_true))
    return all(true > float(np.mean(o)) for o in lp_options)
