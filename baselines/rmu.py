"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark").

L = mean_t ‖h_θ^ℓ(x_f)_t − c·u‖² + α·mean_t ‖h_θ^ℓ(x_r)_t − h_ref^ℓ(x_r)_t‖²
h^ℓ: output of decoder layer ℓ of the language model; u: a random unit vector (U[0,1)^H normalised,
as WMDP's code) drawn once per run from ``seed``; means over the chosen token positions per example,
then over the batch (open-unlearning's per-example normalisation; ``positions="valid"`` uses every
attended token, as WMDP does). Shapes are explicit (B, T, H) against (1, 1, H): no broadcasting across
examples (CLEAR's HEAD bug). The trainer decides which parameters train (WMDP: the MLP down-projections
of layers ℓ−2..ℓ; CLEAR: all / LoRA).

Scale (our choice, measured on the tiny model): WMDP's c = 6.5 (Zephyr-7B) and CLEAR's 300 (LLaVA-7B)
are absolute numbers tuned to those models' activation norms at layer 7. RMU misdirects when ‖c·u‖ is
several times the norm of the forget activations; a c below it asks the layer to shrink its output
instead (on the tiny target, c = 6.5 is 0.07× the norm of layer 0's outputs). The default is therefore
relative: c = ``steering_coeff`` × the mean token norm of the frozen reference's activations
at ℓ on the step's retain batch (``steering_scale="norm"``; Adaptive RMU, Dang et al. 2024, also scales
c with the activation norm). ``steering_scale="absolute"`` gives WMDP's and CLEAR's fixed c.

Positions (our choice): ``"predict"`` (default) takes the positions whose outputs predict answer tokens,
i.e. the answer span shifted one token left, so the position that predicts the first answer token (a
name's first token) is steered; ``"answer"`` (labels != -100, open-unlearning) skips that position.
"""
from __future__ import annotations

import dataclasses

import torch

from baselines.terms import logged
from clearbench.losses import StepInfo, language_layers, layer_index, logit_mask, masked_mse, model_inputs
from clearbench.types import check_name

NAME = "rmu"
BATCHES = ("forget", "retain")
NEEDS_REFERENCE = True
POSITIONS = ("answer", "predict", "valid")
SCALES = ("norm", "absolute")
# CLEAR @init (clear.md §3.2): c = 300 absolute at LLaVA's layer 7, MSE over all positions, forget and retain
# terms unweighted (α = 1). Not reproduced: @init redrew u every step.
CLEAR_RECIPE = {"steering_coeff": 300.0, "steering_scale": "absolute", "alpha": 1.0, "positions": "valid"}


@dataclasses.dataclass
class Config:
    # c: a multiple of the layer's mean activation norm (steering_scale="norm"). 3 measured on the tiny target
    # (configs/tiny.yaml); WMDP README (Zephyr-7B): "--steering_coeffs 6.5" absolute; CLEAR: 300 absolute
    steering_coeff: float = 3.0
    steering_scale: str = "norm"  # "norm": c = steering_coeff · mean ‖h_ref^ℓ‖ (scale()); "absolute": c = steering_coeff
    alpha: float = 1200.0  # α, retain weight (WMDP README "--alpha 1200"; the tiny preset needs ~10)
    layer_frac: float = 7 / 31  # layer = round(frac·(L−1)): 7 for 32-layer LLaVA-1.5-7B, as WMDP and CLEAR
    seed: int = 0  # seeds u
    positions: str = "predict"  # "predict" (logit positions of answer tokens) | "answer" (labels != -100) | "valid"

    def __post_init__(self) -> None:
        check_name("rmu positions", self.positions, POSITIONS)
        check_name("rmu steering_scale", self.steering_scale, SCALES)


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
    if positions == "answer":
        return batch["labels"] != -100
    if positions == "predict":
        return logit_mask(batch["labels"])
    return batch["attention_mask"].bool()


def scale(cfg: Config, ref_acts: torch.Tensor, mask: torch.Tensor) -> float:
    """The steering coefficient c: ``steering_coeff`` itself, or times the mean token norm of the frozen
    reference's activations ``ref_acts`` (B, T, H) at ``mask`` (B, T) (the retain batch: the layer's scale,
    fixed by the reference, so c does not follow the forget activations as training moves them). It is
    computed per micro-batch (and per process): close to, not exactly, the value of the whole batch."""
    if cfg.steering_scale == "absolute":
        return cfg.steering_coeff
    norms = ref_acts.detach().float().norm(dim=-1)[mask]
    return cfg.steering_coeff * (norms.mean().item() if norms.numel() else 1.0)


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
    m_f, m_r = _mask(f, cfg.positions), _mask(r, cfg.positions)
    c = scale(cfg, h_r_ref, m_r)
    control = control_vector(h_f.shape[-1], c, cfg.seed).to(h_f.device)
    total = formula(h_f, control, m_f, h_r, h_r_ref, m_r, cfg.alpha)
    return total, logged(total, {"forget_mse": masked_mse(h_f.detach(), control, m_f),
                                 "retain_mse": masked_mse(h_r.detach(), h_r_ref, m_r), "layer": layer, "steering_c": c})
