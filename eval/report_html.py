"""The leaderboard's rendering: PNG plots (matplotlib, Agg, no pyplot state) and one static,
self-contained HTML page (inline CSS and JS, plots as base64 data URIs, no external assets).

The numbers come from ``eval.leaderboard`` rows, which are recomputed from per-example values;
unlearning curves are the training logs as recorded (``curve`` in a result or ``curve.jsonl``
in a run directory) and are drawn, never ranked.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clearbench.provenance import read_run
from eval.leaderboard import (FQ_MODALITY_KEYS, MU_KEY, RANK_KEY, RANKING_RULE, Checked, Reference, Row,
                              columns, fmt, rank_text, setting_title)

_COLORS = {"text": "tab:blue", "visual": "tab:orange", "multimodal": "tab:green", None: "tab:gray"}


# --------------------------------------------------------------------------- curves
def _curve_points(entries: Sequence[Any]) -> dict[str, list[tuple[float, float]]]:
    """[{step, metric: value, ...}] (or {step, metrics: {...}}) -> {metric: [(step, value)]}."""
    out: dict[str, list[tuple[float, float]]] = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("step"), (int, float)):
            continue
        values = {**{k: v for k, v in e.items() if k != "metrics"}, **(e.get("metrics") or {})}
        for k, v in values.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.setdefault(k, []).append((float(e["step"]), float(v)))
    return {k: sorted(v) for k, v in out.items()}


def _run_label(run_dir: Path) -> str:
    try:
        info = read_run(run_dir)
    except (OSError, json.JSONDecodeError):
        info = {}
    for cand in (info.get("run"), info.get("unlearn"), info):
        if isinstance(cand, dict) and cand.get("method"):
            l1 = float(cand.get("l1_lambda") or 0.0)
            return f"{cand['method']} + L1" if l1 > 0 else str(cand["method"])
    return run_dir.name


def collect_curves(rows: Sequence[Row], curve_dirs: Sequence[str | Path] = ()) -> tuple[dict, list[str]]:
    """{label: {metric: [(step, value)]}} from rows carrying ``curve`` and from run directories
    holding ``curve.jsonl``; directories without one are skipped with a note."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    notes: list[str] = []
    for row in rows:
        if row.curve and (points := _curve_points(row.curve)):
            curves[row.label] = points
    for d in map(Path, curve_dirs):
        path = d / "curve.jsonl"
        if not path.is_file():
            notes.append(f"{d}: no curve.jsonl, no unlearning curve drawn")
            continue
        entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        label = _run_label(d)
        label = label if label not in curves else f"{label} [{d.name}]"
        if points := _curve_points(entries):
            curves[label] = points
        else:
            notes.append(f"{path}: no (step, value) entries")
    return curves, notes


# --------------------------------------------------------------------------- plots
def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "run"


