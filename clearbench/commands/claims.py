"""``clearbench claims``: CLEAR's claims, its Table 1 correlations and the seeds' ranking agreement on a study.

Examples:
  clearbench claims runs/tiny                 -> prints the markdown (claims, Spearman, Kendall's W, per-seed tables)
  clearbench claims runs/tiny3 --out claims.md
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("claims", help="test CLEAR's claims and the ranking's agreement over seeds on a study",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", metavar="STUDY", help="a clearbench run output directory (one seed or seed-*/)")
    p.add_argument("--forget-percent", default="10", help="the forget split's percent to read (default 10)")
    p.add_argument("--out", help="write the markdown here instead of printing it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clearbench.provenance import write_text_atomic
    from eval.claims import claims_markdown, study_values

    text = claims_markdown(study_values(args.study), str(args.forget_percent))
    if args.out:
        write_text_atomic(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0
