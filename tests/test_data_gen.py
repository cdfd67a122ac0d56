"""World generator invariants: determinism, splits, uniqueness, perturbations, faces, captions."""
import dataclasses
import itertools
import json
import re
from collections import defaultdict

import numpy as np

from conftest import tiny_world_params
from data_gen.authors import Profile, PublicFigure, make_people, plural, wordlists
from data_gen.clear_layout import CAPTION_QUESTIONS
from data_gen.generate import generate_world
from data_gen.audit import audit_wrong_values
from data_gen.pools import decoy_scene_paraphrases, decoys
from data_gen.qa import FACTS, JOINT_TEMPLATES, PUBLIC_TEMPLATES, TEXT_TEMPLATES, profile_fields
from data_gen.scenes import SCENE_CAPTIONS


def _parquet_bytes(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*.parquet"))}


def test_same_seed_gives_byte_identical_files_regardless_of_workers(tiny_world_path, tmp_path):
    again = generate_world(tmp_path / "again", tiny_world_params(workers=1))  # serial vs the fixture's 2 workers
    a, b = _parquet_bytes(tiny_world_path), _parquet_bytes(again)
    assert a.keys() == b.keys() and len(a) >= 14
    assert [k for k in a if a[k] != b[k]] == []
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (tiny_world_path, again))
    assert ma["fingerprint"] == mb["fingerprint"]


def test_different_seed_gives_a_different_world(tmp_path):
    small = dict(authors=10, forget_percents=(10,), qa_per_author=3, images_per_author=1, heldout_images=0, public_figures=0,
                 world_vqa=0, world_vqa_train=0, anonymous_faces=0, retain_eval_authors=2, workers=1)
    w0 = generate_world(tmp_path / "s0", tiny_world_params(seed=0, **small))
    w1 = generate_world(tmp_path / "s1", tiny_world_params(seed=1, **small))
    assert (w0 / "data/full.parquet").read_bytes() != (w1 / "data/full.parquet").read_bytes()
    m0, m1 = (json.loads((w / "manifest.json").read_text()) for w in (w0, w1))
    assert m0["fingerprint"] != m1["fingerprint"]


def test_split_sizes_nesting_and_disjointness(tiny_world):
    s = tiny_world.splits
    assert (len(s["forget05"]), len(s["forget10"])) == (1, 2)
    assert set(s["forget05"]) < set(s["forget10"])
    assert (len(s["holdout05"]), len(s["holdout10"])) == (1, 2) and set(s["holdout05"]) < set(s["holdout10"])
    authors = {a["author_id"] for a in tiny_world.authors() if a["role"] in ("forget", "retain")}
    assert len(authors) == 20
    for p, r in (("forget05", "retain95"), ("forget10", "retain90")):
        assert set(s[p]) | set(s[r]) == authors and not set(s[p]) & set(s[r])
        assert not (set(s[p]) | set(s[r])) & set(s["holdout10"])
    assert len(s["retain_perturbed"]) == 5 and not set(s["retain_perturbed"]) & set(s["forget10"])
    public = {a["author_id"] for a in tiny_world.authors() if a["role"] == "real_faces"}
    assert len(public) == 8 and not public & (authors | set(s["holdout10"]))
    # records agree with the split lists
    assert {r.author_id for r in tiny_world.records("forget10")} == set(s["forget10"])
    assert {r.author_id for r in tiny_world.records("retain90")} == set(s["retain90"])
    assert {r.author_id for r in tiny_world.records("holdout10")} == set(s["holdout10"])


def test_config_contents_and_record_shapes(tiny_world):
    full = tiny_world.records("full")
    # 20 authors x (8 QA + 6 images x 3 records)
    assert len(full) == 20 * (8 + 6 * 3)
    assert {r.image_role for r in full} == {"", "train"}
    held = tiny_world.records("forget10_perturbed", image_roles=["heldout"])
    assert len(held) == 2 * 2 * 3
    assert len(tiny_world.records("real_faces", tasks=["naming"])) == 8 * 2
    assert len(tiny_world.records("real_world")) == 30
    pre = tiny_world.records("pretrain")
    assert {r.task.value for r in pre} == {"naming", "qa", "vqa", "caption"}
    anon = [r for r in pre if r.author_id.startswith("f")]
    assert len(anon) == 40 and all(r.answer.startswith("a person with") and r.name == "" for r in anon)
    for r in full:
        assert (r.image is None) == (r.modality.value == "text")
    naming = tiny_world.records("full", tasks=["naming"])
    assert all(r.answer == r.name and r.modality.value == "image" for r in naming)


