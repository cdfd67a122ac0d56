"""Replicate seeds: the leaderboard's tables with every cell as mean ± sd over seeds.

Each seed's result files go through the leaderboard exactly as one study's do (``check_files``
against that seed's own gold result, ``make_rows`` recomputing every number from per-example
values, ``tables`` per forget modality). Rows are matched across seeds by their run name, the
result file's stem (``npo-l1-multimodal-10``, ``target-10``, ``gold-10``), which is the same in
every seed directory. A cell is the mean, the sample standard deviation (n − 1; none for n = 1)
and n, over the seeds where that row has that value. Rows are ranked by ``RANKING_RULE`` applied
to the means; ``seed ranks`` gives the row's rank in each seed's own table.
"""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from eval import report_html
from eval.leaderboard import (RANK_KEY, RANKING_RULE, SETTINGS, checked_rows, csv_cell, csv_keys_all, fmt,
                              grid_markdown, legend_markdown, make_reference, md_cell, rank_key_of, rank_text,
                              rejected_markdown, setting_title, tables)
from eval.report_columns import Column, Grid, Shown, Table, blank_reason, fill, report_tables

RunFiles = tuple[Sequence[str | Path], str | Path]  # (result files, that seed's gold result)


@dataclasses.dataclass
class Stat:
    mean: float
    sd: float | None  # sample sd; None when n == 1
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclasses.dataclass
class SeedRow:
    run: str  # result file stem, the row's identity across seeds
    label: str
    method: str | None
    l1_lambda: float
    is_gold: bool
    ranks: dict[int, int | None]  # seed -> rank in that seed's table (None: gold)
    cells: dict[str, Stat]  # result key -> over seeds
    warnings: list[str] = dataclasses.field(default_factory=list)  # every seed's reasons for missing keys
    scored: list[list[str]] = dataclasses.field(default_factory=list)  # the cells scored in any seed

    @property
    def n(self) -> int:
        return len(self.ranks)


def seed_tables(files: Sequence[str | Path], gold: str | Path) -> tuple[Any, dict[str, list], list]:
    """One seed's (reference, {setting: [(rank, Row)]}, rejected files), as ``build_report`` makes them."""
    ref, rows, rejected = checked_rows(files, make_reference(gold))
    return ref, tables(rows), rejected


def combine(per_seed: dict[int, dict[str, list]]) -> dict[str, list[tuple[int | None, SeedRow]]]:
    """{seed: {setting: [(rank, Row)]}} -> {setting: [(rank by means or None for gold, SeedRow)]}."""
    out: dict[str, list[tuple[int | None, SeedRow]]] = {}
    settings = [s for s in (*SETTINGS, "all") if any(s in tabs for tabs in per_seed.values())]
    for setting in settings:
        found: dict[str, list[tuple[int, int | None, Any]]] = {}  # run -> [(seed, rank, Row)]
        for seed, tabs in per_seed.items():
            for rank, row in tabs.get(setting, []):
                found.setdefault(Path(row.path).stem, []).append((seed, rank, row))
        rows = []
        for run, entries in found.items():
            first = entries[0][2]
            keys = {k for _, _, r in entries for k in r.metrics}
            cells = {k: Stat.of([r.metrics[k] for _, _, r in entries if k in r.metrics]) for k in sorted(keys)}
            rows.append(SeedRow(run, first.label, first.method, first.l1_lambda, first.is_gold,
                                {seed: rank for seed, rank, _ in entries}, cells,
                                list(dict.fromkeys(w for _, _, r in entries for w in r.warnings)),
                                [list(c) for c in dict.fromkeys(tuple(c) for _, _, r in entries for c in r.cells)]))
        ranked = sorted((r for r in rows if not r.is_gold), key=_rank_key)
        out[setting] = [(None, r) for r in rows if r.is_gold] + [(i + 1, r) for i, r in enumerate(ranked)]
    return out


