"""Compute accounting (clearbench.cost): what a meter counts on a tiny real LLaVA, nested meters, peak memory,
and the checks a cost record must pass. Stage records are checked where the stages run (test_unlearn,
test_evaluate, test_stages)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clearbench.cost import COST_FIELDS, Meter, add_costs, check_cost, count_tokens
from tests.tiny_vlm import build_tiny_llava, make_batch


def test_meter_counts_positions_with_and_without_gradients_and_nests():
    model = count_tokens(build_tiny_llava())
    count_tokens(model)  # idempotent: a second call adds no second hook
    batch = make_batch("forget", batch_size=2)
    with Meter() as outer:
        model(**batch)  # with gradients: forward and backward positions
        with Meter() as inner, torch.no_grad():
            model(**batch)  # a reference-style pass: forward only
    positions = batch["input_ids"].numel()  # padding and image tokens included: the compute
    assert (outer.tokens_backward, outer.tokens_forward_only, outer.images) == (positions, positions, 4)
    assert (inner.tokens_backward, inner.tokens_forward_only, inner.images) == (0, positions, 2)
    model(**batch)  # no meter open: nothing counted anywhere
    assert outer.tokens_backward == positions
    s = outer.summary(steps=3)
    assert not check_cost(s) and s["optimizer_steps"] == 3 and s["complete"]
    assert s["wall_seconds"] >= inner.summary()["wall_seconds"] > 0


def test_peak_memory_is_the_meters_own():
    with Meter() as big:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    with Meter() as small:
        pass
    if big.scope == "meter":  # Linux with a resettable high-water mark
        assert big.summary()["peak_memory_mb"] >= small.summary()["peak_memory_mb"] + 50
    assert small.summary()["peak_memory_mb"] > 0


def test_a_copy_of_a_counted_model_is_counted():
    import copy

    model = count_tokens(build_tiny_llava())
    twin = copy.deepcopy(model)  # a full-parameter unlearning run's frozen reference
    batch = make_batch("retain", batch_size=1)
    with Meter() as m, torch.no_grad():
        twin(**batch)
    assert m.tokens_forward_only == batch["input_ids"].numel()


def test_cost_records_are_checked_and_shards_add_up():
    with Meter() as a:
        pass
    rec = a.summary(steps=1)
    assert check_cost(rec) == []
    assert check_cost(None) == ["cost is missing"]
    for name in COST_FIELDS:
        assert any(name in p for p in check_cost({k: v for k, v in rec.items() if k != name}))
    assert check_cost(rec | {"tokens_backward": -5}) == ["cost.tokens_backward is negative (-5)"]
    assert check_cost(rec | {"images": float("nan")})
    both = add_costs([rec | {"tokens_forward_only": 10, "peak_memory_mb": 5.0},
                      rec | {"tokens_forward_only": 7, "peak_memory_mb": 9.0, "complete": False}])
    assert both["tokens_forward_only"] == 17 and both["peak_memory_mb"] == 9.0 and both["processes"] == 2
    assert both["optimizer_steps"] == 2 and not both["complete"]


@pytest.mark.parametrize("bad", ["x", True])
def test_non_numbers_are_problems(bad):
    with Meter() as a:
        pass
    assert check_cost(a.summary() | {"cpu_seconds": bad})
