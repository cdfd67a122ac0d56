"""Shared vocabulary: splits, modalities, tasks and the one record type the model sees.

Every split of every world (clearbench-generated or the public CLEAR copy) is turned into
``Record`` objects; model families collate records, methods and metrics never see raw rows.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import re
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

# Forget settings (CLEAR's names) -> the record modalities a forget set of that setting holds.
FORGET_MODALITIES: dict[str, tuple[str, ...]] = {
    "text": (Modality.TEXT.value,),
    "visual": (Modality.IMAGE.value, Modality.JOINT.value),
    "multimodal": MODALITIES,
}
# The forget percentages the default world generates (any 1..99 is valid; a world lists its own).
DEFAULT_FORGET_PERCENTS: tuple[int, ...] = (1, 5, 10)
_FORGET_RE = re.compile(r"forget(\d{2})")


def forget_split(percent: int) -> str:
    """1 -> "forget01" (TOFU/CLEAR naming); retain and holdout splits follow from it."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
        raise ValueError(f"forget percentage {percent!r} is not an integer between 1 and 99")
    return f"forget{percent:02d}"


def forget_percent(split: str) -> int:
    """"forget10" -> 10; anything else is an error naming the form."""
    m = _FORGET_RE.fullmatch(str(split))
    if not m or not 1 <= int(m.group(1)) <= 99:
        raise ValueError(f"{split!r} is not a forget split name (forgetNN, e.g. forget01, forget05, forget10)")
    return int(m.group(1))


def is_forget_split(name: str) -> bool:
    m = _FORGET_RE.fullmatch(str(name))
    return bool(m) and 1 <= int(m.group(1)) <= 99


def retain_split(forget: str) -> str:
    """forgetXX -> retainYY with YY = 100 - XX (its complement among the authors)."""
    return f"retain{100 - forget_percent(forget):02d}"


def holdout_split(forget: str) -> str:
    """forgetXX -> holdoutXX (never-trained authors, as many as forgetXX)."""
    return f"holdout{forget_percent(forget):02d}"


def forget_splits_in(configs: Iterable[str]) -> tuple[str, ...]:
    """The forget splits among a world's config names, smallest first."""
    return tuple(sorted((c for c in configs if is_forget_split(c)), key=forget_percent))


def check_forget_split(split: str, configs: Iterable[str] | None = None) -> str:
    """``split`` must be a forgetNN name, and one of ``configs`` (a world's) when they are given."""
    forget_percent(split)
    if configs is not None:
        known = forget_splits_in(configs)
        if split not in known:
            raise ValueError(unknown_name_message("forget split", split, known)
                             + " (this world's forget splits are listed; regenerate it with that percentage)")
    return split


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
    paraphrased_question: str = ""  # the question reworded (paraphrase probes); "" where the world has none

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
