"""Shared vocabulary: splits, modalities, tasks and the one record type the model sees.

Every split of every world (clearbench-generated or the public CLEAR copy) is turned into
``Record`` objects; model families collate records, methods and metrics never see raw rows.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
from typing import Any, Iterable, Sequence


class Modality(str, enum.Enum):
    """How the person is presented to the model.

    text:  the question names the person, no image (TOFU-style QA).
    image: image in, name out ("Who is this?"), no textual cue about the person.
    joint: image in plus a question about "the person in the image" (captions included).
    """

    TEXT = "text"
    IMAGE = "image"
    JOINT = "joint"

    def __str__(self) -> str:  # so f-strings print "text", not "Modality.TEXT"
        return self.value


class Task(str, enum.Enum):
    """What a record asks for; metrics use it to pick the right scoring (e.g. naming)."""

    QA = "qa"            # profile fact question -> fact sentence
    NAMING = "naming"    # image -> the person's name (answer is the name itself)
    CAPTION = "caption"  # image -> caption that names the person and the scene
    VQA = "vqa"          # general visual question (real_world control) with options

    def __str__(self) -> str:
        return self.value


MODALITIES: tuple[str, ...] = tuple(m.value for m in Modality)
TASKS: tuple[str, ...] = tuple(t.value for t in Task)

# Forget percentages the generator knows, with their retain complements (TOFU/CLEAR naming).
FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")
RETAIN_FOR_FORGET: dict[str, str] = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_FOR_FORGET: dict[str, str] = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}


@dataclasses.dataclass(frozen=True)
class Record:
    """One thing the model is asked, with every answer variant the metrics need.

    ``image`` is a PIL image or None (text modality). ``answer`` is the ground truth; for
    ``Task.NAMING`` it is the bare name, so naming is scored on the name, not on a template.
    ``perturbed_answers`` are plausible wrong answers (the paraphrase's template with a wrong fact,
    never equal to the truth).
    ``name`` is the person the record is about ("" for real_world VQA), ``group`` the split-level
    role of that person ("forget", "retain", "holdout", "real_faces", "real_world", "pretrain").
    ``image_role`` is "train" for images used in finetuning, "heldout" for unseen photos of the
    same person used only in evaluation, "" for text records.
    """

    id: str
    author_id: str
    split: str
    modality: Modality
    task: Task
    question: str
    answer: str
    paraphrased_answer: str = ""
    perturbed_answers: tuple[str, ...] = ()
    image: Any = None
    name: str = ""
    group: str = ""
    image_role: str = ""

    def __post_init__(self) -> None:
        if self.modality != Modality.TEXT and self.image is None:
            raise ValueError(
                f"record {self.id!r}: modality {self.modality.value!r} needs an image but image is None"
            )
        if self.modality == Modality.TEXT and self.image is not None:
            raise ValueError(f"record {self.id!r}: text-modality records carry no image")


def parse_modality(value: str | Modality) -> Modality:
    if isinstance(value, Modality):
        return value
    try:
        return Modality(value)
    except ValueError:
        raise ValueError(unknown_name_message("modality", value, MODALITIES)) from None


def parse_task(value: str | Task) -> Task:
    if isinstance(value, Task):
        return value
    try:
        return Task(value)
    except ValueError:
        raise ValueError(unknown_name_message("task", value, TASKS)) from None


def unknown_name_message(kind: str, value: str, known: Iterable[str]) -> str:
    """"Unknown method 'npp'. Did you mean 'npo'? Known: ..." (lm-eval style)."""
    known = sorted(known)
    close = difflib.get_close_matches(str(value), known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown {kind} {value!r}.{hint} Known: {', '.join(known)}."


def check_name(kind: str, value: str, known: Sequence[str]) -> str:
    if value not in known:
        raise ValueError(unknown_name_message(kind, value, known))
    return value
