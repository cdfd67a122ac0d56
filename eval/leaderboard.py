"""The leaderboard: check submitted result files, recompute them, rank them, write the report.

A file enters the report only if ``check_file`` finds no problem: ``eval.results.validate``
(schema, provenance, bounds, duplicated/missing examples, aggregates vs per-example values,
embedded gold copy vs the leaderboard's gold) plus the leaderboard's own rules (same world
fingerprint and forget split as the leaderboard). Every number shown is ``recompute``d from
the file's per-example values, never copied from its stored aggregates.

Tables follow CLEAR's (arXiv 2410.18057, Table 1: Real / Retain / Forget / FQ, one row per
method), one per unlearning setting (text / visual / multimodal forgetting). Ranking rule
(``RANKING_RULE``): the KS statistic D of TOFU's forget quality ascending, then model utility descending.
docs/submitting.md describes the submission side.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from eval.aggregate import MetricOptions
from eval.metrics import example_metrics, outputs, specs
from eval.metrics.spec import key
from eval.results import load_gold_result, recompute, validate

SETTINGS: tuple[str, ...] = ("text", "visual", "multimodal")
# run.forget_modality -> table; a method without one unlearned every modality (CLEAR's "both")
_SETTING_OF = {"text": "text", "image": "visual", "visual": "visual", "joint": "multimodal",
               "multimodal": "multimodal", "both": "multimodal", "all": "multimodal"}
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
class Reference:
    """What every row must share: the leaderboard's world, forget split and gold result."""

    world_fingerprint: str | None = None
    forget_split: str | None = None
    gold: dict[str, Any] | None = None
    gold_path: str | None = None
    source: str = ""  # where the world and split came from (shown in the report)

    @property
    def gold_fingerprint(self) -> str | None:
        return (self.gold or {}).get("provenance", {}).get("model_fingerprint")


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


@dataclasses.dataclass
class Checked:
    path: str
    result: dict[str, Any] | None
    reasons: list[str]


def make_reference(gold: str | Path | None = None, world_fingerprint: str | None = None,
                   forget_split: str | None = None) -> Reference:
    """The leaderboard's reference: the gold result's world and split, or the flags. A gold
    result that is invalid or disagrees with the flags is a loud error (it is the yardstick)."""
    if gold is None:
        return Reference(world_fingerprint, forget_split, source="flags" if world_fingerprint or forget_split else "")
    g = load_gold_result(gold, forget_split or "forgetXX")
    problems = validate(_as_own_gold(g, g), g)
    if problems:
        raise ValueError(f"gold result {gold} is invalid:\n  " + "\n  ".join(problems))
    prov = g["provenance"]
    for flag, name, value in (("--world-fingerprint", "world_fingerprint", world_fingerprint),
                              ("--forget", "forget_split", forget_split)):
        if value is not None and prov.get(name) != value:
            raise ValueError(f"gold result {gold} has {name} {prov.get(name)!r} but {flag} says {value!r}; "
                             f"pass the gold result of that world and split, or drop {flag}")
    return Reference(prov["world_fingerprint"], prov["forget_split"], g, str(gold), source=f"gold result {gold}")


def _as_own_gold(result: dict[str, Any], gold: dict[str, Any] | None) -> dict[str, Any]:
    """The gold model's own result embeds its examples without a fingerprint (``--gold self``);
    fill it in so that the gold check applies to it like to any other row."""
    if not gold or not isinstance(result.get("gold"), dict) or result["gold"].get("model_fingerprint") is not None:
        return result
    if (result.get("provenance") or {}).get("model_fingerprint") != gold["provenance"].get("model_fingerprint"):
        return result
    return {**result, "gold": {**result["gold"], "model_fingerprint": gold["provenance"]["model_fingerprint"]}}


def check_file(path: str | Path, ref: Reference) -> Checked:
    """Every reason to reject one file (empty = accepted)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Checked(str(path), None, [f"cannot be read as a JSON result file: {e}"])
    return Checked(str(path), result, check_result(result, ref))


def check_result(result: Any, ref: Reference) -> list[str]:
    if not isinstance(result, dict):
        return ["result is not a JSON object"]
    try:
        reasons = validate(_as_own_gold(result, ref.gold), ref.gold)
    except Exception as e:  # a malformed file must be rejected, not crash the leaderboard
        reasons = [f"result cannot be validated: {type(e).__name__}: {e}"]
    prov = result.get("provenance") if isinstance(result.get("provenance"), dict) else {}
    reasons += _options_problems(result, ref)
    for name, want in (("world_fingerprint", ref.world_fingerprint), ("forget_split", ref.forget_split)):
        if want is not None and name in prov and prov[name] != want:
            reasons.append(f"{name} {prov[name]!r} differs from the leaderboard's {want!r} ({ref.source})")
    try:
        run_info(prov)
    except ValueError as e:
        reasons.append(str(e))
    return reasons


# Metric options that change the numbers: every row of one leaderboard must use the gold result's.
SCORING_OPTIONS = ("tr_mode", "tr_reference", "clear_include_rouge", "mink_k", "fq_aggregation")


def _options_problems(result: dict[str, Any], ref: Reference) -> list[str]:
    """A result scored with other metric options (e.g. the truth ratio against the answer instead of
    the paraphrase) is not comparable with the leaderboard's rows, even when it is internally valid."""
    if ref.gold is None:
        return []
    try:
        mine = MetricOptions.from_dict(result["aggregates"]["options"]).to_dict()
        want = MetricOptions.from_dict(ref.gold["aggregates"]["options"]).to_dict()
    except (KeyError, TypeError, ValueError):
        return []  # unreadable options are reported by validate()
    return [f"metric option {k}={mine[k]!r} differs from the leaderboard's {want[k]!r} ({ref.source}); "
            f"re-score with the leaderboard's options (clearbench evaluate recomputes from its cache)"
            for k in SCORING_OPTIONS if mine[k] != want[k]]


