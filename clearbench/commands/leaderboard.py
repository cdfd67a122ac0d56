"""``clearbench leaderboard``: check result files, re-score them with their model, build the report.

Examples:
  clearbench leaderboard report results/*.json --gold results/gold-10.json --world world --out report/
  clearbench leaderboard validate my-method.json --gold results/gold-10.json --world world
  clearbench leaderboard verify results/npo-10.json --model runs/npo-10 --world world --sample 64

``report`` (also the default: ``clearbench leaderboard results/*.json --out report/``) checks, recomputes and
ranks the files and writes tables, plots and index.html; ``validate`` only checks them; ``verify`` re-scores a
seeded sample of one file's examples with its model and writes ``NAME.verified.json`` beside it, which marks
the row "re-scored" in later reports. Without --gold, the leaderboard's world and forget split are
--world-fingerprint / --forget, else those of most files; without --world, the checks against the world
are skipped (said on stderr and in the report).
Exit status: 0 when every file is accepted, 1 when any is rejected (the report is still written, listing the
rejected files with their reasons), 2 on bad input (e.g. no gold file). A file whose model is not verified to
descend from the target (eval.own.unverified_lineage) is accepted with a warning and its row is marked †.
docs/submitting.md lists every check.
"""
from __future__ import annotations

import argparse
import sys

ACTIONS = ("report", "validate", "verify")


class _Parser(argparse.ArgumentParser):
    """``leaderboard FILE... --out DIR`` (no action word: the form before subcommands) is ``leaderboard report``."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] not in (*ACTIONS, "-h", "--help"):
            args.insert(0, "report")
        return super().parse_known_args(args, namespace)


def _reference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gold", help="the leaderboard's gold result (e.g. results/gold-10.json)")
    p.add_argument("--world", help="the leaderboard's world directory: example ids and texts are checked against it")
    p.add_argument("--world-fingerprint", help="the leaderboard's world fingerprint (default: the gold result's)")
    p.add_argument("--forget", help="the leaderboard's forget split, e.g. forget10 (default: the gold result's)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error instead of one line")


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="check result files, re-score them with their model, build the report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.__class__ = _Parser  # the default action (argparse has no optional subcommand)
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=argparse.ArgumentParser)
    actions.required = True
    report = actions.add_parser("report", help="check, recompute and rank the files; write tables, plots, index.html")
    report.add_argument("files", nargs="+", metavar="RESULT", help="result JSON files")
    report.add_argument("--out", help="report directory (required)")
    report.add_argument("--curves", nargs="+", default=[], metavar="RUN_DIR",
                        help="run directories whose curve.jsonl is drawn as an unlearning curve")
    _reference_args(report)
    validate = actions.add_parser("validate", help="only check the files (no report)")
    validate.add_argument("files", nargs="+", metavar="RESULT", help="result JSON files")
    _reference_args(validate)
    verify = actions.add_parser("verify", help="re-score a seeded sample of a result's examples with its model")
    verify.add_argument("result", metavar="RESULT", help="the result JSON file")
    verify.add_argument("--model", required=True, help="the model the result was scored with (run or model dir)")
    verify.add_argument("--world", required=True, help="the world it was scored on")
    verify.add_argument("--gold", help="the leaderboard's gold result (adds the checks against it)")
    verify.add_argument("--sample", type=int, default=32, help="examples to re-score (default 32)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    verify.add_argument("--tolerance", type=float, default=1e-4,
                        help="relative and absolute tolerance per value (default 1e-4: the same device and dtype)")
    verify.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify(args)
    from eval.verify import make_reference

    files = list(args.files)
    if args.action == "report" and files[0] == "validate":  # the old form: `leaderboard validate` as a positional
        args.action, files = "validate", files[1:]
        if not files:
            raise ValueError("leaderboard validate needs at least one result file")
    if args.action == "report" and not args.out:
        raise ValueError("leaderboard report needs --out REPORT_DIR (or `leaderboard validate FILE...` to only check)")
    ref = make_reference(args.gold, args.world_fingerprint, args.forget, world=args.world)
    for note in ref.skipped:
        print(f"note: {note}", file=sys.stderr)
    rejected = _validate(files, ref) if args.action == "validate" else _report(files, ref, args)
    if rejected:
        print(f"{len(rejected)} of {len(files)} file(s) rejected", file=sys.stderr)
    return 1 if rejected else 0


def _lineage_warning(path: str, why: str | None) -> None:
    """An accepted file whose model is not verified to descend from the target: a warning, not a rejection."""
    if why:
        print(f"warning: {path}: lineage not verified against the target: {why} (its row is marked)", file=sys.stderr)


def _validate(files: list[str], ref) -> list:
    from eval.own import unverified_lineage
    from eval.verify import check_files

    _, checked = check_files(files, ref)
    for c in checked:
        if c.reasons:
            print(f"REJECTED {c.path}", file=sys.stderr)
            for r in c.reasons:
                print(f"  - {r}", file=sys.stderr)
        else:
            print(f"ok {c.path} ({c.level})")
            _lineage_warning(c.path, unverified_lineage((c.result or {}).get("provenance")))
    return [c for c in checked if c.reasons]


def _report(files: list[str], ref, args: argparse.Namespace) -> list:
    from eval.leaderboard import build_report

    report = build_report(files, args.out, ref, args.curves)
    print(f"report written to {args.out}/index.html ({len(report['rows'])} rows, "
          f"tables: {', '.join(report['tables'])})")
    for row in report["rows"]:
        _lineage_warning(row.path, row.lineage)
    for c in report["rejected"]:
        print(f"REJECTED {c.path}: " + "; ".join(c.reasons), file=sys.stderr)
    return report["rejected"]


def _verify(args: argparse.Namespace) -> int:
    from eval.rescore import Sample, verify
    from eval.verify import sidecar_path

    record = verify(args.result, args.model, args.world,
                    Sample(n=args.sample, seed=args.seed, rel_tol=args.tolerance, abs_tol=args.tolerance), args.gold)
    n = len(record["sample"]["ids"])
    if record["outcome"] == "passed":
        print(f"ok {args.result}: {n} examples re-scored with {args.model} agree (tolerance {args.tolerance}); "
              f"written to {sidecar_path(args.result)}")
        return 0
    print(f"REJECTED {args.result} ({record['n_problems']} problems; written to {sidecar_path(args.result)})",
          file=sys.stderr)
    for r in record["problems"][:10]:
        print(f"  - {r}", file=sys.stderr)
    return 1
