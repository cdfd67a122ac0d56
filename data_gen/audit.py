"""Audit a world's wrong answers: how many perturbed values are values a training record states.

    audit_wrong_values(open_world(DIR))   # {field: {"values": n, "trained": m}}

Training records are those of the configs the study trains on (``full``, ``forgetXX``, ``retainYY``,
``pretrain``). Values are read back from the stored text with the generator's templates, so the
audit checks what the files say, not the profiles they were drawn from. A wrong value counts as
trained when a training record states it for the same field, or (text fields) when its text occurs
anywhere in a training record (case-insensitive, whole words).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

from data_gen.authors import Profile, PublicFigure
from data_gen.pools import decoy_scene_paraphrases
from data_gen.qa import FACTS, JOINT_TEMPLATES, PUBLIC_TEMPLATES, TEXT_TEMPLATES, profile_fields
from data_gen.scenes import SCENE_CAPTIONS

NUMERIC_FIELDS = ("birth_year", "age", "award_year")  # numbers recur across fields: checked per field only
_TRAINING = re.compile(r"full|pretrain|forget\d{2}|retain\d{2}")
_EVALUATED = re.compile(r"forget\d{2}_perturbed|retain_perturbed|holdout\d{2}")


def _split(template: str, slot: str, fields: dict) -> tuple[str, str]:
    before, after = template.format(**{**fields, slot: "\x00"}).split("\x00")
    return before, after


def slot_value(template: str, slot: str, fields: dict, text: str) -> str | None:
    """The value that fills ``slot`` of ``template`` (other fields rendered) in ``text``; None if no match."""
    before, after = _split(template, slot, fields)
    if len(text) > len(before) + len(after) and text.startswith(before) and text.endswith(after):
        return text[len(before):len(text) - len(after)]
    return None


def people_of(world) -> dict[str, object]:
    """author_id -> Profile / PublicFigure, rebuilt from the ``authors`` config."""
    return {a["author_id"]: (PublicFigure if a["role"] == "real_faces" else Profile)(**a["profile"]) for a in world.authors()}


def qa_template(rec, person) -> tuple[tuple, dict, str] | None:
    """(template, fields, true value) of a text / joint QA record about ``person``, None if none fits."""
    templates = PUBLIC_TEMPLATES if isinstance(person, PublicFigure) else TEXT_TEMPLATES + JOINT_TEMPLATES
    fields = {**profile_fields(person), "n": person.name}
    for t in templates:
        truth = FACTS[t[0]](person)
        if t[1].format(**fields, v=truth) == rec.question and t[2].format(**fields, v=truth) == rec.answer:
            return t, fields, truth
    return None


_SCENES = {para: cap for pairs in SCENE_CAPTIONS.values() for cap, para in pairs}  # paraphrase -> caption template


def caption_parts(text: str) -> tuple[str, str] | None:
    """(scene paraphrase template, name) of a caption in a paraphrase's wording (world or decoy scene)."""
    for para in list(_SCENES) + decoy_scene_paraphrases():
        name = slot_value(para, "n", {}, text)
        if name is not None:
            return para, name
    return None


def _training_values(world, people) -> tuple[dict[str, set], str]:
    values: dict[str, set] = defaultdict(set)
    texts: set[str] = set()
    for config in [c for c in world.configs if _TRAINING.fullmatch(c)]:
        for rec in world.records(config):
            texts.update((rec.question, rec.answer, rec.paraphrased_answer))
            person = people.get(rec.author_id)
            if person is None:
                continue
            if rec.task.value == "naming":
                values["name"].add(rec.answer.casefold())
            elif rec.task.value == "caption":
                values["name"].add(person.name.casefold())
                values["scene"].update(p.casefold() for p, c in _SCENES.items() if slot_value(c, "n", {}, rec.answer) == person.name)
            elif (found := qa_template(rec, person)) is not None:
                values[found[0][0]].add(found[2].casefold())
    return values, "\n".join(sorted(texts)).casefold()


def _wrong_values(rec, person) -> list[tuple[str, str]]:
    """(field, value) of every wrong value in the record's perturbed answers."""
    if rec.task.value == "naming":
        return [("name", w) for w in rec.perturbed_answers]
    if rec.task.value == "caption":
        own = caption_parts(rec.paraphrased_answer)
        out = []
        for w in rec.perturbed_answers:
            scene, name = caption_parts(w) or (None, None)
            if scene is None:
                raise ValueError(f"{rec.id}: perturbed caption {w!r} is no scene paraphrase")
            out += [("name", name)] * (name != rec.name) + [("scene", scene)] * (scene != own[0])
        return out
    found = qa_template(rec, person)
    if found is None:
        raise ValueError(f"{rec.id}: no template fits {rec.question!r} / {rec.answer!r}")
    (fact, _, _, para), fields, _ = found
    return [(fact, slot_value(para, "v", fields, w)) for w in rec.perturbed_answers]


def _in_text(value: str, text: str) -> bool:
    """value occurs in text as whole words (text is casefolded)."""
    v, start = value.casefold(), 0
    while (i := text.find(v, start)) >= 0:
        end = i + len(v)
        if (i == 0 or not text[i - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
            return True
        start = i + 1
    return False


def _is_trained(field: str, value: str, trained: dict[str, set], text: str) -> bool:
    if value.casefold() in trained[field]:
        return True
    if field in NUMERIC_FIELDS:
        return False
    if field == "scene":  # the scene's words around the name
        parts = [max(value.split("{n}"), key=len)]
    elif field == "books":  # each title of the list
        parts = re.split(r"', '|' and '", value.strip("'"))
    else:
        parts = [value]
    return any(_in_text(part.strip(" ,."), text) for part in parts)


def audit_wrong_values(world, configs: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Per field: how many wrong values the evaluated author configs hold, and how many of them a
    training record states. ``configs`` defaults to forgetXX_perturbed, retain_perturbed, holdoutXX."""
    people = people_of(world)
    trained, text = _training_values(world, people)
    configs = configs or [c for c in world.configs if _EVALUATED.fullmatch(c)]
    counts: dict[str, Counter] = defaultdict(Counter)
    memo: dict[tuple[str, str], bool] = {}
    for config in configs:
        for rec in world.records(config):
            for field, value in _wrong_values(rec, people[rec.author_id]):
                if (field, value) not in memo:
                    memo[field, value] = _is_trained(field, value, trained, text)
                counts[field]["values"] += 1
                counts[field]["trained"] += memo[field, value]
    return {f: dict(c) for f, c in sorted(counts.items())}
