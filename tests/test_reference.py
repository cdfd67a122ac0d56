"""clearbench.reference.Reference: adapter-disabled (LoRA) or frozen copy, bit-stable across training."""
from __future__ import annotations

import copy

import torch

from clearbench.losses import logit_mask, mean_nll, model_inputs
from clearbench.reference import Reference

try:
    from tests.tiny_vlm import add_lora, all_batches, build_tiny_llava, fresh_vlm, tiny_vlm  # noqa: F401
except ImportError:
    from tiny_vlm import add_lora, all_batches, build_tiny_llava, fresh_vlm, tiny_vlm  # noqa: F401


def _train(model, batch, steps=3, lr=0.5):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        mean_nll(model(**model_inputs(batch)).logits, batch["labels"]).backward()
        opt.step()


def test_lora_reference_is_the_base_model_and_stays_bit_identical(tiny_vlm):
    batch = all_batches()["forget"]
    with torch.no_grad():
        base_logits = tiny_vlm(**model_inputs(batch)).logits
    model = add_lora(copy.deepcopy(tiny_vlm))
    ref = Reference(model)
    assert ref.kind == "adapter-disabled"
    before = ref(batch)
    assert torch.equal(before, base_logits)  # adapters off == the model unlearning starts from
    _train(model, batch)
    with torch.no_grad():
        trained = model(**model_inputs(batch)).logits
    assert not torch.allclose(trained, before)  # the LoRA model moved ...
    assert torch.equal(ref(batch), before)  # ... the reference did not, to the bit
    assert model.training  # ref() restores train mode
    with ref.module() as net:  # same network, adapters disabled
        assert net is model and torch.equal(net(**model_inputs(batch)).logits, before)
    assert torch.equal(model(**model_inputs(batch)).logits, trained)  # adapters back on afterwards


def test_full_parameter_reference_is_a_frozen_copy(fresh_vlm):
    batch = all_batches()["retain"]
    fresh_vlm.train()
    ref = Reference(fresh_vlm)
    assert ref.kind == "copy"
    before = ref(batch)
    _train(fresh_vlm, batch)
    assert torch.equal(ref(batch), before)
    with ref.module() as net:
        assert net is not fresh_vlm and not any(p.requires_grad for p in net.parameters())
    assert ref(batch).grad_fn is None


def test_reference_runs_in_eval_mode_without_grad():
    model = add_lora(build_tiny_llava(dropout=0.5), checkpointing=False)  # training mode, dropout active
    batch = all_batches()["forget"]
    ref = Reference(model)
    a, b = ref(batch), ref(batch)
    assert torch.equal(a, b) and not a.requires_grad  # no dropout noise, no graph
    assert model.training


def test_reference_answer_logits_are_its_logits_at_the_answer_positions(fresh_vlm):
    batch = all_batches()["forget"]
    for model in (fresh_vlm.train(), add_lora(copy.deepcopy(fresh_vlm), checkpointing=False)):
        ref = Reference(model)
        got = ref.answer_logits(batch)
        mask = logit_mask(batch["labels"])
        assert got.shape == (int(mask.sum()), ref(batch).shape[-1]) and got.grad_fn is None
        torch.testing.assert_close(got, ref(batch)[mask], rtol=1e-5, atol=1e-6)
        assert model.training
