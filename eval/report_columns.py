"""The report's tables: which columns each one shows, what every column means, and why a cell is blank.

Per forget setting the report shows narrow tables instead of one 20-column one: an overview (the ranking
statistic with its n, model utility, CLEAR's paper columns and the pooled forget / retain cells), one table
per evaluated modality (text, image, image+text: forget quality on that modality, its forget and retain
cells, naming accuracy, its model utility and the MIA columns) and the utility controls (public figures and
world VQA). Every column comes with a one-line description (the header's tooltip and the legend under the
table), built from the metric registry (``eval.metrics.outputs``), so a registered metric brings its own.
A blank cell is explained by the reason its result recorded (``aggregates.warnings``) or by what is missing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from eval.attacks import ATTACKS
from eval.metaeval import VERSION as METAEVAL_VERSION
from eval.metrics import example_metrics, outputs, specs
from eval.metrics.spec import key

MODALITIES: tuple[tuple[str, str, str], ...] = (  # (modality, table title, what its records are)
    ("text", "text", "questions that name the person, no image"),
    ("image", "image", "a photo in, the person's name out"),
    ("joint", "image+text", "a photo and a question about the person in it (QA and captions)"),
)
MODALITY_TITLE = {m: title for m, title, _ in MODALITIES}
SPLIT_TEXT = {"forget": "the forget set", "retain": "the retain set", "holdout": "the holdout set",
              "real_faces": "the public figures", "real_world": "the world VQA", "all": "the utility splits"}
MIA_ATTACKS: tuple[tuple[str, str], ...] = (("loss", "loss"), ("min_k_pp", "Min-K%++"))
NAMING: tuple[tuple[str, str], ...] = (("image", "Name acc"), ("image@heldout", "Name acc (unseen photos)"))
CONTROLS: tuple[tuple[str, str], ...] = (("real_faces", "text"), ("real_faces", "image"), ("real_world", "joint"))
OVERVIEW_KEYS: tuple[str, ...] = ("forget/all/forget_quality_d", "forget/all/forget_quality_log10p",
                                  "all/all/model_utility", "clear/all/real", "clear/all/retain", "clear/all/forget",
                                  "clear/all/fq")
# The overview's lead columns: per modality, the column the meta-evaluation suggested (eval.metaeval, its rule in
# eval.metaeval_report.suggest) on the tiny preset's pool; docs/metaeval.md, "Results on the tiny preset", says why.
LEAD_COLUMNS: tuple[tuple[str, str], ...] = (("text", "forget/text/rouge_l"), ("image", "forget/image/naming_acc"),
                                            ("joint", "forget/joint/forget_quality_js"), ("all", "forget/all/forget_quality_js"))
LEAD_SOURCE = f"meta-evaluation version {METAEVAL_VERSION}, tiny-metaeval pool (docs/metaeval.md)"
# shown beside a KS statistic: its sample size
N_OF = {"forget_quality_d": "forget_quality_n", "fq_ks_d": "fq_ks_n"}
SHORT = {"forget_quality_d": "FQ D", "forget_quality_js": "FQ JS", "forget_quality_log10p": "FQ log10 p", "model_utility": "MU",
         "real": "Real", "retain": "Retain", "forget": "Forget", "fq": "FQ", "naming_acc": "Name acc"}


@dataclasses.dataclass(frozen=True)
class Column:
    header: str  # short, with the direction arrow
    key: str  # the result key
    doc: str  # what it measures: the header's tooltip and the table's legend
    n_key: str = ""  # a sample size shown beside the value (a KS statistic's n)


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # overview, text, image, joint, controls (the HTML id and the markdown heading)
    title: str
    about: str
    columns: tuple[Column, ...]
    row_header: str = "model"


def describe(k: str) -> str:
    """One line on result key ``k``: the metric's own description, where it is measured, which way is better."""
    scope, modality, metric = k.split("/")
    out = outputs().get(metric)
    doc = out.doc if out and out.doc else metric
    m, _, role = modality.partition("@")
    where = SPLIT_TEXT.get(scope, scope)
    if m != "all":
        where += f", {MODALITY_TITLE.get(m, m)} records" + (f" ({role} photos)" if role else "")
    better = {"↑": "higher is better", "↓": "lower is better", "→0": "closer to 0 is better",
              "≈gold": "closer to the gold model's is better"}.get(out.arrow(scope) if out else "", "")
    if scope == "forget" and metric in ("rouge_l", "probability", "truth_ratio", "naming_acc"):
        better += " (less knowledge of the forgotten people)"
    return f"{doc} ({where}{'; ' + better if better else ''}) [{k}]"


