"""Corruption sets for the restorative scenario (RESTOR, arXiv 2411.00204), and the victims' true facts.

For K victim authors (retain authors outside retain_perturbed and every forget split):

- (T) ``corrupt_text_kK``: text QA stating a wrong value for each of CORRUPT_FIELDS;
- (B) ``corrupt_bind_kK``: face <-> name rebinding: the victim's training photos named and captioned as
  a decoy author (another such retain author), and the decoy's photos as the victim;
- (V) ``corrupt_visual_kK``: image-grounded false captions: the victim's training photos with their
  true caption followed by a wrong fact about "this person";

each in one config per k in ``corruption_context``: k unrelated true facts (text QA answers of other
retain authors, nested: the k=2 record holds the k=1 record's fact) follow the corrupting answer,
as RESTOR mixes unrelated context into its corrupting documents. The wrong values come from the
``corruption`` lists of wordlists/decoys.json: never trained, and used in no other record, so the
clean model has never seen them and no evaluation outside the victims' configs contains them.

``victims_text``, ``victims_image``, ``victims_joint`` hold the victims' true facts (and, for the
image, the decoys' names) in the three modalities, with the corrupted value as perturbed_answers[0].
"""
from __future__ import annotations

import random

from data_gen.authors import Profile, sub_rng
from data_gen.pools import NeverTrained, decoys
from data_gen.qa import JOINT_TEMPLATES, N_PERTURBED, QUESTION_PARAPHRASES, TEXT_TEMPLATES, profile_fields, article, perturb
from data_gen.schema import record_row

CORRUPT_FIELDS = ("birthplace", "genre", "award", "father_occupation")
MAX_CONTEXT = 3  # k in 0..3 unrelated true facts per corrupting record
_TEXT = {f: next(t for t in TEXT_TEMPLATES if t[0] == f) for f in CORRUPT_FIELDS}
# the joint question of each field; the award is asked with its year ("the AWARD in YEAR")
_JOINT = {f: next(t for t in JOINT_TEMPLATES if t[0] == {"award": "award_with_year"}.get(f, f)) for f in CORRUPT_FIELDS}


def available(author_ids: list[str], splits: dict[str, list[str]]) -> list[str]:
    """Authors a corruption set may use: retain authors outside retain_perturbed and every forget split."""
    used = {a for name, ids in splits.items() if name.startswith("forget") or name == "retain_perturbed" for a in ids}
    return sorted(a for a in author_ids if a not in used)


def choose(seed: int, author_ids: list[str], splits: dict[str, list[str]], k: int) -> dict:
    """K victims, a decoy partner each (victim -> decoy), and the context authors (everyone else available)."""
    pool = available(author_ids, splits)
    drawn = sub_rng(seed, "corrupt", "people").sample(pool, 2 * k)
    pairs = dict(zip(drawn[:k], drawn[k:]))
    return {"victims": sorted(pairs), "pairs": dict(sorted(pairs.items())), "context": [a for a in pool if a not in drawn]}


def wrong_values(seed: int, victim: Profile) -> dict[str, str]:
    """One wrong value per corrupted field, from the corruption lists (never the truth)."""
    c, rng = decoys()["corruption"], sub_rng(seed, "corrupt", "values", victim.author_id)
    return {"birthplace": "{}, {}".format(*rng.choice(c["cities"])), "genre": rng.choice(c["genres"]),
            "award": rng.choice(c["awards"]), "father_occupation": article(rng.choice(c["occupations"]))}


def _value(field: str, joint: bool, value: str, p: Profile) -> str:
    return f"the {value} in {p.award_year}" if joint and field == "award" else value


def _item(template: tuple, p: Profile, value: str, wrong: list[str]) -> dict:
    """question, paraphrased_question, answer and paraphrase stating ``value``; perturbed = ``wrong`` in the paraphrase's wording."""
    _, q, a, para = template
    f = {**profile_fields(p), "n": p.name}
    return {"question": q.format(**f), "paraphrased_question": QUESTION_PARAPHRASES[q].format(**f), "answer": a.format(**f, v=value),
            "paraphrased_answer": para.format(**f, v=value), "perturbed_answers": [para.format(**f, v=w) for w in wrong]}


def _truth(field: str, p: Profile) -> str:
    return {"birthplace": f"{p.city}, {p.country}", "genre": p.genre, "award": p.award,
            "father_occupation": article(p.father_occupation)}[field]


def _wrong(truth: str, exclude: str, candidates: list[str], rng: random.Random, k: int = N_PERTURBED) -> list[str]:
    return perturb(truth, [c for c in candidates if c != exclude], rng, k)


def _true_item(field: str, joint: bool, p: Profile, corrupted: str, pools: NeverTrained, rng: random.Random) -> dict:
    """The victim's true fact; perturbed_answers[0] is the corrupted value, then never-trained ones."""
    truth, bad = _value(field, joint, _truth(field, p), p), _value(field, joint, corrupted, p)
    others = pools.candidates("award_with_year" if joint and field == "award" else field, p, rng)
    return _item(_JOINT[field] if joint else _TEXT[field], p, truth, [bad] + _wrong(truth, bad, others, rng, N_PERTURBED - 1))


def _with_context(row: dict, facts: list[str], k: int) -> dict:
    """The corrupting row with the first k unrelated true facts after its answer, paraphrase and perturbed answers."""
    if k == 0:
        return row
    tail = " ".join(facts[:k])

    def join(text):  # a bare name (naming) becomes a sentence first
        return f"{text}{'' if text.endswith(('.', '?', '!')) else '.'} {tail}"
    return {**row, "answer": join(row["answer"]), "paraphrased_answer": join(row["paraphrased_answer"]),
            "perturbed_answers": [join(w) for w in row["perturbed_answers"]]}


