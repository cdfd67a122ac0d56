"""The ``clearbench`` command line: ``clearbench SUBCOMMAND [options]``."""
from __future__ import annotations

import argparse
import sys

from clearbench import __version__


def build_parser() -> argparse.ArgumentParser:
    from clearbench.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="clearbench",
        description="Multimodal machine-unlearning benchmark (CLEAR-style): generate worlds, "
        "train tiny or real VLMs, unlearn, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"clearbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        # Bad input: one clear line, no traceback (the message names the input and the fix).
        print(f"clearbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
