"""Ctrl-C and SIGTERM that are never lost: the CLI's handlers record the signal before raising KeyboardInterrupt
(``Terminated`` for SIGTERM, e.g. a cluster scheduler's or ``kill``'s), so every ``finally`` runs (workers stopped,
locks released), and long loops call ``check()`` at safe points, so a signal whose exception Python swallowed (one
raised inside a finaliser is printed as "Exception ignored" and dropped) still stops the run at the next step."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_got: list[int] = []  # the signals received since handling() began


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop as Ctrl-C stops (the CLI exits with 143 instead of 130)."""


def _raise(signum: int) -> None:
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _handler(signum, frame) -> None:
    first = not _got
    _got.append(signum)
    if first:  # a repeated Ctrl-C while the first one unwinds is recorded only (no second traceback, no exit -2)
        _raise(signum)


def check() -> None:
    """Raise KeyboardInterrupt (Terminated for SIGTERM) if a signal arrived since ``handling()`` began (and its
    exception was lost)."""
    if _got:
        _raise(_got[-1])


@contextmanager
def handling(exiting: bool = False) -> Iterator[None]:
    """Install the recording SIGINT and SIGTERM handlers for the block (main thread only; the old handlers come
    back). A signal the process started out ignoring (a script's ``cmd &`` ignores SIGINT) stays ignored.
    ``exiting``: the process ends after the block (the CLI as a program): once a signal was recorded, later ones
    are ignored instead of the old handlers coming back (a second Ctrl-C during exit would kill it with -2)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _got.clear()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, signal.SIG_IGN if exiting and _got else handler)
