"""The ``cluster`` section: the resources each kind of stage gets as a job (``clearbench run --executor slurm`` or
``local``, clearbench.cluster) and how many processes score an evaluation. None of it enters a stage key: it
changes where and how fast a stage runs, not what it writes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clearbench.typed_config import FieldError, check_numbers, deep_merge, from_dict, to_dict

# how ``clearbench run`` runs stages: builtin, in this process (or --jobs worker processes); local and slurm, as
# submitit jobs (clearbench.cluster)
EXECUTORS = ("builtin", "local", "slurm")


@dataclasses.dataclass
class Resources:
    """One job's resources (Slurm: ``--gpus-per-node``, ``--cpus-per-task``, ``--mem``, ``--time``, ``--partition``)."""

    gpus: int = 0
    cpus: int = 2  # also the job's torch threads
    mem_gb: float = 8.0
    time_min: int = 60  # a stage killed at its time limit resumes when the study is run again
    partition: str = ""  # "": the cluster's default partition
    # evaluate stages: processes that score one evaluation, each a shard of its records (one GPU each on a machine
    # with GPUs), merged into the same result as one process. 0: ``gpus`` processes when gpus > 1, else one
    shards: int = 0
    # training stages (clearbench.run.TRAINING_KINDS): processes that train one stage under ``accelerate launch``
    # (one GPU each), the effective batch unchanged. 0: ``gpus`` processes when gpus > 1, else one
    train_processes: int = 0
    # the accelerate config those processes run under, e.g. configs/accelerate/fsdp.yaml; "": plain DDP
    accelerate_config: str = ""
    # further options of submitit's Slurm executor, e.g. {account: x, qos: y, constraint: a100, exclude: node3,
    # additional_parameters: {reservation: r}}; and shell lines a Slurm job runs first (module load, venv)
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    setup: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        check_numbers(self, positive=("cpus", "mem_gb", "time_min"), non_negative=("gpus", "shards", "train_processes"))
        if self.gpus and self.train_processes > self.gpus:
            raise FieldError("train_processes", self.train_processes, f"must be at most gpus={self.gpus} (one GPU "
                                                                      f"per process); 0 takes one process per GPU")

    def processes(self) -> int:
        """How many processes score an evaluation stage."""
        return self.shards or max(1, self.gpus)

    def training_processes(self) -> int:
        """How many processes train a training stage."""
        return self.train_processes or max(1, self.gpus)


@dataclasses.dataclass
class ClusterConfig:
    """``default``: every stage's job; ``kinds``: stage kind -> the fields that differ for that kind's jobs, e.g.
    ``{finetune: {gpus: 1, time_min: 600}, evaluate: {gpus: 2}}`` (the kinds are checked by clearbench.run)."""

    default: Resources = dataclasses.field(default_factory=Resources)
    kinds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def resources(self, kind: str) -> Resources:
        """The resources of a ``kind`` stage's job (``default`` with the kind's fields over it)."""
        return from_dict(Resources, deep_merge(to_dict(self.default), self.kinds.get(kind, {})),
                         f"cluster.kinds.{kind}")


def check_accelerate_config(path: str) -> None:
    """``path`` is an accelerate config file whose set-up the training loop runs (not DeepSpeed), else ValueError."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    if not Path(path).is_file():
        raise ValueError(f"{path!r} is not a file (from {Path.cwd()}); point it at an "
                         f"accelerate config such as configs/accelerate/fsdp.yaml, or leave it empty for plain DDP")
    try:
        kind = load_config_from_file(path).distributed_type
    except (yaml.YAMLError, TypeError, ValueError, KeyError) as exc:  # bad YAML, unknown or missing fields
        raise ValueError(f"{path} is not an accelerate config: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    if kind == DistributedType.DEEPSPEED:
        raise ValueError(f"{path} runs DeepSpeed, which the training loop does not "
                         f"support yet (clearbench.sharding); use configs/accelerate/fsdp.yaml or ddp.yaml")
