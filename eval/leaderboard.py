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
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from eval.metrics import example_metrics, outputs, specs
from eval.metrics.spec import key
from eval.results import recompute
from eval.verify import (  # noqa: F401 (check_file, make_reference: re-exported for callers of eval.leaderboard)
    SETTING_OF, Checked, Reference, check_file, check_files, make_reference, run_info)

SETTINGS: tuple[str, ...] = ("text", "visual", "multimodal")
FQ_KEY, MU_KEY = "forget/all/forget_quality", "all/all/model_utility"
RANK_KEY = "forget/all/forget_quality_d"
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
    level: str = "recomputed"  # eval.verify.Checked.level: "re-scored" when a RESULT.verified.json passed


# --------------------------------------------------------------------------- rows
def _model_label(provenance: dict[str, Any]) -> str:
    path = provenance.get("model_path") or (provenance.get("config") or {}).get("model")
    if isinstance(path, str) and path.strip("/"):
        return Path(path.rstrip("/")).name
    return f"model {str(provenance.get('model_fingerprint', '?'))[:12]}"


def _curve(result: dict[str, Any], info: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    curve = result.get("curve") or (info or {}).get("curve")
    return curve if isinstance(curve, list) and curve else None


def make_row(path: str, result: dict[str, Any], ref: Reference) -> Row:
    prov = result["provenance"]
    info = run_info(prov)
    is_gold = ref.is_gold(result)  # the --gold file's content, never a fingerprint the file claims
    metrics = recompute(result, ref.gold)["metrics"]
    if info is None:
        return Row(path, _model_label(prov), None, 0.0, None, is_gold, metrics, prov, _curve(result, None))
    l1 = float(info.get("l1_lambda") or 0.0)
    label = f"{info['method']} + L1" if l1 > 0 else str(info["method"])
    setting = SETTING_OF[info["forget_modality"] or "multimodal"]
    return Row(path, label, str(info["method"]), l1, setting, is_gold, metrics, prov, _curve(result, info))


def make_rows(checked: Sequence[Checked], ref: Reference) -> list[Row]:
    rows = [dataclasses.replace(make_row(c.path, c.result, ref), level=c.level) for c in checked if not c.reasons]
    if ref.gold is not None and not any(r.is_gold for r in rows):
        rows.insert(0, make_row(ref.gold_path or "gold", ref.gold, ref))
    seen = Counter(r.label for r in rows)
    for r in rows:  # two runs of one method (seeds, lambdas): tell them apart by file name
        if seen[r.label] > 1:
            r.label = f"{r.label} [{Path(r.path).stem}]"
    return rows


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


# --------------------------------------------------------------------------- text outputs
def fmt(k: str, value: float | None) -> str:
    """A value as its metric's spec formats it (p-values: 3 significant digits)."""
    if value is None:
        return "—"
    spec = outputs().get(k.rsplit("/", 1)[-1])
    return format(value, spec.fmt if spec else ".4f")


def setting_title(setting: str) -> str:
    return f"{setting} forgetting" if setting in SETTINGS else "all models"


def rank_text(rank: int | None) -> str:
    return "gold (ref)" if rank is None else str(rank)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def table_markdown(entries: list[tuple[int | None, Row]]) -> str:
    cols = columns()
    return markdown_table(["rank", "model", "check", *(h for h, _ in cols)],
                          [[rank_text(rank), row.label.replace("|", "\\|"), row.level,
                            *(fmt(k, row.metrics.get(k)) for _, k in cols)]
                           for rank, row in entries])


def table_csv(entries: list[tuple[int | None, Row]]) -> str:
    """Full-precision CSV; the header is the result keys (one vocabulary end to end)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [k for _, k in columns()]
    w.writerow(["rank", "model", "method", "l1_lambda", "file", "check", *keys])
    for rank, row in entries:
        w.writerow(["gold" if rank is None else rank, row.label, row.method or "", row.l1_lambda, row.path, row.level,
                    *("" if row.metrics.get(k) is None else repr(row.metrics[k]) for k in keys)])
    return buf.getvalue()


def markdown_report(ref: Reference, tabs: dict[str, list], rejected: Sequence[Checked]) -> str:
    parts = ["# clearbench leaderboard", "",
             f"- forget split: `{ref.forget_split}`; world fingerprint: `{ref.world_fingerprint}`",
             f"- gold result: `{ref.gold_path}` (model `{ref.gold_fingerprint}`)" if ref.gold else
             "- gold result: none given (embedded gold copies are not checked against a leaderboard gold)",
             f"- reference: {ref.source or 'none'}", *(f"- skipped check: {note}" for note in ref.skipped),
             "- check: `recomputed` = every aggregate recomputed from the file's values and its examples checked "
             "against the gold/world (docs/submitting.md); `re-scored` = also a sample re-scored with the model",
             f"- ranking: {RANKING_RULE}",
             "- every number is recomputed from the result files' per-example values (eval.results.recompute)",
             "- Real / Retain / Forget / FQ are CLEAR's paper columns (FQ = 1 − JS on forget captions); "
             "FQ D, FQ (KS p) and FQ log10 p are TOFU's forget quality (KS on forget text-QA truth ratios); MU is "
             "TOFU's model utility; the split columns pool modalities; definitions in docs/metrics.md", ""]
    for setting, entries in tabs.items():
        parts += [f"## {setting_title(setting)}", "", table_markdown(entries), ""]
    return "\n".join(parts + rejected_markdown([(f"`{c.path}`", c.reasons) for c in rejected])) + "\n"


def rejected_markdown(items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """The report's last section: each rejected file (label, reasons)."""
    return ["## rejected files", "", *([f"- {label}: " + "; ".join(reasons) for label, reasons in items] or ["none"])]


def build_report(paths: Sequence[str | Path], out: str | Path, ref: Reference,
                 curve_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Check, recompute, rank; write tables.md, table_<setting>.csv, PNG plots and index.html."""
    from eval import report_html

    ref, checked = check_files(paths, ref)
    rejected = [c for c in checked if c.reasons]
    rows = make_rows(checked, ref)
    tabs = tables(rows)
    curves, notes = report_html.collect_curves(rows, curve_dirs)
    plots = report_html.make_plots(rows, curves)
    report_html.write_report(out, markdown_report(ref, tabs, rejected), tabs, table_csv,
                             report_html.render(ref, tabs, rejected, plots, notes), plots)
    return {"reference": ref, "rows": rows, "tables": tabs, "rejected": rejected, "plots": sorted(plots),
            "notes": notes}
