"""Arguments shared by the training subcommands: --preset, dotted overrides, --resume/--overwrite."""
from __future__ import annotations

import argparse

from clearbench.config import BenchConfig, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="preset name under configs/ or a YAML path (default: tiny)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="dotted overrides of any preset field, e.g. finetune.phase.train.lr=3e-3")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output directory first")


def load_bench_config(args: argparse.Namespace) -> BenchConfig:
    """The preset with the overrides, every section checked (clearbench.run.check_config)."""
    from clearbench.run import check_config

    return check_config(load_config(BenchConfig, args.preset, args.overrides))


def open_world_arg(path: str):
    """--world: a generated world or a copy of the public CLEAR dataset (clearbench.data.open_data)."""
    from clearbench.data import open_data

    return open_data(path)
