"""The leaderboard: check submitted result files, recompute them, rank them, write the report.

A file enters the report only if ``eval.verify.check_file`` finds no problem (the submission
checks live in eval/verify.py). Every number shown is ``recompute``d from the file's per-example
values, never copied from its stored aggregates.

Tables follow CLEAR's (arXiv 2410.18057, Table 1: Real / Retain / Forget / FQ, one row per
method), one per unlearning setting (text / visual / multimodal forgetting). Ranking rule
(``RANKING_RULE``): the KS statistic D of TOFU's forget quality ascending, then model utility descending.
docs/submitting.md describes the submission side.
"""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from eval import crossmodal
from eval import report_sections as sections
from eval.metrics import example_metrics, outputs, specs
from eval.metrics.spec import key
from eval.own import unverified_lineage
from eval.report_columns import (COST_FMT, Column, Grid, Shown, attack_reason, blank_reason, cost_values, csv_keys, fill,
                                 lead_note, report_tables)
from eval.results import Recomputed, recompute
from eval.verify import (  # noqa: F401 (check_file, make_reference: re-exported for callers of eval.leaderboard)
    SETTING_OF, Checked, Reference, check_file, check_files, make_reference, run_info)

SETTINGS: tuple[str, ...] = ("text", "visual", "multimodal")
FQ_KEY, MU_KEY = "forget/all/forget_quality", "all/all/model_utility"
RANK_KEY = "forget/all/forget_quality_d"
UNVERIFIED_MARK = "†"  # after the label of a row whose lineage is not verified against the target (eval.own)
RANKING_RULE = ("rank by the KS statistic D of forget quality (forget/all/forget_quality_d: TOFU's test, the forget "
                "set's text-QA truth ratios against the gold model's; lower is better, 0 = the gold model's "
                "distribution), ties broken by model utility (all/all/model_utility; higher is better); the gold "
                "model is the reference and is not ranked; why D, not p: docs/metrics.md")
REPORT_SPLITS: tuple[str, ...] = ("forget", "retain", "real_faces", "real_world")


def columns() -> list[tuple[str, str]]:
    """(table header with its direction arrow, result key), from the metric registry: each spec's own
    columns in registry order (CLEAR's paper columns first), then the pooled cell of every split in
    ``REPORT_SPLITS`` for each example metric with a header (ROUGE-L, Prob, TR, ...)."""
    known = outputs()
    out = []
    for spec in specs():
        for header, k in spec.columns:
            scope, _, metric = k.split("/")
            out.append((f"{header} {known[metric].arrow(scope)}".strip(), k))
    cell_outputs = [o for m in example_metrics() for o in m.outputs if o.header]
    out += [(f"{split} {o.header} {o.arrow(split)}".strip(), key(split, "all", o.name))
            for split in REPORT_SPLITS for o in cell_outputs]
    return out


FQ_MODALITY_KEYS = tuple(f"forget/{m}/forget_quality_d" for m in ("text", "image", "joint"))  # equal n


@dataclasses.dataclass
class Row:
    path: str
    label: str
    method: str | None
    l1_lambda: float
    setting: str | None  # None: a reference row (gold, target, base) shown in every table
    is_gold: bool
    metrics: dict[str, float]  # recomputed
    provenance: dict[str, Any]
    curve: list[dict[str, Any]] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)  # why keys are missing (aggregates.warnings)
    cells: list[list[str]] = dataclasses.field(default_factory=list)  # the (split, modality) cells scored
    has_gold: bool = True  # compared with a gold result (forget quality, PrivLeak)
    attacks: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)  # attack -> setting -> Δ
    leaks: dict[tuple[str, str], tuple[int, int]] | None = None  # eval.crossmodal.leaks of a method's row
    level: str = "recomputed"  # eval.verify.Checked.level: "re-scored" when a RESULT.verified.json passed
    lineage: str | None = None  # eval.own.unverified_lineage: why the model is not verified to descend from the target


# --------------------------------------------------------------------------- rows
def _model_label(provenance: dict[str, Any]) -> str:
    path = provenance.get("model_path") or (provenance.get("config") or {}).get("model")
    if isinstance(path, str) and path.strip("/"):
        return Path(path.rstrip("/")).name
    return f"model {str(provenance.get('model_fingerprint', '?'))[:12]}"


def method_label(info: dict[str, Any]) -> str:
    """"npo", "npo + L1", "npo + LoRA + L1": the method and the variant options that change it."""
    parts = [str(info["method"])]
    if info.get("lora") is True:
        parts.append("LoRA")
    if float(info.get("l1_lambda") or 0.0) > 0:
        parts.append("L1")
    return " + ".join(parts)


