"""The leaderboard's rendering: PNG plots (matplotlib, Agg, no pyplot state) and one static,
self-contained HTML page (inline CSS and JS, plots as base64 data URIs, no external assets).

The numbers come from ``eval.leaderboard`` rows, which are recomputed from per-example values;
unlearning curves are the training logs as recorded (``curve`` in a result or ``curve.jsonl``
in a run directory) and are drawn, never ranked.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from clearbench.provenance import read_run, write_text_atomic
from eval import plots
from eval.crossmodal import matrix
from eval.leaderboard import (FQ_MODALITY_KEYS, RANKING_RULE, Checked, Reference, Row, lineage_notes, method_label,
                              setting_grids, setting_title)
from eval.report_columns import Grid, Shown, Table, lead_note
from eval.report_sections import has_all_settings


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
            return method_label(cand)
    return run_dir.name


def collect_curves(rows: Sequence[Row], curve_dirs: Sequence[str | Path] = ()) -> tuple[dict, list[str]]:
    """{label: {metric: [(step, value)]}} from rows carrying ``curve`` and from run directories
    holding ``curve.jsonl``; directories without one are skipped with a note."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    notes: list[str] = []
    for row in rows:
        if row.curve and (points := _curve_points(row.curve)):
            curves[row.label if row.label not in curves else f"{row.label} ({row.setting})"] = points
    for d in map(Path, curve_dirs):
        path = d / "curve.jsonl"
        if not path.is_file():
            notes.append(f"{d}: no curve.jsonl, no unlearning curve drawn")
            continue
        try:
            entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            notes.append(f"{path}: cannot be read ({type(e).__name__}: {e}), no unlearning curve drawn")
            continue
        label = _run_label(d)
        label = label if label not in curves else f"{label} [{d.name}]"
        if points := _curve_points(entries):
            curves[label] = points
        else:
            notes.append(f"{path}: no (step, value) entries")
    return curves, notes


# --------------------------------------------------------------------------- plots
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "run"


def make_plots(rows: Sequence[Row], curves: dict[str, dict]) -> tuple[dict[str, bytes], list[str]]:
    """({file name: PNG bytes}, notes): CLEAR's forget vs retain scatter, forget quality vs model utility,
    forget quality per evaluated modality, each method across forget settings (when the study has two or
    more), one curve per run. A plot that fails is a note, never a stopped report."""
    wanted: list[tuple[str, Any]] = [("forget_retain.png", lambda: plots.forget_retain_plot(rows)),
                                     ("tradeoff.png", lambda: plots.tradeoff_plot(rows))]
    if any(k in r.metrics for r in rows for k in FQ_MODALITY_KEYS):
        wanted.append(("fq_modality.png", lambda: plots.fq_modality_plot(rows)))
    if len({r.setting for r in rows} - {None}) >= 2:
        wanted.append(("settings.png", lambda: plots.settings_plot(rows)))
    if any(r.setting is not None and plots.COST_KEY in r.metrics for r in rows):
        wanted.append(("cost.png", lambda: plots.cost_plot(rows)))
    if any(r.attacks for r in rows):
        wanted.append(("attacks.png", lambda: plots.attacks_plot(rows)))
    if any(v.get("curve") for r in rows for a in r.attacks.values() for v in a.values()):
        wanted.append(("recovery_curves.png", lambda: plots.recovery_curves_plot(rows)))
    if has_all_settings(rows):
        wanted.append(("crossmodal.png", lambda: plots.crossmodal_plot(matrix(rows, "probability"),
                                                                        "forget probability")))
    for label, points in curves.items():
        name = f"curve_{_slug(label)}.png"
        while name in {n for n, _ in wanted}:
            name = name[:-4] + "_.png"
        wanted.append((name, lambda label=label, points=points: plots.curve_plot(label, points)))
    out, notes = {}, []
    for name, draw in wanted:
        try:
            out[name] = draw()
        except Exception as e:  # a plot is never worth losing the report over
            notes.append(f"{name} could not be drawn: {type(e).__name__}: {e}")
    return out, notes


PLOT_CAPTIONS = {
    "forget_retain.png": "Forget: the mean answer probability on the forget set (lower = more forgotten; not "
                         "CLEAR's Forget column, which scores a model sure of the truth near 0 too) against CLEAR's "
                         "Retain (hmean of probability and truth ratio on retain captions and naming; higher = "
                         "kept). One panel per forget setting; numbers are the rows in the legend; ★ the gold model.",
    "tradeoff.png": "Forget quality D (the ranking statistic, gold = 0) against model utility, per forget setting.",
    "fq_modality.png": "Forget quality D on each evaluated modality (text, image, image+text) at the same n, one "
                       "panel per forget setting.",
    "attacks.png": "Each attack's recovery: the change of the pooled forget probability (after − before, on the "
                   "same probes) for every setting of the attack and every attacked model; 0 = no recovery.",
    "recovery_curves.png": "The relearning attack's recovery curves: the pooled forget probability of the curve "
                           "probes over the finetuning steps (step 0 = unattacked), a line per model.",
    "crossmodal.png": "Cross-modal matrix per method: the forget probability on each evaluated modality (columns) "
                      "after unlearning through one modality (rows); a low row with a high cell off its own "
                      "modality is leakage.",
    "cost.png": "What forgetting cost: each unlearning run's wall-clock time (as the run measured it, on its "
                "machine) against forget quality D (the ranking statistic, gold = 0), per forget setting.",
    "settings.png": "Each method across the forget settings: which modality was unlearned (x) against forget "
                    "quality D, CLEAR's Forget and model utility; reference rows as horizontal lines.",
}


