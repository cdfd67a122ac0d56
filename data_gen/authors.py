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
BIRTH_YEARS = (1945, 1995)  # authors' birth years; an award comes at least AWARD_AGE years after birth
AWARD_AGE = 25
_TRIES = 1000  # random draws before a uniqueness loop enumerates what is left


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

    def free(self, kind: str, value: str) -> bool:
        return value.casefold() not in self.used[kind]

    def release(self, kind: str, value: str) -> None:
        self.used[kind].discard(value.casefold())


def _claim_one(rng: random.Random, registry: Registry, kind: str, draw, everything, what: str) -> str:
    """A value of ``kind`` nobody holds: up to _TRIES random draws, then a seeded choice among every
    value still free (``everything()`` lists them all); none left is an error naming the pool."""
    for _ in range(_TRIES):
        value = draw()
        if registry.claim(kind, value):
            return value
    left = [v for v in everything() if registry.free(kind, v)]
    if not left:
        raise ValueError(f"the word lists ran out of {what}: every one is taken; generate fewer people")
    value = rng.choice(left)
    registry.claim(kind, value)
    return value


def _syllable_word(rng: random.Random) -> str:
    syl = wordlists()["syllables"]
    return "".join(rng.choice(syl) for _ in range(rng.randint(2, 3))).capitalize()


def unique_name(rng: random.Random, region: dict, gender: str, registry: Registry) -> str:
    """Region-typical first name + surname; falls back to a syllable-built surname when taken."""
    for _ in range(30):
        name = f"{rng.choice(region['first_names'][gender])} {rng.choice(region['surnames'])}"
        if registry.claim("name", name):
            return name
    syl = wordlists()["syllables"]

    def every_name():  # the whole fallback space (only listed when random draws keep failing)
        words = [a + b for a in syl for b in syl] + [a + b + c for a in syl for b in syl for c in syl]
        return [f"{first} {word.capitalize()}" for first in region["first_names"][gender] for word in words]
    return _claim_one(rng, registry, "name", lambda: f"{rng.choice(region['first_names'][gender])} {_syllable_word(rng)}",
                      every_name, f"{gender} names")


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


def all_titles() -> list[str]:
    """Every title make_title can produce (listed only when random draws keep failing)."""
    w = wordlists()
    out = dict.fromkeys(pattern.replace("{noun}s", "{nouns}").format(adj=adj, noun=a, noun2=b, nouns=plural(a))
                        for pattern in w["title_patterns"] for a in w["title_nouns"] for b in w["title_nouns"] if a != b
                        for adj in w["title_adjectives"])
    return list(out)


def title_count() -> int:
    """How many distinct titles the patterns give (each pattern uses some of adj, noun, noun2)."""
    w = wordlists()
    adj, nouns = len(w["title_adjectives"]), len(w["title_nouns"])
    return sum((adj if "{adj}" in p else 1) * nouns * (nouns - 1 if "{noun2}" in p else 1) for p in w["title_patterns"])


def unique_title(rng: random.Random, registry: Registry) -> str:
    return _claim_one(rng, registry, "title", lambda: make_title(rng), all_titles, "book titles")


def _reverse_key(rng: random.Random, registry: Registry, origin: dict, last_year: int) -> tuple[str, str, int]:
    """(genre, city, birth year) with a world-unique "GENRE author born in CITY in YEAR" key."""
    genres, cities = wordlists()["genres"], origin["cities"]

    def draw():
        return f"{rng.choice(genres)}|{rng.choice(cities)}|{rng.randint(BIRTH_YEARS[0], last_year)}"

    def every():
        return [f"{g}|{c}|{y}" for g in genres for c in cities for y in range(BIRTH_YEARS[0], last_year + 1)]
    genre, city, year = _claim_one(rng, registry, "reverse", draw, every, f"'GENRE author born in CITY in YEAR' keys of {origin['country']}").split("|")
    return genre, city, int(year)


