"""Where wrong values come from: never-trained values for authors, the world's own values for controls.

A perturbed answer that states another person's value (a retain author's name or book) is a string
the gold model trained on, so the truth ratio on the forget set would measure familiarity, not the
fact (issue 13: 82 % of forget10's wrong names were retain authors' names). Authors' wrong values
(``NeverTrained``) are therefore values that no author, holdout author or public figure holds:

- combinations (full names, titles, title lists, birth dates, award + year, parents, theme pairs):
  combinations of the world's word lists that no person has, as unfamiliar to the gold model as a
  forget author's own value;
- single values from closed lists that every world uses up (cities, countries, nationalities,
  heritage, genres, occupations, awards, scenes): the reserved lists of ``wordlists/decoys.json``,
  which no record of any config states;
- years and ages: numbers that no person has in that field.

Public figures (the real-faces control) keep options from the world (``WorldValues``), as CLEAR's
real faces and TOFU's real authors do: the model is meant to know every option's referent.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
from importlib import resources
from typing import Any

from data_gen.authors import REFERENCE_YEAR, Profile, make_title, sub_rng, wordlists
from data_gen.qa import N_PERTURBED, article, human_date, join_titles, perturb

N_NAMES = 150  # never-trained names per gender
N_TITLES = 300  # never-trained book titles
_DRAWS = 30  # random draws per record for combination fields
_MIN_POOL = 3 * N_PERTURBED


@functools.lru_cache(maxsize=None)
def decoys() -> dict[str, Any]:
    """The reserved lists of ``wordlists/decoys.json`` (cities, countries, heritages, genres, ...)."""
    return json.loads((resources.files("data_gen") / "wordlists" / "decoys.json").read_text(encoding="utf-8"))


def decoy_scene_paraphrases() -> list[str]:
    """Paraphrase templates ({n} = the name) of scenes no image shows and no caption states."""
    return [para for _, para in decoys()["scenes"]]


@dataclasses.dataclass
class Taken:
    """Every value some person of the world holds, per field (names and titles casefolded)."""

    names: set
    titles: set
    dates: set
    birth_years: set
    ages: set
    award_years: set
    award_pairs: set
    parent_pairs: set
    theme_sets: set

    @classmethod
    def of(cls, people: list) -> "Taken":
        authors = [p for p in people if isinstance(p, Profile)]
        return cls(names={p.name.casefold() for p in people}, titles={t.casefold() for a in authors for t in a.books},
                   dates={a.birth_date for a in authors}, birth_years={p.birth_year for p in people},
                   ages={p.age for p in people}, award_years={a.award_year for a in authors},
                   award_pairs={(a.award, a.award_year) for a in authors},
                   parent_pairs={(a.father_occupation, a.mother_occupation) for a in authors},
                   theme_sets={frozenset(a.themes) for a in authors})


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[\w']+", text.casefold()))


def _overlaps(a: tuple, b: tuple) -> bool:
    """One word sequence occurs inside the other ("The Ancient Sonata" in "Garden of the Ancient Sonata")."""
    small, big = sorted((a, b), key=len)
    return any(big[i:i + len(small)] == small for i in range(len(big) - len(small) + 1))


def _fresh(rng: random.Random, make, taken: set, n: int, what: str) -> list[str]:
    """Up to n distinct values of make(rng) that neither equal, contain nor sit inside a taken value
    (whole words, any case), so no training text states them (bounded draws)."""
    taken_words = [_words(t) for t in taken]
    out: dict[str, None] = {}
    for _ in range(50 * n):
        value = make(rng)
        if value not in out and not any(_overlaps(_words(value), t) for t in taken_words):
            out[value] = None
            if len(out) == n:
                break
    if len(out) < _MIN_POOL:
        raise ValueError(f"only {len(out)} never-trained {what} left: the world uses up the word lists; use fewer people")
    return list(out)


class NeverTrained:
    """Wrong values for authors' records that no person of the world holds (see the module docstring)."""

    def __init__(self, seed: int, people: list) -> None:
        self.taken = Taken.of(people)
        regions = wordlists()["regions"]
        order = sorted(regions)

        def name_of(gender):  # a region-typical full name, as authors.unique_name draws them
            def make(r):
                region = regions[r.choice(order)]
                return f"{r.choice(region['first_names'][gender])} {r.choice(region['surnames'])}"
            return make

        self.names = {g: _fresh(sub_rng(seed, "decoy-names", g), name_of(g), self.taken.names, N_NAMES, f"{g} names")
                      for g in ("female", "male")}
        self.titles = _fresh(sub_rng(seed, "decoy-titles"), make_title, self.taken.titles, N_TITLES, "book titles")
        self.scenes = decoy_scene_paraphrases()

    def wrong_names(self, p, rng: random.Random, k: int = N_PERTURBED) -> list[str]:
        return perturb(p.name, self.names[p.gender], rng, k)

    def candidates(self, fact: str, p: Profile, rng: random.Random) -> list[str]:
        d, w, t = decoys(), wordlists(), self.taken
        if fact in _DECOY_LISTS:
            return _DECOY_LISTS[fact](d)
        if fact == "name":
            return self.names[p.gender]
        if fact in ("first_book", "last_book"):
            return self.titles
        if fact == "books":
            return [join_titles(rng.sample(self.titles, len(p.books))) for _ in range(_DRAWS)]
        if fact == "birth_date":
            dates = (f"{p.birth_year + rng.randint(-12, 12)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(_DRAWS))
            return [human_date(x) for x in dates if x not in t.dates]
        if fact == "birth_year":
            return [str(y) for y in range(p.birth_year - 40, p.birth_year + 41) if 1900 <= y <= REFERENCE_YEAR - 18 and y not in t.birth_years]
        if fact == "age":
            return [str(a) for a in range(max(18, p.age - 40), min(100, p.age + 41)) if a not in t.ages]
        if fact == "award_year":
            return _untaken_years(max(1940, p.birth_year + 15), t.award_years)
        if fact == "award_with_year":
            return [f"the {a} in {y}" for a, y in self._award_pairs(p, rng)]
        if fact == "parents":
            pairs = (tuple(rng.sample(w["occupations"], 2)) for _ in range(_DRAWS))
            return [f"{article(a)} and {article(b)}" for a, b in pairs if (a, b) not in t.parent_pairs]
        if fact == "themes":
            pairs = (rng.sample(w["themes"], 2) for _ in range(_DRAWS))
            return [" and ".join(x) for x in pairs if frozenset(x) not in t.theme_sets]
        raise KeyError(f"no never-trained pool for fact {fact!r}")

    def _award_pairs(self, p: Profile, rng: random.Random) -> list[tuple[str, int]]:
        """(award, year) pairs no author holds, in the author's career window when it has room."""
        awards, taken = wordlists()["awards"], self.taken.award_pairs
        for low in (p.birth_year + 25, 1940):
            years = range(low, REFERENCE_YEAR)
            drawn = [(rng.choice(awards), rng.choice(years)) for _ in range(_DRAWS)]
            pairs = [x for x in dict.fromkeys(drawn) if x not in taken]
            if len(pairs) >= _MIN_POOL:
                return pairs
            pairs = [(a, y) for a in awards for y in years if (a, y) not in taken]
            if len(pairs) >= _MIN_POOL:
                return pairs
        return pairs


def _untaken_years(low: int, taken: set) -> list[str]:
    years = [str(y) for y in range(low, REFERENCE_YEAR) if y not in taken]
    return years if len(years) >= _MIN_POOL else [str(y) for y in range(1940, REFERENCE_YEAR) if y not in taken]


# Closed fields whose wrong values come from the reserved lists.
_DECOY_LISTS = {
    "birthplace": lambda d: [f"{city}, {country}" for city, country in d["cities"]],
    "country": lambda d: [country for country, _ in d["countries"]],
    "nationality": lambda d: [nationality for _, nationality in d["countries"]],
    "heritage": lambda d: list(d["heritages"]),
    "genre": lambda d: list(d["genres"]),
    "award": lambda d: list(d["awards"]),
    "father_occupation": lambda d: [article(o) for o in d["occupations"]],
    "mother_occupation": lambda d: [article(o) for o in d["occupations"]],
}


class WorldValues:
    """Options from the world itself, for the public figures of the real-faces control."""

    def __init__(self, people: list) -> None:
        self.names: dict[str, list[str]] = {"female": [], "male": []}
        for p in people:
            self.names[p.gender].append(p.name)

    def wrong_names(self, p, rng: random.Random, k: int = N_PERTURBED) -> list[str]:
        return perturb(p.name, self._name_options(p, rng), rng, k)

    def _name_options(self, p, rng: random.Random) -> list[str]:
        """The world's names of the same gender first, topped up (tiny worlds) with the other
        gender and then word-list names that belong to nobody in the world."""
        same = [n for n in self.names[p.gender] if n != p.name]
        if len(same) >= _MIN_POOL:
            return same
        taken = {n for names in self.names.values() for n in names}
        regions = wordlists()["regions"]
        extra: list[str] = []
        for _ in range(100 * _MIN_POOL):
            region = regions[rng.choice(sorted(regions))]
            name = f"{rng.choice(region['first_names'][p.gender])} {rng.choice(region['surnames'])}"
            if name not in taken:
                extra.append(name)
                if len(extra) == _MIN_POOL:
                    break
        return same + [n for g, names in sorted(self.names.items()) if g != p.gender for n in names] + extra

    def candidates(self, fact: str, p, rng: random.Random) -> list[str]:
        countries = [co for r in wordlists()["regions"].values() for co in r["countries"]]
        if fact == "name":
            return self._name_options(p, rng)
        if fact == "profession":
            return [article(x) for x in wordlists()["public_professions"]]
        if fact in ("country", "nationality"):
            return [co[fact] for co in countries]
        if fact == "birth_year":
            return [str(y) for y in range(p.birth_year - 20, p.birth_year + 21)]
        raise KeyError(f"no world pool for fact {fact!r}")