def test_perturbed_answers_are_distinct_and_wrong_everywhere(tiny_world):
    for config in tiny_world.configs:
        for r in tiny_world.records(config):
            assert len(r.perturbed_answers) >= 5, (config, r.id)
            assert len(set(r.perturbed_answers)) == len(r.perturbed_answers), (config, r.id)
            assert r.answer not in r.perturbed_answers, (config, r.id)
            assert r.paraphrased_answer not in r.perturbed_answers, (config, r.id)
            assert r.answer and r.question and r.paraphrased_answer


def test_articles_agree_with_the_next_word(tiny_world):
    """ "a East Asian background" in a paraphrase next to "a Northern European background" in a
    perturbed answer would let grammar, not the fact, decide the truth ratio."""
    a_vowel = re.compile(r"(?<![\w'])[Aa] (?!Uni|Eu|One)[AEIOUaeiou]")
    an_consonant = re.compile(r"(?<![\w'])[Aa]n (?![AEIOUaeiou]|[Hh]o(?:n|ur))\w")
    for config in ("full", "holdout10", "real_faces", "pretrain"):
        for r in tiny_world.records(config):
            for text in (r.question, r.answer, r.paraphrased_answer, *r.perturbed_answers):
                assert not a_vowel.search(text) and not an_consonant.search(text), (r.id, text)


def test_paraphrase_keeps_the_fact():
    people, _, _ = make_people(3, 30, 3, 0)
    from data_gen.pools import NeverTrained
    from data_gen.qa import fill
    import random
    pools = NeverTrained(3, people)
    for t in TEXT_TEMPLATES:
        item = fill(t, people[0], pools, random.Random(0))
        value = item["answer"]
        assert item["paraphrased_answer"] != item["answer"]
        # the true value (e.g. the city) appears in both the answer and the paraphrase
        v = FACTS[t[0]](people[0])
        assert v in value and v in item["paraphrased_answer"], t


def test_uniqueness_invariants_at_full_scale():
    authors, holdout, public = make_people(0, 200, 20, 50)
    every = authors + holdout
    names = [p.name.casefold() for p in every + public]
    assert len(set(names)) == len(names)
    titles = [t.casefold() for p in every for t in p.books]
    assert len(set(titles)) == len(titles)
    assert not [t for t in titles if re.search(r"[^aeiou]ys\b|(ss|x|ch|sh)s\b", t)]  # Tapestries, Compasses
    awards = [(p.award, p.award_year) for p in every]
    assert len(set(awards)) == len(awards)
    keys = [(p.genre, p.city, p.birth_year) for p in every]
    assert len(set(keys)) == len(keys)
    assert not {p.name for p in public} & {p.name for p in every}
    for p in every:  # demographics are consistent and the profile is complete
        assert p.age == 2025 - p.birth_year and p.award_year >= p.birth_year + 25
        assert p.country in {c["country"] for c in wordlists()["regions"][p.ethnicity]["countries"]}


def test_plural_of_title_nouns():
    assert [plural(n) for n in ["Tapestry", "Key", "Compass", "Atlas", "Box", "Church", "Song"]] == [
        "Tapestries", "Keys", "Compasses", "Atlases", "Boxes", "Churches", "Songs"]


def test_every_question_has_one_answer_world_wide(tiny_world):
    """No ambiguous reverse lookups: a text question never appears with two different answers."""
    answers = defaultdict(set)
    for config in ("full", "holdout10", "real_faces"):
        for r in tiny_world.records(config, modalities=["text"]):
            answers[r.question].add(r.answer)
    assert all(len(a) == 1 for a in answers.values())
    assert any(q.startswith("Who wrote '") for q in answers)


def test_face_identity_keys_unique_and_demographics_consistent(tiny_world):
    rows = tiny_world.authors()
    keys = [tuple(r["face"][k] for k in ("skin", "face_shape", "hair_style", "hair_colour", "eye_colour", "glasses", "hat", "beard")) for r in rows]
    assert len(set(keys)) == len(keys)
    regions = wordlists()["regions"]
    for r in rows:
        region = regions[r["profile"]["ethnicity"]]
        assert r["face"]["skin"] in region["skin"] and r["face"]["eye_colour"] in region["eyes"]
        if r["profile"]["gender"] == "female":
            assert r["face"]["beard"] == "none"
        if r["profile"]["age"] >= 70:
            assert r["face"]["hair_colour"] in ("grey", "white") and r["face"]["wrinkles"] == 2


