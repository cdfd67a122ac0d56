"""Seconds per result file of the leaderboard's recomputation (the part of ``build_report`` that dominates it).

    PYTHONPATH=. python benchmarks/bench_report.py [RESULTS_DIR] [N] [--gold FILE]

(PYTHONPATH picks the code that is timed: ``PYTHONPATH=/tmp/old`` after ``git archive REV eval clearbench | tar -x
-C /tmp/old`` times another revision with this script.)

Takes the first N result files of RESULTS_DIR in name order (default: 3 of /work/runs/tiny-s0/results;
the gold result itself is left out of them, so the gold row is added as the report adds it) and times, as
``eval.leaderboard.build_report`` runs them:

- ``reference``: ``make_reference(gold)`` (reads the gold result and validates it: one recomputation);
- ``check``: ``check_files`` (reads each file and validates it: every aggregate recomputed and compared);
- ``rows``: ``make_rows`` (the report's numbers: ``recompute`` per file, plus the gold row, and the
  cross-modal leak counts).

Prints each phase's wall seconds and CPU seconds (this process and its children), ``check + rows`` per file
(the per-file cost of a report), and the load average before and after (the machine may be busy: compare
figures taken at similar loads; CPU seconds depend less on the load than wall seconds).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_DIR = "/work/runs/tiny-s0/results"


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def pick(results: Path, n: int, gold: Path) -> list[Path]:
    files = sorted(p for p in results.glob("*.json") if not p.name.endswith(".verified.json") and p != gold)
    if len(files) < n:
        raise SystemExit(f"{results} holds {len(files)} result files besides the gold, {n} asked for")
    return files[:n]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default=DEFAULT_DIR, help="directory of result files")
    ap.add_argument("n", nargs="?", type=int, default=3, help="number of result files to time")
    ap.add_argument("--gold", default=None, help="gold result (default: RESULTS/gold-10.json)")
    args = ap.parse_args(argv)
    from eval.leaderboard import check_files, make_reference, make_rows

    results = Path(args.results)
    gold = Path(args.gold) if args.gold else results / "gold-10.json"
    paths = pick(results, args.n, gold)
    print(f"{len(paths)} files: {', '.join(p.name for p in paths)}; gold {gold}")
    print(f"before: {load_text()}", flush=True)
    t0, c0 = time.perf_counter(), cpu()
    ref = make_reference(gold)
    t1, c1 = time.perf_counter(), cpu()
    ref, checked = check_files([str(p) for p in paths], ref)
    t2, c2 = time.perf_counter(), cpu()
    rows = make_rows(checked, ref, [])
    t3, c3 = time.perf_counter(), cpu()
    rejected = [c.path for c in checked if c.reasons]
    print(f"reference {t1 - t0:.2f} s, check {t2 - t1:.2f} s, rows {t3 - t2:.2f} s ({len(rows)} rows, "
          f"{len(rejected)} rejected)")
    n = len(paths)
    print(f"per file: check {(t2 - t1) / n:.2f} s, rows {(t3 - t2) / n:.2f} s, check + rows {(t3 - t1) / n:.2f} s "
          f"(CPU {(c3 - c1) / n:.2f} s)")
    print(f"after: {load_text()}")


if __name__ == "__main__":
    main()
