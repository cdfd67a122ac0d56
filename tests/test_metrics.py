"""Every metric formula against values computed by hand on handcrafted outputs."""
from __future__ import annotations

import importlib.util
import itertools
import math
import pathlib

import numpy as np
import pytest

from eval.example import ExampleOutput, split_of
from eval.metrics import forget_quality, mia, model_utility, naming, probability, rouge_l, truth_ratio

_spec = importlib.util.spec_from_file_location(
    "_clearbench_metric_fixtures", pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

E = math.e


# ----------------------------------------------------------------------------- schema (registry: test_metrics_registry.py)
def test_split_names():
    assert split_of("forget10_perturbed") == "forget"
    assert split_of("forget01_perturbed") == "forget"
    assert split_of("retain_perturbed") == "retain"
    assert split_of("holdout05") == "holdout"
    assert split_of("real_faces") == "real_faces" and split_of("real_world") == "real_world"
    with pytest.raises(ValueError, match="retain_perturbed"):
        split_of("retain90")


def test_example_round_trip_and_problems():
    ex = fx.make_example(lp_answer=[-1, -2], lp_perturbed=[[-3.0], [-1.0, -2.0]])
    assert ExampleOutput.from_dict(ex.to_dict()) == ex
    assert ex.problems() == []
    bad = fx.make_example(lp_answer=[-1, 0.5], mu=[-1, -1, -1])
    msgs = " ".join(bad.problems())
    assert "<= 0" in msgs and "minkpp_mu" in msgs
    d = ex.to_dict()
    del d["generation"]
    with pytest.raises(ValueError, match="generation"):
        ExampleOutput.from_dict(d)


# ----------------------------------------------------------------------------- ROUGE
def test_rouge_l_recall_by_hand():
    # answer tokens: the cat sat on the mat (6); LCS with "the cat on a mat" = the cat on mat (4)
    assert rouge_l.rouge_l_recall("The cat on a mat.", "the cat sat on the mat") == pytest.approx(4 / 6)
    # Porter stemmer: runs / running -> run
    assert rouge_l.rouge_l_recall("she running daily", "She runs daily") == pytest.approx(1.0)
    assert rouge_l.rouge_l_recall("", "She runs daily") == 0.0
    # recall, not F1: extra generated words do not lower it
    assert rouge_l.rouge_l_recall("well ann lee is the name here", "Ann Lee") == pytest.approx(1.0)


# ----------------------------------------------------------------------------- probability
def test_probability_is_length_normalised():
    assert probability.probability([-1.0, -3.0]) == pytest.approx(math.exp(-2.0))
    assert probability.probability([-2.0]) == pytest.approx(math.exp(-2.0))


def test_normalised_probability_by_hand():
    # true mean -1, options means -2 and -3 (the second over two tokens)
    got = probability.normalised_probability([-1.0], [[-2.0], [-2.0, -4.0]])
    assert got == pytest.approx(E**-1 / (E**-1 + E**-2 + E**-3))
    assert probability.uses_normalised("real_world", "vqa") and probability.uses_normalised("retain", "naming")
    assert not probability.uses_normalised("retain", "caption") and not probability.uses_normalised("forget", "qa")


# ----------------------------------------------------------------------------- truth ratio
# item A: L_para = 1, perturbed losses 2 and 4;  item B: L_para = 2, perturbed losses 1 and 1
TR_PARA = [[-0.5, -1.5], [-2.0]]
TR_PERT = [[[-2.0], [-3.0, -5.0]], [[-1.0], [-1.0]]]


def test_truth_ratio_tofu_per_item():
    tr = truth_ratio.truth_ratios(TR_PARA, TR_PERT, "tofu")
    np.testing.assert_allclose(tr, [E**2, E**-1])  # exp(mean_k L_pert - L_para)
    assert truth_ratio.keep_stat(tr) == pytest.approx(((1 - E**-2) + 0.0) / 2)
    assert truth_ratio.forget_stat(tr) == pytest.approx((E**-2 + E**-1) / 2)


def test_truth_ratio_clear_global_mean_differs():
    tr = truth_ratio.truth_ratios(TR_PARA, TR_PERT, "clear")
    # global mean of perturbed losses = (2 + 4 + 1 + 1) / 4 = 2
    np.testing.assert_allclose(tr, [E**1, 1.0])
    assert truth_ratio.keep_stat(tr) == pytest.approx((1 - E**-1) / 2)
    assert truth_ratio.forget_stat(tr) == pytest.approx((E**-1 + 1.0) / 2)
    assert truth_ratio.keep_stat(tr) != pytest.approx(
        truth_ratio.keep_stat(truth_ratio.truth_ratios(TR_PARA, TR_PERT, "tofu")))


def test_truth_ratio_orientation_and_split_rule():
    # the model prefers the truth: TR > 1, keep-stat > 0; forget-stat peaks at TR = 1
    tr = truth_ratio.truth_ratios([[-0.1]], [[[-3.0]]])
    assert tr[0] > 1 and truth_ratio.truth_ratio_stat(tr, "retain") > 0.9
    assert truth_ratio.truth_ratio_stat(np.array([1.0]), "forget") == 1.0
    with pytest.raises(ValueError, match="tofu"):
        truth_ratio.truth_ratios(TR_PARA, TR_PERT, "tofo")


# ----------------------------------------------------------------------------- naming
def test_naming_normalisation():
    assert naming.normalise_name("  Ji-Yeon   PARK! ") == "ji yeon park"
    assert naming.name_in_generation("I think this is ji yeon  PARK.", "Ji-Yeon Park")
    assert naming.name_in_generation("ANN LEE!", "Ann Lee")
    assert naming.name_in_generation("This is Tomás Rivera, a poet", "Tomás Rivera")
    assert not naming.name_in_generation("This is Ann Leeds.", "Ann Lee")   # whole words only
    assert not naming.name_in_generation("This is Ji-Yeon.", "Ji-Yeon Park")  # full name needed
    assert not naming.name_in_generation("This is Tomas Rivera", "Tomás Rivera")  # accents kept


def test_forced_choice():
    assert naming.forced_choice_correct([-1.0, -1.0], [[-2.0], [-1.5, -1.6]])
    assert not naming.forced_choice_correct([-1.0], [[-2.0], [-0.5, -1.5]])  # tie counts as wrong
    assert not naming.forced_choice_correct([-1.0], [[-0.9]])


# ----------------------------------------------------------------------------- forget quality
def _exact_ks_pvalue(x, y):
    """P(D >= d_obs) over every relabelling of the pooled sample (no ties): the exact null."""
    def d(a, b):
        grid = sorted(a + b)
        return max(abs(sum(v <= t for v in a) / len(a) - sum(v <= t for v in b) / len(b)) for t in grid)
    pooled, d_obs = x + y, d(x, y)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(x)):
        a = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        hits += d(a, b) >= d_obs - 1e-12
        total += 1
    return hits / total