def _curve(result: dict[str, Any], info: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    curve = result.get("curve") or (info or {}).get("curve")
    return curve if isinstance(curve, list) and curve else None


def make_row(path: str, result: dict[str, Any], ref: Reference, recomputed: Recomputed | None = None) -> Row:
    """One file's row; ``recomputed``: what checking the file recomputed (used when it is this result's against
    ``ref.gold``, else the aggregates are recomputed here)."""
    prov = result["provenance"]
    info = run_info(prov)
    is_gold = ref.is_gold(result)  # the --gold file's content, never a fingerprint the file claims
    fresh = recomputed.of(result, ref.gold) if recomputed is not None else None
    if fresh is None:
        fresh = recompute(result, ref.gold, ref.gold_examples)
    # the row's own copy: report sections add keys to it; the cost columns come from the provenance as measured
    fresh = {**fresh, "metrics": dict(fresh["metrics"]) | cost_values(prov)}
    extra = {"warnings": [str(w) for w in fresh.get("warnings") or []], "cells": [list(c) for c in fresh["cells"]],
             "has_gold": ref.gold is not None or bool(result.get("gold")), "lineage": unverified_lineage(prov)}
    if info is None:
        return Row(path, _model_label(prov), None, 0.0, None, is_gold, fresh["metrics"], prov, _curve(result, None),
                   **extra)
    setting = SETTING_OF[info["forget_modality"] or "multimodal"]
    try:
        extra["leaks"] = crossmodal.leaks(result, setting)
    except (ValueError, KeyError):
        extra["leaks"] = None  # no embedded gold examples: the leak rate is explained as blank
    return Row(path, method_label(info), str(info["method"]), float(info.get("l1_lambda") or 0.0), setting, is_gold,
               fresh["metrics"], prov, _curve(result, info), **extra)


def make_rows(checked: Sequence[Checked], ref: Reference, failed: list[Checked] | None = None) -> list[Row]:
    """The rows of the accepted files. With ``failed``, a file whose numbers cannot be recomputed goes there
    with its reason instead of stopping the report. Two rows of one label in one table (seeds, lambdas) are
    told apart by their file names."""
    rows = []
    for c in checked:
        if c.reasons:
            continue
        try:
            rows.append(dataclasses.replace(make_row(c.path, c.result, ref, c.recomputed), level=c.level))
        except Exception as e:  # one bad file never stops the report
            if failed is None:
                raise
            failed.append(Checked(c.path, c.result, [f"cannot be recomputed: {type(e).__name__}: {e}"]))
    if ref.gold is not None and not any(r.is_gold for r in rows):
        rows.insert(0, make_row(ref.gold_path or "gold", ref.gold, ref, ref.gold_recomputed))
    seen = Counter((r.label, r.setting) for r in rows)
    for r in rows:
        if seen[(r.label, r.setting)] > 1:
            r.label = f"{r.label} [{run_tag(r)}]"
        if r.lineage:  # the mark travels with the label into every table, CSV and plot; lineage_notes explains it
            r.label = f"{r.label} {UNVERIFIED_MARK}"
    return rows


def lineage_notes(tabs: Mapping[str, Sequence[tuple[int | None, Row]]]) -> list[str]:
    """The footnote of each marked row (plain text; the report's intro lists them)."""
    rows = {id(r): r for entries in tabs.values() for _, r in entries if r.lineage}
    return [f"{UNVERIFIED_MARK} lineage not verified against the target: {r.label} ({Path(r.path).name}): {r.lineage}"
            for r in rows.values()]


def run_tag(row: Row) -> str:
    """The row's file name without its forget modality and forget percent (``npo-lora-l1-text-10`` ->
    ``npo-lora-l1``), so that one variant has one label in every setting's table and plot."""
    fm = (run_info(row.provenance) or {}).get("forget_modality")
    parts = Path(row.path).stem.split("-")
    return "-".join(p for p in parts if p != fm and not p.isdigit()) or Path(row.path).stem


def rank_key_of(values: Mapping[str, float], label: str) -> tuple[float, float, str]:
    """Sort key of ``RANKING_RULE`` from one row's values (missing values rank last)."""
    return (values.get(RANK_KEY, math.inf), -values.get(MU_KEY, -math.inf), label)


def rank_key(row: Row) -> tuple[float, float, str]:
    return rank_key_of(row.metrics, row.label)


def tables(rows: Sequence[Row]) -> dict[str, list[tuple[int | None, Row]]]:
    """{setting: [(rank or None for gold, row)]}: gold first, then ranked rows. Reference rows
    (no unlearning method) appear in every table, as Gold and Base do in CLEAR's."""
    present = [s for s in SETTINGS if any(r.setting == s for r in rows)] or ["all"]
    out = {}
    for setting in present:
        members = [r for r in rows if r.setting in (None, setting) or setting == "all"]
        ranked = sorted((r for r in members if not r.is_gold), key=rank_key)
        out[setting] = [(None, r) for r in members if r.is_gold] + [(i + 1, r) for i, r in enumerate(ranked)]
    return out


# --------------------------------------------------------------------------- cells and grids
def fmt(k: str, value: float | None) -> str:
    """A value as its metric's spec formats it (p-values: 3 significant digits)."""
    if value is None:
        return "—"
    metric = k.rsplit("/", 1)[-1]
    if k.startswith("cost/"):
        return format(value, COST_FMT.get(metric, ",.0f"))
    spec = outputs().get(metric)
    text = format(value, spec.fmt if spec else ".4f")
    return text.lstrip("-") if text.startswith("-") and float(text) == 0.0 else text  # no "-0.0000"


CHECK = Column("check", "_level", "how far the row was verified: recomputed = every aggregate recomputed from the "
               "file's values and its examples checked against the gold/world; re-scored = also a sample re-scored "
               "with the model (docs/submitting.md)")


def row_cell(row: Row, col: Column) -> Shown | None:
    """One row's value in one column, with the n of a KS statistic beside it; None when blank."""
    if col is CHECK:
        return Shown(row.level, row.level)
    value = row.metrics.get(col.key)
    if value is None:
        return None
    n = row.metrics.get(col.n_key) if col.n_key else None
    return Shown(fmt(col.key, value), repr(value), f"n={n:.0f}" if n is not None else "")


def row_reason(row: Row, k: str) -> str:
    return attack_reason(k, list(row.attacks)) or blank_reason(k, row.warnings, row.cells, row.has_gold)


def setting_grids(entries: Sequence[tuple[int | None, Row]]) -> list[Grid]:
    """The report's tables (``eval.report_columns.report_tables``) filled with one setting's rows."""
    items = [(rank_text(rank), row.label, row) for rank, row in entries]
    tabs = report_tables(any(r.attacks for _, r in entries))
    tabs[0] = dataclasses.replace(tabs[0], columns=(CHECK, *tabs[0].columns))
    return [fill(t, items, row_cell, row_reason) for t in tabs]


def setting_title(setting: str) -> str:
    return f"{setting} forgetting" if setting in SETTINGS else "all models"


def rank_text(rank: int | None) -> str:
    return "gold (ref)" if rank is None else str(rank)


# --------------------------------------------------------------------------- Markdown and CSV
def md_cell(text: Any) -> str:
    """Plain text as one Markdown table cell: HTML escaped, ``\\`` and ``|`` escaped, line breaks as spaces."""
    text = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.splitlines())


