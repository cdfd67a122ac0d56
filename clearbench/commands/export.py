"""``clearbench export``: a result file in another tool's format.

Examples:
  clearbench export --format open-unlearning results/npo-10.json --out exports/npo-10
      -> exports/npo-10/CLEARBENCH_EVAL.json and CLEARBENCH_SUMMARY.json (open-unlearning's layout and metric names)
  clearbench export --format open-unlearning results/gold-10.json --out exports/gold --name TOFU
      -> TOFU_EVAL.json, usable as open-unlearning's retain_logs_path
"""
from __future__ import annotations

import argparse
from pathlib import Path


FORMATS = ("open-unlearning",)  # eval.export.FORMATS' names (a test keeps them equal; the CLI starts without eval)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a result file in another tool's format (open-unlearning)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", metavar="RESULT", help="a result JSON file written by clearbench evaluate")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="open-unlearning: <NAME>_EVAL.json (per-example values) and <NAME>_SUMMARY.json")
    p.add_argument("--out", help="output directory (default: beside RESULT, <RESULT stem>.<format>/)")
    p.add_argument("--name", default="CLEARBENCH", help="file name prefix, open-unlearning's benchmark name "
                                                       "(default CLEARBENCH)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.export import FORMATS

    result = Path(args.result)
    out = Path(args.out) if args.out else result.with_name(f"{result.stem}.{args.format}")
    for path in FORMATS[args.format](result, out, name=args.name, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0
