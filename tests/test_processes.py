"""clearbench.processes: the helpers of a stage's processes, on a real (one-process) gloo process group."""
from __future__ import annotations

import torch.distributed as dist

from clearbench.processes import end_group, is_main, wait_for_main


def test_end_group_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    end_group()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized() and is_main()
        wait_for_main()  # a barrier of one
        end_group()  # after its barrier, the group is gone: the interpreter's teardown has no gloo threads left
        assert not dist.is_initialized()
        end_group(barrier=False)  # a second call: still nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
