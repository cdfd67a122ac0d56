"""clearbench.threads: torch threads give way to other processes' CPU use and come back when it ends."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
import torch

from clearbench.threads import FIXED_ENV, ThreadGovernor, machine_busy_seconds, threads_for


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_for_leaves_the_cores_other_processes_use():
    assert threads_for(2, 2, 0.05) == 2   # idle machine: all of them
    assert threads_for(2, 2, 0.67) == 1   # a busy process that gets 2/3 of a core from our spinning threads
    assert threads_for(2, 2, 1.0) == 1
    assert threads_for(2, 2, 3.0) == 1    # never below one
    assert threads_for(4, 8, 1.0) == 4    # never above the stage's own count
    assert threads_for(8, 8, 2.2) == 6


class FakeMachine:
    """Clock and CPU counters the test moves by hand: ``others`` cores busy besides this process's ``own``."""

    def __init__(self):
        self.t = self.busy = self.own_s = 0.0

    def advance(self, seconds: float, others: float, own: float):
        self.t += seconds
        self.busy += seconds * (others + own)
        self.own_s += seconds * own


def _governor(m: FakeMachine, out) -> ThreadGovernor:
    return ThreadGovernor(threads=2, every=5.0, cores=2, busy=lambda: m.busy, own=lambda: m.own_s,
                          clock=lambda: m.t, out=out)


def test_governor_drops_to_one_thread_beside_a_busy_process_and_comes_back(torch_threads, monkeypatch):
    monkeypatch.delenv(FIXED_ENV, raising=False)
    torch.set_num_threads(2)
    m, out = FakeMachine(), io.StringIO()
    g = _governor(m, out)
    m.advance(5, others=0.02, own=1.9)
    assert g.tick() == 2 and torch.get_num_threads() == 2
    m.advance(2, others=1.0, own=1.0)
    assert g.tick() == 2  # under `every` seconds since the last sample: no change yet
    m.advance(3, others=0.8, own=1.2)
    assert g.tick() == 1 and torch.get_num_threads() == 1
    assert "torch threads 2 -> 1" in out.getvalue()
    m.advance(5, others=1.0, own=1.0)  # still busy: stays at one
    assert g.tick() == 1
    m.advance(5, others=0.0, own=1.0)  # the other process ended
    assert g.tick() == 2 and torch.get_num_threads() == 2
    assert g.changes == [(2, 1, 0.88), (1, 2, 0.0)]  # the 5 s window: 2 s at 1.0, 3 s at 0.8
    m.advance(5, others=1.0, own=1.0)
    g.tick()
    g.restore()
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), _governor(m, out) as g2:  # a loop that raises still gets its threads back
        m.advance(5, others=1.0, own=1.0)
        assert g2.tick() == 1
        raise RuntimeError("the step failed")
    assert torch.get_num_threads() == 2


def test_governor_is_off_with_the_fixed_switch_or_one_thread(torch_threads, monkeypatch):
    torch.set_num_threads(2)
    m = FakeMachine()
    monkeypatch.setenv(FIXED_ENV, "1")
    g = _governor(m, io.StringIO())
    m.advance(5, others=1.0, own=1.0)
    assert g.tick() == 2 and not g.enabled
    monkeypatch.delenv(FIXED_ENV)
    single = ThreadGovernor(threads=1, busy=lambda: m.busy, own=lambda: m.own_s, clock=lambda: m.t)
    assert not single.enabled
    no_proc = ThreadGovernor(threads=2, busy=lambda: None)  # no /proc/stat (not Linux)
    assert not no_proc.enabled and no_proc.tick() == torch.get_num_threads()


@pytest.mark.skipif(machine_busy_seconds() is None, reason="needs /proc/stat")
def test_governor_sees_a_real_busy_process(torch_threads, monkeypatch):
    """The machine's own counters: a spinning process is one busy core of the two the governor is told about."""
    monkeypatch.delenv(FIXED_ENV, raising=False)
    torch.set_num_threads(2)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        g = ThreadGovernor(threads=2, every=1.0, cores=2, out=io.StringIO())
        time.sleep(1.5)
        assert g.tick() == 1 and torch.get_num_threads() == 1
        assert g.changes[0][2] >= 0.6  # the spinner's share of a core, at least
    finally:
        spinner.kill()
        spinner.wait()