def test_ks_pvalue_matches_exact_enumeration():
    x, y = [0.1, 0.4, 0.9], [0.3, 1.2, 1.5, 2.0]
    assert forget_quality.ks_forget_quality(x, y) == pytest.approx(_exact_ks_pvalue(x, y), abs=1e-12)
    # fully separated 3 vs 3: only 2 of the C(6,3) = 20 relabellings reach D = 1
    assert forget_quality.ks_forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert forget_quality.ks_forget_quality(x, x) == 1.0


def test_ks_d_and_log10p_by_hand():
    # fully separated 3 vs 3: D = 1, p = 2 / C(6, 3) = 0.1
    assert forget_quality.ks_test([1, 2, 3], [4, 5, 6]) == pytest.approx((1.0, 0.1, -1.0))
    # x = 1 2 4, y = 3 5 6: D = 2/3 (at 2); P(D >= 2/3) = 2 C(6, 1) / C(6, 3) = 0.6
    d, p, log10p = forget_quality.ks_test([1, 2, 4], [3, 5, 6])
    assert d == pytest.approx(2 / 3) and p == pytest.approx(0.6) and log10p == pytest.approx(math.log10(0.6))
    assert p == pytest.approx(_exact_ks_pvalue([1, 2, 4], [3, 5, 6]))
    # unequal sizes, separated: p = 2 / C(7, 3)
    assert forget_quality.ks_test([1, 2, 3], [4, 5, 6, 7])[2] == pytest.approx(math.log10(2 / 35))
    assert forget_quality.ks_test([1, 2], [1, 2]) == (0.0, 1.0, 0.0)


def test_log10p_stays_finite_where_p_underflows():
    # 600 vs 600 fully separated: p = 2 / C(1200, 600) ~ 1e-359, below the smallest double
    n = 600
    d, p, log10p = forget_quality.ks_test(list(range(n)), list(range(n, 2 * n)))
    by_hand = (math.log(2) - (math.lgamma(2 * n + 1) - 2 * math.lgamma(n + 1))) / math.log(10)
    assert d == 1.0 and p == 0.0 and log10p == pytest.approx(by_hand, rel=1e-12) and log10p < -359
    # where p is representable, log10 p is log10 of scipy's exact p
    rng = np.random.default_rng(0)
    for n, shift in ((40, 0.5), (200, 0.3), (300, 1.5)):
        a, b = rng.normal(size=n), rng.normal(size=n) + shift
        d, p, log10p = forget_quality.ks_test(a, b)
        assert log10p == pytest.approx(math.log10(p), rel=1e-12)


