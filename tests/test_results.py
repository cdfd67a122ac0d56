"""Result files: round trip, validation catches every kind of tampering, recomputation."""
from __future__ import annotations

import copy
import importlib.util
import json
import pathlib

import pytest

from eval.aggregate import MetricOptions, MissingGoldError, aggregate
from eval.metrics import truth_ratio
from eval.results import (REQUIRED_PROVENANCE, SCHEMA_VERSION, build_result, load_gold_result, load_result,
                          recompute, validate, write_result)

_spec = importlib.util.spec_from_file_location(
    "_clearbench_metric_fixtures", pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


@pytest.fixture(scope="module")
def gold_result():
    gold = fx.synthetic_examples(seed=1, memorised=0.0)
    prov = dict(fx.provenance(), model_fingerprint="gold-fp")
    return json.loads(json.dumps(build_result(gold, aggregate(gold, gold), prov, gold=gold)))


@pytest.fixture(scope="module")
def result(gold_result):
    world = fx.synthetic_examples(seed=0, memorised=1.0)
    gold = [ex for ex in fx.synthetic_examples(seed=1, memorised=0.0)]
    res = build_result(world, aggregate(world, gold), fx.provenance(), gold=gold_result)
    return json.loads(json.dumps(res))  # as read back from disk


def test_round_trip_is_valid(tmp_path, result, gold_result):
    path = write_result(tmp_path / "results" / "npo-10.json", result)
    loaded = load_result(path)
    assert loaded == result
    assert validate(loaded) == []
    assert validate(loaded, gold_result) == []
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert loaded["provenance"]["metric_versions"]["truth_ratio"] == truth_ratio.VERSION
    assert loaded["gold"]["model_fingerprint"] == "gold-fp"


def test_recompute_equals_stored(result, gold_result):
    assert recompute(result)["metrics"] == result["aggregates"]["metrics"]
    assert recompute(result, gold_result)["metrics"] == result["aggregates"]["metrics"]


def test_gold_result_validates_against_itself(gold_result):
    assert validate(gold_result) == []
    m = gold_result["aggregates"]["metrics"]
    assert m["forget/all/forget_quality"] == 1.0 and m["forget/all/forget_quality_js"] == 1.0


def test_tampered_aggregate_is_caught(result):
    bad = copy.deepcopy(result)
    bad["aggregates"]["metrics"]["forget/all/forget_quality"] *= 0.5
    assert any("forget/all/forget_quality" in p and "recomputation" in p for p in validate(bad))
    bad = copy.deepcopy(result)
    del bad["aggregates"]["metrics"]["retain/text/rouge_l"]
    assert any("retain/text/rouge_l is missing" in p for p in validate(bad))


@pytest.mark.parametrize("k", ["forget/all/forget_quality_d", "forget/all/forget_quality_log10p",
                               "forget/image/forget_quality_n", "forget/all/forget_quality_pooled",
                               "clear/all/fq_ks_d", "forget/joint@heldout/rouge_l", "forget/all/modality_gap"])
def test_every_new_aggregate_is_recomputed(result, k):
    """Forget quality's D, log10 p and n, its variants and the image-role cells recompute from the examples."""
    bad = copy.deepcopy(result)
    old = bad["aggregates"]["metrics"][k]
    bad["aggregates"]["metrics"][k] = old * 0.5 if old else 0.25
    assert any(p.startswith(f"aggregate {k} = ") and "recomputation gives" in p for p in validate(bad)), k


def test_tampered_example_is_caught(result):
    bad = copy.deepcopy(result)
    bad["examples"][0]["generation"] = bad["examples"][0]["answer"] + " indeed"
    bad["examples"][3]["lp_answer"] = [x - 1.0 for x in bad["examples"][3]["lp_answer"]]
    assert any("recomputation" in p for p in validate(bad))


def test_duplicated_and_missing_examples_are_caught(result):
    dup = copy.deepcopy(result)
    dup["examples"].append(copy.deepcopy(dup["examples"][0]))
    assert any("duplicated" in p for p in validate(dup))
    missing = copy.deepcopy(result)
    missing["examples"].pop()
    assert any("missing or extra examples" in p for p in validate(missing))


def test_schema_and_provenance_are_checked(result):
    bad = copy.deepcopy(result)
    bad["schema_version"] = 0
    del bad["provenance"]["world_fingerprint"]
    del bad["provenance"]["library_versions"]["peft"]
    problems = validate(bad)
    assert any("schema_version" in p for p in problems)
    assert any("'world_fingerprint'" in p for p in problems)
    assert any("'peft'" in p for p in problems)
    assert "parents" in REQUIRED_PROVENANCE and "metric_versions" in REQUIRED_PROVENANCE
    old = copy.deepcopy(result)
    old["provenance"]["metric_versions"]["mia"] = 0
    assert any("metric_versions" in p for p in validate(old))


def test_bounds_violation_refused_on_write(tmp_path, result):
    bad = copy.deepcopy(result)
    bad["aggregates"]["metrics"]["retain/all/rouge_l"] = 1.5
    bad["aggregates"]["metrics"]["mia/all/loss_auc"] = -0.1
    problems = validate(bad)
    assert any("retain/all/rouge_l = 1.5 is out of bounds" in p for p in problems)
    assert any("mia/all/loss_auc" in p and "out of bounds" in p for p in problems)
    with pytest.raises(ValueError, match="out of bounds"):
        write_result(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()
    unknown = copy.deepcopy(result)
    unknown["aggregates"]["metrics"]["retain/all/bleu"] = 0.3
    assert any("unknown metric 'bleu'" in p for p in validate(unknown))


def test_embedded_gold_must_match_gold_result(result, gold_result):
    bad_gold = copy.deepcopy(gold_result)
    bad_gold["examples"][0]["lp_paraphrased"][0] -= 0.5
    bad_gold["provenance"]["model_fingerprint"] = "another"
    problems = validate(result, bad_gold)
    assert any("model_fingerprint" in p for p in problems)
    assert any("embedded gold examples differ" in p for p in problems)


def test_result_without_gold(result):
    world = fx.synthetic_examples(seed=0)
    res = build_result(world, aggregate(world, None, MetricOptions(require_gold=False)), fx.provenance())
    assert res["gold"] is None and validate(res) == []
    # a result whose stored options require gold but carries none cannot be recomputed
    broken = copy.deepcopy(result)
    broken["gold"] = None
    assert any("gold" in p for p in validate(broken))


def test_missing_gold_file_names_the_command(tmp_path):
    with pytest.raises(MissingGoldError, match=r"clearbench evaluate --model runs/gold-05"):
        load_gold_result(tmp_path / "gold-05.json", "forget05")
