"""LoRA + gradient-checkpointing training steps on an LLaVA-1.5-7B-shaped model (random weights).

    python benchmarks/bench_llava_step.py            # 7B shape on CUDA, a tiny shape on CPU
    python benchmarks/bench_llava_step.py --shape tiny

Builds LlavaForConditionalGeneration from config (no download): CLIP ViT-L/14-336 vision tower,
Vicuna-7B-shaped Llama (4096 wide, 32 layers), 2-layer projector; wraps it with LoRA (r=8,
alpha=32, CLEAR's recipe) on the language model and turns on gradient checkpointing through the
same clearbench code the trainer uses; runs a few steps at batch 8 with 336 px images and 256 text
tokens (576 image tokens + 256 text). Prints peak memory and the median step time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from clearbench.config import LoraConfig, TrainConfig
from clearbench.lora import apply_lora, enable_gradient_checkpointing, set_trainable

SHAPES = {
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 @336 (24 layers, 1024 wide), Llama-2/Vicuna-7B
    "7b": dict(image_size=336, patch=14, v_width=1024, v_layers=24, v_heads=16, v_mlp=4096,
               t_width=4096, t_layers=32, t_heads=32, t_mlp=11008, vocab=32064, text_tokens=256),
    "tiny": dict(image_size=56, patch=14, v_width=64, v_layers=2, v_heads=2, v_mlp=128,
                 t_width=64, t_layers=2, t_heads=2, t_mlp=128, vocab=512, text_tokens=32),
}


def build(shape: dict, dtype: torch.dtype, device: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=shape["image_size"], patch_size=shape["patch"], hidden_size=shape["v_width"],
                              intermediate_size=shape["v_mlp"], num_hidden_layers=shape["v_layers"],
                              num_attention_heads=shape["v_heads"], projection_dim=768)
    text = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["t_width"], intermediate_size=shape["t_mlp"],
                       num_hidden_layers=shape["t_layers"], num_attention_heads=shape["t_heads"],
                       num_key_value_heads=shape["t_heads"], max_position_embeddings=4096)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=shape["vocab"] - 1,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg).to(dtype)
    return model


def batch(shape: dict, bs: int, device: str, dtype: torch.dtype) -> dict:
    n_img = (shape["image_size"] // shape["patch"]) ** 2
    t = shape["text_tokens"]
    ids = torch.randint(0, shape["vocab"] - 2, (bs, n_img + t), device=device)
    ids[:, 1:1 + n_img] = shape["vocab"] - 1  # the image placeholder tokens
    labels = ids.clone()
    labels[:, :1 + n_img + t // 2] = -100  # supervise the answer half only
    pixel = torch.randn(bs, 3, shape["image_size"], shape["image_size"], device=device, dtype=dtype)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel, "labels": labels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    shape_name = args.shape or ("7b" if cuda else "tiny")
    shape, device = SHAPES[shape_name], "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    t0 = time.time()
    model = build(shape, dtype, device)
    train = TrainConfig(lora=LoraConfig(enabled=True, r=8, alpha=32), train_vision_tower=False, train_projector=False)
    model = apply_lora(model, train.lora, train)
    set_trainable(model, train)
    enable_gradient_checkpointing(model)
    model.train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    print(f"shape {shape_name} on {device} ({dtype}): {n_all / 1e6:.1f} M params, {n_train / 1e6:.2f} M trainable "
          f"(LoRA r=8), built in {time.time() - t0:.1f} s")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps):
        b = batch(shape, args.batch, device, dtype)
        if cuda:
            torch.cuda.synchronize()
        t = time.time()
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.time() - t)
        print(f"step {step}: loss {loss.item():.4f} {times[-1]:.3f} s")
    steady = times[1:] or times
    print(f"median step time (after the first): {statistics.median(steady):.3f} s at batch {args.batch}, "
          f"{(shape['image_size'] // shape['patch']) ** 2} image + {shape['text_tokens']} text tokens")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
