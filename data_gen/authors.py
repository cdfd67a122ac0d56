"""Fictitious author profiles (TOFU-style) and public figures, unique by construction.

Every identifying fact is registered in one ``Registry`` shared by the whole world (authors,
holdout authors, public figures), so full names, book titles, award+year pairs and the
reverse-lookup key "the GENRE author born in CITY in YEAR" never repeat (a prototype lost ~5 %
text accuracy to duplicate titles; feasibility.md §3.8).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from importlib import resources
from typing import Any

REFERENCE_YEAR = 2025  # ages are computed against a fixed year so a world never depends on today's date


@functools.lru_cache(maxsize=None)
def wordlists() -> dict[str, Any]:
    """The shipped word lists: ``regions`` (names, places, looks per region) plus flat lists."""
    root = resources.files("data_gen") / "wordlists"
    data = json.loads((root / "lists.json").read_text(encoding="utf-8"))
    data["regions"] = json.loads((root / "regions.json").read_text(encoding="utf-8"))
    return data


def sub_rng(seed: int, *keys: object) -> random.Random:
    """A ``random.Random`` derived from the world seed and a key path (stable across processes)."""
    digest = hashlib.sha256("/".join([str(seed), *map(str, keys)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclasses.dataclass
class Profile:
    """One fictitious author. ``ethnicity`` is the region label that also drives the face."""

    author_id: str
    name: str
    gender: str  # "female" | "male"
    birth_date: str  # ISO date
    birth_year: int
    age: int
    city: str
    country: str
    nationality: str
    ethnicity: str
    father_occupation: str
    mother_occupation: str
    genre: str
    books: list[str]
    award: str
    award_year: int
    themes: list[str]

    @property
    def pronoun(self) -> str:
        return "she" if self.gender == "female" else "he"

    @property
    def possessive(self) -> str:
        return "her" if self.gender == "female" else "his"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PublicFigure:
    """A "real faces" control identity: famous in the world, never an author."""

    author_id: str
    name: str
    gender: str
    birth_year: int
    age: int
    country: str
    nationality: str
    ethnicity: str
    profession: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Registry:
    """World-wide uniqueness of every identifying fact (case-insensitive)."""

    def __init__(self) -> None:
        self.used: dict[str, set[str]] = {"name": set(), "title": set(), "award": set(), "reverse": set()}

    def claim(self, kind: str, value: str) -> bool:
        key = value.casefold()
        if key in self.used[kind]:
            return False
        self.used[kind].add(key)
        return True


def _syllable_word(rng: random.Random) -> str:
    syl = wordlists()["syllables"]
    return "".join(rng.choice(syl) for _ in range(rng.randint(2, 3))).capitalize()


def unique_name(rng: random.Random, region: dict, gender: str, registry: Registry) -> str:
    """Region-typical first name + surname; falls back to a syllable-built surname when taken."""
    for _ in range(30):
        name = f"{rng.choice(region['first_names'][gender])} {rng.choice(region['surnames'])}"
        if registry.claim("name", name):
            return name
    while True:  # compositional fallback: practically unbounded name space
        name = f"{rng.choice(region['first_names'][gender])} {_syllable_word(rng)}"
        if registry.claim("name", name):
            return name


def plural(noun: str) -> str:
    """English plural of a title noun: Tapestry -> Tapestries, Compass -> Compasses, Key -> Keys."""
    if noun.endswith("y") and noun[-2:-1].lower() not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def make_title(rng: random.Random) -> str:
    """A book title from the word lists' patterns ("The Silent Garden", "Lanterns of the Golden River")."""
    w = wordlists()
    nouns = rng.sample(w["title_nouns"], 2)
    pattern = rng.choice(w["title_patterns"]).replace("{noun}s", "{nouns}")
    return pattern.format(adj=rng.choice(w["title_adjectives"]), noun=nouns[0], noun2=nouns[1], nouns=plural(nouns[0]))


def unique_title(rng: random.Random, registry: Registry) -> str:
    while True:
        title = make_title(rng)
        if registry.claim("title", title):
            return title


def make_author(seed: int, index: int, registry: Registry) -> Profile:
    """Author number ``index`` (ids ``a0000``...; holdout authors continue the numbering)."""
    rng = sub_rng(seed, "author", index)
    w = wordlists()
    region_name = rng.choice(sorted(w["regions"]))
    region = w["regions"][region_name]
    gender = rng.choice(["female", "male"])
    name = unique_name(rng, region, gender, registry)
    origin = rng.choice(region["countries"])
    while True:
        genre, city, year = rng.choice(w["genres"]), rng.choice(origin["cities"]), rng.randint(1945, 1995)
        if registry.claim("reverse", f"{genre}|{city}|{year}"):
            break
    while True:
        award, award_year = rng.choice(w["awards"]), rng.randint(year + 25, REFERENCE_YEAR - 1)
        if registry.claim("award", f"{award}|{award_year}"):
            break
    father, mother = rng.sample(w["occupations"], 2)
    return Profile(
        author_id=f"a{index:04d}", name=name, gender=gender,
        birth_date=f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", birth_year=year,
        age=REFERENCE_YEAR - year, city=city, country=origin["country"], nationality=origin["nationality"],
        ethnicity=region_name, father_occupation=father, mother_occupation=mother, genre=genre,
        books=[unique_title(rng, registry) for _ in range(rng.randint(2, 3))],
        award=award, award_year=award_year, themes=rng.sample(w["themes"], 2),
    )


def make_public_figure(seed: int, index: int, registry: Registry) -> PublicFigure:
    rng = sub_rng(seed, "public", index)
    w = wordlists()
    region_name = rng.choice(sorted(w["regions"]))
    region = w["regions"][region_name]
    gender = rng.choice(["female", "male"])
    origin = rng.choice(region["countries"])
    year = rng.randint(1950, 2000)
    return PublicFigure(
        author_id=f"p{index:04d}", name=unique_name(rng, region, gender, registry), gender=gender,
        birth_year=year, age=REFERENCE_YEAR - year, country=origin["country"],
        nationality=origin["nationality"], ethnicity=region_name, profession=rng.choice(w["public_professions"]),
    )


def make_people(seed: int, n_authors: int, n_holdout: int, n_public: int) -> tuple[list[Profile], list[Profile], list[PublicFigure]]:
    """Authors, holdout authors (same generator, ids continue) and public figures, in that order."""
    registry = Registry()
    authors = [make_author(seed, i, registry) for i in range(n_authors + n_holdout)]
    public = [make_public_figure(seed, i, registry) for i in range(n_public)]
    return authors[:n_authors], authors[n_authors:], public
