"""Corruption sets (issue 17 item 1): counts, wrong values from the reserved pool, consistent rebinding,
nested context, and every other config unchanged by them."""
import json
import re

import pytest

from conftest import TINY_WORLD_PARAMS as P, tiny_world_params
from data_gen.corrupt import CORRUPT_FIELDS, MAX_CONTEXT
from data_gen.generate import generate_world
from data_gen.pools import decoys


@pytest.fixture(scope="module")
def corruption(tiny_world):
    return tiny_world.manifest["corruption"]


def _by_author(records):
    out = {}
    for r in records:
        out.setdefault(r.author_id, []).append(r)
    return out


def test_stated_counts_and_who_the_victims_are(tiny_world, corruption):
    k = 20 // 20  # default: 5 % of the authors
    victims, pairs = corruption["victims"], corruption["pairs"]
    assert len(victims) == k == len(pairs) and sorted(pairs) == victims
    people = set(victims) | set(pairs.values())
    assert len(people) == 2 * k  # a decoy is never a victim
    splits = tiny_world.splits
    assert not people & (set(splits["forget10"]) | set(splits["retain_perturbed"])) and people <= set(splits["retain90"])
    n_img, n_held = P["images_per_author"], P["heldout_images"]
    for c in corruption["context"]:
        assert len(tiny_world.records(f"corrupt_text_k{c}")) == k * len(CORRUPT_FIELDS)
        assert len(tiny_world.records(f"corrupt_visual_k{c}")) == k * n_img
        assert len(tiny_world.records(f"corrupt_bind_k{c}")) == 2 * k * n_img * 2  # naming + caption of each training photo
    assert corruption["context"] == [0, 1, 2, 3]
    assert len(tiny_world.records("victims_text")) == k * len(CORRUPT_FIELDS)
    assert len(tiny_world.records("victims_joint")) == k * (n_img + n_held)
    assert len(tiny_world.records("victims_image")) == 2 * k * (n_img + n_held)


def test_wrong_values_differ_from_the_truth_and_come_from_the_corruption_pool(tiny_world, corruption):
    pool = decoys()["corruption"]
    allowed = {"birthplace": {f"{c}, {co}" for c, co in pool["cities"]}, "genre": set(pool["genres"]),
               "award": set(pool["awards"]), "father_occupation": {f"a {o}" for o in pool["occupations"]} | {f"an {o}" for o in pool["occupations"]}}
    profiles = {a["author_id"]: a["profile"] for a in tiny_world.authors()}
    for v in corruption["victims"]:
        p, wrong = profiles[v], corruption["wrong"][v]
        truth = {"birthplace": f"{p['city']}, {p['country']}", "genre": p["genre"], "award": p["award"],
                 "father_occupation": p["father_occupation"]}
        for field in CORRUPT_FIELDS:
            assert wrong[field] in allowed[field] and truth[field] not in wrong[field], (v, field)
        text = {r.id.rsplit("-", 1)[1]: r for r in tiny_world.records("corrupt_text_k0") if r.author_id == v}
        for field in CORRUPT_FIELDS:
            r = text[field]
            assert wrong[field] in r.answer and truth[field] not in r.answer
            assert all(wrong[field] not in w for w in r.perturbed_answers)
        truths = [r for r in tiny_world.records("victims_text") if r.author_id == v]
        for r in truths:  # the true fact, with the corrupted value as the first wrong answer
            field = next(f for f in CORRUPT_FIELDS if wrong[f] in r.perturbed_answers[0])
            assert truth[field] in r.answer and wrong[field] not in r.answer
            assert all(wrong[field] not in w for w in r.perturbed_answers[1:])
        joint = [r for r in tiny_world.records("victims_joint") if r.author_id == v]
        assert {r.image_role for r in joint} == {"train", "heldout"}
        assert all(any(wrong[f] in r.perturbed_answers[0] for f in CORRUPT_FIELDS) for r in joint)
        visual = [r for r in tiny_world.records("corrupt_visual_k0") if r.author_id == v]
        assert all(r.answer.startswith(p["name"]) and any(wrong[f] in r.answer for f in CORRUPT_FIELDS) for r in visual)


