"""The embedded default: a tiny ``LlavaForConditionalGeneration`` built from a config.

No weights can be downloaded where the suite is built, so ``build`` makes a real LLaVA (CLIP
vision tower + 2-layer GELU projector + Llama) of about 1 M parameters with a byte-level BPE
tokenizer trained on the world's own text. Defaults are feasibility.md §4 (measured on 2 CPU
cores): 64 px images, patch 16 (16 image tokens), vision width 64 x 2 layers, Llama 128 x 2
layers, 4 heads, MLP 512, ``initializer_range = hidden**-0.5`` (with 0.02 the image->name
binding never leaves chance, §3.1), untied head, ``vision_feature_layer=-1`` and the "default"
strategy with ``num_additional_image_tokens=1`` (§3.2).

Chat template (the tiny family's own, LLaVA-1.5-like):
    prompt = "USER: <image>\\n{question} ASSISTANT:"      full = prompt + " {answer}</s>"
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from clearbench.models import llava

# A real LLaVA: the llava family's parts, detected by its marker file ({"clearbench_family": "tiny-llava",
# "tiny_config": {...}}) since its config says model_type "llava".
FAMILY = dataclasses.replace(llava.FAMILY, name="tiny-llava", marker=True)

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- 'USER: ' -}}"
    "{%- for c in message['content'] if c['type'] == 'image' -%}{{- '<image>\n' -}}{%- endfor -%}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{{- c['text'] -}}{%- endfor -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ASSISTANT: ' -}}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{{- c['text'] -}}{%- endfor -%}"
    "{{- '</s>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}"
)


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model (feasibility.md §4, "A16": about 1.1 M parameters)."""

    image_size: int = 64
    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 2
    text_width: int = 128
    text_layers: int = 2
    heads: int = 4
    mlp: int = 512
    vocab_size: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.text_width % self.heads:
            raise ValueError(f"text_width {self.text_width} is not divisible by heads {self.heads}")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size {self.vocab_size} < 261: a byte-level BPE needs all 256 bytes")


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE (any text encodes) trained on ``texts``; ``<s>`` is prepended like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    template_words = ["USER: ", " ASSISTANT: ", "<image>\n"] * 8  # so the template's words get merges
    tk.train_from_iterator(_chain(template_words, texts), trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tk.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=2048,
    )


def _chain(first: list[str], rest: Iterable[str]) -> Iterable[str]:
    yield from first
    yield from rest


def build_processor(tokenizer: Any, cfg: TinyConfig) -> Any:
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )


def build_model(cfg: TinyConfig, tokenizer: Any) -> Any:
    """A random-init LlavaForConditionalGeneration of shape ``cfg``, deterministic for ``cfg.seed``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.vision_width,
        intermediate_size=4 * cfg.vision_width, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=max(1, cfg.vision_width // 32), projection_dim=cfg.vision_width,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=cfg.mlp,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=2048, initializer_range=cfg.text_width ** -0.5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    n_image_tokens = (cfg.image_size // cfg.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_image_tokens, vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval()


def build(texts: Iterable[str], out_dir: str | os.PathLike, cfg: TinyConfig = TinyConfig()) -> Path:
    """Train the tokenizer on ``texts``, build the model and save both (safetensors) to ``out_dir``."""
    tokenizer = build_tokenizer(texts, cfg.vocab_size)
    processor = build_processor(tokenizer, cfg)
    model = build_model(cfg, tokenizer)
    return save(model, processor, out_dir, cfg)


def save(model: Any, processor: Any, out_dir: str | os.PathLike, cfg: TinyConfig | None = None) -> Path:
    """Save through the family; the marker records ``cfg`` (or keeps the loaded checkpoint's shape record)."""
    return FAMILY.save(model, processor, out_dir, extra={"tiny_config": dataclasses.asdict(cfg)} if cfg else None)
