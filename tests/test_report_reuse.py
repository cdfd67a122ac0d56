"""What the report reuses instead of recomputing (checking a file recomputes its aggregates, the gold's examples
are parsed once, ROUGE memoises its tokens, normalised probabilities are computed a group at a time) never changes
a number and never lends one file's or one gold's values to another."""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import pathlib

import numpy as np
import pytest

from eval.aggregate import GoldExamples, MetricOptions, aggregate
from eval.example import split_of
from eval.leaderboard import check_files, make_reference, make_rows
from eval.metrics import truth_ratio
from eval.metrics.probability import normalised_probabilities, normalised_probability
from eval.metrics.rouge_l import rouge_l_recall
from eval.metrics.spec import row_means
from eval.report_columns import cost_values
from eval.results import examples_of, gold_examples_of, recompute, validated
from eval.verify import content_sha256

_spec = importlib.util.spec_from_file_location("_clearbench_report_fixtures_reuse",
                                               pathlib.Path(__file__).with_name("report_fixtures.py"))
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)
fx = rf.fx


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    out = rf.write_results(tmp_path_factory.mktemp("reuse"))
    out["ref"] = make_reference(out["gold_path"])
    return out


def _fresh(result, gold):
    """The aggregates recomputed from private copies: nothing parsed or computed before can be reused."""
    return recompute(copy.deepcopy(result), copy.deepcopy(gold))


def _row_metrics(result, gold):
    """A report row's values: ``_fresh``'s metrics and the result's cost columns (from its provenance, as measured)."""
    return _fresh(result, gold)["metrics"] | cost_values(result["provenance"])


def _other_gold(gold):
    """The gold result with other forget truth ratios (its paraphrases likelier), so forget quality differs."""
    other = copy.deepcopy(gold)
    for d in other["examples"]:
        if d["split"].startswith("forget"):
            d["lp_paraphrased"] = [x * 0.5 for x in d["lp_paraphrased"]]
    return other


def test_each_row_holds_its_own_files_numbers(lb):
    ref, checked = check_files([str(p) for p in lb["paths"].values()], lb["ref"])
    rows = {pathlib.Path(r.path).stem: r for r in make_rows(checked, ref)}
    assert all(c.recomputed is not None for c in checked)  # checking kept what it recomputed
    for name, result in lb["results"].items():
        assert rows[name].metrics == _row_metrics(result, lb["gold"]), name
    assert rows["gold-10"].metrics == _row_metrics(lb["gold"], lb["gold"])
    # files whose examples differ have different numbers: nothing was shared between them
    assert rows["npo-10"].metrics != rows["target"].metrics != rows["npo-l1-10"].metrics


def test_kept_aggregates_serve_only_their_own_result_and_gold(lb):
    ref, (npo, target) = check_files([str(lb["paths"]["npo-10"]), str(lb["paths"]["target"])], lb["ref"])
    swapped = dataclasses.replace(npo, result=target.result)  # npo's kept aggregates, target's content
    (row,) = [r for r in make_rows([swapped], ref) if not r.is_gold]
    assert row.metrics == _row_metrics(lb["results"]["target"], lb["gold"])
    other = _other_gold(lb["gold"])
    other_ref = dataclasses.replace(ref, gold=other)  # another gold object: npo's kept aggregates do not apply
    (row,) = [r for r in make_rows([npo], other_ref) if not r.is_gold]
    assert row.metrics == _row_metrics(lb["results"]["npo-10"], other)
    assert row.metrics != _row_metrics(lb["results"]["npo-10"], lb["gold"])


def test_a_rows_metrics_are_its_own_copy(lb):
    ref, checked = check_files([str(lb["paths"]["npo-10"])], lb["ref"])
    rows = make_rows(checked, ref)
    for r in rows:
        r.metrics["attack/x"] = 1.0  # report sections add keys to a row
    again = make_rows(checked, ref)
    assert all("attack/x" not in r.metrics for r in again)


def test_parsed_gold_serves_only_its_own_gold_result(lb):
    result, gold = lb["results"]["npo-10"], lb["gold"]
    other = _other_gold(gold)
    parsed = gold_examples_of(gold)
    assert recompute(result, other, parsed) == _fresh(result, other) != _fresh(result, gold)
    assert recompute(result, gold, parsed) == _fresh(result, gold)
    problems, fresh = validated(result, gold, gold_examples_of(other))
    assert problems == [] and fresh == _fresh(result, gold)


def test_parsed_gold_keeps_values_per_metric_options(lb):
    result, gold = lb["results"]["npo-10"], lb["gold"]
    parsed = gold_examples_of(gold)
    for options in ({"mink_k": 0.2}, {"tr_mode": "clear"}, {"fq_aggregation": "author_fact"}, {}):
        changed = copy.deepcopy(result)
        changed["aggregates"]["options"] = MetricOptions(**options).to_dict()
        assert recompute(changed, gold, parsed) == _fresh(changed, gold), options


def test_parsed_gold_repeats_its_check_error():
    gold = fx.synthetic_examples(seed=1, memorised=0.0)
    bad = GoldExamples(gold + [copy.deepcopy(gold[0])])  # a duplicated id
    for _ in range(2):
        with pytest.raises(ValueError, match="duplicated example id"):
            aggregate(fx.synthetic_examples(seed=0), bad)