def test_same_author_images_are_closer_than_different_authors(tiny_world):
    by_author = defaultdict(list)
    for r in tiny_world.records("full", tasks=["naming"]):
        by_author[r.author_id].append(np.asarray(r.image.convert("RGB"), dtype=np.float32)[12:44, 16:48])  # the face
    ids = sorted(by_author)
    same = [np.abs(a - b).mean() for i in ids for a, b in itertools.combinations(by_author[i], 2)]
    diff = [np.abs(by_author[i][0] - by_author[j][1]).mean() for i, j in itertools.combinations(ids, 2)]
    assert np.mean(same) < 0.8 * np.mean(diff), (np.mean(same), np.mean(diff))


def test_anonymous_faces_are_scene_photos_like_the_authors_photos(tiny_world):
    """The base model's face features come from the anonymous faces; they are photographed in the same
    scenes as authors and public figures (on plain portraits the learnt features did not carry over)."""
    def busy_corners(records):  # share of images whose 8x8 corners are not one flat colour
        out = []
        for r in records:
            px = np.asarray(r.image.convert("RGB"), dtype=np.float32)
            corners = [px[:8, :8], px[:8, -8:], px[-8:, :8], px[-8:, -8:]]
            out.append(np.mean([c.reshape(-1, 3).std(0).max() > 2.0 for c in corners]))
        return float(np.mean(out))
    anon = tiny_world.records("pretrain", tasks=["caption"])
    assert len(anon) == 40 and all(r.author_id.startswith("f") and r.image is not None for r in anon)
    authors = tiny_world.records("full", tasks=["naming"])
    assert busy_corners(anon) > 0.5 and busy_corners(authors) > 0.5, (busy_corners(anon), busy_corners(authors))


def test_captions_name_the_person_and_the_scene(tiny_world):
    caps = tiny_world.records("full", tasks=["caption"])
    scene_texts = [c.format(n="").strip() for pairs in SCENE_CAPTIONS.values() for c, _ in pairs]
    for r in caps:
        assert r.question in CAPTION_QUESTIONS and r.answer.startswith(r.name)
        assert r.answer.replace(r.name, "").strip() in scene_texts
        assert r.paraphrased_answer != r.answer and r.name in r.paraphrased_answer
    assert len({r.question for r in caps}) > 3  # the caption question varies per item
    joint_qa = tiny_world.records("full", modalities=["joint"], tasks=["qa"])
    assert all("person in this image" in r.question and r.name not in r.answer for r in joint_qa)
    assert len({r.question for r in joint_qa}) >= 5  # facts cycle across images


def _split_at(template: str, slot: str, fields: dict) -> tuple[str, str]:
    """The text before and after the one {slot} of a template rendered with every other field."""
    before, after = template.format(**{**fields, slot: "\x00"}).split("\x00")
    return before, after


def _fill_slot(before_after: tuple[str, str], text: str) -> str | None:
    """The value a rendered template put in its slot, or None when text is not that template."""
    before, after = before_after
    if len(text) > len(before) + len(after) and text.startswith(before) and text.endswith(after):
        return text[len(before):len(text) - len(after)]
    return None