def column(k: str, header: str = "") -> Column:
    scope, _, metric = k.split("/")
    out = outputs().get(metric)
    arrow = out.arrow(scope) if out else ""
    head = header or SHORT.get(metric, metric)
    n_metric = N_OF.get(metric)
    return Column(f"{head} {arrow}".strip(), k, describe(k), k.rsplit("/", 1)[0] + f"/{n_metric}" if n_metric else "")


def headed() -> list[tuple[str, str]]:
    """(metric name, header) of every example metric with a report header (ROUGE-L, Prob, TR, ...)."""
    return [(o.name, o.header) for m in example_metrics() for o in m.outputs if o.header]


def spec_columns() -> list[tuple[str, str]]:
    """(header, key) that registered specs declare (CLEAR's columns, FQ D, MU, a newly registered metric's)."""
    return [(h, k) for spec in specs() for h, k in spec.columns]


def lead_header(m: str, k: str) -> str:
    metric = k.split("/")[2]
    short = SHORT.get(metric) or dict(headed()).get(metric, metric)
    return f"lead {short} ({m})"  # the modality as the key names it: "image+text" widened the overview past 1400 px


def lead_note() -> str:
    """One line for the report's head: which columns the overview leads with and where they come from."""
    return (f"lead columns (after the ranking statistic and model utility): per modality the forget column that best "
            f"tells models that know the forget people from models that do not, and keeps doing so after weight "
            f"rounding and relearning ({LEAD_SOURCE}): " + "; ".join(f"{MODALITY_TITLE.get(m, m)} {k}"
                                                                    for m, k in LEAD_COLUMNS))


def overview_table() -> Table:
    head = [column(k, _spec_header(k)) for k in OVERVIEW_KEYS]
    at = next(i for i, c in enumerate(head) if c.key == "all/all/model_utility") + 1
    cols = head[:at] + [column(k, lead_header(m, k)) for m, k in LEAD_COLUMNS] + head[at:]
    placed = set(OVERVIEW_KEYS) | {"forget/all/forget_quality"}  # the p is shown as its log10
    cols += [column(k, h) for h, k in spec_columns() if k not in placed]
    cols += [column(key(split, "all", name), f"{split} {h}") for split in ("forget", "retain") for name, h in headed()]
    once: dict[str, Column] = {}  # a key in two places is shown once, where it first appears
    for c in cols:
        once.setdefault(c.key, c)
    return Table("overview", "overview", "ranking statistic, model utility, the meta-evaluation's lead column per "
                 "modality, CLEAR's paper columns and the pooled forget and retain cells (all modalities)",
                 tuple(once.values()))


def modality_table(m: str) -> Table:
    title = MODALITY_TITLE[m]
    cols = [column(f"forget/{m}/forget_quality_d"), column(f"forget/{m}/forget_quality_log10p")]
    for split in ("forget", "retain"):
        cols += [column(key(split, m, name), f"{split} {h}") for name, h in headed()]
        if m == "image":
            cols += [column(key(split, cell, "naming_acc"), f"{split} {h}") for cell, h in NAMING]
    cols.append(column(f"all/{m}/model_utility", f"MU {title}"))
    for attack, name in MIA_ATTACKS:
        cols += [column(f"mia/{m}/{attack}_auc", f"MIA AUC {name}"), column(f"mia/{m}/{attack}_privleak",
                                                                           f"PrivLeak {name}")]
    about = dict((mm, a) for mm, _, a in MODALITIES)[m]
    return Table(m, f"{title} records", f"{about}: forget quality at one n per modality, forget and retain "
                 "cells, this modality's model utility and membership inference (forget vs holdout)", tuple(cols))


def controls_table() -> Table:
    cols = [column(key(split, m, name), f"{'faces' if split == 'real_faces' else 'world'} {MODALITY_TITLE[m]} {h}")
            for split, m in CONTROLS for name, h in headed()]
    cols.append(column("all/all/model_utility", "MU"))
    return Table("controls", "utility controls", "what unlearning must not damage: the public figures (text QA, "
                 "photo naming) and the world VQA; model utility is their harmonic mean with the retain cells",
                 tuple(cols))


