"""clearbench.losses: every function against hand-computed values on small fixed tensors."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from clearbench.losses import (StepInfo, answer_lengths, answer_logits, answer_nll, kl_per_token,
                               language_layers, layer_index, logit_mask, masked_mse, mean_nll, model_inputs,
                               sequence_logprob, token_logprobs)

try:
    from tests.tiny_vlm import build_tiny_llava, tiny_vlm  # noqa: F401
except ImportError:
    from tiny_vlm import build_tiny_llava, tiny_vlm  # noqa: F401


def _logits_from_probs(probs: list[list[float]]) -> torch.Tensor:
    """(T, V) probabilities -> (1, T, V) logits whose softmax is exactly those probabilities."""
    return torch.tensor(probs).log().unsqueeze(0)


# one sequence of 4 tokens over a 3-word vocabulary; tokens 2 and 3 are the answer
LOGITS = _logits_from_probs([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]])
LABELS = torch.tensor([[-100, -100, 1, 2]])  # position 1 predicts token 1 (p=0.6), position 2 predicts token 2 (p=0.5)


def test_token_logprobs_applies_the_causal_shift():
    lp, mask = token_logprobs(LOGITS, LABELS)
    assert lp.shape == mask.shape == (1, 3)
    assert mask.tolist() == [[False, True, True]]
    torch.testing.assert_close(lp, torch.tensor([[0.0, math.log(0.6), math.log(0.5)]]))


def test_sequence_logprob_mean_nll_and_lengths():
    torch.testing.assert_close(sequence_logprob(LOGITS, LABELS), torch.tensor([math.log(0.6) + math.log(0.5)]))
    torch.testing.assert_close(mean_nll(LOGITS, LABELS), torch.tensor(-(math.log(0.6) + math.log(0.5)) / 2))
    assert answer_lengths(LABELS).tolist() == [2.0]


def test_mean_nll_is_per_example_mean():
    logits = torch.cat([LOGITS, LOGITS])  # (2, 4, 3)
    labels = torch.tensor([[-100, -100, 1, 2], [-100, -100, -100, 2]])  # 2 and 1 answer tokens
    expected = (-(math.log(0.6) + math.log(0.5)) / 2 - math.log(0.5)) / 2
    torch.testing.assert_close(mean_nll(logits, labels), torch.tensor(expected))
    # the mean of two micro-batches' losses equals the whole batch's loss (the trainer's invariant)
    halves = (mean_nll(logits[:1], labels[:1]) + mean_nll(logits[1:], labels[1:])) / 2
    torch.testing.assert_close(halves, mean_nll(logits, labels))


def test_mean_nll_matches_hf_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    labels[:, :3] = -100
    hf = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(mean_nll(logits, labels), hf)


def test_token_logprobs_gradient_flows():
    logits = LOGITS.clone().requires_grad_(True)
    sequence_logprob(logits, LABELS).sum().backward()
    assert logits.grad[0, 1].abs().sum() > 0 and logits.grad[0, 0].abs().sum() == 0  # prompt position untouched


def test_logit_mask_marks_positions_predicting_answers():
    assert logit_mask(LABELS).tolist() == [[False, True, True, False]]


def test_kl_per_token_by_hand():
    p = _logits_from_probs([[0.5, 0.5], [0.9, 0.1]])
    q = _logits_from_probs([[0.25, 0.75], [0.9, 0.1]])
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(kl_per_token(p, q, torch.tensor([[True, False]])), torch.tensor(kl0))
    torch.testing.assert_close(kl_per_token(p, q), torch.tensor(kl0 / 2))  # mean over both positions
    assert kl_per_token(p, p).item() == pytest.approx(0.0, abs=1e-7)
    # two examples: per-example mean first (example 0 has 2 positions, example 1 has 1)
    p2, q2 = torch.cat([p, p]), torch.cat([q, q])
    mask2 = torch.tensor([[True, True], [True, False]])
    torch.testing.assert_close(kl_per_token(p2, q2, mask2), torch.tensor((kl0 / 2 + kl0) / 2))


def test_losses_keep_float64_and_raise_half_precision():
    """float64 logits stay float64 (a ``.float()`` rounding them to float32 gave the KL at identical
    distributions a noise gradient that Adam scaled to a full step); bfloat16 goes up to float32."""
    p64 = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    kl = kl_per_token(p64, p64.detach().clone())
    assert kl.dtype == torch.float64
    kl.backward()
    assert p64.grad.abs().max().item() < 1e-15
    labels = torch.tensor([[-100, 1, 2], [-100, -100, 4]])
    assert token_logprobs(p64, labels)[0].dtype == torch.float64
    assert token_logprobs(p64.detach().bfloat16(), labels)[0].dtype == torch.float32
    assert masked_mse(p64, p64.detach() + 1, torch.ones(2, 3, dtype=torch.bool)).dtype == torch.float64


def test_losses_take_logits_gathered_at_the_answer_positions():
    """(N, V) logits gathered at ``logit_mask(labels)`` (what ``answer_logits`` returns) give the same values."""
    gen = torch.Generator().manual_seed(0)
    logits, ref = torch.randn(3, 6, 5, generator=gen), torch.randn(3, 6, 5, generator=gen)
    labels = torch.randint(0, 5, (3, 6), generator=gen)
    labels[:, :2] = -100
    labels[1, 4:] = -100
    labels[2] = -100  # no answer token: contributes 0
    mask = logit_mask(labels)
    for fn in (mean_nll, sequence_logprob):
        assert torch.equal(fn(logits[mask], labels), fn(logits, labels))
    assert all(torch.equal(a, b) for a, b in zip(token_logprobs(logits[mask], labels), token_logprobs(logits, labels)))
    assert torch.equal(kl_per_token(ref[mask], logits[mask], mask), kl_per_token(ref, logits, mask))
    assert torch.equal(kl_per_token(ref, logits[mask], mask), kl_per_token(ref, logits, mask))  # one side gathered
    with pytest.raises(ValueError, match="need the mask"):
        kl_per_token(ref[mask], logits[mask])


def test_masked_mse_per_example_then_batch():
    acts = torch.tensor([[[1.0, 3.0], [5.0, 5.0]], [[0.0, 0.0], [2.0, 2.0]]])  # (2, 2, 2)
    target = torch.zeros(1, 1, 2)
    mask = torch.tensor([[True, True], [False, True]])
    ex0 = ((1 + 9) / 2 + (25 + 25) / 2) / 2  # 15
    ex1 = (4 + 4) / 2  # 4
    torch.testing.assert_close(masked_mse(acts, target, mask), torch.tensor((ex0 + ex1) / 2))


def test_model_inputs_drops_labels_only():
    batch = {"input_ids": 1, "attention_mask": 2, "labels": 3, "pixel_values": 4}
    assert model_inputs(batch) == {"input_ids": 1, "attention_mask": 2, "pixel_values": 4}


def test_step_info_is_frozen():
    s = StepInfo(step=3, total_steps=10, epoch=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.step = 4


def test_layer_index_relative_to_depth():
    assert [layer_index(32, f) for f in (0.0, 7 / 31, 0.5, 1.0)] == [0, 7, 16, 31]
    with pytest.raises(ValueError, match="layer_frac"):
        layer_index(32, 1.5)


def test_language_layers_llava_and_through_peft(tiny_vlm):
    from peft import LoraConfig, get_peft_model

    layers = language_layers(tiny_vlm)
    assert layers is tiny_vlm.model.language_model.layers and len(layers) == 2
    wrapped = get_peft_model(build_tiny_llava(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(language_layers(wrapped)) == 2
    assert language_layers(wrapped) is wrapped.get_base_model().model.language_model.layers


def test_language_layers_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, in_chans=3, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
    )
    model = Qwen2VLForConditionalGeneration(cfg)
    assert len(language_layers(model)) == 3


def test_language_layers_unknown_model_fails_loudly():
    with pytest.raises(ValueError, match="Linear is the model class of no registered model family"):
        language_layers(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# answer_nll: the output head at answer positions only, same value and gradients as mean_nll.


def _full_nll(model, batch):
    return mean_nll(model(**model_inputs(batch)).logits, batch["labels"])


def _loss_and_grads(loss_fn, model, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _head_rows(model, batch) -> list[tuple[int, ...]]:
    """Shapes of the hidden states the output head receives during ``answer_nll``."""
    head = model.get_output_embeddings()
    seen: list[tuple[int, ...]] = []
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        answer_nll(model, batch)
    finally:
        handle.remove()
    return seen


def _assert_same_loss_and_grads(model, batch):
    old, g_old = _loss_and_grads(_full_nll, model, batch)
    new, g_new = _loss_and_grads(answer_nll, model, batch)
    assert abs(old.item() - new.item()) <= 1e-5
    assert g_old.keys() == g_new.keys() and len(g_old) > 0
    for name in g_old:
        torch.testing.assert_close(g_new[name], g_old[name], rtol=1e-4, atol=1e-6, msg=name)


def _mixed_batch(loaded):
    from model_fixtures import sample_records

    records = sample_records()  # text QA, image naming, joint QA, text QA
    assert {r.image is None for r in records} == {True, False}
    return loaded.family.collate(loaded.processor, records)


@pytest.mark.parametrize("family", ["tiny-llava", "llava", "qwen2-vl"])
def test_answer_nll_matches_full_logits_value_and_gradients(loaded_families, family):
    import copy

    loaded = loaded_families[family]
    model = copy.deepcopy(loaded.model).train()
    batch = _mixed_batch(loaded)
    assert "pixel_values" in batch
    _assert_same_loss_and_grads(model, batch)
    # the head saw only the N answer positions, not B x T
    n = int(logit_mask(batch["labels"]).sum())
    assert _head_rows(model, batch) == [(n, model.get_output_embeddings().in_features)]
    assert n < batch["labels"].numel() / 2
    # token log-probs agree too (the building block for sequence_logprob-style losses)
    lp_old, m_old = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
    lp_new, m_new = token_logprobs(answer_logits(model, batch), batch["labels"])
    assert torch.equal(m_old, m_new)
    torch.testing.assert_close(lp_new, lp_old, rtol=1e-5, atol=1e-5)


def test_answer_nll_row_without_answer_tokens(loaded_families):
    import copy

    loaded = loaded_families["tiny-llava"]
    model = copy.deepcopy(loaded.model).train()
    batch = dict(_mixed_batch(loaded))
    labels = batch["labels"].clone()
    labels[1] = -100  # an example with no supervised token contributes 0, as in mean_nll
    batch["labels"] = labels
    _assert_same_loss_and_grads(model, batch)


@pytest.mark.parametrize("targets", ["language", "lm_head|q_proj"])
def test_answer_nll_through_lora(loaded_families, targets):
    """Through a peft PeftModel (LoRA + the projector as modules_to_save), and with LoRA on the head."""
    import copy

    from clearbench.config import LoraConfig as BenchLoraConfig
    from clearbench.config import TrainConfig
    from clearbench.lora import apply_lora, set_trainable

    loaded = loaded_families["tiny-llava"]
    cfg = TrainConfig(lora=BenchLoraConfig(enabled=True, r=4, alpha=8, target_modules=targets))
    model = apply_lora(copy.deepcopy(loaded.model), cfg.lora, cfg).train()
    set_trainable(model, cfg)
    with torch.no_grad():  # lora_B starts at 0, which would leave lora_A without gradient
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    batch = _mixed_batch(loaded)
    _assert_same_loss_and_grads(model, batch)
    assert any("lora_A" in n for n, p in model.named_parameters() if p.requires_grad)
    n = int(logit_mask(batch["labels"]).sum())
    assert [rows[0] for rows in _head_rows(model, batch)] == [n]


def test_answer_nll_falls_back_to_full_logits_for_other_models():
    """A model whose forward has no ``logits_to_keep`` is called as before and scored on full logits."""
    import types

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(7, 5)
            self.head = torch.nn.Linear(5, 7)

        def forward(self, input_ids, attention_mask=None):
            return types.SimpleNamespace(logits=self.head(self.emb(input_ids)))

    torch.manual_seed(0)
    model = Plain()
    ids = torch.randint(0, 7, (3, 6))
    labels = ids.clone()
    labels[:, :3] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    _assert_same_loss_and_grads(model, batch)
