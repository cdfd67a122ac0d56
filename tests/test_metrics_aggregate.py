"""Aggregation: the key vocabulary, cells, gold handling and invariants on a synthetic world."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib

import numpy as np
import pytest
from scipy.stats import ks_2samp

from eval.aggregate import MetricOptions, MissingGoldError, aggregate, per_example_values
from eval.metrics import forget_quality, model_utility, truth_ratio

_spec = importlib.util.spec_from_file_location(
    "_clearbench_metric_fixtures", pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


@pytest.fixture(scope="module")
def world():
    return fx.synthetic_examples(seed=0, memorised=1.0)


@pytest.fixture(scope="module")
def gold():
    # same ids, different values: a model that never saw the forget authors
    return fx.synthetic_examples(seed=1, memorised=0.0)


@pytest.fixture(scope="module")
def agg(world, gold):
    return aggregate(world, gold)


def test_every_cell_is_scored(agg):
    m = agg["metrics"]
    expected_cells = {("forget" if c.startswith("forget") else "retain" if c.startswith("retain")
                       else "holdout" if c.startswith("holdout") else c, mod) for c, mod, _ in fx.CELLS}
    # every photo cell of the fixture holds training and held-out photos: one cell per image role beside it
    role_cells = {(s, f"{mod}@{r}") for s, mod in expected_cells if mod != "text" for r in ("train", "heldout")}
    assert {tuple(c) for c in agg["cells"]} == expected_cells | role_cells
    for split, modality in expected_cells | {(s, "all") for s, _ in expected_cells}:
        for metric in ("rouge_l", "probability", "probability_raw", "probability_norm", "truth_ratio", "n"):
            assert f"{split}/{modality}/{metric}" in m, (split, modality, metric)
    # naming metrics only where naming records are
    assert "retain/image/naming_acc" in m and "forget/image/naming_choice_acc" in m
    assert "retain/text/naming_acc" not in m and "real_world/joint/naming_acc" not in m
    assert m["forget/all/n"] == 4 * 6 and m["real_world/joint/n"] == 6
    for k in ("all/all/model_utility", "all/text/model_utility", "clear/all/real", "clear/all/retain",
              "clear/all/forget", "clear/all/fq", "forget/all/forget_quality", "forget/text/forget_quality_js",
              "forget/all/modality_gap", "mia/text/min_k_pp_auc", "mia/all/loss_privleak"):
        assert k in m, k
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())


def test_cell_means_match_per_example_values(world, agg):
    vals = per_example_values(world, MetricOptions())
    ids = [ex.id for ex in world if ex.split == "retain_perturbed" and ex.modality == "image"]
    assert agg["metrics"]["retain/image/rouge_l"] == pytest.approx(np.mean([vals[i]["rouge_l"] for i in ids]))
    # naming records use the normalised probability, captions the raw one (TOFU / CLEAR rule)
    assert agg["metrics"]["retain/image/probability"] == agg["metrics"]["retain/image/probability_norm"]
    cap = [ex.id for ex in world if ex.split == "retain_perturbed" and ex.task == "caption"]
    assert agg["metrics"]["retain/joint/probability"] == pytest.approx(np.mean([vals[i]["probability_raw"] for i in cap]))
    trs = [vals[i]["truth_ratio"] for i in ids]
    assert agg["metrics"]["retain/image/truth_ratio"] == pytest.approx(truth_ratio.keep_stat(np.array(trs)))
    f_ids = [ex.id for ex in world if ex.split.startswith("forget") and ex.modality == "text"]
    assert agg["metrics"]["forget/text/truth_ratio"] == pytest.approx(
        truth_ratio.forget_stat(np.array([vals[i]["truth_ratio"] for i in f_ids])))


def test_model_utility_is_tofu_nine_value_hmean(agg):
    m = agg["metrics"]
    parts = [f"{s}/all/{k}" for s in ("retain", "real_faces", "real_world") for k in ("probability", "rouge_l", "truth_ratio")]
    assert agg["components"]["all/all/model_utility"] == parts
    assert m["all/all/model_utility"] == pytest.approx(model_utility.harmonic_mean([m[p] for p in parts]))
    # per modality: only the cells that exist (text: retain and real_faces; no real_world text)
    assert agg["components"]["all/text/model_utility"] == [
        f"{s}/text/{k}" for s in ("retain", "real_faces") for k in ("probability", "rouge_l", "truth_ratio")]


def test_clear_columns(world, gold):
    with_rouge = aggregate(world, gold, MetricOptions(clear_include_rouge=True))
    code = aggregate(world, gold)
    assert code["components"]["clear/all/real"] == [
        "real_faces/all/naming:probability", "real_faces/all/naming:truth_ratio",
        "real_world/all/vqa:probability", "real_world/all/vqa:truth_ratio"]
    assert len(with_rouge["components"]["clear/all/retain"]) == 6
    assert with_rouge["metrics"]["clear/all/forget"] != code["metrics"]["clear/all/forget"]
    # no real_world examples: the column is skipped with a warning, never None
    partial = aggregate([e for e in world if e.split != "real_world"], gold)
    assert "clear/all/real" not in partial["metrics"]
    assert any("clear/all/real" in w for w in partial["warnings"])


def test_tr_mode_changes_truth_ratio(world, gold):
    tofu, clear = aggregate(world, gold), aggregate(world, gold, MetricOptions(tr_mode="clear"))
    assert tofu["metrics"]["retain/all/truth_ratio"] != pytest.approx(clear["metrics"]["retain/all/truth_ratio"])
    assert clear["options"]["tr_mode"] == "clear"
    with pytest.raises(ValueError, match="tofu"):
        MetricOptions(tr_mode="per_item")


def test_gold_against_itself_is_perfect(gold):
    m = aggregate(gold, gold)["metrics"]
    for modality in ("text", "image", "joint", "all"):
        assert m[f"forget/{modality}/forget_quality"] == 1.0
        assert m[f"forget/{modality}/forget_quality_js"] == 1.0
        assert m[f"mia/{modality}/loss_privleak"] == 0.0
    assert m["forget/all/modality_gap"] == 0.0
    assert m["clear/all/fq"] == 1.0


def test_memorised_forget_set_is_detected(agg, gold):
    m = agg["metrics"]
    assert m["mia/all/loss_auc"] > 0.9          # forget answers far likelier than holdout ones
    assert m["forget/all/forget_quality"] < 0.05
    assert m["mia/all/loss_privleak"] < 0      # leaks more than gold
    assert m["forget/all/modality_gap"] >= 0


def test_missing_gold_is_a_loud_error(world):
    with pytest.raises(MissingGoldError, match=r"clearbench evaluate --model runs/gold-10"):
        aggregate(world)
    m = aggregate(world, None, MetricOptions(require_gold=False))["metrics"]
    assert "forget/all/forget_quality" not in m and "mia/all/loss_auc" in m
    # no forget examples at all: nothing needs gold
    aggregate([e for e in world if not e.split.startswith("forget")])


def test_gold_id_mismatch_is_an_error(world, gold):
    shifted = [dataclasses.replace(g, id=g.id + "-x") if g.split.startswith("forget") and g.modality == "text" else g
               for g in gold]
    with pytest.raises(ValueError, match="differ"):
        aggregate(world, shifted)
    other_split = [dataclasses.replace(g, split="forget05_perturbed") if g.split.startswith("forget") else g
                   for g in gold]
    with pytest.raises(ValueError, match="forget05_perturbed"):
        aggregate(world, other_split)


def test_duplicates_and_bad_examples_refused(world, gold):
    with pytest.raises(ValueError, match="duplicated"):
        aggregate(world + world[:1], gold)
    broken = [dataclasses.replace(world[0], lp_perturbed=world[0].lp_perturbed[:1])] + world[1:]
    with pytest.raises(ValueError, match="lp_perturbed"):
        aggregate(broken, gold)


def test_truth_ratio_reference_answer_vs_paraphrase():
    """"paraphrase": TR = exp(1.5 - 1.0) (TOFU/CLEAR on forget/retain: the perturbed answers are the paraphrase
    with the fact changed); "answer": TR = exp(1.5 - 0.5) = e; "tofu" (default) picks per split as TOFU does."""
    ex = fx.make_example(lp_answer=(-0.5, -0.5), lp_paraphrased=(-1.0,), lp_perturbed=((-1.0, -2.0), (-1.5,)))
    real = dataclasses.replace(ex, id="real", split="real_faces")

    def tr(example, **options):
        return per_example_values([example], MetricOptions(**options))[example.id]["truth_ratio"]

    assert tr(ex, tr_reference="answer") == pytest.approx(math.exp(1.5 - 0.5))
    assert tr(ex, tr_reference="paraphrase") == pytest.approx(math.exp(1.5 - 1.0))
    assert truth_ratio.keep_stat([tr(ex, tr_reference="answer")]) == pytest.approx(1 - 1 / math.e)
    # TOFU (the default): the paraphrase on retain (and forget, holdout), the answer on real authors / world facts
    assert MetricOptions().tr_reference == "tofu"
    assert tr(ex) == tr(ex, tr_reference="paraphrase") and tr(real) == tr(real, tr_reference="answer")
    assert tr(real) == pytest.approx(math.e)
    with pytest.raises(ValueError, match="Did you mean 'paraphrase'"):
        MetricOptions(tr_reference="para")
    # result files keep the reference they were written with
    assert MetricOptions.from_dict({"tr_reference": "answer"}).tr_reference == "answer"


# ----------------------------------------------------------------------------- forget quality: TOFU's and its variants
def _as_forget01(examples):
    """The synthetic world relabelled as a forget01 evaluation (TOFU's size: 40 text QA)."""
    rename = {"forget10_perturbed": "forget01_perturbed", "holdout10": "holdout01"}
    return [dataclasses.replace(ex, split=rename.get(ex.split, ex.split)) for ex in examples]


@pytest.fixture(scope="module")
def big():
    """45 records per cell: 45 forget text QA (> TOFU's 40 for forget01), 45 image, 90 joint."""
    return (_as_forget01(fx.synthetic_examples(seed=0, per_cell=45)),
            _as_forget01(fx.synthetic_examples(seed=1, memorised=0.0, per_cell=45)))


def _ks_by_hand(world, gold, ids, options=MetricOptions()):
    mine, theirs = per_example_values(world, options), per_example_values(gold, options)
    res = ks_2samp([mine[i]["truth_ratio"] for i in ids], [theirs[i]["truth_ratio"] for i in ids])
    return float(res.statistic), float(res.pvalue)


def test_headline_is_tofu_text_qa_at_tofu_n(big):
    world, gold = big
    m = aggregate(world, gold)["metrics"]
    text = [ex.id for ex in world if ex.split.startswith("forget") and ex.modality == "text"]
    ids = forget_quality.subsample(text, 40)
    assert m["forget/all/forget_quality_n"] == 40 and len(text) == 45
    d, p = _ks_by_hand(world, gold, ids)
    assert (m["forget/all/forget_quality_d"], m["forget/all/forget_quality"]) == (d, p)
    assert m["forget/all/forget_quality_log10p"] == pytest.approx(math.log10(p))
    # the headline reads text QA only: changing an image record moves the pooled test, never the headline
    moved = [dataclasses.replace(ex, lp_paraphrased=[x - 3.0 for x in ex.lp_paraphrased])
             if ex.split.startswith("forget") and ex.modality != "text" else ex for ex in world]
    m2 = aggregate(moved, gold)["metrics"]
    assert m2["forget/all/forget_quality_d"] == m["forget/all/forget_quality_d"]
    assert m2["forget/all/forget_quality_pooled_d"] != m["forget/all/forget_quality_pooled_d"]
    assert m["forget/all/forget_quality_pooled_n"] == 45 + 45 + 90  # every forget record


def test_per_modality_forget_quality_at_equal_n(big):
    world, gold = big
    m = aggregate(world, gold)["metrics"]
    assert [m[f"forget/{mod}/forget_quality_n"] for mod in ("text", "image", "joint")] == [45, 45, 45]
    joint = [ex.id for ex in world if ex.split.startswith("forget") and ex.modality == "joint"]
    d, p = _ks_by_hand(world, gold, forget_quality.subsample(joint, 45))
    assert (m["forget/joint/forget_quality_d"], m["forget/joint/forget_quality"]) == (d, p)
    assert m["forget/all/modality_gap"] == pytest.approx(
        max(m[f"forget/{x}/forget_quality_log10p"] for x in ("text", "image", "joint"))
        - min(m[f"forget/{x}/forget_quality_log10p"] for x in ("text", "image", "joint")))


def test_clear_captions_ks_beside_its_js(world, gold, agg):
    m = agg["metrics"]
    caps = sorted(ex.id for ex in world if ex.split.startswith("forget") and ex.task == "caption")
    d, p = _ks_by_hand(world, gold, caps)
    assert (m["clear/all/fq_ks_d"], m["clear/all/fq_ks"], m["clear/all/fq_ks_n"]) == (d, p, len(caps))


def test_author_fact_aggregation_averages_the_records_of_one_fact():
    """Authors named by the record's person: each author has two naming records (one fact) and two
    captions (one fact), and one text QA per distinct answer."""
    def authored(seed, memorised):
        return [dataclasses.replace(ex, author_id=ex.name or "w") for ex in
                fx.synthetic_examples(seed=seed, memorised=memorised, per_cell=12)]
    world, gold = authored(0, 1.0), authored(1, 0.0)
    opts = MetricOptions(fq_aggregation="author_fact")
    m = aggregate(world, gold, opts)["metrics"]
    assert m["forget/image/forget_quality_n"] == 6  # 12 naming records of 6 authors; the smallest modality
    assert m["forget/all/forget_quality_n"] == 12   # text QA: one fact per record
    naming = [ex for ex in world if ex.split.startswith("forget") and ex.task == "naming"]
    mine, theirs = per_example_values(world, opts), per_example_values(gold, opts)
    by_author = {a: [ex.id for ex in naming if ex.author_id == a] for a in sorted({ex.author_id for ex in naming})}
    res = ks_2samp([np.mean([mine[i]["truth_ratio"] for i in ids]) for ids in by_author.values()],
                   [np.mean([theirs[i]["truth_ratio"] for i in ids]) for ids in by_author.values()])
    assert m["forget/image/forget_quality_d"] == float(res.statistic)
    assert m["forget/all/forget_quality_pooled_n"] == 12 + 6 + (6 + 12)  # text + naming + (captions + joint QA)
    assert aggregate(world, gold)["metrics"]["forget/all/forget_quality_pooled_n"] == 4 * 12  # per record


def test_training_and_heldout_photos_are_separate_cells(world, agg):
    m = agg["metrics"]
    assert ["forget", "image@heldout"] in agg["cells"] and ["forget", "joint@train"] in agg["cells"]
    assert "forget/text@train/n" not in m  # text records have no photo
    for split, mod in (("forget", "image"), ("retain", "joint")):
        assert m[f"{split}/{mod}@train/n"] + m[f"{split}/{mod}@heldout/n"] == m[f"{split}/{mod}/n"]
    vals = per_example_values(world, MetricOptions())
    held = [ex.id for ex in world if ex.split.startswith("forget") and ex.modality == "image" and ex.image_role == "heldout"]
    assert m["forget/image@heldout/rouge_l"] == pytest.approx(np.mean([vals[i]["rouge_l"] for i in held]))
    assert m["forget/image@heldout/naming_acc"] == pytest.approx(np.mean([vals[i]["naming_acc"] for i in held]))


def test_every_ks_p_value_has_its_d_log10p_and_n(agg):
    m = agg["metrics"]
    ps = [k for k in m if k.rsplit("/", 1)[1] in ("forget_quality", "forget_quality_pooled", "fq_ks")]
    assert len(ps) == 1 + 3 + 1 + 1  # headline, three modalities, pooled, CLEAR's captions
    for k in ps:
        assert {f"{k}_d", f"{k}_log10p", f"{k}_n"} <= set(m), k
        assert m[f"{k}_log10p"] == pytest.approx(math.log10(m[k])) and 0.0 <= m[f"{k}_d"] <= 1.0