def tradeoff_plot(rows: Sequence[Row]) -> bytes:
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for row in rows:
        if RANK_KEY not in row.metrics or MU_KEY not in row.metrics:
            continue
        x, y = row.metrics[MU_KEY], row.metrics[RANK_KEY]
        ax.scatter([x], [y], color=_COLORS.get(row.setting, "black"), marker="*" if row.is_gold else "o", s=60)
        ax.annotate(row.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for setting in sorted({r.setting for r in rows}, key=lambda s: (s is None, s or "")):
        ax.scatter([], [], color=_COLORS.get(setting, "black"), label=setting or "reference (no method)")
    if rows:
        ax.legend(title="forget modality", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("model utility (all/all/model_utility) →")
    ax.set_ylabel("forget quality D vs gold (forget/all/forget_quality_d) ↓")
    ax.set_title("forget quality vs model utility (★ gold, D = 0)")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def fq_modality_plot(rows: Sequence[Row]) -> bytes:
    keys = [k for k in FQ_MODALITY_KEYS if any(k in r.metrics for r in rows)]
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(len(keys), 1)
    for j, k in enumerate(keys):
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r.metrics.get(k, 0.0) for r in rows], width=width, label=k.split("/")[1])
    ticks = [r.label if r.setting is None else f"{r.label} ({r.setting})" for r in rows]
    ax.set_xticks(range(len(rows)), ticks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("forget quality D vs gold ↓")
    ax.set_title("forget quality per forget modality (KS D, the same n in each)")
    ax.legend(title="scored on", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def curve_plot(label: str, points: dict[str, list[tuple[float, float]]]) -> bytes:
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    for metric, pts in sorted(points.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=metric)
    ax.set_xlabel("step")
    ax.set_title(f"unlearning curve: {label}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def make_plots(rows: Sequence[Row], curves: dict[str, dict]) -> dict[str, bytes]:
    """{file name: PNG bytes}: the trade-off scatter, per-modality FQ bars, one curve per run."""
    plots = {"tradeoff.png": tradeoff_plot(rows)}
    if any(k in r.metrics for r in rows for k in FQ_MODALITY_KEYS):
        plots["fq_modality.png"] = fq_modality_plot(rows)
    for label, points in curves.items():
        name = f"curve_{_slug(label)}.png"
        while name in plots:
            name = name[:-4] + "_.png"
        plots[name] = curve_plot(label, points)
    return plots


# --------------------------------------------------------------------------- HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none}td.l{text-align:left}pre{text-align:left;
max-height:24em;overflow:auto;font-size:11px}img{max-width:100%;border:1px solid #eee}.rej{color:#a00}"""
_JS = """document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], i = th.cellIndex;
    var asc = th.getAttribute("data-dir") !== "asc";
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].getAttribute("data-v"), y = b.cells[i].getAttribute("data-v");
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});"""


def td(text: str, value: Any, cls: str = "") -> str:
    """A table cell showing ``text`` and sorting by ``value``."""
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{html.escape(str(value), quote=True)}">{html.escape(text)}</td>'


def sortable_table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose headers sort it on click; ``rows`` are lists of ``td()`` cells."""
    out = [f'<table class="sortable" id="table-{html.escape(table_id)}"><thead><tr>',
           *(f'<th title="click to sort">{html.escape(h)}</th>' for h in head), "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(cells) + "</tr>" for cells in rows]
    return "\n".join(out + ["</tbody></table>"])


def page(title: str, intro: Sequence[str], body: Sequence[str]) -> str:
    """One self-contained HTML page: the title, a list of ``intro`` items (HTML), then ``body`` (HTML)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1><ul>", *intro, "</ul>", *body,
             f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(out: str | Path, markdown: str, tabs: dict[str, Any], table_csv, index_html: str,
                 plots: dict[str, bytes] | None = None) -> Path:
    """The report files of both report builders: tables.md, table_<setting>.csv, PNGs, index.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(markdown, encoding="utf-8")
    for setting, entries in tabs.items():
        (out / f"table_{setting}.csv").write_text(table_csv(entries), encoding="utf-8")
    for name, png in (plots or {}).items():
        (out / name).write_bytes(png)
    (out / "index.html").write_text(index_html, encoding="utf-8")
    return out


def table_html(setting: str, entries: list[tuple[int | None, Row]]) -> str:
    cols = columns()
    rows = []
    for rank, row in entries:
        prov = html.escape(json.dumps(row.provenance, indent=1, sort_keys=True, default=str))
        rows.append([td(rank_text(rank), 0 if rank is None else rank), td(row.label, row.label, "l"),
                     *(td(fmt(k, row.metrics.get(k)), repr(row.metrics[k]) if k in row.metrics else "-Infinity")
                       for _, k in cols),
                     f'<td class="l" data-v="{html.escape(row.path)}"><details><summary>{html.escape(row.path)}'
                     f"</summary><pre>{prov}</pre></details></td>"])
    return sortable_table(setting, ["rank", "model", *(h for h, _ in cols), "provenance"], rows)


def rejected_html(items: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The rejected files, each (label, reasons)."""
    e = html.escape
    lines = [f"<li><code>{e(label)}</code><ul>{''.join(f'<li>{e(r)}</li>' for r in reasons)}</ul></li>"
             for label, reasons in items]
    return '<h2>rejected files</h2><ul class="rej" id="rejected">' + "".join(lines or ["<li>none</li>"]) + "</ul>"


def render(ref: Reference, tabs: dict[str, list], rejected: Sequence[Checked], plots: dict[str, bytes],
           notes: Sequence[str] = ()) -> str:
    e = html.escape
    gold = (f"<code>{e(str(ref.gold_path))}</code> (model <code>{e(str(ref.gold_fingerprint))}</code>)"
            if ref.gold else "none given (embedded gold copies not checked against a leaderboard gold)")
    intro = [f"<li>forget split: <code>{e(str(ref.forget_split))}</code>; world fingerprint: "
             f"<code>{e(str(ref.world_fingerprint))}</code></li>",
             f"<li>gold result: {gold}</li>", f"<li>reference: {e(ref.source or 'none')}</li>",
             f'<li id="ranking-rule">ranking: {e(RANKING_RULE)}</li>',
             "<li>every number is recomputed from the result files' per-example values; click a header "
             "to sort</li>"]
    body = [part for setting, entries in tabs.items()
            for part in (f"<h2>{e(setting_title(setting))}</h2>", table_html(setting, entries))]
    body.append("<h2>plots</h2>")
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(name)}</figcaption></figure>")
    body += [f"<p>{e(n)}</p>" for n in notes]
    body.append(rejected_html([(c.path, c.reasons) for c in rejected]))
    return page("clearbench leaderboard", intro, body)
