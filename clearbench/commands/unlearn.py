"""``clearbench unlearn``: one unlearning method on a forget split of a target model.

    clearbench unlearn --world world --model runs/target --method npo --forget forget10 --out runs/npo-10
    clearbench unlearn ... unlearn.train.lora.enabled=true unlearn.train.l1_lambda=0.01
    clearbench unlearn ... unlearn.stop.rule=forget_prob_below unlearn.stop.threshold=gold \\
        unlearn.stop.gold_model=runs/gold-10
"""
from __future__ import annotations

import argparse

from clearbench.commands._common import add_config_args, load_bench_config, open_world_arg
from clearbench.types import FORGET_MODALITIES


def add_parser(sub) -> None:
    p = sub.add_parser("unlearn", help="unlearn a forget split from a target model with one method",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, help="world directory (clearbench generate) or a local copy of the public CLEAR dataset (therem/CLEAR)")
    p.add_argument("--model", required=True, help="the target: a run dir (runs/target) or a model dir")
    p.add_argument("--method", help="a baselines method (npo, grad_diff, ...); default: unlearn.method of the preset")
    p.add_argument("--forget", help="forget01 | forget05 | forget10; default: unlearn.forget of the preset")
    p.add_argument("--forget-modality", choices=list(FORGET_MODALITIES),
                   help="which forget records are trained on; default: unlearn.forget_modality of the preset")
    p.add_argument("--out", required=True, help="output run directory, e.g. runs/npo-10")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clearbench.unlearn import unlearn

    flags = {"method": args.method, "forget": args.forget, "forget_modality": args.forget_modality}
    args.overrides = list(args.overrides or []) + [f"unlearn.{k}={v}" for k, v in flags.items() if v]
    cfg = load_bench_config(args)
    out = unlearn(cfg, open_world_arg(args.world), args.model, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"model written to {out}/model")
    return 0
