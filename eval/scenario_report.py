"""The scenarios' report (``report/scenarios/``): tables (md, csv), plots (png) and one static HTML page with the
plots inline, from the scenario result files (eval.scenarios), each validated (recomputed) before it is shown.

restore: one row per corruption set and unlearning run: restoration per modality, residual corruption, binding
restoration, leak rate and collateral; the clean and corrupted models' levels; one bar plot per corruption set.
sequential: one row per method: areas under the forget and retain curves, re-emergence; the curves in one plot.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from eval.report_html import page, sortable_table, td
from eval.scenarios import MODALITY_OF, validate_scenario

MODALITIES = tuple(MODALITY_OF.values())  # text, image, joint
RESTORE_COLUMNS = ([(f"R {m}", f"restoration/{m}/share") for m in MODALITIES]
                   + [(f"residual {m}", f"residual/{m}/corrupt_share") for m in MODALITIES]
                   + [("binding", "binding/image/naming_acc"), ("leak", "leak/rate"), ("leak pairs", "leak/pairs")]
                   + [(f"Δ {s} prob", f"collateral/{s}/prob") for s in ("retain", "real_faces", "real_world")])
LEVEL_COLUMNS = [(f"{m} {v}", f"{m}/{v}") for m in MODALITIES for v in ("share", "corrupt_share")] + [
    ("naming acc", "image/naming_acc")]
SEQUENTIAL_COLUMNS = [("forget prob AUC", "forget/prob/auc"), ("forget known AUC", "forget/known/auc"),
                      ("retain prob AUC", "retain/prob/auc"), ("retain known AUC", "retain/known/auc"),
                      ("real faces prob AUC", "real_faces/prob/auc"), ("real world prob AUC", "real_world/prob/auc"),
                      ("forget prob start", "forget/prob/start"), ("forget prob end", "forget/prob/end"),
                      ("re-emergence rate", "reemergence/known/rate"), ("forgotten", "reemergence/known/forgotten"),
                      ("re-emerged", "reemergence/known/reemerged")]


COUNTS = ("leak/pairs", "reemergence/known/forgotten", "reemergence/known/reemerged")


def _fmt(key: str, v: Any) -> str:
    """Counts as integers, everything else with 3 decimals (-0.000 as 0.000); None (undefined) as a dash."""
    return "–" if v is None else f"{int(v)}" if key in COUNTS else f"{v + 0.0:.3f}".replace("-0.000", "0.000")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ rows
def _set(result: dict[str, Any]) -> str:
    return f"{result['provenance']['corruption']}-k{result['provenance']['k']}"


def restore_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (corruption set, run): its label and the RESTORE_COLUMNS values."""
    rows = []
    for r in results:
        rows += [{"set": _set(r), "run": run} | {k: scores.get(k) for _, k in RESTORE_COLUMNS}
                 for run, scores in r["scores"].items()]
    return rows


