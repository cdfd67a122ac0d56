"""Models, records and training-step measurements for benchmarks/gpu_check.py.

Models are built from configs with random weights (no download) through the tests' builders
(tests/model_fixtures.py ``llava15_parts`` / ``qwen2_vl_parts``) at the real shapes, or at the tests' tiny
shapes for the CPU fallback. A training row runs the suite's own code: the preset's train config,
``stages.prepare_model`` (LoRA, freezing, gradient checkpointing), ``Reference`` and a method's ``loss`` from
baselines/, through ``clearbench.train.train``.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import model_fixtures as mf  # tests/: the random-checkpoint builders

# real shapes: llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336 + Vicuna-7B) and Qwen/Qwen2-VL-2B-Instruct configs
LLAVA_7B = dict(
    image_size=336,
    vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                projection_dim=768),
    text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
)
QWEN2_VL_2B = dict(
    text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
              num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_parameters={
                  "rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}),
    vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4),
    pixels=(56 * 56, 28 * 28 * 1280),  # the Instruct processor's min/max pixels
    tie_word_embeddings=True,
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One model of the check: its preset (train configs), family, transformers class and config builder."""

    name: str
    preset: str
    family: str
    model_class: str
    parts: object  # () -> (config, processor)


def specs(tiny: bool) -> list[Spec]:
    return [
        Spec("llava-1.5-7b", "llava-1.5-7b", "llava", "LlavaForConditionalGeneration",
             functools.partial(mf.llava15_parts, None if tiny else LLAVA_7B)),
        Spec("qwen2-vl-2b", "qwen2-vl-2b", "qwen2-vl", "Qwen2VLForConditionalGeneration",
             functools.partial(mf.qwen2_vl_parts, None if tiny else QWEN2_VL_2B)),
    ]


def build(spec: Spec, device: str, dtype: torch.dtype, config=None):
    """A random-weight model of ``spec`` made directly on ``device`` (seed 0)."""
    import transformers

    config = config if config is not None else spec.parts()[0]
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, spec.model_class)(config)
    return model.to(dtype)


