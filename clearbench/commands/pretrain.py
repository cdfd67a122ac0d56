"""``clearbench pretrain``: build and train the embedded tiny base model on a world's pretrain set."""
from __future__ import annotations

import argparse

from clearbench.commands._common import add_config_args, load_bench_config, open_world_arg


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="train the tiny base model (public faces, world VQA, general text)",
                       description=__doc__)
    p.add_argument("--world", required=True, help="world directory written by clearbench generate")
    p.add_argument("--out", required=True, help="output run directory, e.g. runs/base")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clearbench.stages import pretrain

    cfg = load_bench_config(args)
    out = pretrain(cfg, open_world_arg(args.world), args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"base model written to {out}/model")
    return 0
