"""What the training loop needs to know about sharded runs (accelerate's FSDP / DeepSpeed; configs/accelerate/).

FSDP2 (configs/accelerate/fsdp.yaml) shards every parameter in place; the loop runs unchanged, and at the end
``gather_sharded`` puts the whole parameters back on every process so that a stage saves the full model. Every
process must run the same modules in the same order (each FSDP unit all-gathers its parameters when it runs):
``check_same_modules`` stops a step whose micro-batches have images on some processes and not on others, which
would otherwise deadlock or fail inside a collective.
DeepSpeed steps and clips inside its backward, which the loop's own accumulation and clipping would double: it is
refused, with the reason, until that is wired (docs/presets.md, "Sharded training").
"""
from __future__ import annotations

from typing import Any


def check_supported(acc: Any, save_every: int) -> None:
    """Refuse the sharded set-ups the loop does not handle, before anything trains."""
    from accelerate.utils import DistributedType

    kind = acc.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ValueError(
            "DeepSpeed (configs/accelerate/zero3.yaml) is not wired into clearbench's training loop yet: its engine "
            "accumulates, clips and steps inside backward, which the loop also does. Use configs/accelerate/fsdp.yaml "
            "(FSDP2, full shard) or ddp.yaml")
    if kind == DistributedType.FSDP:
        if acc.state.fsdp_plugin.fsdp_version != 2:
            raise ValueError("FSDP1 is not supported by clearbench's training loop (its clipping sees only this "
                             "process's shard of a LoRA run's gradients); set fsdp_version: 2 (configs/accelerate/fsdp.yaml)")
        if save_every:
            raise ValueError(f"train.save_every={save_every}: mid-run checkpoints of a sharded (FSDP) run are not "
                             f"supported yet (each process holds a shard); set train.save_every=0")


def gather_sharded(acc: Any, wrapped: Any) -> None:
    """FSDP2: every process all-gathers the whole parameters in place (a collective: all processes call it), so
    the stage that trained the model saves (and merges) full tensors. No-op otherwise."""
    from accelerate.utils import DistributedType

    if acc.distributed_type != DistributedType.FSDP:
        return
    from torch.distributed.fsdp import FSDPModule

    for module in wrapped.modules():
        if isinstance(module, FSDPModule):
            module.unshard()


def is_fsdp(acc: Any) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP and acc.num_processes > 1


def spread_images(records: list, sizes: list[int]) -> list:
    """``records`` reordered so that their contiguous chunks of ``sizes`` each get image records round robin before
    the text-only ones fill them: under FSDP every process then runs the vision tower whenever the batch has one
    image per chunk, so mixed text / image batches shard. Deterministic in the records' image flags, so kinds whose
    rows pair up (DPO's forget and refusal rows) get the same order; the gradient is the same sum in any order."""
    chunks: list[list] = [[] for _ in sizes]
    with_image = [r for r in records if r.image is not None]
    rest = [r for r in records if r.image is None]
    i = 0
    for r in with_image:
        while len(chunks[i % len(sizes)]) >= sizes[i % len(sizes)]:
            i += 1
        chunks[i % len(sizes)].append(r)
        i += 1
    for c, size in zip(chunks, sizes):
        while len(c) < size:
            c.append(rest.pop(0))
    return [r for c in chunks for r in c]


def check_same_modules(acc: Any, batches: dict) -> None:
    """FSDP: each kind's micro-batch must have images on every process or on none (a text-only batch skips the
    vision tower, whose units then all-gather on some processes only). One small all-reduce per micro-batch."""
    import torch
    from accelerate.utils import DistributedType

    if acc.distributed_type != DistributedType.FSDP or acc.num_processes < 2:
        return
    flags = torch.tensor([float("pixel_values" in b) for b in batches.values()], device=acc.device)
    total = acc.reduce(flags, reduction="sum")
    mixed = [kind for kind, n in zip(batches, total.tolist()) if 0 < n < acc.num_processes]
    if mixed:
        raise RuntimeError(
            f"FSDP: the {', '.join(mixed)} micro-batch has images on some processes and none on others, so they would "
            f"run different modules; shard only runs whose records all have images or all have none "
            f"(e.g. unlearn.forget_modality=text or visual), or run without FSDP (docs/presets.md, 'Sharded training')")
