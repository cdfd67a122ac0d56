"""Aggregation: the key vocabulary, cells, gold handling and invariants on a synthetic world."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib

import numpy as np
import pytest

from eval.aggregate import MetricOptions, MissingGoldError, aggregate, per_example_values
from eval.metrics import model_utility, truth_ratio

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
    assert {tuple(c) for c in agg["cells"]} == expected_cells
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
    """The default reference is the paraphrase (TOFU/CLEAR: the perturbed answers are the paraphrase
    with the fact changed): TR = exp(1.5 - 1.0). "answer" stays an option, for data whose perturbed
    answers share the answer's wording (schema 1 worlds): TR = exp(1.5 - 0.5) = e."""
    ex = fx.make_example(lp_answer=(-0.5, -0.5), lp_paraphrased=(-1.0,), lp_perturbed=((-1.0, -2.0), (-1.5,)))

    def tr(**options):
        return per_example_values([ex], MetricOptions(**options))[ex.id]["truth_ratio"]

    tr_answer, tr_para = tr(tr_reference="answer"), tr(tr_reference="paraphrase")
    assert tr_answer == pytest.approx(math.exp(1.5 - 0.5))
    assert tr_para == pytest.approx(math.exp(1.5 - 1.0))
    assert MetricOptions().tr_reference == "paraphrase" and tr() == tr_para
    assert truth_ratio.keep_stat([tr_answer]) == pytest.approx(1 - 1 / math.e)
    assert truth_ratio.keep_stat([tr_para]) == pytest.approx(1 - math.exp(-0.5))
    with pytest.raises(ValueError, match="tr_reference"):
        MetricOptions(tr_reference="para")
    # result files keep the reference they were written with; files from before the option: TOFU's
    assert MetricOptions.from_dict({"tr_reference": "answer"}).tr_reference == "answer"
    assert MetricOptions.from_dict({"tr_mode": "tofu"}).tr_reference == "paraphrase"