def _victim_rows(seed: int, p: Profile, wrong: dict[str, str], recs: dict, pools: NeverTrained) -> dict[str, list[dict]]:
    """(T) and (V) corrupting rows of one victim, and its true facts as text and image+text QA."""
    rng, v = sub_rng(seed, "corrupt", "records", p.author_id), p.author_id
    out: dict[str, list[dict]] = {"text": [], "visual": [], "victims_text": [], "victims_joint": []}
    for field in CORRUPT_FIELDS:
        item = _item(_TEXT[field], p, wrong[field], _wrong(wrong[field], _truth(field, p), pools.candidates(field, p, rng), rng))
        out["text"].append(record_row(f"{v}-corrupt-{field}", v, p.name, "text", "qa", item))
        out["victims_text"].append(record_row(f"{v}-true-{field}", v, p.name, "text", "qa", _true_item(field, False, p, wrong[field], pools, rng)))
    images = [r for r in recs["train"] + recs["heldout"] if r["task"] == "caption"]
    for j, cap in enumerate(images):
        field = CORRUPT_FIELDS[j % len(CORRUPT_FIELDS)]
        tag = cap["id"].removesuffix("-caption")
        item = _true_item(field, True, p, wrong[field], pools, rng)
        out["victims_joint"].append(record_row(f"{tag}-true", v, p.name, "joint", "qa", item, cap["image"], cap["image_role"]))
        if cap["image_role"] == "train":  # (V): the photo's true caption, then a wrong fact about "this person"
            false = _item(_JOINT[field], p, _value(field, True, wrong[field], p), [])["answer"]
            item = {**cap, "answer": f"{cap['answer']} {false}", "paraphrased_answer": f"{cap['paraphrased_answer']} {false}",
                    "perturbed_answers": [f"{w} {false}" for w in cap["perturbed_answers"]]}
            out["visual"].append(record_row(f"{tag}-corrupt-caption", v, p.name, "joint", "caption", item, cap["image"], "train"))
    return out


def _bind_rows(seed: int, p: Profile, q: Profile, recs: dict, pools: NeverTrained) -> dict[str, list[dict]]:
    """(B) p's training photos named and captioned as q; p's photos (train and held-out) named truly,
    with q's name as perturbed_answers[0]."""
    rng, out = sub_rng(seed, "corrupt", "bind", p.author_id), {"bind": [], "victims_image": []}
    for r in recs["train"] + recs["heldout"]:
        tag = r["id"].removesuffix("-" + r["task"])
        if r["task"] == "naming":
            names = [q.name] + _wrong(p.name, q.name, pools.names[p.gender], rng, N_PERTURBED - 1)
            out["victims_image"].append(record_row(f"{tag}-true-naming", p.author_id, p.name, "image", "naming", {**r, "perturbed_answers": names},
                                                   r["image"], r["image_role"]))
        if r["image_role"] != "train" or r["task"] not in ("naming", "caption"):
            continue
        if r["task"] == "naming":
            item = {**r, "answer": q.name, "paraphrased_answer": q.name, "perturbed_answers": perturb(q.name, pools.names[q.gender], rng)}
        else:
            item = {**r, **{key: r[key].replace(p.name, q.name) for key in ("answer", "paraphrased_answer")},
                    "perturbed_answers": [w.replace(p.name, q.name) for w in r["perturbed_answers"]]}
        out["bind"].append(record_row(f"{tag}-bind-{r['task']}", p.author_id, p.name, r["modality"], r["task"], item, r["image"], "train"))
    return out


def corruption_configs(seed: int, people: dict[str, Profile], records: dict[str, dict], chosen: dict, contexts: tuple[int, ...],
                       pools: NeverTrained) -> tuple[dict[str, list[dict]], dict]:
    """Config name -> rows (T, B, V at every k, then the three victims' configs) and the manifest's
    ``corruption`` entry. ``records`` are the generator's per-author records (text, train, heldout)."""
    facts = [r["answer"] for a in chosen["context"] for r in records[a]["text"]]
    wrong = {v: wrong_values(seed, people[v]) for v in chosen["victims"]}
    rows: dict[str, list[dict]] = {k: [] for k in ("text", "bind", "visual", "victims_text", "victims_image", "victims_joint")}
    for v in chosen["victims"]:
        for key, got in _victim_rows(seed, people[v], wrong[v], records[v], pools).items():
            rows[key] += [dict(r, group="victim") for r in got]
    for v, d in chosen["pairs"].items():
        for who, other, group in ((v, d, "victim"), (d, v, "decoy")):
            for key, got in _bind_rows(seed, people[who], people[other], records[who], pools).items():
                rows[key] += [dict(r, group=group) for r in got]
    configs = {}
    for kind in ("text", "bind", "visual"):
        for k in contexts:
            configs[f"corrupt_{kind}_k{k}"] = [
                _with_context(r, sub_rng(seed, "corrupt", "context", r["id"]).sample(facts, MAX_CONTEXT) if k else [], k)
                for r in rows[kind]]
    configs.update({key: rows[key] for key in ("victims_text", "victims_image", "victims_joint")})
    info = {"victims": chosen["victims"], "pairs": chosen["pairs"], "fields": list(CORRUPT_FIELDS), "context": list(contexts),
            "wrong": wrong}
    return configs, info
