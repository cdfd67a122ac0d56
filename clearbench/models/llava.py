"""LLaVA-1.5 family (``llava-hf/llava-1.5-7b-hf`` and checkpoints in the same format).

The paper's model (CLEAR, clear.md §2.1). Loaded with the real transformers classes and the
processor's own hub chat template (clear.md §2.2), which renders

    prompt = "USER: <image>\\n{question} ASSISTANT:"
    full   = prompt + " {answer}</s>"      (the hub template ends the answer with a space; we
                                           supervise the eos instead so generation can stop)
"""
from __future__ import annotations

from clearbench.models.family import Family

FAMILY = Family(
    name="llava",
    model_class="LlavaForConditionalGeneration",
    model_types=("llava",),
    vision=("model.vision_tower",),  # CLIP
    projector=("model.multi_modal_projector",),  # 2-layer GELU MLP
    language=("model.language_model", "lm_head"),  # Llama
    layers="model.language_model.layers",
    packable=True,  # Llama's 1-D rotary positions
)