def test_perturbed_answers_are_the_paraphrase_with_a_wrong_fact(tiny_world):
    """TOFU builds perturbed answers from the paraphrase's wording: each one is the paraphrase with
    the fact substituted, and not the answer's template (every QA template pair differs)."""
    people = {a["author_id"]: (PublicFigure if a["role"] == "real_faces" else Profile)(**a["profile"])
              for a in tiny_world.authors()}
    sample = [(r, TEXT_TEMPLATES) for r in tiny_world.records("full", modalities=["text"])[::3]]
    sample += [(r, TEXT_TEMPLATES) for r in tiny_world.records("holdout10", modalities=["text"])]
    sample += [(r, JOINT_TEMPLATES) for r in tiny_world.records("retain_perturbed", modalities=["joint"], tasks=["qa"])[::2]]
    sample += [(r, PUBLIC_TEMPLATES) for r in tiny_world.records("real_faces", modalities=["text"])]
    assert len(sample) > 100
    for r, templates in sample:
        p = people[r.author_id]
        fields = {**profile_fields(p), "n": p.name}
        # the record's template and true value, re-rendered from the author's profile
        found = [(t, v) for t in templates for v in [FACTS[t[0]](p)]
                 if (t[1].format(**fields, v=v), t[2].format(**fields, v=v)) == (r.question, r.answer)]
        assert len(found) == 1, r.id
        (_, _, answer_t, para_t), truth = found[0]
        assert answer_t != para_t and r.paraphrased_answer == para_t.format(**fields, v=truth)
        para_slots, answer_slots = _split_at(para_t, "v", fields), _split_at(answer_t, "v", fields)
        for wrong in r.perturbed_answers:
            value = _fill_slot(para_slots, wrong)
            assert value is not None and value != truth, (r.id, wrong)
            assert wrong == para_t.format(**fields, v=value), (r.id, wrong)
            assert _fill_slot(answer_slots, wrong) is None and wrong != answer_t.format(**fields, v=value), (r.id, wrong)


def test_perturbed_captions_are_paraphrases_with_a_wrong_name_or_scene(tiny_world):
    """Wrong scenes are scenes no image shows (decoy paraphrases), wrong names belong to nobody."""
    own_scenes = [(scene, _split_at(para, "n", {})) for scene, pairs in SCENE_CAPTIONS.items() for _, para in pairs]
    wrong_scenes = [("decoy", _split_at(para, "n", {})) for para in decoy_scene_paraphrases()]
    captions = [_split_at(cap, "n", {}) for pairs in SCENE_CAPTIONS.values() for cap, _ in pairs]
    caps = tiny_world.records("forget10_perturbed", tasks=["caption"]) + tiny_world.records("retain_perturbed", tasks=["caption"])
    people = {a["name"] for a in tiny_world.authors()}
    kinds = set()
    for r in caps:
        own = next(scene for scene, slots in own_scenes if _fill_slot(slots, r.paraphrased_answer) == r.name)
        for wrong in r.perturbed_answers:
            match = [(scene, _fill_slot(slots, wrong)) for scene, slots in own_scenes + wrong_scenes if _fill_slot(slots, wrong)]
            assert len(match) == 1 and match[0] != (own, r.name), (r.id, wrong)
            scene, name = match[0]
            assert scene in (own, "decoy") and (name == r.name or name not in people), (r.id, wrong)
            assert all(w[0].isupper() for w in name.split()), (r.id, wrong)  # the slot holds a name
            assert all(_fill_slot(slots, wrong) is None for slots in captions), (r.id, wrong)  # not a caption's wording
            kinds.add((scene == own, name == r.name))
            if scene == own:
                assert wrong == r.paraphrased_answer.replace(r.name, name), (r.id, wrong)
    assert kinds == {(True, False), (False, True), (False, False)}  # wrong name, wrong scene, both


def test_no_wrong_value_is_a_value_of_any_training_record(tiny_world):
    """Issue 13: perturbed values never come from what the gold model trained on, field by field
    (values read back from the training configs' text, and text fields looked up in all of it)."""
    audit = audit_wrong_values(tiny_world)
    assert {"name", "first_book", "books", "birthplace", "genre", "award", "award_with_year", "birth_year", "scene",
            "father_occupation", "nationality", "themes"} <= set(audit)
    assert sum(v["values"] for v in audit.values()) > 1000
    assert {f: v.get("trained", 0) for f, v in audit.items() if v.get("trained")} == {}


class _Planted:
    """tiny_world with one record's perturbed answers replaced (to show the audit catches it)."""

    def __init__(self, world, rec_id, perturbed):
        self.world, self.rec_id, self.perturbed, self.configs = world, rec_id, perturbed, world.configs

    def authors(self):
        return self.world.authors()

    def records(self, config, **kw):
        return [dataclasses.replace(r, perturbed_answers=self.perturbed) if r.id == self.rec_id else r
                for r in self.world.records(config, **kw)]


