"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark").

L = mean_t ‖h_θ^ℓ(x_f)_t − c·u‖² + α·mean_t ‖h_θ^ℓ(x_r)_t − h_ref^ℓ(x_r)_t‖²
h^ℓ: output of decoder layer ℓ of the language model; u: a random unit vector (U[0,1)^H normalised,
as WMDP's code) drawn once per run from ``seed``; means over answer tokens per example, then over the
batch (open-unlearning's masking; ``positions="valid"`` uses every attended token, as WMDP does).
Shapes are explicit (B, T, H) against (1, 1, H): no broadcasting across examples (CLEAR's HEAD bug).
The trainer decides which parameters train (WMDP: MLPs of layers ℓ−2..ℓ; CLEAR: all / LoRA).
"""
from __future__ import annotations

import dataclasses

import torch

from clearbench.losses import StepInfo, language_layers, layer_index, masked_mse, model_inputs
from clearbench.types import check_name

NAME = "rmu"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = True
POSITIONS = ("answer", "valid")


@dataclasses.dataclass
class Config:
    # WMDP README (Zephyr-7B): "--steering_coeffs 6.5 --alpha 1200", layer_id 7 of 32 layers
    steering_coeff: float = 6.5  # c (CLEAR used 300 at LLaVA's layer 7)
    alpha: float = 1200.0  # α, retain weight
    layer_frac: float = 7 / 31  # layer = round(frac·(L−1)): 7 for 32-layer LLaVA-1.5-7B, as WMDP and CLEAR
    seed: int = 0  # seeds u
    positions: str = "answer"  # "answer" (labels != -100) | "valid" (attention_mask)

    def __post_init__(self) -> None:
        check_name("rmu positions", self.positions, POSITIONS)


def control_vector(hidden: int, coeff: float, seed: int) -> torch.Tensor:
    """c·u with u = r/‖r‖, r ~ U[0,1)^H from a seeded CPU generator: the same vector every step. -> (1, 1, H)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(1, 1, hidden, generator=gen)
    return r / r.norm() * coeff


def formula(forget_acts: torch.Tensor, control: torch.Tensor, forget_mask: torch.Tensor,
            retain_acts: torch.Tensor, ref_retain_acts: torch.Tensor, retain_mask: torch.Tensor,
            alpha: float) -> torch.Tensor:
    """acts (B, T, H), control (1, 1, H), masks (B, T) -> ()."""
    return masked_mse(forget_acts, control, forget_mask) + alpha * masked_mse(retain_acts, ref_retain_acts, retain_mask)


class _Stop(Exception):
    """Raised after the hooked layer: nothing above it contributes to the loss."""


def layer_activations(model, batch: dict, layer: int) -> torch.Tensor:
    """Output (B, T, H) of decoder layer ``layer`` of ``model`` on ``batch``, via a forward hook.

    The forward stops at the next layer's pre-hook (layers above the hooked one never enter the loss);
    with DDP, where an exception inside forward would desynchronise the reducer, it runs in full.
    """
    layers = language_layers(model)
    captured: list[torch.Tensor] = []

    def grab(module, args, output):
        if not captured:
            captured.append(output[0] if isinstance(output, tuple) else output)

    def stop(module, args):
        if captured:
            raise _Stop

    handles = [layers[layer].register_forward_hook(grab)]
    if layer + 1 < len(layers) and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        handles.append(layers[layer + 1].register_forward_pre_hook(stop))
    try:
        model(**model_inputs(batch))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not captured:
        raise RuntimeError(f"rmu: decoder layer {layer} did not run in the forward pass")
    return captured[0]


def _mask(batch: dict, positions: str) -> torch.Tensor:
    return batch["labels"] != -100 if positions == "answer" else batch["attention_mask"].bool()


def loss(model, batches: dict[str, dict], ref, cfg: Config, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    f, r = batches["forget"], batches["retain"]
    layer = layer_index(len(language_layers(model)), cfg.layer_frac)
    h_f = layer_activations(model, f, layer)  # (B, T, H)
    if torch.is_grad_enabled() and not h_f.requires_grad:
        raise RuntimeError("rmu: the hooked activations carry no gradient; with gradient checkpointing use "
                           "gradient_checkpointing_kwargs={'use_reentrant': False}")
    h_r = layer_activations(model, r, layer)
    with torch.no_grad(), ref.module() as net:
        h_r_ref = layer_activations(net, r, layer)
    control = control_vector(h_f.shape[-1], cfg.steering_coeff, cfg.seed).to(h_f.device)
    m_f, m_r = _mask(f, cfg.positions), _mask(r, cfg.positions)
    total = formula(h_f, control, m_f, h_r, h_r_ref, m_r, cfg.alpha)
    return total, {"loss": total.item(), "forget_mse": masked_mse(h_f.detach(), control, m_f).item(),
                   "retain_mse": masked_mse(h_r.detach(), h_r_ref, m_r).item(), "layer": float(layer)}
