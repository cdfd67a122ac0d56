"""The core's teacher-forced scorer: answer_probability (unlearning's early-stopping criterion) against a
direct batch-1 forward, on a packed family and on the per-row path."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from clearbench import scoring
from model_fixtures import sample_records


def _direct_probability(loaded, record) -> float:
    """exp(mean log p(answer token)) from one unbatched forward, independent of clearbench.scoring."""
    batch = loaded.collate([record])
    labels = batch.pop("labels")[0]
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(**batch).logits[0].double(), -1)  # (T, V)
    lps = [float(logp[t - 1, labels[t]]) for t in range(1, len(labels)) if labels[t] != -100]
    return math.exp(sum(lps) / len(lps))


@pytest.mark.parametrize("name", ["tiny-llava", "qwen2-vl"])
def test_answer_probability_is_mean_per_token_probability(loaded_families, name):
    loaded = loaded_families[name]
    assert (scoring.packed_model(loaded) is not None) == (name == "tiny-llava")  # both paths are covered
    model = copy.deepcopy(loaded.model).train()
    loaded = dataclasses.replace(loaded, model=model)
    records = sample_records()
    want = sum(_direct_probability(dataclasses.replace(loaded, model=copy.deepcopy(model).eval()), r)
               for r in records) / len(records)
    got = scoring.answer_probability(loaded, records, batch_size=3)
    assert got == pytest.approx(want, rel=1e-5)
    assert model.training  # the caller's mode is restored