def _rank_key(row: SeedRow) -> tuple[float, float, str]:
    return rank_key_of({k: c.mean for k, c in row.cells.items()}, row.label)


def _seed_ranks(row: SeedRow) -> str:
    return " ".join(f"{seed}:{'gold' if r is None else r}" for seed, r in sorted(row.ranks.items()))


def cell_text(key: str, row: SeedRow) -> str:
    c = row.cells.get(key)
    if c is None:
        return "—"
    text = fmt(key, c.mean) + (f" ± {fmt(key, c.sd)}" if c.sd is not None else "")
    return text + (f" (n={c.n})" if c.n < row.n else "")


SEEDS = Column("seeds", "_seeds", "in how many seeds the row exists")
SEED_RANKS = Column("seed ranks", "_ranks", "seed:rank, the row's rank in each seed's own table")


def seed_cell(row: SeedRow, col: Column) -> Shown | None:
    """A cell as mean ± sd over seeds, (n=k) where fewer seeds than the row's have it; None when blank."""
    if col is SEEDS:
        return Shown(str(row.n), row.n)
    if col is SEED_RANKS:
        return Shown(_seed_ranks(row), _seed_ranks(row))
    c = row.cells.get(col.key)
    if c is None:
        return None
    n = row.cells.get(col.n_key) if col.n_key else None
    return Shown(cell_text(col.key, row), repr(c.mean), f"n={n.mean:.0f}" if n is not None else "")


def seed_reason(row: SeedRow, k: str) -> str:
    return blank_reason(k, row.warnings, row.scored) + " (in every seed)"


def seed_grids(entries: list[tuple[int | None, SeedRow]]) -> list[Grid]:
    """The report's tables for one setting, the first with the seed count and each seed's rank."""
    items = [(rank_text(rank), row.label, row) for rank, row in entries]
    tabs = report_tables()
    tabs[0] = Table(tabs[0].name, tabs[0].title, tabs[0].about, (SEEDS, SEED_RANKS, *tabs[0].columns))
    return [fill(t, items, seed_cell, seed_reason) for t in tabs]


def table_markdown(entries: list[tuple[int | None, SeedRow]]) -> str:
    return "\n".join(line for grid in seed_grids(entries) for line in grid_markdown(grid))


