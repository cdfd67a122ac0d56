"""Tabulate and plot how the study's time grows, from several ``bench_study.py --json`` files.

    python benchmarks/plot_scaling.py RUN.json [RUN.json ...] [--by authors|forget|busy] [--png F]

Prints a markdown table (one row per run: the varied quantity, wall minutes, stage-minutes per stage kind,
core-minutes, load, quality targets met) and, with ``--png``, plots wall minutes and each stage kind's
stage-minutes against the varied quantity. ``--by forget`` counts only the stages that depend on the forget split
(gold-NN, unlearn/...-NN, evaluate/...-NN and the report; world, base and target are the same for every split, and
``bench_study.py --reuse`` runs a second split in the first one's directory), with their span (first start to last
end) as the wall time. Runs of other presets, core counts or overrides are listed as they
are: compare only runs that differ in the one quantity (the table shows each run's overrides).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_study import kind_totals, stage_times, study_facts  # noqa: E402  (what a report records, read the same way)

KINDS = ["generate", "pretrain", "finetune", "unlearn", "evaluate", "report"]


def out_dir(report: dict) -> Path | None:
    m = re.search(r"--out (\S+)", report.get("command", ""))
    return Path(m.group(1)) if m else None


def facts(report: dict) -> dict:
    """The run's world size and forget splits: from the report, or (older reports) from its output directory."""
    if "world" not in report or "forget_splits" not in report:
        out = out_dir(report)
        report = (study_facts(out) if out is not None else {}) | report
    return {"authors": (report.get("world") or {}).get("authors"), "forget_splits": report.get("forget_splits") or []}


def kinds(report: dict) -> dict[str, float]:
    """Stage-seconds per stage kind (older reports have no per-kind totals: summed from their stages)."""
    totals = report["kinds"] if "kinds" in report else kind_totals(report["stages"])
    return {k: v["seconds"] for k, v in totals.items()}


def core_minutes(report: dict) -> float | None:
    """CPU minutes of every stage's own process, from the cost records (None when one is missing)."""
    cpu = [(s.get("cost") or {}).get("cpu_seconds") for s in report["stages"]
           if s["kind"] not in ("generate", "report")]
    return None if any(c is None for c in cpu) else sum(cpu) / 60


def forget_part(report: dict) -> dict:
    """The report cut to its forget-split stages, with their span as ``total_seconds`` (start times from the report
    or, for older reports, from the last run of each stage in the study directory's run.jsonl)."""
    suffixes = tuple(f"-{s.removeprefix('forget')}" for s in facts(report)["forget_splits"])
    stages = [s for s in report["stages"] if s["stage"] == "report" or s["stage"].endswith(suffixes)]
    if not suffixes or not stages:
        raise SystemExit(f"{report.get('command', '?')}: no forget-split stages to count")
    if any(s.get("start") is None for s in stages):
        out = out_dir(report)
        log = {s["stage"]: s for s in stage_times(out)} if out is not None and (out / "run.jsonl").is_file() else {}
        if any(log.get(s["stage"], {}).get("start") is None for s in stages):
            raise SystemExit(f"{report.get('command', '?')}: stage start times are neither in the report nor in "
                             "its run.jsonl")
        stages = [s | {"start": log[s["stage"]]["start"]} for s in stages]
    span = max(s["start"] + s["seconds"] for s in stages) - min(s["start"] for s in stages)
    return report | {"stages": stages, "kinds": kind_totals(stages), "total_seconds": span}


def forget_percents(report: dict) -> tuple[int, ...]:
    return tuple(int(s.removeprefix("forget")) for s in facts(report)["forget_splits"])


def x_value(report: dict, by: str):
    if by == "authors":
        return facts(report)["authors"]
    if by == "forget":
        return ",".join(f"{p} %" for p in forget_percents(report))
    return report.get("busy_processes", 0)


def rows(reports: list[dict], by: str) -> list[dict]:
    out = []
    for r in reports:
        r = forget_part(r) if by == "forget" else r
        k = kinds(r)
        met = [q["met"] for q in r.get("quality", [])]
        x = x_value(r, by)
        out.append({"x": x, "order": forget_percents(r) if by == "forget" else x, "wall_min": r["total_seconds"] / 60,
                    "kinds": {name: k.get(name, 0.0) / 60 for name in KINDS}, "core_min": core_minutes(r),
                    "load": r.get("load_during_mean"), "busy": r.get("busy_processes", 0),
                    "quality": f"{sum(met)}/{len(met)}" if met else "n/a",
                    "overrides": " ".join(r.get("overrides", [])),
                    "exit": r.get("exit_code")})
    return sorted(out, key=lambda row: (str(type(row["order"])), row["order"]))  # 1 %, 5 %, 10 %: by number


def table(rs: list[dict], by: str) -> str:
    head = [by, "span min (forget-split stages)" if by == "forget" else "wall min",
            *[f"{k} (stage-min)" for k in KINDS], "CPU min (stages)", "load during",
            *(["busy"] if by != "busy" else []), "quality met", "overrides"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        cells = [str(r["x"]), f"{r['wall_min']:.1f}", *[f"{r['kinds'][k]:.1f}" for k in KINDS],
                 "–" if r["core_min"] is None else f"{r['core_min']:.1f}",
                 "–" if r["load"] is None else f"{r['load']:.2f}", *([str(r["busy"])] if by != "busy" else []),
                 r["quality"],
                 r["overrides"] or "–"]
        if r["exit"] not in (0, None):
            cells[1] += f" (exit {r['exit']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rs: list[dict], by: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.add_subplot()
    # authors to scale: 50, 100, 200 are not evenly spaced
    numeric = by == "authors" and all(isinstance(r["x"], int) for r in rs)
    xs = [r["x"] if numeric else str(r["x"]) for r in rs]
    ax.plot(xs, [r["wall_min"] for r in rs], "o-", color="black", lw=2,
            label="wall time of the forget-split stages" if by == "forget" else "study wall time")
    for i, k in enumerate(KINDS):  # one colour per kind in every figure
        ys = [r["kinds"][k] for r in rs]
        if any(y > 0.05 for y in ys):
            ax.plot(xs, ys, "o--", lw=1, color=f"C{i}", label=f"{k} (stage-minutes)")
    ax.set_xlabel({"authors": "authors in the world", "forget": "forget split",
                   "busy": "busy background processes"}[by])
    ax.set_ylabel("minutes")
    ax.set_ylim(bottom=0)
    if numeric:
        ax.set_xticks(xs)
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("clearbench study time (benchmarks/bench_study.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="bench_study.py --json files")
    ap.add_argument("--by", choices=["authors", "forget", "busy"], default="authors")
    ap.add_argument("--png", type=Path, help="also write the plot here")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.runs if not p.is_file()]
    if missing:
        raise SystemExit(f"no such file: {', '.join(missing)}")
    rs = rows([json.loads(p.read_text()) for p in args.runs], args.by)
    print(table(rs, args.by))
    if args.png:
        plot(rs, args.by, args.png)
        print(f"plot written to {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
