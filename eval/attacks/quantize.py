"""Quantization attack: round the unlearned weights to 8 or 4 bits and re-score (Zhang et al. 2024, arXiv 2410.16454).

Weight-only, symmetric round-to-nearest (RTN, the simplest of the quantizers Zhang et al. apply) on every linear
weight of the chosen ``parts`` but the output head, per output channel (``int8``, ``int4``) or per group of g
consecutive input weights of a channel (``int4_g128``, ``int4_g64``; a group wider than the row is the row):
    s = max|w| / (2^(b-1) - 1) over the channel or group,   w' = s * clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1)
so |w - w'| <= s / 2. The model keeps w' in its own dtype (fake quantization: the values an integer kernel
multiplies). ``bnb_nf4`` rounds through bitsandbytes' NF4 quantizer (blocks of 64) on a GPU when it is installed,
else it is skipped with the reason; bitsandbytes' LLM.int8 stores weights as row-wise absmax int8, i.e. ``int8``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import time

import torch

from clearbench.models import family_of
from clearbench.models.common import unwrap
from eval.attacks.probes import Setting, Target

NAME = "quantize"
VERSION = 1
_RTN = re.compile(r"int(?P<bits>[2-8])(?:_g(?P<group>\d+))?")
BNB_SCHEMES = ("bnb_nf4",)


@dataclasses.dataclass
class Config:
    schemes: list[str] = dataclasses.field(default_factory=lambda: ["int8", "int4", "int4_g128", "int4_g64", "bnb_nf4"])
    parts: list[str] = dataclasses.field(default_factory=lambda: ["vision", "projector", "language"])

    def __post_init__(self) -> None:
        for scheme in self.schemes:
            parse_scheme(scheme)
        unknown = sorted(set(self.parts) - {"vision", "projector", "language"})
        if unknown or not self.parts:
            raise ValueError(f"quantize parts {self.parts}: a non-empty list of vision, projector, language")


def parse_scheme(scheme: str) -> tuple[int, int]:
    """"int4_g128" -> (4, 128), "int8" -> (8, 0) (per channel); a bitsandbytes scheme -> (0, 0)."""
    if scheme in BNB_SCHEMES:
        return 0, 0
    m = _RTN.fullmatch(scheme)
    if not m or (m["group"] is not None and int(m["group"]) < 1):
        raise ValueError(f"quantize scheme {scheme!r}: intB (B in 2..8, per output channel), intB_gG (groups of G "
                         f"input weights) or one of {', '.join(BNB_SCHEMES)}")
    return int(m["bits"]), int(m["group"] or 0)


def rtn(w: torch.Tensor, bits: int, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest of a (out, in) weight: (w', the step s of every element), both like w (fp32)."""
    out_f, in_f = w.shape
    g = in_f if group <= 0 or group >= in_f else group
    pad = -in_f % g
    x = torch.nn.functional.pad(w.float(), (0, pad)).reshape(out_f, -1, g)  # (out, groups, g); zeros: no absmax
    qmax = 2 ** (bits - 1) - 1
    step = x.abs().amax(dim=-1, keepdim=True) / qmax  # (out, groups, 1)
    step = torch.where(step > 0, step, torch.ones_like(step))  # an all-zero group stays zero
    q = torch.clamp(torch.round(x / step), -qmax, qmax)
    deq = (q * step).reshape(out_f, -1)[:, :in_f]
    return deq, step.expand_as(x).reshape(out_f, -1)[:, :in_f]


def _bnb_nf4(w: torch.Tensor) -> torch.Tensor:
    import bitsandbytes.functional as bnbf

    q, state = bnbf.quantize_4bit(w.contiguous(), blocksize=64, quant_type="nf4")
    return bnbf.dequantize_4bit(q, state).to(w.dtype)


def quantized_layers(model: torch.nn.Module, parts: list[str]) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers a scheme rounds: those of ``parts``, the output head excluded."""
    base = unwrap(model)
    family, head = family_of(base), base.get_output_embeddings()
    return [(n, m) for n, m in base.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head and family.part_of(n) in parts]


@torch.no_grad()
def quantize_model(model: torch.nn.Module, scheme: str, parts: list[str]) -> dict[str, float]:
    """Round ``model``'s linear weights in place; returns {layers, weights, max_abs_error, max_error_in_steps}."""
    bits, group = parse_scheme(scheme)
    layers = quantized_layers(model, parts)
    worst, worst_steps, count = 0.0, 0.0, 0
    for _, layer in layers:
        w = layer.weight
        if bits:
            deq, step = rtn(w, bits, group)
            worst_steps = max(worst_steps, float(((w.float() - deq).abs() / step).max()))
        else:
            deq = _bnb_nf4(w)
        worst = max(worst, float((w.float() - deq.float()).abs().max()))
        w.copy_(deq.to(w.dtype))
        count += w.numel()
    return {"layers": len(layers), "weights": count, "max_abs_error": worst, "max_error_in_steps": worst_steps}


def settings(target: Target, cfg: Config) -> list[str]:
    return list(cfg.schemes)


def run_setting(target: Target, cfg: Config, name: str) -> Setting:
    if name in BNB_SCHEMES:
        if importlib.util.find_spec("bitsandbytes") is None:
            return Setting(name, skipped="bitsandbytes is not installed")
        if not torch.cuda.is_available():
            return Setting(name, skipped="bitsandbytes' 4-bit quantizer needs a CUDA GPU")
    t0 = time.time()
    loaded = target.load()
    stats = quantize_model(loaded.model, name, cfg.parts)
    bits, group = parse_scheme(name)
    params = {"bits": bits or 4, "group": group or (64 if bits == 0 else 0), "parts": cfg.parts, **stats}
    return Setting(name, params=params, examples=target.score(loaded, target.probes), seconds=time.time() - t0)
