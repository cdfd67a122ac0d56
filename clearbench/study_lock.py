"""The lock of a study directory: one ``clearbench run`` at a time per directory (``run.lock``: the holder's pid,
host and start time); the lock of a process that is gone is taken over with a note."""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

LOCK_FILE = "run.lock"


class StudyLocked(FileExistsError):
    """Another live process is running a study in this directory (its lock file exists)."""


@contextlib.contextmanager
def study_lock(dirs: list[Path], echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold ``run.lock`` (this process's pid, host and start time) in each of ``dirs`` while a study runs: a
    second ``clearbench run`` on the same directory is refused with the holder's pid; the lock of a process
    that is gone (killed) is taken over with a note."""
    held: list[Path] = []
    try:
        for d in dirs:
            held.append(_acquire(Path(d) / LOCK_FILE, echo))
        yield
    finally:
        for path in held:
            path.unlink(missing_ok=True)


def _acquire(path: Path, echo: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if _alive(holder):
                raise StudyLocked(
                    f"{path.parent} is being run by process {holder['pid']} on {holder['host']} (lock {path}); wait "
                    f"for it to finish or stop it; if that process is gone, remove the lock") from None
            echo(f"note: taking over {path} from process {holder.get('pid')}, which is no longer running")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}, f)
        return path
    raise StudyLocked(f"could not take the lock {path}: other processes keep taking it; run one study at a time")


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # written by a process killed between creating and filling it
        return {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's process still runs (on another host: assumed so, it cannot be checked from here)."""
    if "pid" not in holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return holder.get("started") == _start_time(holder["pid"])  # else the pid was reused


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
