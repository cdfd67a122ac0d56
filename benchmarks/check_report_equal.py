"""Exact-equality check of the report's recomputed numbers between two versions of the code.

    PYTHONPATH=<old tree> python benchmarks/check_report_equal.py dump old.pkl FILE... --gold GOLD
    PYTHONPATH=<new tree> python benchmarks/check_report_equal.py dump new.pkl FILE... --gold GOLD
    python benchmarks/check_report_equal.py compare old.pkl new.pkl

``dump`` records, per file: ``recompute(result, gold)``, ``recompute(result)`` (the embedded gold copy),
``validate(result, gold)``, ``crossmodal.leaks`` and the leaderboard row ``make_rows`` gives (metrics,
warnings, cells, flags), all through ``check_files`` / ``make_rows`` as ``build_report`` runs them.
``compare`` demands ``==`` of every value (floats bit for bit: NaN only equals NaN, and 0.0 differs
from -0.0), prints how many files and keys were compared and every difference, and exits 1 on any.
"""
from __future__ import annotations

import argparse
import math
import pickle
import sys
from pathlib import Path
from typing import Any


def dump(out: str, files: list[str], gold: str) -> None:
    from eval import crossmodal
    from eval.leaderboard import check_files, make_reference, make_rows
    from eval.results import recompute, validate

    ref = make_reference(gold)
    ref, checked = check_files(files, ref)
    rejected = {c.path: c.reasons for c in checked if c.reasons}
    rows = {r.path: r for r in make_rows(checked, ref)}
    record: dict[str, Any] = {}
    for c in checked:
        result = c.result
        row = rows.get(c.path)
        record[Path(c.path).name] = {
            "recompute_gold": recompute(result, ref.gold),
            "recompute_embedded": recompute(result),
            "validate": validate(result, ref.gold),
            "leaks": _leaks(crossmodal, result),
            "rejected": rejected.get(c.path),
            "row": None if row is None else {
                "metrics": row.metrics, "warnings": row.warnings, "cells": row.cells, "has_gold": row.has_gold,
                "is_gold": row.is_gold, "leaks": row.leaks, "label": row.label, "setting": row.setting},
        }
    with open(out, "wb") as f:
        pickle.dump(record, f)
    print(f"dumped {len(record)} files to {out}")


def _leaks(crossmodal, result):
    try:
        return {s: crossmodal.leaks(result, s) for s in crossmodal.SETTINGS}
    except (ValueError, KeyError) as e:
        return f"{type(e).__name__}: {e}"


def same(a: Any, b: Any) -> bool:
    """Exact equality; floats compared bit for bit (NaN == NaN, 0.0 != -0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return type(a) is type(b) and a == b


def walk(a: Any, b: Any, where: str, diffs: list[str]) -> int:
    """Number of leaf values compared; differences appended to ``diffs``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            diffs.append(f"{where}: keys differ (or their order): only old {sorted(set(a) - set(b), key=str)[:5]}, "
                         f"only new {sorted(set(b) - set(a), key=str)[:5]}")
        return sum(walk(a[k], b[k], f"{where}/{k}", diffs) for k in a if k in b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        if len(a) != len(b):
            diffs.append(f"{where}: lengths {len(a)} != {len(b)}")
        return sum(walk(x, y, f"{where}[{i}]", diffs) for i, (x, y) in enumerate(zip(a, b)))
    if not same(a, b):
        diffs.append(f"{where}: old {a!r} != new {b!r}")
    return 1


def compare(old: str, new: str) -> int:
    with open(old, "rb") as f:
        a = pickle.load(f)
    with open(new, "rb") as f:
        b = pickle.load(f)
    diffs: list[str] = []
    n = walk(a, b, "", diffs)
    metric_keys = sum(len(v["recompute_gold"]["metrics"]) + len(v["recompute_embedded"]["metrics"])
                      + len((v["row"] or {}).get("metrics", {})) for v in a.values())
    print(f"{len(a)} files, {n} values compared ({metric_keys} of them aggregate metric keys): {len(diffs)} differences")
    for d in diffs[:50]:
        print("  " + d)
    return 1 if diffs else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("files", nargs="+")
    d.add_argument("--gold", required=True)
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    args = ap.parse_args()
    if args.cmd == "dump":
        dump(args.out, args.files, args.gold)
    else:
        sys.exit(compare(args.old, args.new))


if __name__ == "__main__":
    main()