def _award(rng: random.Random, registry: Registry, year: int) -> tuple[str, int] | None:
    """A world-unique (award, year) at least AWARD_AGE years after birth; None when all are taken."""
    awards, first = wordlists()["awards"], year + AWARD_AGE
    for _ in range(_TRIES):
        award, award_year = rng.choice(awards), rng.randint(first, REFERENCE_YEAR - 1)
        if registry.claim("award", f"{award}|{award_year}"):
            return award, award_year
    left = [(a, y) for y in range(first, REFERENCE_YEAR) for a in awards if registry.free("award", f"{a}|{y}")]
    if not left:
        return None
    award, award_year = rng.choice(left)
    registry.claim("award", f"{award}|{award_year}")
    return award, award_year


def capacity() -> dict[str, int]:
    """The most authors + holdout authors each pool can keep unique; the smallest one binds.
    Award + year pairs are exact (a full career window moves the birth year earlier); titles keep
    half the space free for never-trained wrong titles (data_gen.pools), 3 titles per author."""
    w = wordlists()
    award_years = REFERENCE_YEAR - (BIRTH_YEARS[0] + AWARD_AGE)
    cities = sum(len(co["cities"]) for r in w["regions"].values() for co in r["countries"])
    return {"award + year pairs": len(w["awards"]) * award_years, "book titles": title_count() // 2 // 3,
            "reverse-lookup keys": len(w["genres"]) * cities * (BIRTH_YEARS[1] - BIRTH_YEARS[0] + 1) // 2}


def name_capacity() -> int:
    """The most people (authors, holdout authors, public figures) whose names leave half of the
    region-typical name space free for never-trained wrong names."""
    regions = wordlists()["regions"].values()
    return sum(len(r["first_names"][g]) * len(r["surnames"]) for r in regions for g in ("female", "male")) // 2


def make_author(seed: int, index: int, registry: Registry) -> Profile:
    """Author number ``index`` (ids ``a0000``...; holdout authors continue the numbering)."""
    rng = sub_rng(seed, "author", index)
    w = wordlists()
    region_name = rng.choice(sorted(w["regions"]))
    region = w["regions"][region_name]
    gender = rng.choice(["female", "male"])
    name = unique_name(rng, region, gender, registry)
    origin = rng.choice(region["countries"])
    last_year = BIRTH_YEARS[1]
    while last_year >= BIRTH_YEARS[0]:  # a full career window moves the birth year earlier
        genre, city, year = _reverse_key(rng, registry, origin, last_year)
        award_pair = _award(rng, registry, year)
        if award_pair is not None:
            break
        registry.release("reverse", f"{genre}|{city}|{year}")
        last_year = year - 1
    else:
        raise ValueError("the word lists ran out of award + year pairs: every one is taken; generate fewer authors")
    award, award_year = award_pair
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


def check_people(n_authors: int, n_public: int) -> None:
    """Fail at once (before any drawing) when the word lists cannot keep that many people unique;
    ``n_authors`` counts holdout authors too."""
    for pool, most in capacity().items():
        if n_authors > most:
            raise ValueError(f"{n_authors} authors + holdout authors exceed the {pool} of the word lists: at most {most}")
    if n_authors + n_public > name_capacity():
        raise ValueError(f"{n_authors + n_public} people (authors, holdout authors, public figures) exceed the full names "
                         f"of the word lists: at most {name_capacity()}")


def make_people(seed: int, n_authors: int, n_holdout: int, n_public: int) -> tuple[list[Profile], list[Profile], list[PublicFigure]]:
    """Authors, holdout authors (same generator, ids continue) and public figures, in that order."""
    check_people(n_authors + n_holdout, n_public)
    registry = Registry()
    authors = [make_author(seed, i, registry) for i in range(n_authors + n_holdout)]
    public = [make_public_figure(seed, i, registry) for i in range(n_public)]
    return authors[:n_authors], authors[n_authors:], public