def level_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clean and corrupted models' levels per corruption set (the corruption's effect)."""
    return [{"set": _set(r), "run": model} | {k: r["levels"][model].get(k) for _, k in LEVEL_COLUMNS}
            for r in results for model in ("clean", "corrupted")]


def sequential_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"set": f"{r['provenance']['sequential']['forget']} in {len(r['requests'])}", "run": r["provenance"]["method"]}
            | {k: r["scores"].get(k) for _, k in SEQUENTIAL_COLUMNS} for r in results]


# ----------------------------------------------------------------------------------------- plots
def restore_plot(result: dict[str, Any]) -> bytes:
    """Restoration R per modality (truth's probability share) for every run of one corruption set."""
    runs = list(result["scores"])
    fig = Figure(figsize=(max(6.0, 0.7 * len(runs) + 2.5), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(MODALITIES)
    for j, m in enumerate(MODALITIES):
        values = [result["scores"][run].get(f"restoration/{m}/share") for run in runs]
        xs = [i + (j - 1) * width for i in range(len(runs))]
        ax.bar(xs, [0.0 if v is None else v for v in values], width=width, label=m, edgecolor="black", linewidth=0.3)
        for x, v in zip(xs, values):
            if v is None:
                ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.axhline(1.0, color="tab:green", linestyle="--", linewidth=1, label="clean level")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=8)
    prov = result["provenance"]
    ax.set_title(f"restoration R per modality: corruption {prov['corruption']}, k = {prov['k']}")
    ax.set_ylabel("R = (u − corrupted) / (clean − corrupted)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def sequential_plot(results: Sequence[dict[str, Any]]) -> bytes:
    """The forget-so-far and retain curves (answer probability) per method over the requests."""
    fig = Figure(figsize=(10.0, 4.0))
    axes = fig.subplots(1, 2)
    for ax, scope in zip(axes, ("forget", "retain")):
        for r in results:
            curve = r["curves"].get(scope, {}).get("prob", [])
            steps = [t for t, v in enumerate(curve) if v is not None]
            ax.plot(steps, [curve[t] for t in steps], marker=".", label=r["provenance"]["method"])
        if results and scope == "forget":
            ax.axhline(results[0]["scores"]["forget/prob/start"], color="gray", linestyle="--", label="target (all requests)")
        ax.set_xlabel("requests unlearned (0: the target)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("answer probability")
        ax.set_title("forget: the records of the requests so far" if scope == "forget" else "retain")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


# ----------------------------------------------------------------------------------------- files
def _markdown(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    head = ["set", "run", *(h for h, _ in columns)]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([row["set"], row["run"], *(_fmt(k, row[k]) for _, k in columns)]) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["set", "run", *(k for _, k in columns)])
    writer.writerows([row["set"], row["run"], *("" if row[k] is None else repr(row[k]) for _, k in columns)]
                     for row in rows)
    return buf.getvalue()


def _html_table(name: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    cells = [[td(row["set"].replace("-", "\u2011"), row["set"], "l"), td(row["run"], row["run"], "l"),  # no-break hyphen
              *(td(_fmt(k, row[k]), "-Infinity" if row[k] is None else repr(row[k])) for _, k in columns)]
             for row in rows]
    return sortable_table(name, ["set", "run", *(h for h, _ in columns)], cells)


def _img(name: str, png: bytes) -> str:
    return f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'


def build_scenario_report(restore: Sequence[str | Path], sequential: Sequence[str | Path], out: str | Path) -> Path:
    """Validate every result file, then write tables.md, restore.csv / restore_levels.csv / sequential.csv, the
    PNGs and index.html to ``out``."""
    results = {kind: [json.loads(Path(p).read_text()) for p in paths]
               for kind, paths in (("restore", restore), ("sequential", sequential))}
    bad = [f"{p}: {problems[0]}" for kind, paths in (("restore", restore), ("sequential", sequential))
           for p, r in zip(paths, results[kind]) if (problems := validate_scenario(r))]
    if bad:
        raise ValueError("scenario results that do not validate: " + "; ".join(bad))
    tables = {"restore": (RESTORE_COLUMNS, restore_rows(results["restore"])),
              "restore_levels": (LEVEL_COLUMNS, level_rows(results["restore"])),
              "sequential": (SEQUENTIAL_COLUMNS, sequential_rows(results["sequential"]))}
    tables = {k: v for k, v in tables.items() if v[1]}
    plots = {f"restore_{_set(r)}.png": restore_plot(r) for r in results["restore"]}
    if results["sequential"]:
        plots["sequential.png"] = sequential_plot(results["sequential"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    titles = {"restore": "Restoration (RESTOR)", "restore_levels": "Clean and corrupted levels (victims' true facts)",
              "sequential": "Sequential deletion requests"}
    (out / "tables.md").write_text("\n".join(_markdown(titles[k], *v) for k, v in tables.items()), encoding="utf-8")
    for name, (columns, rows) in tables.items():
        (out / f"{name}.csv").write_text(_csv(columns, rows), encoding="utf-8")
    for name, png in plots.items():
        (out / name).write_bytes(png)
    body = []
    for name, (columns, rows) in tables.items():
        body += [f"<h2>{html.escape(titles[name])}</h2>", _html_table(name, columns, rows)]
        body += [_img(p, png) for p, png in plots.items() if p.startswith(name + "_") or p == f"{name}.png"]
    intro = ["<li>R = (u − corrupted) / (clean − corrupted) on the truth's probability share; residual = the corrupted "
             "value's share, 0 = clean level, 1 = corrupted level; – : the corruption did not move that level</li>",
             "<li>every number is recomputed from the stored per-example outputs (docs/scenarios.md)</li>"]
    (out / "index.html").write_text(page("clearbench scenarios", intro, body), encoding="utf-8")
    return out
