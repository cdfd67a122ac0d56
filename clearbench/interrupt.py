"""Ctrl-C that is never lost: the CLI's SIGINT handler records the interrupt before raising KeyboardInterrupt,
and long loops call ``check()`` at safe points, so an interrupt whose exception Python swallowed (one raised
inside a finaliser is printed as "Exception ignored" and dropped) still stops the run at the next step."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_flag = threading.Event()


def _handler(signum, frame) -> None:
    _flag.set()
    raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived since ``handling()`` began (and its exception was lost)."""
    if _flag.is_set():
        raise KeyboardInterrupt


@contextmanager
def handling() -> Iterator[None]:
    """Install the recording SIGINT handler for the block (main thread only; the old handler comes back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _flag.clear()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started ignoring Ctrl-C (a script's `cmd &`): keep it so
        yield
        return
    old = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