def _spec_header(k: str) -> str:
    return next((h for h, kk in spec_columns() if kk == k), "")


ATTACK_METRICS: tuple[tuple[str, str], ...] = (("probability", "Prob"), ("rouge_l", "ROUGE-L"))
WORST_DOC = ("per forget probe, the most recovered {what} over the standard probes and every attack (in-sample "
             "relearning excluded), averaged: the worst-case forget score (eval.attacks.result.worst_case; higher = "
             "more knowledge came back; docs/attacks.md)")


def worst_column(metric: str = "probability", header: str = "Prob") -> Column:
    return Column(f"worst-case {header} ↓", f"worst_case/all/{metric}",
                  WORST_DOC.format(what=f"answer {header}") + f" [worst_case/all/{metric}]")


def attacks_table() -> Table:
    """Per forget setting: each row's probes unattacked, the worst case and each attack's largest recovery."""
    cols = []
    for metric, header in ATTACK_METRICS:
        cols += [Column(f"attack probes {header} ↓", f"standard/all/{metric}", f"the {header} of the forget probes of "
                        f"the attacks, unattacked (the same records for every attack) [standard/all/{metric}]"),
                 worst_column(metric, header)]
        cols += [Column(f"{name} Δ{header}", f"{name}/all/{metric}_delta", f"{name}: the largest recovery of {header} "
                        f"(after - before on the same probes) over its out-of-sample settings (docs/attacks.md) "
                        f"[{name} result: max_delta/all/{metric}]") for name in ATTACKS]
    return Table("attacks", "attacks", "is it really gone? the forget probes after relearning, quantization, "
                 "paraphrased questions, transformed photos and facts in the prompt (docs/attacks.md)", tuple(cols))


# (result key, header, what it is): read from the result's provenance.cost, as the run measured it (clearbench.cost)
COST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cost/training/wall_seconds", "time (s)", "wall-clock seconds of the run that made the model"),
    ("cost/training/cpu_seconds", "CPU time (s)", "process CPU seconds of that run (all threads)"),
    ("cost/training/optimizer_steps", "steps", "optimizer steps of that run"),
    ("cost/training/tokens_backward", "tokens fwd+bwd", "token positions run forward and backward (training)"),
    ("cost/training/tokens_forward_only", "tokens fwd only", "token positions run forward only (reference model, "
     "in-run evaluation)"),
    ("cost/training/peak_memory_mb", "peak memory (MiB)", "peak resident memory on the CPU, peak allocated memory "
     "on a GPU, during that run"),
    ("cost/evaluation/wall_seconds", "eval time (s)", "wall-clock seconds of the scoring pass that wrote this result"),
)
COST_FMT = {"wall_seconds": ".1f", "cpu_seconds": ".1f", "peak_memory_mb": ".0f"}  # counts: integers


