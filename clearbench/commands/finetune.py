"""``clearbench finetune``: the target (``--split full``) or a gold model (``--split retain90`` ...)."""
from __future__ import annotations

import argparse

from clearbench.commands._common import add_config_args, load_bench_config, open_world_arg


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="finetune a base model on all authors (target) or retain authors (gold)",
                       description=__doc__)
    p.add_argument("--world", required=True, help="world directory (clearbench generate) or a local copy of the public CLEAR dataset (therem/CLEAR)")
    p.add_argument("--model", required=True, help="parent: a run dir (runs/base) or a checkpoint dir / hub id")
    p.add_argument("--split", default="full", help="full (the target, default) or retainNN (a gold: the authors outside forgetNN, e.g. retain90)")
    p.add_argument("--out", required=True, help="output run directory, e.g. runs/target or runs/gold-10")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clearbench.stages import finetune

    cfg = load_bench_config(args)
    out = finetune(cfg, open_world_arg(args.world), args.model, args.split, args.out,
                   resume=args.resume, overwrite=args.overwrite)
    print(f"model written to {out}/model")
    return 0
