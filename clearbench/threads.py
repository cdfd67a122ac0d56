"""Torch CPU threads that give way while other processes keep the machine's cores busy.

A torch op split over 2 threads waits for both halves: when another process holds one of the 2 cores, the
tiny model's 2-thread training loop ran at 3.7 steps/s against 11.1 idle, slower than 1 thread beside the same
process (6.5; ``benchmarks/bench_threads.py``, docs/performance.md). ``ThreadGovernor.tick()``, called once per
training step, samples the machine's CPU use every ``every`` seconds (``/proc/stat`` minus this process's own CPU
time) and sets torch's thread count to the cores the other processes leave free: at least 1, at most the count the
stage started with, and back up once they are gone. Each change is printed. The thread count changes float
rounding, so a run beside other work is not bit-identical to an idle one; ``CLEARBENCH_FIXED_THREADS=1`` keeps
the count fixed.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import torch

FIXED_ENV = "CLEARBENCH_FIXED_THREADS"


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot, summed over cores (``/proc/stat``); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is already in user


def threads_for(max_threads: int, cores: int, others: float) -> int:
    """Threads to use when other processes keep ``others`` cores' worth busy: the free cores, rounded to the nearest
    (a process that gets half a core from our spinning threads still counts), within [1, max_threads]."""
    return max(1, min(max_threads, int(cores - others + 0.5)))


class ThreadGovernor:
    def __init__(self, threads: int | None = None, every: float = 5.0, cores: int | None = None,
                 busy: Callable[[], float | None] = machine_busy_seconds, own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic, out=None) -> None:
        self.max_threads = threads or torch.get_num_threads()
        self.cores = cores or os.cpu_count() or 1
        self.every, self._busy, self._own, self._clock = every, busy, own, clock
        self.out = out
        self.enabled = self.max_threads > 1 and os.environ.get(FIXED_ENV, "") not in ("1", "true")
        self.changes: list[tuple[int, int, float]] = []  # (from, to, others) per change
        self._last = self._sample() if self.enabled else None
        if self.enabled and self._last is None:
            self.enabled = False  # no /proc/stat: nothing to go by

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self._busy()
        return None if busy is None else (self._clock(), busy, self._own())

    def tick(self) -> int:
        """Adjust torch's threads if ``every`` seconds have passed since the last sample; -> the current count."""
        current = torch.get_num_threads()
        if not self.enabled or self._clock() - self._last[0] < self.every:
            return current
        now = self._sample()
        if now is None:
            return current
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9))
        want = threads_for(self.max_threads, self.cores, others)
        if want != current:
            torch.set_num_threads(want)
            self.changes.append((current, want, round(others, 2)))
            print(f"clearbench: torch threads {current} -> {want}: other processes keep {others:.1f} of "
                  f"{self.cores} cores busy ({FIXED_ENV}=1 keeps them fixed)", file=self.out or sys.stderr, flush=True)
        return want

    def restore(self) -> None:
        """Back to the stage's own thread count (the next stage in this process starts from it)."""
        if self.enabled and torch.get_num_threads() != self.max_threads:
            torch.set_num_threads(self.max_threads)

    def __enter__(self) -> "ThreadGovernor":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()  # also when the loop raised
