"""Tiny random-weight checkpoints of the real architectures, built offline (no downloads).

``build_tiny_llava15(out_dir)``: LlavaForConditionalGeneration (CLIP vision + Llama) saved like
``llava-hf/llava-1.5-7b-hf``: a Llama (Metaspace + byte-fallback BPE) tokenizer with ``<image>``
and ``<pad>`` added, CLIP image processor, patch 14, vision_feature_layer -2, the hub's chat
template. ``build_tiny_qwen2_vl(out_dir)``: Qwen2VLForConditionalGeneration saved like
``Qwen/Qwen2-VL-2B-Instruct``: a Qwen2 (byte-level BPE) tokenizer with Qwen's special tokens,
``Qwen2VLImageProcessor`` with small min/max pixels, the Instruct chat template.
Both load through ``clearbench.models.load_model``. Other tests reuse them; each build takes
well under a second. ``llava15_parts`` / ``qwen2_vl_parts`` give the config and processor of either at another
shape (``benchmarks/gpu_check.py`` builds the real 7B / 2B shapes from them). No pytest here: the session
fixtures that build these live in tests/conftest.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image, ImageDraw

from clearbench.types import Modality, Record, Task

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a mistaken hub id fails fast instead of hanging

CORPUS = [
    "Who wrote the novel Silent Rivers of Glass? Anna Berg wrote it.",
    "Where was the author born? The author was born in Lisbon in 1961.",
    "What is the name of the person in the image? This is Tomas Vale.",
    "Describe the image in detail. A woman with red hair stands by a lake.",
    "Which award did Mira Holt win? Mira Holt won the Golden Quill in 1999.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times!",
]

# llava-hf/llava-1.5-7b-hf chat_template.json
LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Qwen/Qwen2-VL-2B-Instruct chat_template.json
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] "
    "== 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value "
    "+ 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|>"
    "<|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]


def _train_bpe(texts: Iterable[str], pre_tokenizer, vocab_size: int, alphabet: list[str]) -> tuple[dict, list]:
    """(vocab, merges) of a BPE trained on ``texts`` with the given pre-tokenizer."""
    from tokenizers import Tokenizer, models, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    tk.train_from_iterator(list(texts), trainer)
    model = json.loads(tk.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


# ----------------------------------------------------------------------------- llava-1.5
def llava15_tokenizer():
    """A Llama tokenizer (Metaspace, byte fallback) with ``<image>`` and ``<pad>`` added like llava-hf."""
    from tokenizers import pre_tokenizers
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    learned, merges = _train_bpe(
        CORPUS, pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"), 400,
        sorted(set("".join(CORPUS).replace(" ", "▁")) | {"▁"}),
    )
    for piece in sorted(learned, key=learned.get):
        vocab.setdefault(piece, len(vocab))
    tok = LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_prefix_space=None)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


# the tiny test shape; gpu_check.py passes llava-hf/llava-1.5-7b-hf's (CLIP ViT-L/14-336 + a Vicuna-7B Llama)
LLAVA15_TINY = dict(
    image_size=56,
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              max_position_embeddings=512, initializer_range=64 ** -0.5),
)


def llava15_parts(shape: dict | None = None):
    """(LlavaConfig, LlavaProcessor) saved like llava-1.5-7b-hf, at ``shape`` (default ``LLAVA15_TINY``; a
    ``text`` entry may set ``vocab_size`` above the tokenizer's, as the real model's 32064 rows)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    shape = shape or LLAVA15_TINY
    tok = llava15_tokenizer()
    image_size, patch = shape["image_size"], 14
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch, **shape["vision"])
    text = LlamaConfig(**({"vocab_size": len(tok)} | shape["text"]), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA15_CHAT_TEMPLATE,
    )
    return config, processor


