"""Run under torchrun (test_train.py: DDP) or ``accelerate launch --config_file configs/accelerate/fsdp.yaml``
(test_fsdp.py, benchmarks/gpu_check.py) with 1 or 2 processes: same effective batch, same curve.

    python ddp_train_script.py MODEL_DIR OUT [full|lora-image|lora-l1|one-image]

``full`` (default): every parameter trains on mixed text / image records (under FSDP the loop deals the image
records over the processes' micro-batches, so that every process runs the vision tower). ``lora-image``: LoRA
adapters (and the projector copy) train on image records only. ``lora-l1``: LoRA with the L1 penalty on mixed
text / image records (a process whose micro-batch has no image leaves the projector copy out of its forward pass but
not out of the penalty). ``one-image``: one image record in every batch of
four, which two processes cannot share: under FSDP the loop stops with the reason (docs/presets.md, "Sharded
training"). ``launch`` builds the command lines.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FSDP_CONFIG = HERE.parent / "configs" / "accelerate" / "fsdp.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model_dir, out, processes: int, variant: str = "full", fsdp: bool = False,
           timeout: int = 300) -> subprocess.CompletedProcess:
    """Run this script in ``processes`` processes: torchrun (DDP), or accelerate launch with fsdp.yaml."""
    if fsdp:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
               "--num_processes", str(processes), "--main_process_port", str(_free_port())]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(cmd + [__file__, str(model_dir), str(out), variant], env=env, capture_output=True,
                          text=True, timeout=timeout)


def fsdp_on_cpu(acc) -> None:
    """accelerate selects FSDP only on accelerator devices: on a CPU its state is MULTI_CPU and the FSDP_* variables
    ``accelerate launch`` set are ignored. Set the state it sets on GPUs, so that its FSDP preparation and torch's
    FSDP2 (which runs on gloo) shard the model for real."""
    from accelerate import FullyShardedDataParallelPlugin, PartialState
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and acc.distributed_type == DistributedType.MULTI_CPU:
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
        acc.state.distributed_type = DistributedType.FSDP
        PartialState().distributed_type = DistributedType.FSDP  # as AcceleratorState syncs it on a GPU


def main() -> None:
    import torch
    from model_fixtures import sample_records
    from safetensors.torch import save_file

    from clearbench.config import LoraConfig, TrainConfig
    from clearbench.lora import apply_lora, set_trainable
    from clearbench.processes import end_group
    from clearbench.models import load_model
    from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, get_accelerator, train

    torch.set_num_threads(1)
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    variant = sys.argv[3] if len(sys.argv) > 3 else "full"
    lora = variant in ("lora-image", "lora-l1")
    cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=4, micro_batch_size=2, warmup_steps=0, seed=1, log_every=1,
                      augment=False, mixed_precision="no", lora=LoraConfig(enabled=lora, r=4, alpha=8),
                      l1_lambda=1e-2 if variant == "lora-l1" else 0.0)
    acc = get_accelerator("no")
    fsdp_on_cpu(acc)
    loaded = load_model(model_dir)
    model = loaded.model.train()
    if lora:
        torch.manual_seed(cfg.seed)
        model = apply_lora(model, cfg.lora, cfg)
    set_trainable(model, cfg)
    records = {"lora-image": [r for r in sample_records() if r.image is not None] * 4, "full": sample_records() * 2,
               "lora-l1": sample_records() * 2,
               "one-image": [r for r in sample_records() if r.image is None] * 3 + sample_records()[1:2]}[variant]
    train(model, loaded.processor, loaded.family, ShuffleSampler(records, 4, seed=1), example_nll_loss, cfg,
          TrainRun(out))
    if acc.is_main_process:  # the final trainable weights: whole tensors also after a sharded run
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  str(out / "trainable.safetensors"))
        wrapped = type(acc._models[0]).__name__ if acc._models else ""
        (out / "world.json").write_text(json.dumps({"processes": acc.num_processes, "wrapped": wrapped,
                                                    "distributed_type": str(acc.distributed_type)}))
    end_group()  # as clearbench's own entry points do: gloo's threads left to the teardown abort now and then


if __name__ == "__main__":
    main()
