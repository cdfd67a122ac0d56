"""Qwen2-VL family (``Qwen/Qwen2-VL-2B-Instruct``, ``Qwen/Qwen2-VL-7B-Instruct``).

CLEAR's HEAD default model (clear.md §2.1). The processor's own chat template renders

    prompt = "<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n"
             "<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n"
    full   = prompt + "{answer}<|im_end|>"

The processor expands ``<|image_pad|>`` to (t*h*w)/merge**2 tokens per image; images travel as
flattened patches ``pixel_values`` (sum of patches, C*T*P*P) with ``image_grid_thw`` (n_images, 3),
and ``mm_token_type_ids`` (B, T) tells the model where the image tokens are for M-RoPE.
"""
from __future__ import annotations

from clearbench.models.family import Family

FAMILY = Family(
    name="qwen2-vl",
    model_class="Qwen2VLForConditionalGeneration",
    model_types=("qwen2_vl",),
    vision=("model.visual",),
    projector=("model.visual.merger",),  # inside the vision tower's module tree
    language=("model.language_model", "lm_head"),
    layers="model.language_model.layers",
    packable=False,  # M-RoPE positions come from the image grid: one row per answer
    token_keys=("mm_token_type_ids",),
    end_of_turn="<|im_end|>",  # ends every turn of Qwen's ChatML template (the Instruct models stop on it)
)
