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