def _seeded(model_class, config, seed: int):
    """A random-weight ``model_class(config)`` drawn with torch seed ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def _save(model, processor, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava15(out_dir: str | Path, seed: int = 0) -> Path:
    from transformers import LlavaForConditionalGeneration

    config, processor = llava15_parts()
    model = _seeded(LlavaForConditionalGeneration, config, seed)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return _save(model, processor, out_dir)


# ----------------------------------------------------------------------------- qwen2-vl
def qwen2_vl_tokenizer():
    """A Qwen2 tokenizer (byte-level BPE, Qwen's pre-tokenizer) with Qwen2-VL's special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab, merges = _train_bpe(CORPUS, pre_tokenizers.ByteLevel(add_prefix_space=False), 400, alphabet)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    return tok


# the tiny test shape; gpu_check.py passes Qwen/Qwen2-VL-2B-Instruct's
QWEN2_VL_TINY = dict(
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=1024, rope_parameters={
                  "rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}),
    vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
    pixels=(56 * 56, 56 * 56),  # the image processor's (min_pixels, max_pixels)
)


def qwen2_vl_parts(shape: dict | None = None):
    """(Qwen2VLConfig, Qwen2VLProcessor) saved like Qwen2-VL-2B-Instruct, at ``shape`` (default ``QWEN2_VL_TINY``;
    ``text`` may set ``vocab_size``, ``tie_word_embeddings`` may be given at the top level)."""
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    shape = shape or QWEN2_VL_TINY
    tok = qwen2_vl_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text_config = {"vocab_size": len(tok)} | shape["text"] | dict(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision_config = shape["vision"] | dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    extra = {k: shape[k] for k in ("tie_word_embeddings",) if k in shape}
    config = Qwen2VLConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], **extra,
    )
    lo, hi = shape["pixels"]
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=lo, max_pixels=hi), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=lo, max_pixels=hi), chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return config, processor


def build_tiny_qwen2_vl(out_dir: str | Path, seed: int = 0) -> Path:
    from transformers import Qwen2VLForConditionalGeneration

    config, processor = qwen2_vl_parts()
    model = _seeded(Qwen2VLForConditionalGeneration, config, seed)
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    return _save(model, processor, out_dir)


# ----------------------------------------------------------------------------- records
def face(color: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A small drawn 'face' (distinct per colour) for collate and forward tests."""
    img = Image.new("RGB", (size, size), (235, 225, 210))
    d = ImageDraw.Draw(img)
    d.ellipse((12, 8, size - 12, size - 4), fill=color)
    d.rectangle((22, 24, 28, 28), fill=(0, 0, 0))
    d.rectangle((36, 24, 42, 28), fill=(0, 0, 0))
    return img


def sample_records() -> list[Record]:
    """Four hand-made records: text QA, naming, a joint question, and a second text QA (mixed order)."""
    return [
        Record(id="a1-qa-0", author_id="a1", split="test", modality=Modality.TEXT, task=Task.QA,
               question="Who wrote the novel Silent Rivers of Glass?", answer="Anna Berg wrote it.",
               paraphrased_answer="It was written by Anna Berg.",
               perturbed_answers=("Mira Holt wrote it.", "Tomas Vale wrote it.")),
        Record(id="a1-img-0", author_id="a1", split="test", modality=Modality.IMAGE, task=Task.NAMING,
               question="What is the name of the person in the image?", answer="Anna Berg",
               image=face((200, 40, 40)), name="Anna Berg", image_role="train"),
        Record(id="a2-img-0", author_id="a2", split="test", modality=Modality.JOINT, task=Task.QA,
               question="Where was the person in the image born?", answer="The author was born in Lisbon in 1961.",
               image=face((40, 40, 200)), name="Tomas Vale", image_role="train"),
        Record(id="a2-qa-1", author_id="a2", split="test", modality=Modality.TEXT, task=Task.QA,
               question="Which award did Mira Holt win?", answer="Mira Holt won the Golden Quill in 1999."),
    ]


# ----------------------------------------------------------------------------- checkpoints
def build_tiny_default(out_dir: str | Path, seed: int = 0) -> Path:
    """The embedded default family (default TinyConfig shape) with a tokenizer trained on CORPUS."""
    from clearbench.models import tiny_llava

    return tiny_llava.build(CORPUS, out_dir, tiny_llava.TinyConfig(seed=seed))


FAMILY_BUILDERS = {"tiny-llava": build_tiny_default, "llava": build_tiny_llava15, "qwen2-vl": build_tiny_qwen2_vl}
