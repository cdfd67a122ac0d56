"""eval.crossmodal on handmade result files: facts aligned across modalities, what "knows" means (the gold's
level with a margin), leak rates per forget setting, the 3 x 3 matrix and the Spearman correlations of method
rankings, and the report's cross-modal section."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib

import pytest

from eval import crossmodal
from eval.leaderboard import Row
from eval.report_sections import crossmodal_grids, has_all_settings

_spec = importlib.util.spec_from_file_location("_clearbench_metric_fixtures_cm",
                                               pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

KNOWN, FORGOTTEN, GOLD = -0.1, -3.0, -2.5  # per-token log-probabilities: p ~ 0.90, 0.05, 0.08
PERT = ((-2.0, -2.0, -2.0),) * 3  # naming: probability is normalised against three wrong names


def ex(i: str, author: str, modality: str, task: str, answer: str, lp: float, name: str):
    e = fx.make_example(id=i, split="forget10_perturbed", modality=modality, task=task, answer=answer, name=name,
                        lp_answer=(lp,) * 3, lp_perturbed=PERT)
    return dataclasses.replace(e, author_id=author).to_dict()


def result(levels: dict[str, float]) -> dict:
    """Author a0001 (Ann Lee): one award fact asked in text and about her photo; a0002 (Bo Kim): the identity,
    asked by naming (image) and captions (image+text). ``levels``: record id -> log-probability."""
    records = [("t1", "a0001", "text", "qa", "Yes, Ann Lee won the Ink Prize in 2019.", "Ann Lee"),
               ("j1", "a0001", "joint", "qa", "This person won the Ink Prize in 2019.", "Ann Lee"),
               ("n2", "a0002", "image", "naming", "Bo Kim", "Bo Kim"),
               ("c2", "a0002", "joint", "caption", "Bo Kim reading in a library.", "Bo Kim")]
    make = [ex(i, au, m, t, a, levels.get(i, GOLD), name) for i, au, m, t, a, name in records]
    gold = [ex(i, au, m, t, a, GOLD, name) for i, au, m, t, a, name in records]
    return {"examples": make, "gold": {"model_fingerprint": "g", "examples": gold}}


def test_a_fact_is_the_same_in_every_modality():
    r = result({})
    facts = {d["id"]: crossmodal.cross_fact(fx.ExampleOutput.from_dict(d)) for d in r["examples"]}
    assert facts["t1"] == facts["j1"] == "won the ink prize in 2019"
    assert facts["n2"] == facts["c2"] == "identity"
    e = fx.make_example(answer="Ann Lee's mother worked as an electrician.", name="Ann Lee")
    assert crossmodal.cross_fact(e) == "mother worked as an electrician"


def test_knows_means_above_the_gold_level_by_the_margin():
    r = result({"t1": KNOWN, "j1": FORGOTTEN, "n2": KNOWN})
    k = crossmodal.knows(r)
    assert k[("a0001", "won the ink prize in 2019", "text")] is True
    assert k[("a0001", "won the ink prize in 2019", "joint")] is False
    assert k[("a0002", "identity", "image")] is True and k[("a0002", "identity", "joint")] is False  # gold level
    near = result({"t1": GOLD + math.log(1.05)})  # 5 % above the gold's probability
    assert crossmodal.knows(near)[("a0001", "won the ink prize in 2019", "text")] is False
    assert crossmodal.knows(near, margin=0.0)[("a0001", "won the ink prize in 2019", "text")] is True
    with pytest.raises(ValueError, match="no gold examples"):
        crossmodal.knows({"examples": r["examples"], "gold": None})


def test_leaks_count_facts_forgotten_where_unlearned_but_known_elsewhere():
    # text forgetting worked on the text QA, but the same fact about her photo is still known
    text = crossmodal.leaks(result({"t1": FORGOTTEN, "j1": KNOWN}), "text")
    assert text[("text", "joint")] == (1, 1) and text[("text", "image")] == (0, 0)  # no shared fact text-image
    assert crossmodal.leak_rate(text, setting="text") == (1.0, 1)
    # no leak when the photo question is forgotten too
    assert crossmodal.leak_rate(crossmodal.leaks(result({"t1": FORGOTTEN, "j1": FORGOTTEN}), "text"),
                                setting="text") == (0.0, 1)
    # visual forgetting: naming forgotten, captions still name her: a leak inside the unlearned modalities,
    # so not a cross-modal one; the multimodal rate pools every pair
    visual = crossmodal.leaks(result({"n2": FORGOTTEN, "c2": KNOWN, "t1": KNOWN, "j1": KNOWN}), "visual")
    assert visual[("image", "joint")] == (1, 1) and visual[("joint", "text")] == (0, 0)
    assert crossmodal.leak_rate(visual, setting="visual") == (None, 0)
    multi = crossmodal.leaks(result({"t1": FORGOTTEN, "j1": KNOWN, "n2": FORGOTTEN, "c2": KNOWN}), "multimodal")
    assert crossmodal.leak_rate(multi, setting="multimodal") == (1.0, 2)


def _row(label: str, setting: str | None, metrics: dict, leaks=None) -> Row:
    return Row(f"{label}-{setting}.json", label, label, 0.0, setting, False, metrics, {}, leaks=leaks)


def _rows(order: dict[str, list[float]]) -> list[Row]:
    methods = ["ga", "npo", "rmu", "idk"]
    return [_row(m, s, {"forget/all/forget_quality_d": d, "forget/text/probability": 0.1 * (i + 1),
                        "forget/image/probability": 0.2, "forget/joint/probability": 0.3})
            for s, ds in order.items() for i, (m, d) in enumerate(zip(methods, ds))]


def test_spearman_of_method_rankings_between_settings():
    rows = _rows({"text": [0.1, 0.2, 0.3, 0.4], "visual": [0.4, 0.3, 0.2, 0.1], "multimodal": [0.2, 0.3, 0.4, 0.5]})
    rho = crossmodal.spearman(rows, "forget/all/forget_quality_d")
    assert rho[("text", "multimodal")] == (pytest.approx(1.0), 4)
    assert rho[("visual", "multimodal")] == (pytest.approx(-1.0), 4)
    two = [r for r in rows if r.label in ("ga", "npo")]
    assert crossmodal.spearman(two, "forget/all/forget_quality_d")[("text", "visual")] == (None, 2)


def test_matrix_rows_are_settings_and_columns_evaluated_modalities():
    rows = _rows({"text": [0.1, 0.2, 0.3, 0.4], "multimodal": [0.2, 0.3, 0.4, 0.5]})
    mat = crossmodal.matrix(rows + [_row("target", None, {"forget/text/probability": 0.9})], "probability")
    assert set(mat) == {"ga", "npo", "rmu", "idk"}  # reference rows are not methods
    assert mat["npo"]["text"] == {"text": 0.2, "image": 0.2, "joint": 0.3} and "visual" not in mat["npo"]


def test_report_section_explains_missing_settings_and_shows_leaks():
    rows = _rows({"text": [0.1, 0.2, 0.3, 0.4], "visual": [0.4, 0.3, 0.2, 0.1], "multimodal": [0.2, 0.3, 0.4, 0.5]})
    assert has_all_settings(rows) and not has_all_settings([r for r in rows if r.setting != "visual"])
    rows[0].leaks = {("text", "joint"): (1, 4), ("text", "image"): (0, 0)}
    rows = [r for r in rows if not (r.label == "idk" and r.setting == "visual")]
    grids = {g.table.name: g for g in crossmodal_grids(rows)}
    prob = grids["matrix-probability"]
    idk = next(cells for _, label, _, cells in prob.rows if label == "idk")
    col = [c.key for c in prob.columns].index("visual/text")
    assert idk[col].text == "—" and prob.notes[idk[col].note - 1] == "idk was not run with visual forgetting"
    leak = grids["leak"]
    ga = next(cells for _, label, _, cells in leak.rows if label == "ga")
    assert ga[0].text == "0.250" and ga[0].sub == "n=4"
    rho = grids["spearman"]
    assert [label for _, label, _, _ in rho.rows] == ["text vs visual", "text vs multimodal", "visual vs multimodal"]
    assert rho.rows[1][3][-1].text == "0.7" and rho.rows[0][3][-1].text == "not reported"
