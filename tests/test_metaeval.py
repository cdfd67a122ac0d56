"""The meta-evaluation (issue 18): the AUC against scikit-learn's and on uninformative metrics, the labels and
orientations."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from eval import metaeval

def test_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for n_pos, n_neg in ((1, 1), (3, 5), (12, 17), (40, 9)):
        pos, neg = rng.integers(0, 4, n_pos).astype(float), rng.integers(0, 4, n_neg).astype(float)  # many ties
        labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        if len(set(labels)) == 2:
            assert metaeval.auc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)


def test_uninformative_metrics_get_auc_one_half():
    assert metaeval.auc([0.3] * 7, [0.3] * 9) == 0.5
    assert metaeval.auc_interval([0.3] * 7, [0.3] * 9, 200, 0) == (0.5, 0.5)
    # a random score, drawn alike for knowers and not: AUC 0.5 on average, and the interval covers 0.5 about as
    # often as its level says (over 300 pools of 12 positives and 12 negatives)
    rng = np.random.default_rng(1)
    aucs, covered = [], 0
    for i in range(300):
        pos, neg = rng.normal(size=12), rng.normal(size=12)
        aucs.append(metaeval.auc(pos, neg))
        lo, hi = metaeval.auc_interval(pos, neg, 300, i)
        covered += lo <= 0.5 <= hi
    assert abs(np.mean(aucs) - 0.5) < 0.02 and 0.88 <= covered / 300 <= 0.99
    assert metaeval.auc_interval(pos + 10, neg, 300, 0) == (1.0, 1.0)  # a separating score's interval: [1, 1]
    assert metaeval.auc_interval(pos + 3, neg, 300, 0)[0] > 0.6
    assert metaeval.auc_interval(pos, neg, 300, 0) == metaeval.auc_interval(pos, neg, 300, 0)  # seeded


def test_labels_and_orientations_follow_exposure_and_declared_direction():
    exposed = {"t": ["text", "image", "joint"], "g": [], "x": ["text"], "v": ["image", "joint"]}
    assert [metaeval.label(exposed[m], "forget/text/rouge_l") for m in "tgxv"] == [1, 0, 1, 0]
    assert [metaeval.label(exposed[m], "forget/image@heldout/naming_acc") for m in "tgxv"] == [1, 0, 0, 1]
    assert [metaeval.label(exposed[m], "forget/all/forget_quality") for m in "tgxv"] == [1, 0, None, None]
    # lower is better on forget: the value; higher (forget quality's p): its negative; MIA AUC: distance from gold's
    assert metaeval.knowledge("forget/text/rouge_l", 0.8) == 0.8
    assert metaeval.knowledge("forget/all/forget_quality", 0.01) == -0.01
    assert metaeval.knowledge("forget/text/truth_ratio", 0.9) == -0.9  # min(TR, 1/TR): 1 = indifferent
    assert metaeval.knowledge("mia/text/loss_auc", 0.9, gold=0.55) == pytest.approx(0.35)
    assert metaeval.knowledge("mia/text/loss_privleak", -40.0) == 40.0
    assert metaeval.orientation("forget/all/forget_quality_n") is None and metaeval.orientation("forget/text/n") is None
    assert metaeval.knowledge("relearn:forget_n10/text/probability_delta", 0.2) == 0.2
    assert metaeval.orientation("quantize:gold/text/probability") is None
    with pytest.raises(ValueError, match="Did you mean 'rouge_l'"):
        metaeval.orientation("forget/text/rouge_k")


def test_faithfulness_of_synthetic_pool_values():
    """Known answers: a rouge that the text-exposed models share with the targets, a forget quality that is lower
    for knowers, a constant; the one-modality models count per modality, and only against the no-exposure models
    in the cross-modal separation."""
    exposed = {**{f"t{i}": ["text", "image", "joint"] for i in range(4)}, **{f"g{i}": [] for i in range(4)},
               "x0": ["text"], "x1": ["text"], "v0": ["image", "joint"]}
    knows_text = {m: 1.0 if "text" in e else 0.0 for m, e in exposed.items()}
    values = {m: {"forget/text/rouge_l": 0.2 + 0.7 * knows_text[m], "forget/image/rouge_l": 0.4,
                  "forget/all/forget_quality": 1e-4 if m.startswith("t") else 0.6} for m in exposed}
    rows = metaeval.faithfulness(values, exposed, {}, n_boot=100, seed=0)
    text = rows["forget/text/rouge_l"]
    assert (text["auc"], text["n_pos"], text["n_neg"]) == (1.0, 6, 5)
    assert text["cross"]["text"]["auc"] == 1.0 and text["cross"]["image+joint"]["auc"] == 0.5
    assert rows["forget/image/rouge_l"]["auc"] == 0.5 and rows["forget/image/rouge_l"]["n_pos"] == 5
    fq = rows["forget/all/forget_quality"]
    assert (fq["auc"], fq["n_pos"], fq["n_neg"], fq["clean"]["auc"]) == (1.0, 4, 4, 1.0)
