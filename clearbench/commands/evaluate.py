"""``clearbench evaluate``: score a model on every split x modality of a world; write a result file.

Examples:
  clearbench evaluate --model runs/gold-10 --world world --gold self --out results/gold-10.json
  clearbench evaluate --model runs/target --world world --gold results/gold-10.json --out results/target.json
  clearbench evaluate ... --shard 0/2 --out results/t.shard0.json   (then --merge the shard files)
"""
from __future__ import annotations

import argparse
import errno
import os
import tempfile
from pathlib import Path

from clearbench.types import FORGET_MODALITIES


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected 0 <= i < n")
    return i, n


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on forget/retain/holdout/real splits in every modality",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="run dir (runs/target) or checkpoint dir")
    p.add_argument("--world", help="world directory (clearbench generate) or a local copy of the public CLEAR dataset (therem/CLEAR)")
    p.add_argument("--forget", default="forget10", help="forget01 | forget05 | forget10 (default forget10)")
    p.add_argument("--gold", help="the gold model's result file for forget quality / PrivLeak, or 'self' "
                                  "when evaluating the gold model itself (required unless --no-gold)")
    p.add_argument("--no-gold", action="store_true",
                   help="deliberately skip forget quality and PrivLeak (they are then absent from the result)")
    p.add_argument("--out", required=True, help="result JSON path (a shard file with --shard); an existing file is "
                                               "refused unless --overwrite, the --gold file always")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--batch-size", type=int, default=32,
                   help="records per forward pass (default 32): a memory and speed setting")
    p.add_argument("--max-per-config", type=int, default=0, help="cap records per eval config (0: all; older configs)")
    p.add_argument("--max-per-cell", type=int, default=0,
                   help="cap records per (eval config, modality, task, image role) cell, seeded (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy generation length (default: eval.outputs.GENERATION, 32)")
    p.add_argument("--tr-mode", default="tofu", choices=["tofu", "clear"],
                   help="truth ratio: TOFU per-item mean (default) or CLEAR's global mean")
    p.add_argument("--tr-reference", default="tofu", choices=["tofu", "paraphrase", "answer"],
                   help="truth ratio's true answer: tofu (default: TOFU's per split, the answer on real_faces and "
                        "real_world, the paraphrase elsewhere), or the paraphrase / the answer on every split")
    p.add_argument("--fq-aggregation", default="item", choices=["item", "author_fact"],
                   help="forget quality's units: one per record (default, TOFU) or one per author x fact")
    own = p.add_argument_group("your own model", "a checkpoint or PEFT adapter clearbench did not train "
                                                  "(docs/submitting.md)")
    own.add_argument("--base", metavar="DIR", help="the model a plain PEFT adapter --model (adapter_config.json + "
                                                   "adapter_model.safetensors) applies to, e.g. runs/target")
    own.add_argument("--target", metavar="RUN", help="the leaderboard's target: check that the model descends from "
                                                    "it and record the lineage (provenance.lineage)")
    own.add_argument("--method", help="label: the method the model was unlearned with (its leaderboard row)")
    own.add_argument("--forget-modality", choices=list(FORGET_MODALITIES),
                     help="label: what was forgotten (the leaderboard's table); needed with --method")
    own.add_argument("--l1", type=float, metavar="LAMBDA", help="label: the L1 weight of the run (default 0)")
    own.add_argument("--lora", action="store_true", help="label: the run trained a LoRA adapter (implied by --base)")
    p.add_argument("--shard", type=_shard, help="score shard i of n (i/n) and write a shard file")
    p.add_argument("--merge", nargs="+", metavar="SHARD", help="merge shard files into one result")
    p.set_defaults(func=run)


def _check_out(out: Path, args: argparse.Namespace) -> None:
    """Refuse an --out that would lose data, before any work: an existing file (unless --overwrite), the gold
    result or a shard being merged (always), a directory; and find an unwritable place now, not after scoring."""
    from eval.evaluate import check_out

    check_out(out, args.gold)
    for shard in args.merge or []:
        if out.resolve() == Path(shard).resolve():
            raise ValueError(f"--out {out} is one of the --merge shard files: write the result to another file")
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
    if (out.exists() or out.is_symlink()) and not args.overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:  # name --out, not the probe file
        raise type(e)(e.errno, e.strerror, str(out)) from None


def run(args: argparse.Namespace) -> int:
    from eval.aggregate import MissingGoldError, gold_command
    from eval.evaluate import EvalConfig, evaluate, merge, write_shard

    if args.gold and args.no_gold:
        raise ValueError("--gold and --no-gold exclude each other")
    _check_out(Path(args.out), args)
    if args.merge:
        if args.shard:
            raise ValueError("--merge joins shard files; do not pass --shard with it")
        if args.gold is None and not args.no_gold:
            raise MissingGoldError(f"--merge needs --gold (the gold model's result file, or 'self'), or --no-gold; "
                                   f"produce the gold result with `{gold_command(args.forget)} --gold self`")
        merge(args.merge, Path(args.out), args.gold)
        print(f"merged {len(args.merge)} shards into {args.out}")
        return 0
    if not args.model or not args.world:
        raise ValueError("evaluate needs --model and --world (or --merge SHARD ...)")
    from eval.own import OwnModel, run_label

    model = OwnModel(args.model, base=args.base, target=args.target, method=args.method,
                     forget_modality=args.forget_modality, l1_lambda=args.l1, lora=args.lora)
    run_label(model)  # a bad label fails before anything loads
    if args.gold is None and not args.no_gold and not args.shard:
        raise MissingGoldError(
            f"--gold is required: forget quality and PrivLeak are measured against the gold (retain-only) model. "
            f"Pass --gold self when evaluating the gold model, --gold RESULT.json (produce it with "
            f"`{gold_command(args.forget)} --world {args.world} --gold self --out RESULT.json`) otherwise, "
            f"or --no-gold to skip them")
    from clearbench.commands._common import open_world_arg

    world = open_world_arg(args.world)
    cfg = EvalConfig(forget=args.forget, batch_size=args.batch_size, max_per_config=args.max_per_config,
                     max_per_cell=args.max_per_cell,
                     options={"tr_mode": args.tr_mode, "tr_reference": args.tr_reference,
                              "fq_aggregation": args.fq_aggregation, "require_gold": not args.no_gold})
    if args.max_new_tokens is not None:
        cfg.max_new_tokens = args.max_new_tokens
    if args.shard:
        write_shard(model, world, Path(args.out), cfg, args.shard)
        print(f"shard {args.shard[0]}/{args.shard[1]} written to {args.out}")
        return 0
    result = evaluate(model, world, args.out, gold=args.gold, cfg=cfg)
    from eval.evaluate import summary

    print(summary(result))
    print(f"result written to {args.out}")
    return 0
