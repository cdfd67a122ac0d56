"""The processes of one training stage run by ``accelerate launch`` (clearbench.launch_stage): every one trains, the
main one alone creates the stage directory and writes its files, and the others wait for it where they would read
them next. Without a process group (one process, as a stage runs by default) every process is the main one and
waiting is a no-op."""
from __future__ import annotations


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True in the process that writes the stage's files (rank 0, or the only process)."""
    import torch.distributed as dist

    return not _group() or dist.get_rank() == 0


def wait_for_main() -> None:
    """A barrier of the stage's processes: after it, what the main process wrote before it is there for all."""
    import torch.distributed as dist

    if _group():
        dist.barrier()


def end_group(barrier: bool = True) -> None:
    """Destroy the process group, if any, before the process exits (after a barrier with ``barrier``: a stage that
    succeeded, so that no process leaves one still in a collective). Left to the interpreter's teardown, gloo's
    threads now and then abort a process whose stage succeeded ("terminate called without an active exception",
    exit code -6)."""
    import sys

    dist = sys.modules.get("torch.distributed")  # not imported: no group (and no torch import for nothing)
    if dist is not None and _group():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
