"""The ``clearbench`` command line: ``clearbench SUBCOMMAND [options]``.

An expected failure (bad input, a missing, existing, locked or unwritable file, a failed stage) prints one line
naming the input and the fix, exit code 2; Ctrl-C prints one line, exit code 130 (SIGTERM: 143). ``--debug``: the traceback.
"""
from __future__ import annotations

import argparse
import errno
import gc
import sys

from clearbench import __version__

# the fix for an operating-system error on a path the user gave (--out, --world, ...)
OS_FIXES = {
    errno.EACCES: "choose a path you may write to, or fix its permissions",
    errno.EPERM: "choose a path you may write to",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.ENOSPC: "the disk is full: free space or choose another --out",
    errno.EDQUOT: "the disk quota is used up: free space or choose another --out",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EEXIST: "a file is in the way: choose another path or remove it",
    errno.ENOENT: "check the path",
    errno.EISDIR: "the path is a directory: give a file path",
}


def build_parser() -> argparse.ArgumentParser:
    from clearbench.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="clearbench",
        description="Multimodal machine-unlearning benchmark (CLEAR-style): generate worlds, "
        "train tiny or real VLMs, unlearn, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"clearbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    for p in sub.choices.values():  # also after the subcommand; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error instead of one line")
    return parser


def error_line(exc: BaseException) -> str:
    """One line for an expected failure: the message (an OS error: the path, what happened and the fix)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        fix = OS_FIXES.get(exc.errno, "check the path and the disk")
        return f"{where}{exc.strerror.lower()}; {fix}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from clearbench import interrupt
    from clearbench.processes import end_group

    # around the message too: a second Ctrl-C while stopping is only recorded; run as a program (no argv), the
    # process ignores further signals once stopping, up to its exit
    with interrupt.handling(exiting=argv is None):
        try:
            code = int(args.func(args) or 0)
            interrupt.check()  # a Ctrl-C whose exception was swallowed on the way still counts
            end_group()  # under accelerate launch: the process group ends before the interpreter does
            return code
        except KeyboardInterrupt as exc:
            if args.debug:
                raise
            stopped = exc
        except (ValueError, OSError) as exc:  # bad input; missing, existing, locked or unwritable files; a failed stage
            if args.debug:
                raise
            print(f"clearbench {args.command}: error: {error_line(exc)}", file=sys.stderr)
            return 2
        # interrupted: the traceback is gone here, so collecting closes the progress bars it held before the last line
        gc.collect()
        term = isinstance(stopped, interrupt.Terminated)
        print(f"clearbench {args.command}: {'terminated (SIGTERM)' if term else 'interrupted'}; re-run the same "
              f"command to resume", file=sys.stderr)
        return 143 if term else 130

if __name__ == "__main__":
    sys.exit(main())
