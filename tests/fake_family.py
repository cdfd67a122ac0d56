"""A test-only model family: this module plus one registry line is all a new family needs.

Idefics3 names its parts unlike LLaVA and Qwen2-VL (vision tower ``vision_model``, projector ``connector``,
language model ``text_model``), so part classification, freezing, LoRA targets and the decoder-layer lookup
can only be right if they read the spec.
"""
from __future__ import annotations

import torch

from clearbench.models.family import Family

FAMILY = Family(
    name="fake-idefics3",
    model_class="Idefics3ForConditionalGeneration",
    model_types=("idefics3",),
    vision=("model.vision_model",),
    projector=("model.connector",),
    language=("model.text_model", "lm_head"),
    layers="model.text_model.layers",
)


def build_model(seed: int = 0) -> torch.nn.Module:
    """A random Idefics3 of about 22 k parameters (SigLIP 1 layer, Llama 2 layers), built from a config."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    cfg = Idefics3Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2),
        scale_factor=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Idefics3ForConditionalGeneration(cfg)
