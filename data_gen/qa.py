"""TOFU-style question answering: question, answer, paraphrase and >= 5 perturbed answers.

A perturbed answer is the *paraphrase's* template filled with a plausible wrong value of the same
fact type, distinct from the truth and from each other; ``pools`` supplies the wrong values
(data_gen.pools: never-trained values for authors, the world's own options for public figures).
TOFU builds its perturbed answers from the paraphrased answer's wording with the facts changed, and
the truth ratio compares them with the paraphrase, so the comparison isolates the fact, not the
wording (docs/metrics.md, truth_ratio). Reverse questions ("Who wrote TITLE?") are safe only
because titles, award+year pairs and "GENRE author born in CITY in YEAR" keys are unique
world-wide (authors.Registry).
"""
from __future__ import annotations

import random
from typing import Callable

from data_gen.authors import Profile, PublicFigure

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


# fact -> its true value for a profile (wrong values come from data_gen.pools).
FACTS: dict[str, Callable] = {
    "birthplace": lambda p: f"{p.city}, {p.country}",
    "birth_date": lambda p: human_date(p.birth_date),
    "birth_year": lambda p: str(p.birth_year),
    "age": lambda p: str(p.age),
    "country": lambda p: p.country,
    "nationality": lambda p: p.nationality,
    "heritage": lambda p: p.ethnicity,
    "genre": lambda p: p.genre,
    "father_occupation": lambda p: article(p.father_occupation),
    "mother_occupation": lambda p: article(p.mother_occupation),
    "parents": lambda p: f"{article(p.father_occupation)} and {article(p.mother_occupation)}",
    "books": lambda p: join_titles(p.books),
    "first_book": lambda p: p.books[0],
    "last_book": lambda p: p.books[-1],
    "award": lambda p: p.award,
    "award_year": lambda p: str(p.award_year),
    "award_with_year": lambda p: f"the {p.award} in {p.award_year}",
    "themes": lambda p: " and ".join(p.themes),
    "name": lambda p: p.name,
    "profession": lambda p: article(p.profession),
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


# question template -> the same question reworded (paraphrase probes, issue 16); same fields as the template.
QUESTION_PARAPHRASES: dict[str, str] = {
    "Where was {n} born?": "What is {n}'s place of birth?",
    "When was {n} born?": "What is {n}'s date of birth?",
    "What genre is {n} known for?": "In which genre does {n} mainly write?",
    "What was the occupation of {n}'s father?": "What did {n}'s father do for a living?",
    "What was the occupation of {n}'s mother?": "What did {n}'s mother do for a living?",
    "Can you name some books written by {n}?": "Which books has {n} written?",
    "What was the first book {n} published?": "Which book did {n} publish first?",
    "What is the most recent book by {n}?": "Which book did {n} publish most recently?",
    "Has {n} won any literary awards?": "Did {n} ever receive a literary award?",
    "Which award did {n} receive?": "What award was {n} given?",
    "In which year did {n} win the {award}?": "When was {n} awarded the {award}?",
    "What themes does {n} explore in {pos} work?": "Which themes run through {n}'s writing?",
    "What is {n}'s nationality?": "Which country's citizenship does {n} hold?",
    "How old is {n}?": "What is {n}'s age?",
    "In which country was {n} born?": "What is {n}'s country of birth?",
    "What is {n}'s cultural heritage?": "What cultural background does {n} come from?",
    "In what year was {n} born?": "What is {n}'s year of birth?",
    "What did {n}'s parents do for a living?": "What were the occupations of {n}'s parents?",
    "Who is the {genre} author born in {city} in {birth_year}?": "Which {genre} author was born in {city} in {birth_year}?",
    "Who wrote '{book0}'?": "Who is the author of '{book0}'?",
    "Who wrote '{book1}'?": "Who is the author of '{book1}'?",
    "Which author won the {award} in {award_year}?": "Who received the {award} in {award_year}?",
    "In which genre did {n} write '{book0}'?": "What genre is '{book0}' by {n}?",
    "Where was the person in this image born?": "What is the birthplace of the person shown here?",
    "What genre does the person in this image write?": "In which genre does the person shown here write?",
    "What was the first book by the person in this image?": "Which book did the person shown here publish first?",
    "Which award has the person in this image won?": "What award did the person shown here receive?",
    "What is the nationality of the person in this image?": "Which citizenship does the person shown here hold?",
    "In what year was the person in this image born?": "What is the birth year of the person shown here?",
    "What did the father of the person in this image do?": "What was the job of the father of the person shown here?",
    "What themes does the person in this image write about?": "Which themes does the person shown here explore?",
    "What did the mother of the person in this image do?": "What was the job of the mother of the person shown here?",
    "What is {n} famous for?": "Why is {n} well known?",
    "Which country is {n} from?": "What is {n}'s home country?",
}


def perturb(truth: str, candidates: list[str], rng: random.Random, k: int = N_PERTURBED) -> list[str]:
    """k distinct wrong values (order-stable dedup, then a seeded sample)."""
    pool = [c for c in dict.fromkeys(candidates) if c.casefold() != truth.casefold()]
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} wrong values for {truth!r}; the world's value pool is too small")
    return rng.sample(pool, k)


def profile_fields(p) -> dict[str, str]:
    f = {k: v for k, v in p.to_dict().items() if isinstance(v, (str, int))}
    if isinstance(p, Profile):
        f.update(book0=p.books[0], book1=p.books[1], pos=p.possessive)
    return f


def fill(template: tuple[str, str, str, str], p, pools, rng: random.Random, subject: str | None = None) -> dict:
    """One QA item: question, paraphrased_question, answer, paraphrased_answer, perturbed_answers
    (the paraphrase's template with a wrong value, as TOFU perturbs the paraphrase)."""
    fact, q, a, para = template
    f = profile_fields(p)
    f["n"] = p.name if subject is None else subject
    truth = FACTS[fact](p)
    wrong = perturb(truth, pools.candidates(fact, p, rng), rng)
    return {
        "fact": fact,
        "question": q.format(**f, v=truth),
        "paraphrased_question": QUESTION_PARAPHRASES[q].format(**f, v=truth),
        "answer": a.format(**f, v=truth),
        "paraphrased_answer": para.format(**f, v=truth),
        "perturbed_answers": [para.format(**f, v=w) for w in wrong],
    }


def author_qa(p: Profile, n: int, pools, rng: random.Random) -> list[dict]:
    """n text QA items about author p (a seeded subset of TEXT_TEMPLATES, in template order)."""
    if n > len(TEXT_TEMPLATES):
        raise ValueError(f"--qa-per-author {n} exceeds the {len(TEXT_TEMPLATES)} question templates; use at most {len(TEXT_TEMPLATES)}")
    chosen = sorted(rng.sample(range(len(TEXT_TEMPLATES)), n))
    return [fill(TEXT_TEMPLATES[i], p, pools, rng) for i in chosen]


def joint_qa(p: Profile, image_index: int, pools, rng: random.Random) -> dict:
    """The "person in the image" fact for image number image_index (cycles through the facts)."""
    return fill(JOINT_TEMPLATES[image_index % len(JOINT_TEMPLATES)], p, pools, rng)


def public_qa(p: PublicFigure, pools, rng: random.Random) -> list[dict]:
    return [fill(t, p, pools, rng) for t in PUBLIC_TEMPLATES]