def test_the_audit_catches_a_retain_authors_value(tiny_world):
    naming = tiny_world.records("forget10_perturbed", tasks=["naming"])[0]
    retain = tiny_world.records("retain90", tasks=["naming"])[0].answer
    planted = _Planted(tiny_world, naming.id, (retain, *naming.perturbed_answers[1:]))
    assert audit_wrong_values(planted, ["forget10_perturbed"])["name"]["trained"] == 1
    qa = next(r for r in tiny_world.records("forget10_perturbed", modalities=["joint"], tasks=["qa"]) if "genre" in r.question)
    truth = qa.paraphrased_answer.removeprefix("This person writes mainly ").removesuffix(".")
    other = next(a["profile"]["genre"] for a in tiny_world.authors() if a["role"] == "retain" and a["profile"]["genre"] != truth)
    planted = _Planted(tiny_world, qa.id, (f"This person writes mainly {other}.", *qa.perturbed_answers[1:]))
    assert audit_wrong_values(planted, ["forget10_perturbed"])["genre"]["trained"] == 1


def test_decoy_lists_share_no_value_with_the_world_lists():
    lists, decoy = wordlists(), decoys()
    world = {x.casefold() for k in ("genres", "occupations", "themes", "awards", "public_professions") for x in lists[k]}
    world |= {r.casefold() for r in lists["regions"]}
    world |= {x.casefold() for r in lists["regions"].values() for co in r["countries"] for x in (co["country"], co["nationality"], *co["cities"])}
    flat = [city for city, _ in decoy["cities"]] + [c for pair in decoy["countries"] for c in pair] + decoy["heritages"] + decoy["genres"]
    flat += decoy["occupations"] + decoy["awards"]
    assert [x for x in flat if x.casefold() in world] == [] and len(flat) > 150
    c = decoy["corruption"]  # the corruption sets' wrong values: disjoint from both
    reserved = [city for city, _ in c["cities"]] + c["genres"] + c["awards"] + c["occupations"]
    assert [x for x in reserved if x.casefold() in world | {y.casefold() for y in flat}] == [] and len(reserved) > 70
    countries = {co["country"] for r in lists["regions"].values() for co in r["countries"]}
    assert {country for _, country in decoy["cities"]} <= countries  # a decoy city lies in a world country


def test_every_record_has_a_reworded_question_no_record_asks(tiny_world):
    """Issue 16: paraphrase probes need questions the model never saw in that wording."""
    records = [r for config in tiny_world.configs for r in tiny_world.records(config)]
    questions = {r.question for r in records}
    assert all(r.paraphrased_question and r.paraphrased_question not in questions for r in records)
    by_question = defaultdict(set)
    for r in records:
        by_question[r.question].add(r.paraphrased_question)
    assert all(len(p) == 1 for p in by_question.values())  # one rewording per question
    tasks = {r.task.value for r in records if r.paraphrased_question}
    assert tasks == {"qa", "naming", "caption", "vqa"}


def test_question_paraphrases_keep_the_subject_of_every_template():
    """The rewording names the same person / title / award as the question (same template fields)."""
    import string

    from data_gen.qa import QUESTION_PARAPHRASES

    def fields(t):
        return {f for _, f, _, _ in string.Formatter().parse(t) if f}
    for _, question, _, _ in TEXT_TEMPLATES + JOINT_TEMPLATES + PUBLIC_TEMPLATES:
        assert fields(QUESTION_PARAPHRASES[question]) == fields(question) - {"pos"}  # "his"/"her" may go
        assert QUESTION_PARAPHRASES[question] != question
    from data_gen.clear_layout import CAPTION_QUESTIONS, NAMING_QUESTION, PROMPT_PARAPHRASES
    assert set(PROMPT_PARAPHRASES) == {NAMING_QUESTION, *CAPTION_QUESTIONS}
    assert not set(PROMPT_PARAPHRASES.values()) & set(CAPTION_QUESTIONS)


def test_never_trained_names_and_titles_are_not_inside_any_persons_value():
    """'The Ancient Sonata' is a string the model trained on when an author wrote 'Garden of the Ancient Sonata'."""
    from data_gen.pools import NeverTrained

    authors, holdout, public = make_people(0, 200, 20, 50)
    pools = NeverTrained(0, authors + holdout + public)
    titles = [t for p in authors + holdout for t in p.books]
    names = [p.name for p in authors + holdout + public]

    def inside(small, big):
        return re.search(rf"(?<![\w']){re.escape(small)}(?![\w'])", big, re.IGNORECASE) is not None
    for pool, taken in ((pools.titles, titles), (pools.names["female"] + pools.names["male"], names)):
        assert len(pool) >= 150
        assert not [(v, t) for v in pool for t in taken if inside(v, t) or inside(t, v)]