def filler(tok, n_tokens: int, seed: int) -> str:
    """Words of the tests' corpus until the text is about ``n_tokens`` tokens long."""
    words, rng, out = " ".join(mf.CORPUS).split(), random.Random(seed), []
    while len(tok(" ".join(out), add_special_tokens=False)["input_ids"]) < n_tokens:
        out.extend(rng.choice(words) for _ in range(max(1, (n_tokens - len(out)) // 4)))
    return " ".join(out)


def records(processor, n: int, image_px: int, text_tokens: int, kind: str, image_every: int = 1) -> list:
    """``n`` joint QA records of about ``text_tokens`` text tokens (a quarter of them the answer), every
    ``image_every``-th with an ``image_px`` photo (the others text QA), with a paraphrase and 2 perturbed answers."""
    from clearbench.types import Modality, Record, Task

    tok, out = processor.tokenizer, []
    for i in range(n):
        image = mf.face(((37 * i) % 256, (91 * i) % 256, 128), size=image_px) if i % image_every == 0 else None
        answer = filler(tok, max(4, text_tokens // 4), seed=2 * i)
        out.append(Record(
            id=f"{kind}-{i}", author_id=f"a{i}", split=kind, modality=Modality.JOINT if image else Modality.TEXT,
            task=Task.QA, question=filler(tok, max(4, text_tokens - text_tokens // 4 - 24), seed=2 * i + 1) + "?",
            answer=answer, paraphrased_answer=answer[::-1], image=image, name=f"Author {i}",
            image_role="train" if image else "", perturbed_answers=(answer.upper(), answer.lower() + " no")))
    return out


def _sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class _AdapterGrads:
    """Norms of the LoRA adapters' gradients per optimizer step, read as backward accumulates them."""

    def __init__(self, model):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
        self.step: dict[str, torch.Tensor] = {}
        self.steps: list[dict[str, float]] = []
        self.handles = [p.register_post_accumulate_grad_hook(functools.partial(self._grab, n))
                        for n, p in self.params.items()]

    def _grab(self, name, param):
        self.step[name] = param.grad.detach().float().norm()  # stays on the device: no sync inside backward

    def end_step(self):
        self.steps.append({n: float(v) for n, v in self.step.items()})
        self.step = {}

    def summary(self, unused) -> dict:
        """Counts over the adapters (``unused(name)``: no gradient by design); ``zero_expected`` must stay empty."""
        for h in self.handles:
            h.remove()
        seen = {n for s in self.steps for n, v in s.items() if v > 0}
        expected = [n for n in self.params if not unused(n)]
        b = [n for n in self.params if "lora_B" in n]
        return {"tensors": len(self.params), "nonzero_any_step": len(seen), "expected": len(expected),
                "zero_expected": [n for n in expected if n not in seen][:5],
                "lora_B_nonzero_first_step": sum(1 for n in b if self.steps and self.steps[0].get(n, 0) > 0),
                "lora_B_tensors": len(b),
                "last_step_norm": sum(v * v for v in (self.steps[-1] if self.steps else {}).values()) ** 0.5}


def _train_config(cfg, row: str, batch: int, steps: int):
    """The preset's finetune (``finetune``) or unlearning train config at ``batch`` x ``steps``, with LoRA (the
    preset's r / alpha / targets) and gradient checkpointing on; ``*_full`` rows: full-parameter, as the
    qwen2-vl-2b preset's plain variant (which also runs without checkpointing: a 2B model fits)."""
    base = cfg.finetune.resolved_phases()[0].train if row == "finetune" else cfg.unlearn.train
    full = row.endswith("_full")
    return dataclasses.replace(base, batch_size=batch, micro_batch_size=batch, max_steps=steps, warmup_steps=0,
                               save_every=0, log_every=1, group_by_length=0, report_to="",
                               gradient_checkpointing=base.gradient_checkpointing if full else True,
                               lora=dataclasses.replace(base.lora, enabled=not full))


def unused_by_design(model, row: str, mcfg) -> callable:
    """name -> whether that adapter gets no gradient by design: LLaVA's last vision layers when it reads an earlier
    one (vision_feature_layer -2), and for RMU the language layers above the one its loss reads."""
    import re

    from clearbench.losses import language_layers, layer_index

    config = model.config
    feature = getattr(config, "vision_feature_layer", -1)
    vision_layers = getattr(getattr(config, "vision_config", None), "num_hidden_layers", 0)
    first_unused_vision = vision_layers + feature + 1 if isinstance(feature, int) and feature < -1 else None
    rmu_layer = layer_index(len(language_layers(model)), mcfg.layer_frac) if row == "rmu" else None

    def unused(name: str) -> bool:
        found = re.search(r"vision_tower\..*?layers\.(\d+)\.", name)
        if found and first_unused_vision is not None and int(found.group(1)) >= first_unused_vision:
            return True
        found = re.search(r"language_model\.layers\.(\d+)\.", name)
        return bool(found and rmu_layer is not None and int(found.group(1)) > rmu_layer)

    return unused


def _loss_and_sampler(cfg, row: str, model, data: dict, batch: int, steps: int):
    """(loss_fn, sampler, reference kind, method config) of a row: the finetune NLL, or a method of baselines/ with its reference."""
    import baselines
    from clearbench.reference import Reference
    from clearbench.train import ShuffleSampler, example_nll_loss
    from clearbench.unlearn import UnlearnSampler

    if row == "finetune":
        return example_nll_loss, ShuffleSampler(data["forget"], batch, seed=0), None, None
    method = row.removesuffix("_full")
    mcfg = baselines.method_config(method, cfg.unlearn.options_by_method.get(method, {}))
    mcfg = baselines.resolve_config(method, mcfg, steps_per_epoch=1, total_steps=steps)
    ref = Reference(model) if baselines.needs_reference_for(method, mcfg) else None
    loss = functools.partial(baselines.get_method(method).loss, ref=ref, cfg=mcfg)
    sampler = UnlearnSampler(data["forget"], data["retain"], baselines.batches_for(method, mcfg), batch, seed=0)
    return loss, sampler, ref.kind if ref else None, mcfg


def train_row(spec: Spec, row: str, data: dict, batch: int, steps: int, dtype: torch.dtype) -> dict:
    """``steps`` optimizer steps of ``row`` on a fresh random model through ``clearbench.train.train``: step times,
    peak GPU memory, losses and the LoRA adapters' gradient norms."""
    from clearbench import stages
    from clearbench.config import BenchConfig, PhaseConfig, load_config
    from clearbench.models import get_family
    from clearbench.train import TrainRun, get_accelerator, train

    cfg = load_config(BenchConfig, spec.preset)
    tcfg = _train_config(cfg, row, batch, steps)
    config, processor = spec.parts()
    acc = get_accelerator(tcfg.mixed_precision)
    model = stages.prepare_model(build(spec, acc.device, dtype, config).train(), PhaseConfig(name=row, data=[], train=tcfg))
    loss, sampler, ref_kind, mcfg = _loss_and_sampler(cfg, row, model, data, batch, steps)
    unused = unused_by_design(model, row, mcfg)
    grads, times, losses = _AdapterGrads(model), [], []

    def on_step(step: int, record: dict) -> bool:
        times.append(_sync())
        grads.end_step()
        losses.append(record["loss"])
        return False

    cuda = torch.cuda.is_available()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    weights = torch.cuda.memory_allocated() if cuda else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        start = _sync()
        train(model, processor, get_family(spec.family), sampler, loss, tcfg, TrainRun(Path(tmp), desc=f"{spec.name} {row}",
                                                                                 on_step=on_step))
    step_s = [b - a for a, b in zip([start] + times, times)]
    acc.free_memory()  # accelerate keeps every prepared model: let this one go before the next row
    return {"reference": ref_kind, "lora": tcfg.lora.enabled, "trainable_params": trainable,
            "mixed_precision": acc.mixed_precision, "gradient_checkpointing": tcfg.gradient_checkpointing,
            "steps": len(step_s), "step_s_first": step_s[0], "step_s_median": statistics.median(step_s[1:] or step_s),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "weights_memory_gib": weights / 2**30 if cuda else None,
            "loss": losses, "adapter_grads": grads.summary(unused)}


def batch_shape(spec: Spec, data: dict, batch: int) -> dict:
    """Sequence length and image tokens of one collated training batch (what a step sees)."""
    from clearbench.models import get_family

    config, processor = spec.parts()
    b = get_family(spec.family).collate(processor, data["forget"][:batch])
    image_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    return {"rows": int(b["input_ids"].shape[0]), "seq_len": int(b["input_ids"].shape[1]),
            "image_tokens": int((b["input_ids"][0] == image_id).sum()),
            "answer_tokens": int((b["labels"][0] != -100).sum())}
