"""A tiny real ``LlavaForConditionalGeneration`` built from a config, and hand-built batches.

CLIP vision 32 px / patch 16 / width 32 / 1 layer (4 image tokens after dropping CLS), Llama width 32 /
2 layers, vocabulary 100 with image token 99. Batches follow the collate contract: ``input_ids``,
``attention_mask``, ``labels`` (-100 except answer tokens), ``pixel_values``.
"""
from __future__ import annotations

import copy

import pytest
import torch

VOCAB, IMAGE_TOKEN, PAD, BOS = 100, 99, 0, 1
N_IMAGE_TOKENS = 4
# token ranges per batch kind: questions share one range so forget/idk/random rows pair up
ANSWER_TOKENS = {"forget": (10, 30), "retain": (30, 50), "idk": (50, 60), "random": (60, 80)}


def build_tiny_llava(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       pad_token_id=PAD, bos_token_id=BOS, attention_dropout=dropout)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(cfg).eval()


def make_batch(kind: str, batch_size: int = 2, seed: int = 0, image: bool = True) -> dict[str, torch.Tensor]:
    """Rows ``[pad?] BOS <image>*4 q q q a a a a``; row 1 is left-padded by one token (shorter question)."""
    gen = torch.Generator().manual_seed(seed)  # same seed -> same questions and images across kinds
    lo, hi = ANSWER_TOKENS[kind]
    ans_gen = torch.Generator().manual_seed(seed * 100 + lo)
    rows, labels, masks = [], [], []
    for b in range(batch_size):
        n_q = 3 if b % 2 == 0 else 2
        q = torch.randint(2, 10, (n_q,), generator=gen).tolist()
        a = torch.randint(lo, hi, (4,), generator=ans_gen).tolist()
        img = [IMAGE_TOKEN] * N_IMAGE_TOKENS if image else []
        pad = [PAD] * (3 - n_q)
        ids = pad + [BOS] + img + q + a
        rows.append(ids)
        labels.append([-100] * (len(ids) - len(a)) + a)
        masks.append([0] * len(pad) + [1] * (len(ids) - len(pad)))
    batch = {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks), "labels": torch.tensor(labels)}
    if image:
        batch["pixel_values"] = torch.rand(batch_size, 3, 32, 32, generator=gen)
    return batch


def all_batches(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    return {kind: make_batch(kind, seed=seed if kind != "retain" else seed + 1) for kind in ANSWER_TOKENS}


def add_lora(model: torch.nn.Module, checkpointing: bool = True) -> torch.nn.Module:
    """LoRA r=8/α=32 on the language model's linear layers (CLEAR's recipe), gradient checkpointing on."""
    from peft import LoraConfig, get_peft_model

    if checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    cfg = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0,
                     target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    peft_model = get_peft_model(model, cfg)
    peft_model.train()
    return peft_model


@pytest.fixture(scope="session")
def tiny_vlm() -> torch.nn.Module:
    """The session's base model; tests that train take ``fresh_vlm`` (a deep copy)."""
    return build_tiny_llava()


@pytest.fixture
def fresh_vlm(tiny_vlm) -> torch.nn.Module:
    return copy.deepcopy(tiny_vlm)


def finetune(model: torch.nn.Module, batches: list[dict], steps: int = 30, lr: float = 1e-2) -> torch.nn.Module:
    """A few Adam steps so the model knows its batches (the 'target' model unlearning starts from)."""
    from clearbench.losses import mean_nll, model_inputs

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        b = batches[i % len(batches)]
        opt.zero_grad()
        mean_nll(model(**model_inputs(b)).logits, b["labels"]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_target(tiny_vlm) -> torch.nn.Module:
    """The tiny model finetuned on the forget and retain batches (forget NLL well below log V)."""
    bt = all_batches()
    return finetune(copy.deepcopy(tiny_vlm), [bt["forget"], bt["retain"]])
