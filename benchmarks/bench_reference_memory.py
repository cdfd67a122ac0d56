"""Memory of the unlearning reference: the LoRA network with adapters disabled vs a second frozen copy.

    OMP_NUM_THREADS=1 python benchmarks/bench_reference_memory.py [--sizes tiny,llava-300m]

Each (model size, reference kind) runs in a fresh subprocess on CPU (fp32): build the model, then
take the reference the way ``clearbench unlearn`` does (``reference=auto`` with LoRA -> the same
network with adapters disabled; ``reference=copy`` -> a frozen deep copy taken before LoRA), and
read the process RSS before and after, and after one reference forward pass. Printed: parameter
bytes, RSS growth of the reference set-up (reference + LoRA adapters), the peak RSS, and the bytes
the adapter-disabled reference saves relative to the copy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIZES = {
    # the embedded default (clearbench.models.tiny_llava.TinyConfig defaults, vocab 2048)
    "tiny": dict(vision=(64, 2, 256, 2, 64, 16), text=(128, 2, 512, 4, 2048)),
    # LLaVA-shaped (CLIP ViT-B/14 at 224 px + a 12-layer Llama, 32k vocab): ~0.27 B parameters
    "llava-300m": dict(vision=(768, 12, 3072, 12, 224, 14), text=(1024, 12, 2816, 16, 32000)),
}


def _rss() -> int:
    """(current RSS, peak RSS) in bytes, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def build(size: str):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vw, vl, vm, vh, img, patch = SIZES[size]["vision"]
    tw, tl, tm, th, vocab = SIZES[size]["text"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vw, num_hidden_layers=vl, intermediate_size=vm,
                                       num_attention_heads=vh, image_size=img, patch_size=patch, projection_dim=vw),
        text_config=LlamaConfig(hidden_size=tw, num_hidden_layers=tl, intermediate_size=tm, num_attention_heads=th,
                                num_key_value_heads=th, vocab_size=vocab, max_position_embeddings=512),
        image_token_index=vocab - 1, image_seq_length=(img // patch) ** 2, vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()


def child(size: str, kind: str) -> dict:
    import torch

    from clearbench.config import LoraConfig, TrainConfig
    from clearbench.lora import apply_lora, set_trainable
    from clearbench.reference import Reference

    torch.set_num_threads(1)
    model = build(size)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = model.config.text_config.vocab_size
    batch = {"input_ids": torch.randint(0, vocab - 2, (2, 32)), "attention_mask": torch.ones(2, 32, dtype=torch.long)}
    train = TrainConfig(train_vision_tower=False, lora=LoraConfig(enabled=True, r=8, alpha=32))
    import peft  # noqa: F401  (import cost outside the measurement)

    before, _ = _rss()
    t0 = time.time()
    ref = Reference(model) if kind == "copy" else None  # unlearn's reference=copy: copied before LoRA
    model = apply_lora(model, train.lora, train)
    set_trainable(model, train)
    if ref is None:
        ref = Reference(model)
    setup_s = time.time() - t0
    after, _ = _rss()
    ref(batch)
    _, peak = _rss()
    lora = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
    return {"size": size, "kind": ref.kind, "param_bytes": params, "lora_bytes": lora,
            "setup_rss_delta": after - before, "peak_rss": peak, "setup_s": setup_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    mib = 2 ** 20
    print(f"{'model':<11} {'params':>10} {'reference':<17} {'setup RSS +':>12} {'peak RSS':>10} {'ratio to params':>16}")
    for size in args.sizes.split(","):
        rows = {}
        for kind in ("adapter", "copy"):
            out = subprocess.run([sys.executable, __file__, "--child", size, kind], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows[kind] = r
            print(f"{size:<11} {r['param_bytes'] / mib:>8.1f}Mi {r['kind']:<17} {r['setup_rss_delta'] / mib:>10.1f}Mi "
                  f"{r['peak_rss'] / mib:>8.1f}Mi {r['setup_rss_delta'] / r['param_bytes']:>16.3f}")
        saved = rows["copy"]["setup_rss_delta"] - rows["adapter"]["setup_rss_delta"]
        peak_saved = rows["copy"]["peak_rss"] - rows["adapter"]["peak_rss"]
        print(f"{size:<11} adapter-disabled saves {saved / mib:.1f} MiB at set-up ({saved / rows['copy']['param_bytes']:.2f}x "
              f"the parameter bytes) and {peak_saved / mib:.1f} MiB of peak RSS; LoRA adapters: "
              f"{rows['adapter']['lora_bytes'] / mib:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
