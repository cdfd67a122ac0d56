"""eval.replicates on hand-made leaderboard rows: rows matched by run name across seeds, cells
as mean / sample sd / n, ranking on the means, and the findings line."""
from __future__ import annotations

import math

from eval.leaderboard import MU_KEY, RANK_KEY, Row
from eval.replicates import Stat, cell_text, combine, findings, table_csv, table_markdown


def _row(run: str, method: str | None, metrics: dict, gold: bool = False) -> Row:
    return Row(f"seed-x/results/{run}.json", method or run, method, 0.0, None if method is None else "multimodal",
               gold, metrics, {})


def _seeds():
    # seed 0: npo best; seed 1: ga best; ga has no MU in seed 1
    s0 = {"multimodal": [(None, _row("gold-10", None, {RANK_KEY: 0.0, MU_KEY: 0.5}, gold=True)),
                         (1, _row("npo-10", "npo", {RANK_KEY: 0.5, MU_KEY: 0.4})),
                         (2, _row("ga-10", "grad_ascent", {RANK_KEY: 0.9, MU_KEY: 0.2}))]}
    s1 = {"multimodal": [(None, _row("gold-10", None, {RANK_KEY: 0.0, MU_KEY: 0.7}, gold=True)),
                         (1, _row("ga-10", "grad_ascent", {RANK_KEY: 0.6})),
                         (2, _row("npo-10", "npo", {RANK_KEY: 0.7, MU_KEY: 0.2}))]}
    return {0: s0, 1: s1}


def test_stat_is_mean_sample_sd_and_n():
    s = Stat.of([1.0, 2.0, 4.0])
    assert math.isclose(s.mean, 7 / 3) and math.isclose(s.sd, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                          + (4 - 7 / 3) ** 2) / 2)) and s.n == 3
    assert Stat.of([0.3]).sd is None


def test_rows_are_matched_by_run_and_ranked_on_means():
    tab = combine(_seeds())["multimodal"]
    assert [(rank, r.run) for rank, r in tab] == [(None, "gold-10"), (1, "npo-10"), (2, "ga-10")]
    npo, ga = tab[1][1], tab[2][1]
    assert math.isclose(npo.cells[RANK_KEY].mean, 0.6) and math.isclose(npo.cells[RANK_KEY].sd, math.sqrt(0.02))
    assert npo.ranks == {0: 1, 1: 2} and ga.n == 2
    assert ga.cells[MU_KEY] == Stat(0.2, None, 1)  # present in one seed only
    assert cell_text(MU_KEY, ga) == "0.2000 (n=1)"
    assert "0:1 1:2" in table_markdown(tab) and "gold (ref)" in table_markdown(tab)
    header, *lines = table_csv(tab).splitlines()
    assert f"{RANK_KEY},{RANK_KEY}:sd,{RANK_KEY}:n" in header and lines[1].startswith("1,npo-10,npo,npo,")


def test_findings_name_the_best_method_and_how_often_it_won():
    (line,) = findings(combine(_seeds()))
    assert line.startswith("multimodal: best method by mean FQ D is npo")
    assert "best method in 1 of 2 seeds" in line and "ahead of grad_ascent" in line and "within one sd" in line


def test_replicate_report_renders_every_table_from_two_seed_studies(tmp_path):
    """Two seeds' result files on disk -> the combined page: the report's tables with mean ± sd, each seed's
    rank in the overview, plain-text labels in Markdown and CSV."""
    import csv
    import importlib.util
    import io
    import pathlib

    from eval.replicates import build_replicate_report
    from eval.report_columns import report_tables

    spec = importlib.util.spec_from_file_location("_clearbench_report_fixtures_rep",
                                                  pathlib.Path(__file__).with_name("report_fixtures.py"))
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    runs = {}
    for seed in (0, 1):
        models = {"target": (1.0, None, 10 + seed), "npo-10": (0.3, rf.run("npo", "joint"), 20 + seed),
                  "evil-10": (0.6, rf.run("=1+1|x\nz", "joint"), 30 + seed)}
        (tmp_path / f"s{seed}").mkdir()
        files = rf.write_results(tmp_path / f"s{seed}", models)
        runs[seed] = (list(files["paths"].values()), files["gold_path"])
    rep = build_replicate_report(runs, tmp_path / "report")
    assert all(not r for r in rep["rejected"].values())
    page = (tmp_path / "report" / "index.html").read_text()
    for t in report_tables():
        assert f'id="table-multimodal-{t.name}"' in page
    assert " ± " in page and "0:1 1:" in page
    import re
    anchors, ids = set(re.findall(r'href="#([^"]+)"', page)), set(re.findall(r' id="([^"]+)"', page))
    assert anchors and anchors <= ids, f"links to no section: {sorted(anchors - ids)}"  # no plots section here
    md = (tmp_path / "report" / "tables.md").read_text()
    assert "=1+1\\|x z" in md and "| npo |" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "table_multimodal.csv").read_text())))
    assert {r["model"] for r in rows} >= {"npo", "'=1+1|x\nz"}