def csv_cell(text: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula (OWASP: prefix = + - @ tab CR with a quote)."""
    text = str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of cells already escaped (``md_cell``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _md_shown(cell: Shown) -> str:
    return md_cell(cell.text + (f" ({cell.sub})" if cell.sub else "") + (f" [{cell.note}]" if cell.note else ""))


def grid_markdown(grid: Grid, legend: bool = False) -> list[str]:
    """One table: its title, the table, the numbered reasons of blank cells, the columns left out (and with
    ``legend`` what its columns mean; the setting tables share one legend at the end of the report)."""
    ranked = any(rank for rank, *_ in grid.rows)
    head = ["rank"] * ranked + [md_cell(grid.table.row_header), *(md_cell(c.header) for c in grid.columns)]
    body = [[md_cell(rank)] * ranked + [md_cell(label), *map(_md_shown, cells)] for rank, label, _, cells in grid.rows]
    out = [f"### {grid.table.title}", "", md_cell(grid.table.about), "", markdown_table(head, body), ""]
    out += [f"- [{i}] {md_cell(reason)}" for i, reason in enumerate(grid.notes, 1)]
    out += [f"- not shown, no value in any row: {md_cell(c.header)}: {md_cell(reason)}" for c, reason in grid.hidden]
    if legend:
        out += [f"- {md_cell(c.header)}: {md_cell(c.doc)}" for c in grid.columns]
    return out + ([""] if grid.notes or grid.hidden or legend else [])


def table_markdown(entries: list[tuple[int | None, Row]]) -> str:
    return "\n".join(line for grid in setting_grids(entries) for line in grid_markdown(grid))


def csv_keys_all(attacks: bool = False) -> list[str]:
    """The CSV's result keys: every column of the report's tables, then every other registered column."""
    keys = csv_keys(attacks)
    return keys + [k for _, k in columns() if k not in keys]


def table_csv(entries: list[tuple[int | None, Row]]) -> str:
    """Full-precision CSV; the header is the result keys (one vocabulary end to end)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = csv_keys_all(any(r.attacks for _, r in entries))
    w.writerow(["rank", "model", "method", "l1_lambda", "file", "check", "lineage", *keys])
    for rank, row in entries:
        w.writerow(["gold" if rank is None else rank, csv_cell(row.label), csv_cell(row.method or ""), row.l1_lambda,
                    csv_cell(row.path), row.level, csv_cell(row.lineage or ""),
                    *("" if row.metrics.get(k) is None else repr(row.metrics[k]) for k in keys)])
    return buf.getvalue()


def legend_markdown() -> list[str]:
    out = ["## what the columns mean", ""]
    for t in report_tables():
        out += [f"- **{md_cell(t.title)}**: " + "; ".join(f"{md_cell(c.header)}: {md_cell(c.doc)}" for c in t.columns)]
    return out + [""]


def markdown_report(ref: Reference, tabs: dict[str, list], rejected: Sequence[Checked],
                    extra: Sequence[tuple[str, str, list[Grid]]] = ()) -> str:
    e = md_cell
    parts = ["# clearbench leaderboard", "",
             f"- forget split: {e(ref.forget_split)}; world fingerprint: {e(ref.world_fingerprint)}",
             f"- gold result: {e(ref.gold_path)} (model {e(ref.gold_fingerprint)})" if ref.gold else
             "- gold result: none given (embedded gold copies are not checked against a leaderboard gold)",
             f"- reference: {e(ref.source or 'none')}", *(f"- skipped check: {e(note)}" for note in ref.skipped),
             f"- check: {e(CHECK.doc)}", *(f"- {e(note)}" for note in lineage_notes(tabs)),
             f"- ranking: {RANKING_RULE}", f"- {e(lead_note())}",
             "- every number is recomputed from the result files' per-example values (eval.results.recompute); "
             "a blank cell (—) carries the number of its reason, listed under its table", ""]
    for setting, entries in tabs.items():
        parts += [f"## {setting_title(setting)}", "", table_markdown(entries), ""]
    for _, title, grids in extra:
        parts += [f"## {title}", "", *(line for grid in grids for line in grid_markdown(grid, legend=True))]
    parts += legend_markdown()
    return "\n".join(parts + rejected_markdown([(c.path, c.reasons) for c in rejected])) + "\n"


def rejected_markdown(items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """The report's last section: each rejected file (label, reasons)."""
    return ["## rejected files", "",
            *([f"- {md_cell(label)}: " + "; ".join(map(md_cell, reasons)) for label, reasons in items] or ["none"])]


# --------------------------------------------------------------------------- building the report
def checked_rows(paths: Sequence[str | Path], ref: Reference) -> tuple[Reference, list[Row], list[Checked]]:
    """Check, recompute: (the reference, the rows, the rejected files in the order given)."""
    ref, checked = check_files(paths, ref)
    failed: list[Checked] = []
    rows = make_rows(checked, ref, failed)
    order = {str(p): i for i, p in enumerate(paths)}
    rejected = sorted([c for c in checked if c.reasons] + failed, key=lambda c: order.get(c.path, 0))
    return ref, rows, rejected


def report_sections(rows: Sequence[Row]) -> list[tuple[str, str, list[Grid]]]:
    """(anchor, title, tables) of the sections after the per-setting tables: each attack's settings (when the
    study has attack results) and cross-modal leakage (when it has all three forget settings)."""
    out = []
    if sections.has_attacks(rows):
        out.append(("attacks", "attacks: each attack's recovery per setting", sections.attack_detail_grids(
            rows, lambda r: r.label if r.setting is None else f"{r.label} ({r.setting})")))
    if sections.has_all_settings(rows):
        out.append(("crossmodal", "cross-modal leakage", sections.crossmodal_grids(rows)))
    return out


def build_report(paths: Sequence[str | Path], out: str | Path, ref: Reference, curve_dirs: Sequence[str | Path] = (),
                 attacks: Mapping[str, Sequence[str | Path]] | None = None) -> dict[str, Any]:
    """Check, recompute, rank; write tables.md, table_<setting>.csv, PNG plots and index.html. ``attacks``:
    {run (a result file's stem): [its attack result files]} (eval.report_sections). A file that cannot be read,
    checked or recomputed is listed under "rejected files"; it never stops the report."""
    from eval import report_html

    ref, rows, rejected = checked_rows(paths, ref)
    rejected += [Checked(p, None, reasons) for p, reasons in sections.attach_attacks(attacks or {}, rows)]
    tabs = tables(rows)
    extra = report_sections(rows)
    curves, notes = report_html.collect_curves(rows, curve_dirs)
    plots, plot_notes = report_html.make_plots(rows, curves)
    notes += plot_notes
    report_html.write_report(out, markdown_report(ref, tabs, rejected, extra), tabs, table_csv,
                             report_html.render(ref, tabs, rejected, plots, notes, extra), plots)
    return {"reference": ref, "rows": rows, "tables": tabs, "rejected": rejected, "plots": sorted(plots),
            "notes": notes, "sections": extra}