def resolve_reference(ref: Reference, results: Sequence[dict[str, Any] | None]) -> Reference:
    """Without a gold result or flags, the leaderboard's world and split are those of most files."""
    out = dataclasses.replace(ref)
    provs = [r["provenance"] for r in results if isinstance(r, dict) and isinstance(r.get("provenance"), dict)]
    filled = []
    for name in ("world_fingerprint", "forget_split"):
        values = Counter(p.get(name) for p in provs if p.get(name) is not None)
        if getattr(out, name) is None and values:
            setattr(out, name, values.most_common(1)[0][0])
            filled.append(name)
    if filled:
        majority = f"{' and '.join(filled)} of the majority of the submitted files"
        out.source = f"{out.source}; {majority}" if out.source else majority
    return out


def check_files(paths: Sequence[str | Path], ref: Reference) -> tuple[Reference, list[Checked]]:
    checked = [check_file(p, ref) for p in paths]
    if ref.gold is None and (ref.world_fingerprint is None or ref.forget_split is None):
        ref = resolve_reference(ref, [c.result for c in checked])
        checked = [Checked(c.path, c.result, c.reasons if c.result is None else check_result(c.result, ref))
                   for c in checked]
    return ref, checked


# --------------------------------------------------------------------------- rows
def run_info(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The unlearning run behind a result: ``provenance["run"]`` = {method, forget_modality,
    l1_lambda, lora}, else ``provenance["config"]["unlearn"]``, else the nearest parent's record
    (``parents[0]``, itself or its "run"/"unlearn" entry). None for models not unlearned by a
    method (base, target, gold). An unknown forget_modality is an error."""
    parents = provenance.get("parents") or [None]
    first = parents[0] if isinstance(parents, list) and parents else None
    config = provenance.get("config") if isinstance(provenance.get("config"), dict) else {}
    candidates = [provenance.get("run"), config.get("unlearn"), first]
    if isinstance(first, dict):
        candidates += [first.get("run"), first.get("unlearn")]
    for cand in candidates:
        if isinstance(cand, dict) and cand.get("method"):
            fm = cand.get("forget_modality")
            if isinstance(fm, (list, tuple)):
                fm = fm[0] if len(set(fm)) == 1 else "multimodal"
            if fm is not None and fm not in _SETTING_OF:
                raise ValueError(f"run.forget_modality {fm!r} is not one of {sorted(_SETTING_OF)}")
            return {**cand, "forget_modality": fm}
    return None


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
    is_gold = (prov.get("model_fingerprint") == ref.gold_fingerprint if ref.gold is not None
               else prov.get("gold") == "self")  # without a leaderboard gold: the file evaluated as gold
    metrics = recompute(result, ref.gold)["metrics"]
    if info is None:
        return Row(path, _model_label(prov), None, 0.0, None, is_gold, metrics, prov, _curve(result, None))
    l1 = float(info.get("l1_lambda") or 0.0)
    label = f"{info['method']} + L1" if l1 > 0 else str(info["method"])
    setting = _SETTING_OF[info["forget_modality"] or "multimodal"]
    return Row(path, label, str(info["method"]), l1, setting, is_gold, metrics, prov, _curve(result, info))


def make_rows(checked: Sequence[Checked], ref: Reference) -> list[Row]:
    rows = [make_row(c.path, c.result, ref) for c in checked if not c.reasons]
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
    return markdown_table(["rank", "model", *(h for h, _ in cols)],
                          [[rank_text(rank), row.label.replace("|", "\\|"), *(fmt(k, row.metrics.get(k)) for _, k in cols)]
                           for rank, row in entries])


def table_csv(entries: list[tuple[int | None, Row]]) -> str:
    """Full-precision CSV; the header is the result keys (one vocabulary end to end)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [k for _, k in columns()]
    w.writerow(["rank", "model", "method", "l1_lambda", "file", *keys])
    for rank, row in entries:
        w.writerow(["gold" if rank is None else rank, row.label, row.method or "", row.l1_lambda, row.path,
                    *("" if row.metrics.get(k) is None else repr(row.metrics[k]) for k in keys)])
    return buf.getvalue()


def markdown_report(ref: Reference, tabs: dict[str, list], rejected: Sequence[Checked]) -> str:
    parts = ["# clearbench leaderboard", "",
             f"- forget split: `{ref.forget_split}`; world fingerprint: `{ref.world_fingerprint}`",
             f"- gold result: `{ref.gold_path}` (model `{ref.gold_fingerprint}`)" if ref.gold else
             "- gold result: none given (embedded gold copies are not checked against a leaderboard gold)",
             f"- reference: {ref.source or 'none'}",
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
