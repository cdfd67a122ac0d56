"""``clearbench leaderboard``: validate result files and build the report (tables, plots, HTML).

Examples:
  clearbench leaderboard results/*.json --gold results/gold-10.json --out report/
  clearbench leaderboard results/*.json --gold results/gold-10.json --out report/ --curves runs/npo-10 runs/dpo-10
  clearbench leaderboard validate my-method.json --gold results/gold-10.json

The first positional word ``validate`` only checks the files (no report); a result file that
is literally named "validate" can be passed as ./validate. Without --gold, the leaderboard's
world and forget split are --world-fingerprint / --forget, else those of most files.
Exit status: 0 when every file is accepted, 1 when any is rejected (the report is still
written, listing the rejected files with their reasons), 2 on bad input (e.g. no gold file).
The ranking rule and every check are in docs/submitting.md.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="validate result files; build CLEAR-style tables, plots and an HTML report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="RESULT",
                   help="result JSON files; 'validate' as the first word only checks them (no report)")
    p.add_argument("--out", help="report directory (required unless validating)")
    p.add_argument("--gold", help="the leaderboard's gold result (e.g. results/gold-10.json)")
    p.add_argument("--world-fingerprint", help="the leaderboard's world fingerprint (default: the gold result's)")
    p.add_argument("--forget", help="the leaderboard's forget split, e.g. forget10 (default: the gold result's)")
    p.add_argument("--curves", nargs="+", default=[], metavar="RUN_DIR",
                   help="run directories whose curve.jsonl is drawn as an unlearning curve")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.leaderboard import build_report
    from eval.verify import check_files, make_reference

    validate_only = args.files[0] == "validate"
    files = args.files[1:] if validate_only else args.files
    if not files:
        raise ValueError("leaderboard validate needs at least one result file")
    if not validate_only and not args.out:
        raise ValueError("leaderboard needs --out REPORT_DIR (or 'validate' first to only check the files)")
    ref = make_reference(args.gold, args.world_fingerprint, args.forget)
    if validate_only:
        ref, checked = check_files(files, ref)
        for c in checked:
            if c.reasons:
                print(f"REJECTED {c.path}", file=sys.stderr)
                for r in c.reasons:
                    print(f"  - {r}", file=sys.stderr)
            else:
                print(f"ok {c.path}")
        rejected = [c for c in checked if c.reasons]
    else:
        report = build_report(files, args.out, ref, args.curves)
        rejected = report["rejected"]
        print(f"report written to {args.out}/index.html ({len(report['rows'])} rows, "
              f"tables: {', '.join(report['tables'])})")
        for c in rejected:
            print(f"REJECTED {c.path}: " + "; ".join(c.reasons), file=sys.stderr)
    if rejected:
        print(f"{len(rejected)} of {len(files)} file(s) rejected", file=sys.stderr)
    return 1 if rejected else 0
