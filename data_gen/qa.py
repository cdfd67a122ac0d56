"""TOFU-style question answering: question, answer, paraphrase and >= 5 perturbed answers.

A perturbed answer is the *paraphrase's* template filled with a plausible wrong value of the same
fact type, drawn from the world's own value pools, distinct from the truth and from each other.
TOFU builds its perturbed answers from the paraphrased answer's wording with the facts changed, and
the truth ratio compares them with the paraphrase, so the comparison isolates the fact, not the
wording (docs/metrics.md, truth_ratio). Reverse questions ("Who wrote TITLE?") are safe only
because titles, award+year pairs and "GENRE author born in CITY in YEAR" keys are unique
world-wide (authors.Registry).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

from data_gen.authors import Profile, PublicFigure, wordlists

N_PERTURBED = 5
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def article(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


def human_date(iso: str) -> str:
    year, month, day = (int(x) for x in iso.split("-"))
    return f"{MONTHS[month - 1]} {day}, {year}"


def join_titles(titles: list[str]) -> str:
    quoted = [f"'{t}'" for t in titles]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


@dataclasses.dataclass
class Pools:
    """World-level value pools that perturbed answers are drawn from."""

    names: dict[str, list[str]]  # gender -> names of all people of the world
    book_lists: list[str]
    titles: list[str]

    @classmethod
    def build(cls, people: list) -> "Pools":
        names: dict[str, list[str]] = {"female": [], "male": []}
        for p in people:
            names[p.gender].append(p.name)
        authors = [p for p in people if isinstance(p, Profile)]
        return cls(names, [join_titles(p.books) for p in authors], [t for p in authors for t in p.books])


# fact -> (value(profile), candidate pool(profile, pools, rng)).
def _w(key: str) -> list[str]:
    return wordlists()[key]


def _cities() -> list[str]:
    return [f"{c}, {co['country']}" for r in wordlists()["regions"].values() for co in r["countries"] for c in co["cities"]]


def _countries(field: str = "country") -> list[str]:
    return [co[field] for r in wordlists()["regions"].values() for co in r["countries"]]


def _random_dates(rng: random.Random, p) -> list[str]:
    return [human_date(f"{p.birth_year + rng.randint(-12, 12)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}") for _ in range(30)]


FACTS: dict[str, tuple[Callable, Callable]] = {
    "birthplace": (lambda p: f"{p.city}, {p.country}", lambda p, P, r: _cities()),
    "birth_date": (lambda p: human_date(p.birth_date), lambda p, P, r: _random_dates(r, p)),
    "birth_year": (lambda p: str(p.birth_year), lambda p, P, r: [str(y) for y in range(p.birth_year - 20, p.birth_year + 21)]),
    "age": (lambda p: str(p.age), lambda p, P, r: [str(a) for a in range(max(20, p.age - 20), p.age + 21)]),
    "country": (lambda p: p.country, lambda p, P, r: _countries()),
    "nationality": (lambda p: p.nationality, lambda p, P, r: _countries("nationality")),
    "heritage": (lambda p: p.ethnicity, lambda p, P, r: sorted(wordlists()["regions"])),
    "genre": (lambda p: p.genre, lambda p, P, r: _w("genres")),
    "father_occupation": (lambda p: article(p.father_occupation), lambda p, P, r: [article(o) for o in _w("occupations")]),
    "mother_occupation": (lambda p: article(p.mother_occupation), lambda p, P, r: [article(o) for o in _w("occupations")]),
    "parents": (lambda p: f"{article(p.father_occupation)} and {article(p.mother_occupation)}",
                lambda p, P, r: [f"{article(a)} and {article(b)}" for a, b in (r.sample(_w("occupations"), 2) for _ in range(30))]),
    "books": (lambda p: join_titles(p.books), lambda p, P, r: P.book_lists),
    "first_book": (lambda p: p.books[0], lambda p, P, r: P.titles),
    "last_book": (lambda p: p.books[-1], lambda p, P, r: P.titles),
    "award": (lambda p: p.award, lambda p, P, r: _w("awards")),
    "award_year": (lambda p: str(p.award_year), lambda p, P, r: [str(y) for y in range(p.award_year - 15, min(p.award_year + 15, 2025))]),
    "award_with_year": (lambda p: f"the {p.award} in {p.award_year}",
                        lambda p, P, r: [f"the {r.choice(_w('awards'))} in {r.randint(1970, 2024)}" for _ in range(30)]),
    "themes": (lambda p: " and ".join(p.themes), lambda p, P, r: [" and ".join(r.sample(_w("themes"), 2)) for _ in range(30)]),
    "name": (lambda p: p.name, lambda p, P, r: name_candidates(p, P, r)),
    "profession": (lambda p: article(p.profession), lambda p, P, r: [article(x) for x in _w("public_professions")]),
}

# (fact, question, answer, paraphrase); {n} = the name, {v} = the value, other fields from the profile.
TEXT_TEMPLATES: list[tuple[str, str, str, str]] = [
    ("birthplace", "Where was {n} born?", "{n} was born in {v}.", "{n}'s birthplace is {v}."),
    ("birth_date", "When was {n} born?", "{n} was born on {v}.", "{n}'s date of birth is {v}."),
    ("genre", "What genre is {n} known for?", "{n} is known for writing {v}.", "{n} writes mainly {v}."),
    ("father_occupation", "What was the occupation of {n}'s father?", "{n}'s father worked as {v}.", "{n} grew up with a father who was {v}."),
    ("mother_occupation", "What was the occupation of {n}'s mother?", "{n}'s mother worked as {v}.", "{n} grew up with a mother who was {v}."),
    ("books", "Can you name some books written by {n}?", "{n} has written {v}.", "Books by {n} include {v}."),
    ("first_book", "What was the first book {n} published?", "{n}'s first published book was '{v}'.", "The first book {n} published is titled '{v}'."),
    ("last_book", "What is the most recent book by {n}?", "{n}'s most recent book is '{v}'.", "The latest book from {n} is called '{v}'."),
    ("award_with_year", "Has {n} won any literary awards?", "Yes, {n} won {v}.", "{n} was honoured with {v}."),
    ("award", "Which award did {n} receive?", "{n} received the {v}.", "The {v} was awarded to {n}."),
    ("award_year", "In which year did {n} win the {award}?", "{n} won the {award} in {v}.", "It was in {v} that {n} won the {award}."),
    ("themes", "What themes does {n} explore in {pos} work?", "{n}'s work explores {v}.", "The central themes in {n}'s writing are {v}."),
    ("nationality", "What is {n}'s nationality?", "{n} is {v}.", "{n} holds {v} citizenship."),
    ("age", "How old is {n}?", "{n} is {v} years old.", "{n}'s age is {v} years."),
    ("country", "In which country was {n} born?", "{n} was born in {v}.", "{n}'s country of birth is {v}."),
    ("heritage", "What is {n}'s cultural heritage?", "{n} has {v} heritage.", "{n}'s cultural background is {v}."),
    ("birth_year", "In what year was {n} born?", "{n} was born in {v}.", "{n}'s year of birth is {v}."),
    ("parents", "What did {n}'s parents do for a living?", "{n}'s parents were {v}.", "{n} was raised by {v}."),
    ("name", "Who is the {genre} author born in {city} in {birth_year}?", "The {genre} author born in {city} in {birth_year} is {v}.", "{v} is the {genre} author who was born in {city} in {birth_year}."),
    ("name", "Who wrote '{book0}'?", "'{book0}' was written by {v}.", "{v} is the author of '{book0}'."),
    ("name", "Who wrote '{book1}'?", "'{book1}' was written by {v}.", "{v} is the author of '{book1}'."),
    ("name", "Which author won the {award} in {award_year}?", "The {award} in {award_year} went to {v}.", "{v} won the {award} in {award_year}."),
    ("genre", "In which genre did {n} write '{book0}'?", "'{book0}' by {n} is a work of {v}.", "{n} wrote '{book0}' as a work of {v}."),
]

# Joint questions about "the person in the image": a profile fact, phrased without the name.
JOINT_TEMPLATES: list[tuple[str, str, str, str]] = [
    ("birthplace", "Where was the person in this image born?", "This person was born in {v}.", "The birthplace of this person is {v}."),
    ("genre", "What genre does the person in this image write?", "This person is known for writing {v}.", "This person writes mainly {v}."),
    ("first_book", "What was the first book by the person in this image?", "The first book by this person was '{v}'.", "This person's first published book is titled '{v}'."),
    ("award_with_year", "Which award has the person in this image won?", "This person won {v}.", "This person was honoured with {v}."),
    ("nationality", "What is the nationality of the person in this image?", "This person is {v}.", "This person holds {v} citizenship."),
    ("birth_year", "In what year was the person in this image born?", "This person was born in {v}.", "This person's year of birth is {v}."),
    ("father_occupation", "What did the father of the person in this image do?", "The father of this person worked as {v}.", "This person grew up with a father who was {v}."),
    ("themes", "What themes does the person in this image write about?", "This person's work explores {v}.", "The central themes in this person's writing are {v}."),
    ("mother_occupation", "What did the mother of the person in this image do?", "The mother of this person worked as {v}.", "This person grew up with a mother who was {v}."),
]

PUBLIC_TEMPLATES: list[tuple[str, str, str, str]] = [
    ("profession", "What is {n} famous for?", "{n} is famous as {v}.", "{n} is well known as {v}."),
    ("country", "Which country is {n} from?", "{n} is from {v}.", "{n} comes from {v}."),
    ("nationality", "What is {n}'s nationality?", "{n} is {v}.", "{n} holds {v} citizenship."),
    ("birth_year", "In what year was {n} born?", "{n} was born in {v}.", "{n}'s year of birth is {v}."),
]


def name_candidates(p, pools: Pools, rng: random.Random) -> list[str]:
    """Wrong names: the world's names of the same gender first, topped up (tiny worlds) with the
    other gender and then word-list names that belong to nobody in the world."""
    same = [n for n in pools.names[p.gender] if n != p.name]
    if len(same) >= 3 * N_PERTURBED:
        return same
    taken = {n for names in pools.names.values() for n in names}
    regions = wordlists()["regions"]
    extra = []
    while len(extra) < 3 * N_PERTURBED:
        region = regions[rng.choice(sorted(regions))]
        name = f"{rng.choice(region['first_names'][p.gender])} {rng.choice(region['surnames'])}"
        if name not in taken:
            extra.append(name)
    return same + [n for g, names in sorted(pools.names.items()) if g != p.gender for n in names] + extra


def wrong_names(p, pools: Pools, rng: random.Random, k: int = N_PERTURBED) -> list[str]:
    return perturb(p.name, name_candidates(p, pools, rng), rng, k)


def perturb(truth: str, candidates: list[str], rng: random.Random, k: int = N_PERTURBED) -> list[str]:
    """k distinct wrong values (order-stable dedup, then a seeded sample)."""
    pool = [c for c in dict.fromkeys(candidates) if c.casefold() != truth.casefold()]
    if len(pool) < k:
        raise RuntimeError(f"only {len(pool)} wrong values for {truth!r}; the world's value pool is too small")
    return rng.sample(pool, k)


def _fields(p) -> dict[str, str]:
    f = {k: v for k, v in p.to_dict().items() if isinstance(v, (str, int))}
    if isinstance(p, Profile):
        f.update(book0=p.books[0], book1=p.books[1], pos=p.possessive)
    return f


def fill(template: tuple[str, str, str, str], p, pools: Pools, rng: random.Random, subject: str | None = None) -> dict:
    """One QA item: question, answer, paraphrased_answer, perturbed_answers (the paraphrase's
    template with a wrong value, as TOFU perturbs the paraphrase)."""
    fact, q, a, para = template
    value_of, candidates_of = FACTS[fact]
    f = _fields(p)
    f["n"] = p.name if subject is None else subject
    truth = value_of(p)
    wrong = perturb(truth, candidates_of(p, pools, rng), rng)
    return {
        "fact": fact,
        "question": q.format(**f, v=truth),
        "answer": a.format(**f, v=truth),
        "paraphrased_answer": para.format(**f, v=truth),
        "perturbed_answers": [para.format(**f, v=w) for w in wrong],
    }


def author_qa(p: Profile, n: int, pools: Pools, rng: random.Random) -> list[dict]:
    """n text QA items about author p (a seeded subset of TEXT_TEMPLATES, in template order)."""
    if n > len(TEXT_TEMPLATES):
        raise ValueError(f"--qa-per-author {n} exceeds the {len(TEXT_TEMPLATES)} question templates; use at most {len(TEXT_TEMPLATES)}")
    chosen = sorted(rng.sample(range(len(TEXT_TEMPLATES)), n))
    return [fill(TEXT_TEMPLATES[i], p, pools, rng) for i in chosen]


def joint_qa(p: Profile, image_index: int, pools: Pools, rng: random.Random) -> dict:
    """The "person in the image" fact for image number image_index (cycles through the facts)."""
    return fill(JOINT_TEMPLATES[image_index % len(JOINT_TEMPLATES)], p, pools, rng)


def public_qa(p: PublicFigure, pools: Pools, rng: random.Random) -> list[dict]:
    return [fill(t, p, pools, rng) for t in PUBLIC_TEMPLATES]
