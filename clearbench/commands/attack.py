"""``clearbench attack``: run one attack on an unlearned model; write a result with per-example values.

Examples:
  clearbench attack --model runs/grad_ascent-10 --world world --attack relearn --out results/attacks/ga-relearn.json
  clearbench attack ... --attack relearn n=[10] train.lr=1e-3 train.max_steps=10   (the attack's options)
  clearbench attack ... --attack quantize schemes=[int8,int4_g64] --gold results/gold-10.json
Attacks and their options: docs/attacks.md.
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("attack", help="relearning, quantization, paraphrase/transform and in-context attacks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="unlearned run dir (runs/npo-10) or model dir")
    p.add_argument("--world", required=True, help="world directory")
    p.add_argument("--attack", required=True, help="relearn, quantize, paraphrase, transform or in_context (eval.attacks.ATTACKS)")
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--gold", help="the gold model's evaluation result: its forget values are reported beside")
    p.add_argument("--forget", default="", help="forget split (default: the model's, from its run.json)")
    p.add_argument("--max-per-config", type=int, default=0, help="cap the forget probes (0: all)")
    p.add_argument("--max-per-cell", type=int, default=0,
                   help="cap the forget probes per modality x task x image-role cell, as evaluate does (0: all)")
    p.add_argument("--batch-size", type=int, default=32, help="records per forward pass when scoring (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="greedy generation length (default 32)")
    p.add_argument("--seed", type=int, default=0, help="the probes' cap")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    p.add_argument("options", nargs="*", metavar="key.sub=value", help="the attack's options, e.g. n=[10] train.lr=1e-3")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clearbench.config import parse_overrides
    from clearbench.data import open_world
    from eval.attacks import AttackConfig, attack, get_attack, options_of

    get_attack(args.attack)
    cfg = AttackConfig(attack=args.attack, forget=args.forget, max_per_config=args.max_per_config,
                       max_per_cell=args.max_per_cell, batch_size=args.batch_size, seed=args.seed,
                       options=parse_overrides(args.options))
    if args.max_new_tokens is not None:
        cfg.max_new_tokens = args.max_new_tokens
    options_of(cfg)  # bad options fail before the world is opened
    result = attack(args.model, open_world(args.world), args.out, cfg, gold=args.gold, overwrite=args.overwrite)
    metrics = result["aggregates"]["metrics"]
    for s in result["settings"]:
        if s["skipped"]:
            print(f"{s['name']:24s} skipped: {s['skipped']}")
            continue
        name = s["name"]
        deltas = "  ".join(f"{m} {metrics.get(f'{name}/all/{m}_delta', float('nan')):+.3f}"
                           for m in ("probability", "rouge_l", "truth_ratio"))
        print(f"{s['name']:24s} delta {deltas}")
    worst = "  ".join(f"{m} {metrics.get(f'worst_case/all/{m}', float('nan')):.3f}"
                      for m in ("probability", "rouge_l", "truth_ratio"))
    print(f"{'worst case':24s} {worst}  (standard probability {metrics['standard/all/probability']:.3f})")
    print(f"result written to {args.out}")
    return 0