def table_csv(entries: list[tuple[int | None, SeedRow]]) -> str:
    """Full precision; the mean's column is the result key, then ``<key>:sd`` and ``<key>:n``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = csv_keys_all()
    w.writerow(["rank", "run", "model", "method", "l1_lambda", "n", "seed_ranks",
                *(c for k in keys for c in (k, f"{k}:sd", f"{k}:n"))])
    for rank, row in entries:
        stats = [row.cells.get(k) for k in keys]
        w.writerow(["gold" if rank is None else rank, csv_cell(row.run), csv_cell(row.label), csv_cell(row.method or ""),
                    row.l1_lambda, row.n,
                    _seed_ranks(row), *(v for c in stats for v in (("", "", 0) if c is None else
                                                                   (repr(c.mean), "" if c.sd is None else repr(c.sd), c.n)))])
    return buf.getvalue()


def findings(tabs: dict[str, list[tuple[int | None, SeedRow]]]) -> list[str]:
    """One line per table: the unlearning method (reference rows aside) ranked first on the means (the lowest
    mean forget-quality D), in how many seeds it was the best method, and whether its lead over the
    runner-up exceeds the larger of their sds (a heuristic, not a significance test)."""
    lines = []
    for setting, entries in tabs.items():
        ranked = [r for rank, r in entries if rank is not None and r.method and RANK_KEY in r.cells]
        if not ranked:
            continue
        top = ranked[0]
        best = sum(1 for seed, rank in top.ranks.items()
                   if rank is not None and all(rank <= (o.ranks.get(seed) or math.inf) for o in ranked))
        line = (f"{setting}: best method by mean FQ D is {top.label} ({cell_text(RANK_KEY, top)}, n={top.n}); "
                f"best method in {best} of {top.n} seeds")
        if len(ranked) > 1:
            mine, other = top.cells[RANK_KEY], ranked[1].cells[RANK_KEY]
            gap = other.mean - mine.mean
            spread = max(mine.sd or 0.0, other.sd or 0.0)
            line += (f"; ahead of {ranked[1].label} by {fmt(RANK_KEY, gap)}, "
                     + ("more than one sd" if gap > spread else "within one sd"))
        lines.append(line)
    return lines


def _header(seeds: dict[int, Any]) -> list[str]:
    return [f"seed {s}: world {ref.world_fingerprint}, forget split {ref.forget_split}, gold {ref.gold_path}"
            for s, ref in seeds.items()]


def markdown_report(refs: dict[int, Any], tabs: dict, rejected: dict[int, list]) -> str:
    parts = ["# clearbench replicates: mean ± sd over seeds", "",
             f"- seeds: {', '.join(map(str, refs))} (each a complete study in seed-<s>/)",
             *(f"- {md_cell(line)}" for line in _header(refs)),
             f"- ranking, on the means over seeds: {RANKING_RULE}; seed ranks = seed:rank in that seed's own table",
             "- every number is recomputed from each seed's result files (eval.results.recompute), then "
             "averaged; ± is the sample sd (n − 1); (n=k) marks a cell present in fewer seeds than its row; "
             "a blank cell (—) carries the number of its reason, listed under its table",
             "", "## findings", "", *(f"- {md_cell(line)}" for line in findings(tabs) or ["none (no ranked rows)"]), ""]
    for setting, entries in tabs.items():
        parts += [f"## {setting_title(setting)}", "", table_markdown(entries), ""]
    parts += legend_markdown()
    items = [(f"seed {s}: {c.path}", c.reasons) for s, cs in rejected.items() for c in cs]
    return "\n".join(parts + rejected_markdown(items)) + "\n"


def render_html(refs: dict[int, Any], tabs: dict, rejected: dict[int, list]) -> str:
    e = html.escape
    intro = [*(f"<li>{e(line)}</li>" for line in _header(refs)),
             f"<li>ranking, on the means over seeds: {e(RANKING_RULE)}</li>",
             "<li>every number is recomputed from each seed's result files, then averaged; ± is the sample sd; "
             "a blank cell (—) carries the number of its reason, listed under its table; hover a header for its "
             "meaning, click it to sort (by the mean)</li>"]
    grids = {setting: seed_grids(entries) for setting, entries in tabs.items()}
    body = [report_html.nav({s: [g.table for g in gs] for s, gs in grids.items()}, plots=False),
            "<h2>findings</h2><ul>",
            *(f"<li>{e(line)}</li>" for line in findings(tabs)), "</ul>"]
    for setting, gs in grids.items():
        body.append(f'<h2 id="{e(setting)}">{e(setting_title(setting))}</h2>')
        body += [report_html.grid_html(setting, grid) for grid in gs]
    body.append(report_html.rejected_html([(f"seed {s}: {c.path}", c.reasons) for s, cs in rejected.items()
                                           for c in cs]))
    return report_html.page("clearbench replicates: mean ± sd over seeds", intro, body)


def build_replicate_report(runs: dict[int, RunFiles], out: str | Path) -> dict[str, Any]:
    """{seed: (result files, gold result)} -> ``out``/tables.md, table_<setting>.csv, index.html."""
    refs, per_seed, rejected = {}, {}, {}
    for seed, (files, gold) in runs.items():
        refs[seed], per_seed[seed], rejected[seed] = seed_tables(files, gold)
    tabs = combine(per_seed)
    report_html.write_report(out, markdown_report(refs, tabs, rejected), tabs, table_csv,
                             render_html(refs, tabs, rejected))
    return {"references": refs, "tables": tabs, "rejected": rejected, "findings": findings(tabs)}