def cost_values(provenance: dict[str, Any]) -> dict[str, float]:
    """The cost columns' values of one result (its provenance's ``cost``: evaluation and training parts)."""
    costs = provenance.get("cost") if isinstance(provenance.get("cost"), dict) else {}
    out = {}
    for k, _, _ in COST_COLUMNS:
        _, part, name = k.split("/")
        value = (costs.get(part) or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[k] = float(value)
    return out


def cost_table() -> Table:
    cols = tuple(Column(f"{header} ↓", k, f"{doc} [{k}]") for k, header, doc in COST_COLUMNS)
    return Table("cost", "cost", "what making the model cost: the unlearning run for a method's row, the finetune for "
                 "the target and gold (as the run measured itself; times depend on the machine: see its device in "
                 "the provenance)", cols)


def report_tables(attacks: bool = False) -> list[Table]:
    """The tables of one forget setting, in page order; ``attacks``: the study has attack results (a worst-case
    column beside the standard forget probability, and the attacks table)."""
    tables = [overview_table(), *(modality_table(m) for m, _, _ in MODALITIES), controls_table(), cost_table()]
    if attacks:
        cols = list(tables[0].columns)
        at = next(i for i, c in enumerate(cols) if c.key == "forget/all/probability") + 1
        tables[0] = dataclasses.replace(tables[0], columns=tuple(cols[:at] + [worst_column()] + cols[at:]))
        tables.append(attacks_table())
    return tables


def csv_keys(attacks: bool = False) -> list[str]:
    """Every key the report shows, each once, in page order (the CSV's columns)."""
    seen: dict[str, None] = {}
    for t in report_tables(attacks):
        for c in t.columns:
            seen.setdefault(c.key)
            if c.n_key:
                seen.setdefault(c.n_key)
    return list(seen)


# --------------------------------------------------------------------------- blank cells
def attack_reason(k: str, attacked: Sequence[str]) -> str | None:
    """Why an attack column (eval.report_sections) is blank for a row with ``attacked`` attack results, or None
    for a key that is not an attack column."""
    scope = k.split("/")[0]
    if scope not in ("standard", "worst_case", *ATTACKS):
        return None
    if not attacked:
        return "no attack result for this model (a study attacks its unlearned models and the target)"
    return f"no {scope} result for this model" if scope in ATTACKS else "not in its attack results"


def blank_reason(k: str, warnings: Sequence[str], cells: Sequence[Sequence[str]], has_gold: bool = True) -> str:
    """Why result key ``k`` has no value, in words that do not repeat the key (so that one cause is one
    footnote): the reason its aggregation recorded (the warning "<prefix> not computed: <reason>" with the
    longest prefix of ``k``), else what is missing from the result."""
    scope, modality, metric = k.split("/")
    if scope == "cost":
        why = "or its model has no run record" if modality == "training" else "its scoring pass was not measured"
        return f"no cost record in the result (written before clearbench recorded costs, {why})"
    wanted = [k] + ([k.removesuffix("_auc_gold") + "_privleak"] if k.endswith("_auc_gold") else [])
    best, reason = -1, ""
    for w in warnings:
        prefix, sep, why = w.partition(" not computed: ")
        if sep and len(prefix) > best and any(x.startswith(prefix) for x in wanted):
            best, reason = len(prefix), why
    if reason:
        return reason
    present = {tuple(c) for c in cells}
    if scope == "mia":
        missing = [s for s in ("forget", "holdout") if (s, modality) not in present]
        if missing:
            return f"no {' and no '.join(missing)} {modality} records (MIA compares forget with holdout records)"
    elif scope == "forget" and metric.startswith("forget_quality") and not has_gold:
        return "no gold result to compare with"
    elif scope in SPLIT_TEXT and scope != "all" and modality != "all" and (scope, modality) not in present:
        return f"no {scope}/{modality} records were scored"
    if metric.startswith("naming"):
        return "naming accuracy applies to naming records (a photo in, a name out) only"
    return "not in the result's aggregates (not computed for its records)"


# --------------------------------------------------------------------------- a table with its values
@dataclasses.dataclass
class Shown:
    """One cell as shown: its text, the value it sorts by, a note beside it (a KS statistic's n) and, for a
    blank cell, the number of its footnote."""

    text: str
    sort: Any
    sub: str = ""
    note: int | None = None


@dataclasses.dataclass
class Grid:
    """A table filled for one forget setting: the columns with a value in some row, the columns blank in every
    row with their reason (listed under the table, not drawn as a column of dashes), the rows, and the
    numbered reasons of the remaining blank cells."""

    table: Table
    columns: list[Column]
    hidden: list[tuple[Column, str]]
    rows: list[tuple[str, str, Any, list[Shown]]]  # (rank text, label, the row object, cells)
    notes: list[str]


# cell_of(row, column) -> Shown without a note, or None for a blank; reason_of(row, key) -> why it is blank
def fill(table: Table, entries: Sequence[tuple[str, str, Any]], cell_of, reason_of) -> Grid:
    """``entries``: (rank text, label, row) in table order."""
    values = [[cell_of(row, c) for c in table.columns] for _, _, row in entries]
    keep = [j for j in range(len(table.columns)) if any(v[j] is not None for v in values)]
    hidden = [(c, reason_of(entries[0][2], c.key) if entries else "no rows")
              for j, c in enumerate(table.columns) if j not in keep]
    order: dict[str, int] = {}
    rows = []
    for (rank, label, row), vals in zip(entries, values):
        cells = []
        for j in keep:
            if vals[j] is None:
                reason = reason_of(row, table.columns[j].key)
                vals[j] = Shown("—", "-Infinity", note=order.setdefault(reason, len(order) + 1))
            cells.append(vals[j])
        rows.append((rank, label, row, cells))
    return Grid(table, [table.columns[j] for j in keep], hidden, rows, list(order))