def test_normalised_probabilities_equal_the_one_answer_form_bit_for_bit():
    rng = np.random.default_rng(0)
    true, options = [], []
    for _ in range(400):  # ragged: answers of 1..60 tokens, 1..12 options
        true.append(list(-rng.exponential(2.0, int(rng.integers(1, 60)))))
        options.append([list(-rng.exponential(3.0, int(rng.integers(1, 60)))) for _ in range(int(rng.integers(1, 12)))])
    batched = normalised_probabilities(true, options)
    assert [float(v) for v in batched] == [normalised_probability(t, o) for t, o in zip(true, options)]


def test_rouge_memo_gives_rouge_scores_own_values():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    texts = ["Ann Lee wrote the book about rivers.", "The running runners ran; happily!", "", "I do not know this.",
             "Writing, written, writes: rivers' RIVER riverbanks", "1999 was the year 42 prizes were given"]
    for _ in range(2):  # the second pass reads the memo
        for gen in texts:
            for answer in texts:
                assert rouge_l_recall(gen, answer) == float(plain.score(answer, gen)["rougeL"].recall), (gen, answer)


def test_example_problems_flag_bad_values_as_before():
    ok = fx.make_example(lp_answer=(-1.0, -0.5))
    assert ok.problems() == []
    for field, values, phrase in (("lp_answer", [-1.0, math.nan], "log-probabilities"),
                                  ("lp_answer", [-1.0, 0.5], "log-probabilities"),
                                  ("lp_paraphrased", [-math.inf], "log-probabilities"),
                                  ("lp_answer", [-1, 2], "log-probabilities"),  # ints, built in memory
                                  ("minkpp_mu", [0.1, -1.0], "minkpp_mu"),
                                  ("minkpp_sigma", [1.0, -0.1], "minkpp_sigma"),
                                  ("minkpp_sigma", [math.inf, 1.0], "minkpp_sigma")):
        ex = dataclasses.replace(ok, **{field: values})
        assert any(phrase in p for p in ex.problems()), (field, values)
    assert dataclasses.replace(ok, lp_answer=[-1, 0], minkpp_mu=[-1, 0], minkpp_sigma=[0, 1]).problems() == []


def test_split_of_is_unchanged_by_its_memo():
    assert [split_of(s) for s in ("forget10_perturbed", "retain_perturbed", "holdout05", "real_faces")] * 2 == [
        "forget", "retain", "holdout", "real_faces"] * 2
    for _ in range(2):
        with pytest.raises(ValueError, match="Unknown eval config"):
            split_of("nonsense")
    with pytest.raises(AttributeError):
        split_of(["not", "a", "name"])  # an unhashable value fails as it did before the memo


def test_is_gold_is_the_gold_files_content(lb):
    ref, gold = lb["ref"], lb["gold"]
    assert ref.is_gold(gold) and ref.is_gold(copy.deepcopy(gold))
    same_provenance = copy.deepcopy(lb["results"]["npo-10"])
    same_provenance["provenance"] = copy.deepcopy(gold["provenance"])
    assert not ref.is_gold(same_provenance) and not ref.is_gold(lb["results"]["npo-10"])
    assert content_sha256(same_provenance) != content_sha256(gold)


def test_examples_are_parsed_as_before(lb):
    result = lb["results"]["npo-10"]
    exs = examples_of(result)
    assert [ex.to_dict() for ex in exs] == result["examples"]
    assert all(type(x) is float for ex in exs for x in ex.lp_answer + [y for r in ex.lp_perturbed for y in r])


def test_row_means_equal_each_rows_own_mean_bit_for_bit():
    rng = np.random.default_rng(1)
    rows = [list(-rng.exponential(2.0, n) * rng.choice([1e-3, 1.0, 1e3])) for n in rng.integers(1, 600, 500)]
    rows += [[-1.0, -2.0, -3.0]] * 3 + [[-0.5]]
    assert [float(m) for m in row_means(rows)] == [float(np.mean(r)) for r in rows]


@pytest.mark.parametrize("mode", ["tofu", "clear"])
def test_truth_ratios_equal_the_per_item_form_bit_for_bit(mode):
    rng = np.random.default_rng(2)
    para = [list(-rng.exponential(2.0, int(rng.integers(1, 80)))) for _ in range(60)]
    pert = [[list(-rng.exponential(3.0, int(rng.integers(1, 80)))) for _ in range(int(rng.integers(1, 8)))]
            for _ in range(60)]
    p = np.array([-np.mean(lp) for lp in para], dtype=np.float64)  # the per-item form (truth_ratio VERSION 3)
    q = [np.array([-np.mean(lp) for lp in rows], dtype=np.float64) for rows in pert]
    q_mean = np.array([x.mean() for x in q]) if mode == "tofu" else np.full(len(q), np.concatenate(q).mean())
    expected = np.exp(np.clip(q_mean - p, -truth_ratio._MAX_LOG, truth_ratio._MAX_LOG))
    assert truth_ratio.truth_ratios(para, pert, mode).tolist() == expected.tolist()


def test_rouge_of_a_non_text_fails_as_before():
    with pytest.raises(AttributeError):
        rouge_l_recall(["not", "text"], "an answer")