# --------------------------------------------------------------------------- HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1360px}
table{border-collapse:collapse;margin:.6em 0;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 5px;text-align:right;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;font-weight:600;white-space:normal;max-width:6.5em;
min-width:3.5em;line-height:1.15}td{white-space:nowrap}td.l{text-align:left;white-space:normal;min-width:7em;
max-width:14em}td .n{display:block;font-size:10px;color:#666}td.blank{color:#999}sup{font-size:9px;color:#a40}
pre{text-align:left;max-height:24em;max-width:60em;overflow:auto;font-size:11px;white-space:pre-wrap}
img{max-width:100%;border:1px solid #eee}.rej{color:#a00}.about{color:#555;font-size:13px;margin:.2em 0}
ul.legend{columns:2;font-size:11px;color:#444;margin:.2em 0 .4em;padding-left:1.2em}
ul.notes{font-size:11px;color:#a40;margin:.2em 0 .4em;padding-left:1.2em}
h3{margin:1.2em 0 .2em;font-size:15px}nav{font-size:13px}figcaption{font-size:12px;color:#444;max-width:60em}"""
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
PROVENANCE_CHARS = 20_000  # a row's provenance shown in the page; the result file holds all of it


def td(text: str, value: Any, cls: str = "", extra: str = "") -> str:
    """A table cell showing ``text`` (escaped) and ``extra`` (HTML) and sorting by ``value``."""
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{html.escape(str(value), quote=True)}">{html.escape(text)}{extra}</td>'


def shown_td(cell: Shown) -> str:
    extra = f'<span class="n">{html.escape(cell.sub)}</span>' if cell.sub else ""
    if cell.note:
        extra += f"<sup>{cell.note}</sup>"
    return td(cell.text, cell.sort, "blank" if cell.note else "", extra)


def sortable_table(table_id: str, head: Sequence[str | tuple[str, str]], rows: Sequence[Sequence[str]]) -> str:
    """A table whose headers sort it on click; ``head``: texts or (text, tooltip); ``rows``: ``td()`` cells."""
    e = html.escape
    cells = [(h, "") if isinstance(h, str) else h for h in head]
    out = [f'<table class="sortable" id="table-{e(table_id)}"><thead><tr>',
           *(f'<th title="{e(tip + " (click to sort)" if tip else "click to sort", quote=True)}">{e(h)}</th>'
             for h, tip in cells), "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(cells) + "</tr>" for cells in rows]
    return "\n".join(out + ["</tbody></table>"])


def grid_html(setting: str, grid: Grid, provenance: bool = False) -> str:
    """One table of one setting: title, what it shows, the table (headers with tooltips), the numbered
    reasons of its blank cells, the columns left out, and the legend of its columns."""
    e = html.escape
    ranked = any(rank for rank, *_ in grid.rows)
    head = ["rank"] * ranked + [grid.table.row_header, *((c.header, c.doc) for c in grid.columns)]
    head += ["provenance"] if provenance else []
    rows = []
    for rank, label, row, cells in grid.rows:
        tds = [td(rank, 0 if not rank[:1].isdigit() else int(rank))] * ranked + [td(label, label, "l"),
                                                                               *map(shown_td, cells)]
        if provenance:
            tds.append(provenance_td(row))
        rows.append(tds)
    anchor = f"{setting}-{grid.table.name}" if setting else grid.table.name
    title = f"{setting_title(setting)}: {grid.table.title}" if setting else grid.table.title
    out = [f'<h3 id="{e(anchor)}">{e(title)}</h3>', f'<p class="about">{e(grid.table.about)}</p>',
           sortable_table(anchor, head, rows)]
    notes = [f"<li>[{i}] {e(r)}</li>" for i, r in enumerate(grid.notes, 1)]
    notes += [f"<li>not shown, no value in any row: <b>{e(c.header)}</b>: {e(r)}</li>" for c, r in grid.hidden]
    if notes:
        out.append('<ul class="notes">' + "".join(notes) + "</ul>")
    out.append('<ul class="legend">' + "".join(f"<li><b>{e(c.header)}</b>: {e(c.doc)}</li>" for c in grid.columns)
               + "</ul>")
    return "\n".join(out)


def provenance_td(row: Row) -> str:
    prov = json.dumps(row.provenance, indent=1, sort_keys=True, default=str)
    if len(prov) > PROVENANCE_CHARS:
        prov = prov[:PROVENANCE_CHARS] + f"\n… ({len(prov) - PROVENANCE_CHARS} more characters in the result file)"
    return (f'<td class="l" data-v="{html.escape(row.path)}"><details><summary>{html.escape(Path(row.path).name)}'
            f"</summary><pre>{html.escape(prov)}</pre></details></td>")


def page(title: str, intro: Sequence[str], body: Sequence[str]) -> str:
    """One self-contained HTML page: the title, a list of ``intro`` items (HTML), then ``body`` (HTML)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1><ul>", *intro, "</ul>", *body,
             f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(out: str | Path, markdown: str, tabs: dict[str, Any], table_csv, index_html: str,
                 plots: dict[str, bytes] | None = None) -> Path:
    """The report files of both report builders: tables.md, table_<setting>.csv, PNGs, index.html, each
    written atomically (a symlink planted at one of their paths is replaced, never followed) and readable by
    all (rw-r--r--: a report is meant to be published; the atomic writer's temp files are private)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"tables.md": markdown, **{f"table_{s}.csv": table_csv(entries) for s, entries in tabs.items()},
             **(plots or {}), "index.html": index_html}
    for name, content in files.items():
        write_text_atomic(out / name, content).chmod(0o644)
    return out


def rejected_html(items: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The rejected files, each (label, reasons)."""
    e = html.escape
    lines = [f"<li><code>{e(label)}</code><ul>{''.join(f'<li>{e(r)}</li>' for r in reasons)}</ul></li>"
             for label, reasons in items]
    return '<h2 id="rejected-files">rejected files</h2><ul class="rej" id="rejected">' + "".join(
        lines or ["<li>none</li>"]) + "</ul>"


def nav(tables: dict[str, list[Table]], extra: Sequence[tuple[str, str]] = (), plots: bool = True) -> str:
    """Links to every table ({setting: its tables}) and section of the page (``plots``: the page has a plots
    section)."""
    e = html.escape
    links = [f"<b>{e(setting_title(s))}</b>: " + " · ".join(f'<a href="#{e(s)}-{t.name}">{e(t.title)}</a>' for t in ts)
             for s, ts in tables.items()]
    links.append(" · ".join(f'<a href="#{e(anchor)}">{e(title)}</a>' for anchor, title in
                            [*extra, *[("plots", "plots")] * plots, ("rejected-files", "rejected files")]))
    return "<nav>" + "<br>".join(links) + "</nav>"


def render(ref: Reference, tabs: dict[str, list], rejected: Sequence[Checked], plots: dict[str, bytes],
           notes: Sequence[str] = (), extra: Sequence[tuple[str, str, list[Grid]]] = ()) -> str:
    e = html.escape
    gold = (f"<code>{e(str(ref.gold_path))}</code> (model <code>{e(str(ref.gold_fingerprint))}</code>)"
            if ref.gold else "none given (embedded gold copies not checked against a leaderboard gold)")
    intro = [f"<li>forget split: <code>{e(str(ref.forget_split))}</code>; world fingerprint: "
             f"<code>{e(str(ref.world_fingerprint))}</code></li>",
             f"<li>gold result: {gold}</li>", f"<li>reference: {e(ref.source or 'none')}</li>",
             *(f"<li>skipped check: {e(note)}</li>" for note in ref.skipped),
             *(f'<li class="lineage">{e(note)}</li>' for note in lineage_notes(tabs)),
             f'<li id="ranking-rule">ranking: {e(RANKING_RULE)}</li>', f'<li id="lead-columns">{e(lead_note())}</li>',
             "<li>every number is recomputed from the result files' per-example values; a blank cell (—) carries "
             "the number of its reason, listed under its table; hover a header for its meaning, click it to "
             "sort</li>"]
    grids = {setting: setting_grids(entries) for setting, entries in tabs.items()}
    body = [nav({s: [g.table for g in gs] for s, gs in grids.items()}, [(anchor, title) for anchor, title, _ in extra])]
    for setting, gs in grids.items():
        body.append(f'<h2 id="{e(setting)}">{e(setting_title(setting))}</h2>')
        body += [grid_html(setting, grid, provenance=i == 0) for i, grid in enumerate(gs)]
    for anchor, title, grids in extra:
        body += [f'<h2 id="{e(anchor)}">{e(title)}</h2>', *(grid_html("", grid) for grid in grids)]
    body.append('<h2 id="plots">plots</h2>')
    for name, data in plots.items():
        b64 = base64.b64encode(data).decode("ascii")
        body.append(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{e(name)}: {e(PLOT_CAPTIONS.get(name, ''))}</figcaption></figure>")
    body += [f"<p>{e(n)}</p>" for n in notes]
    body.append(rejected_html([(c.path, c.reasons) for c in rejected]))
    return page("clearbench leaderboard", intro, body)
