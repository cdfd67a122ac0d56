"""What a stage costs: wall time, process CPU time, peak memory, optimizer steps, tokens and images processed.

``with Meter() as m: ...`` measures the code inside; ``count_tokens(model)`` makes a model report what its
language model and vision tower process to every meter that is open (nested meters each see it: a pretrain
phase's meter and the stage's). ``m.summary()`` is the dict that run.json's and a result's ``cost`` hold.

Tokens are the positions the language model runs (padding and image tokens included, i.e. compute, not
text length), counted per forward pass: ``tokens_backward`` those run with gradients (each is also a
forward), ``tokens_forward_only`` the rest (reference-model passes, scoring, generation steps).
Peak memory is the resident set's high-water mark on the CPU (Linux resets it per meter through
``/proc/self/clear_refs``; where it cannot, the peak is the process's so far, and ``peak_memory_scope``
says "process") and ``torch.cuda.max_memory_allocated`` on a GPU.
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from clearbench.provenance import device_info

COST_FIELDS = ("wall_seconds", "cpu_seconds", "peak_memory_mb", "optimizer_steps", "tokens_backward",
               "tokens_forward_only", "images")  # numbers every cost record holds, all >= 0
_OPEN: list["Meter"] = []  # the meters open now, outermost first
_HOOKED = "_clearbench_cost_hooked"
# module-name endings of the parts counted (LLaVA and Qwen2-VL as transformers names them, peft-wrapped or not)
_LANGUAGE, _VISION = ("language_model",), ("vision_tower", "visual")


def _rss_high_water_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_rss_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: high-water mark := current RSS
        return True
    except OSError:
        return False


class Meter:
    """Measures the code inside ``with``; ``summary()`` after it (or during it, for a running total)."""

    def __init__(self) -> None:
        self.tokens_backward = self.tokens_forward_only = self.images = self.optimizer_steps = 0
        self.peak_mb = 0.0
        self.scope = "meter"
        self.cuda = torch.cuda.is_available()
        self.t0 = self.cpu0 = 0.0
        self.wall = self.cpu = None

    def __enter__(self) -> "Meter":
        _note_peaks()  # the open meters keep their peak so far before this one resets the high-water mark
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif not _reset_rss_high_water():
            self.scope = "process"
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        _OPEN.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _note_peaks()
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.cpu0
        _OPEN.remove(self)

    def _peak_now(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        hwm = _rss_high_water_mb()
        if hwm is None:  # no /proc: the process's peak (kilobytes on Linux, bytes on macOS)
            self.scope = "process"
            per_mb = 2**20 if os.uname().sysname == "Darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mb
        return hwm

    def summary(self, steps: int | None = None, complete: bool = True) -> dict[str, Any]:
        """The cost record; ``steps``: the optimizer steps (default: those ``count_step`` counted); ``complete``
        False when the stage resumed (it covers the resumed part only)."""
        running = self.wall is None
        if running:
            _note_peaks()
        return {
            "wall_seconds": round(time.perf_counter() - self.t0 if running else self.wall, 3),
            "cpu_seconds": round(time.process_time() - self.cpu0 if running else self.cpu, 3),
            "peak_memory_mb": round(self.peak_mb, 1),
            "peak_memory_kind": "cuda_allocated" if self.cuda else "rss",
            "peak_memory_scope": self.scope,
            "optimizer_steps": int(self.optimizer_steps if steps is None else steps),
            "tokens_backward": self.tokens_backward,
            "tokens_forward_only": self.tokens_forward_only,
            "images": self.images,
            "device": device_info(),
            "complete": bool(complete),
        }


def _note_peaks() -> None:
    for m in _OPEN:
        m.peak_mb = max(m.peak_mb, m._peak_now())


def count_step() -> None:
    """One optimizer step, for every open meter (the training loops call it)."""
    for m in _OPEN:
        m.optimizer_steps += 1


def _positions(args: tuple, kwargs: dict) -> int:
    for name in ("inputs_embeds", "input_ids"):
        x = kwargs.get(name)
        if isinstance(x, torch.Tensor):
            return int(x.shape[0] * x.shape[1]) if x.dim() >= 2 else int(x.numel())
    if args and isinstance(args[0], torch.Tensor):
        x = args[0]
        return int(x.shape[0] * x.shape[1]) if x.dim() >= 2 else int(x.numel())
    return 0


def _language_hook(module, args, kwargs) -> None:
    if not _OPEN:
        return
    n = _positions(args, kwargs)
    grad = torch.is_grad_enabled()
    for m in _OPEN:
        if grad:
            m.tokens_backward += n
        else:
            m.tokens_forward_only += n


def _vision_hook(module, args, kwargs) -> None:
    if not _OPEN:
        return
    x = kwargs.get("pixel_values", args[0] if args else None)
    if isinstance(x, torch.Tensor) and x.dim() == 4:  # (images, channels, h, w); Qwen2-VL's patches are 2-D
        n = int(x.shape[0])
    else:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        n = int(grid.shape[0]) if isinstance(grid, torch.Tensor) else 0
    for m in _OPEN:
        m.images += n


def count_tokens(model: torch.nn.Module) -> torch.nn.Module:
    """Hook ``model``'s language model and vision tower (by their transformers names; the whole model when it
    has no language model) so that the open meters count what they process; idempotent; returns ``model``."""
    language = [m for name, m in model.named_modules() if name.endswith(_LANGUAGE)][:1] or [model]
    vision = [m for name, m in model.named_modules() if name.endswith(_VISION)][:1]
    for modules, hook in ((language, _language_hook), (vision, _vision_hook)):
        for m in modules:
            if not m.__dict__.get(_HOOKED):  # the module's own flag (peft forwards attribute look-ups inward)
                m.register_forward_pre_hook(hook, with_kwargs=True)
                m.__dict__[_HOOKED] = True
    return model


def add_costs(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for work split over processes (evaluation shards): times, steps, tokens and images add up,
    the peak is the largest process's, complete only if every part is."""
    out = dict(costs[0])
    for name in COST_FIELDS:
        if name != "peak_memory_mb":
            out[name] = round(sum(c[name] for c in costs), 3)
    out["peak_memory_mb"] = max(c["peak_memory_mb"] for c in costs)
    out["complete"] = all(c.get("complete", True) for c in costs)
    out["processes"] = sum(c.get("processes", 1) for c in costs)
    return out


def check_costs(provenance: dict[str, Any]) -> list[str]:
    """Problems with a result's ``provenance.cost`` records (none when it has no cost: written before costs were
    recorded)."""
    if "cost" not in provenance:
        return []
    costs = provenance["cost"]
    if not isinstance(costs, dict):
        return check_cost(None, "provenance.cost")
    return [p for part, c in costs.items() for p in check_cost(c, f"provenance.cost.{part}")]


def check_cost(cost: Any, where: str = "cost") -> list[str]:
    """Problems with a cost record (empty = fine): every field of ``COST_FIELDS`` present, a number, >= 0."""
    if not isinstance(cost, dict):
        return [f"{where} is missing"]
    out = []
    for name in COST_FIELDS:
        v = cost.get(name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            out.append(f"{where}.{name} is missing or not a number ({v!r})")
        elif v < 0:
            out.append(f"{where}.{name} is negative ({v})")
    return out