def test_tofu_sizes_and_subsample():
    assert [forget_quality.tofu_n(f"forget{p:02d}_perturbed") for p in (1, 5, 10, 20)] == [40, 200, 300, 300]
    keys = [f"k{i:03d}" for i in range(50)]
    picked = forget_quality.subsample(keys[::-1], 10)
    assert len(picked) == 10 and picked == sorted(picked) and set(picked) <= set(keys)
    assert forget_quality.subsample(keys, 10) == picked  # the order given does not matter
    assert forget_quality.subsample(keys, 0) == keys == forget_quality.subsample(keys, 60)


def test_js_forget_quality_by_hand():
    # p = (1/4, 3/4), q = (3/4, 1/4), m = (1/2, 1/2): JS = KL(p||m) (symmetric case)
    js = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert forget_quality.js_forget_quality([1, 3], [3, 1]) == pytest.approx(1 - math.sqrt(js))
    # scale invariance (the vectors are normalised) and index alignment (order matters)
    assert forget_quality.js_forget_quality([2, 6], [6, 2]) == pytest.approx(1 - math.sqrt(js))
    assert forget_quality.js_forget_quality([1, 3], [1, 3]) == 1.0
    with pytest.raises(ValueError, match="index-aligned"):
        forget_quality.js_forget_quality([1, 2], [1])


def test_modality_gap():
    assert forget_quality.modality_gap({"text": -1.0, "image": -3.0, "joint": -2.0}) == pytest.approx(2.0)
    assert forget_quality.modality_gap({"text": 0.0, "image": 0.0}) == 0.0
    with pytest.raises(ValueError):
        forget_quality.modality_gap({})


# ----------------------------------------------------------------------------- model utility
def test_harmonic_mean():
    assert model_utility.harmonic_mean([0.5, 0.25]) == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert model_utility.harmonic_mean([0.5, 0.0, 0.9]) == 0.0
    with pytest.raises(ValueError):
        model_utility.harmonic_mean([])


# ----------------------------------------------------------------------------- MIA
def test_min_k_by_hand():
    lp = [-1.0, -5.0, -2.0, -4.0, -3.0]
    assert mia.min_k_score(lp, 0.4) == pytest.approx(4.5)   # int(5 * 0.4) = 2 lowest: -5, -4
    assert mia.min_k_score(lp, 0.1) == pytest.approx(5.0)   # int(0.5) = 0 -> at least one token
    assert mia.loss_score(lp) == pytest.approx(3.0)


def test_min_k_pp_by_hand():
    lp, mu, sigma = [-1.0, -2.0, -3.0], [-1.5, -1.0, -2.0], [0.5, 2.0, 1.0]
    # z = (lp - mu) / sigma = [1.0, -0.5, -1.0]
    assert mia.min_k_pp_score(lp, mu, sigma, 0.4) == pytest.approx(1.0)   # int(1.2) = 1: -1.0
    assert mia.min_k_pp_score(lp, mu, sigma, 0.7) == pytest.approx(0.75)  # int(2.1) = 2: -1, -0.5
    # a one-hot distribution (sigma = 0) is clamped to var 1e-6 as open-unlearning does
    assert mia.min_k_pp_score([-1.0], [-0.5], [0.0], 0.4) == pytest.approx(500.0)


def test_zlib_score_by_hand():
    # zlib.compress(b"aaaa"): 2-byte header + 6-byte deflate block + 4-byte adler32 = 12 bytes
    assert mia.zlib_score([-1.0, -3.0], "aaaa") == pytest.approx(2.0 / 12)


def test_auc_orientation():
    memorised = [mia.loss_score([-0.01, -0.02]), mia.loss_score([-0.05])]   # forget: very likely
    unseen = [mia.loss_score([-3.0, -4.0]), mia.loss_score([-2.5])]        # holdout: unlikely
    assert mia.auc(memorised, unseen) == 1.0   # forget labelled 0, holdout 1, loss-like score
    assert mia.auc(unseen, memorised) == 0.0
    # pairs with holdout > forget: (2>1), (4>1), (4>3) of 4 -> 0.75
    assert mia.auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)


def test_privleak_by_hand():
    assert mia.privleak(0.8, 0.5) == pytest.approx(-60.0)  # ((0.2) - (0.5)) / 0.5 * 100
    assert mia.privleak(0.5, 0.5) == 0.0
    assert mia.privleak(0.2, 0.6) == pytest.approx((0.8 - 0.4) / 0.4 * 100)
    with pytest.raises(ZeroDivisionError):
        mia.privleak(0.7, 1.0)