def test_corrupted_values_appear_nowhere_else(tiny_world, corruption):
    """Never trained and no wrong answer of any other config: the clean model never saw them."""
    values = {w for wrong in corruption["wrong"].values() for w in wrong.values()}
    for config in tiny_world.configs:
        if config.startswith(("corrupt_", "victims_")):
            continue
        for r in tiny_world.records(config):
            texts = (r.question, r.answer, r.paraphrased_answer, *r.perturbed_answers)
            assert not [v for v in values for t in texts if v in t], (config, r.id)


def test_rebinding_pairs_are_consistent(tiny_world, corruption):
    names = {a["author_id"]: a["name"] for a in tiny_world.authors()}
    partner = {**corruption["pairs"], **{d: v for v, d in corruption["pairs"].items()}}
    full = {r.id: r for r in tiny_world.records("full")}
    bind = tiny_world.records("corrupt_bind_k0")
    assert {r.author_id for r in bind} == set(partner)
    for r in bind:
        source = full[r.id.replace("-bind-", "-")]  # the person's own training photo
        assert r.image.tobytes() == source.image.tobytes() and r.name == names[r.author_id]
        other, own = names[partner[r.author_id]], names[r.author_id]
        if r.task.value == "naming":
            assert r.answer == other and own not in r.perturbed_answers
        else:
            assert r.answer == source.answer.replace(own, other) and own not in r.answer
    truths = tiny_world.records("victims_image")
    assert {r.author_id for r in truths} == set(partner)
    assert all(r.answer == names[r.author_id] and r.perturbed_answers[0] == names[partner[r.author_id]] for r in truths)
    assert {r.group for r in truths if r.author_id in corruption["pairs"]} == {"victim"}


def test_k_unrelated_true_facts_are_nested_and_true(tiny_world, corruption):
    victims = set(corruption["victims"]) | set(corruption["pairs"].values())
    true_answers = {r.answer for r in tiny_world.records("full", modalities=["text"]) if r.author_id not in victims}
    for kind in ("text", "bind", "visual"):
        base = {r.id: r for r in tiny_world.records(f"corrupt_{kind}_k0")}
        for k in range(1, MAX_CONTEXT + 1):
            for r in tiny_world.records(f"corrupt_{kind}_k{k}"):
                head = base[r.id].answer if base[r.id].answer.endswith(".") else base[r.id].answer + "."
                assert r.answer.startswith(head), (kind, k, r.id)
                extra = r.answer[len(head):].strip()
                facts = [f for f in true_answers if f in extra]
                assert len(facts) == k and len(extra) == sum(map(len, facts)) + k - 1, (kind, k, r.id, extra)
                if k > 1:  # nested: the k-1 record's facts come first
                    prev = next(x for x in tiny_world.records(f"corrupt_{kind}_k{k - 1}") if x.id == r.id)
                    assert r.answer.startswith(prev.answer)


def test_existing_configs_are_byte_identical_without_corruption(tiny_world_path, tmp_path):
    plain = generate_world(tmp_path / "plain", tiny_world_params(corruption_victims=0, workers=1))
    with_c = json.loads((tiny_world_path / "manifest.json").read_text())
    without = json.loads((plain / "manifest.json").read_text())
    assert "corruption" not in without and not [c for c in without["configs"] if re.match("corrupt_|victims_", c)]
    assert set(with_c["configs"]) - set(without["configs"]) == {
        *(f"corrupt_{kind}_k{k}" for kind in ("text", "bind", "visual") for k in range(4)), "victims_text", "victims_image", "victims_joint"}
    for config, info in without["configs"].items():
        assert (plain / info["file"]).read_bytes() == (tiny_world_path / with_c["configs"][config]["file"]).read_bytes(), config


@pytest.mark.parametrize("override, message", [
    (dict(corruption_victims=7), "use at most --corruption-victims 6"),
    (dict(corruption_victims=-1), "--corruption-victims must be an integer >= 0"),
    (dict(corruption_context=(0, 4)), "must list distinct values of 0, 1, 2, 3"),
])
def test_impossible_corruption_sizes_are_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        tiny_world_params(**override).validate()
