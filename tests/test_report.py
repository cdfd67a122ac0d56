"""The report as a person reads it, and as an adversary feeds it: plain-text labels in plots, CSV cells that
cannot run as formulas, Markdown cells that cannot break a table, oversized and deeply nested files refused in
one line, one bad file or plot never stopping the report, blank cells explained, labels that do not collide,
and (with chromium installed) the page rendered in a 1400 px window without overflowing it."""
from __future__ import annotations

import copy
import csv
import importlib.util
import io
import json
import pathlib
import re

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from eval import leaderboard, plots
from eval.leaderboard import Row, build_report, grid_markdown, make_reference, setting_grids
from eval.report_columns import blank_reason


def _load(name: str, alias: str):
    spec = importlib.util.spec_from_file_location(alias, pathlib.Path(__file__).with_name(name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rf = _load("report_fixtures.py", "_clearbench_report_fixtures_report")
shots = _load("report_screenshot.py", "_clearbench_report_screenshot")

MATHTEXT = "npo $\\foo{$"
FORMULA = "=cmd|' /C calc'!A0"
MARKUP = "evil|method\nsecond line <script>alert(1)</script>"
MODELS = {
    **rf.MODELS,
    "mathtext-10": (0.4, rf.run(MATHTEXT, "text"), 6),
    "formula-10": (0.45, rf.run(FORMULA, "image"), 7),
    "plus-10": (0.5, rf.run("+1 -2 @x", "image"), 8),
    "markup-10": (0.55, rf.run(MARKUP, "joint"), 9),
    "long-name-10": (0.35, rf.run("a_rather_long_method_name_with_options", "joint", 1e-3, True), 10),
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    files = rf.write_results(tmp_path_factory.mktemp("report"), MODELS)
    files["ref"] = make_reference(files["gold_path"])
    out = files["root"] / "report"
    files["report"] = build_report(list(files["paths"].values()), out, files["ref"])
    files["out"] = out
    return files


# --------------------------------------------------------------------------- labels are plain text
def test_mathtext_in_a_method_name_is_drawn_as_written(study):
    rep = study["report"]
    assert rep["notes"] == []
    assert {"forget_retain.png", "tradeoff.png", "fq_modality.png", "settings.png"} <= set(rep["plots"])
    assert any(r.label == MATHTEXT for r in rep["rows"])
    assert "npo $\\foo{$" in (study["out"] / "index.html").read_text()
    # the guard matters: with mathtext on, the same label stops matplotlib
    fig = Figure()
    fig.add_subplot().set_title(MATHTEXT)
    with matplotlib.rc_context({"text.parse_math": True}), pytest.raises(ValueError):
        plots.png(fig)


def test_csv_text_cells_cannot_start_a_formula(study):
    for setting in ("text", "visual", "multimodal"):
        for row in csv.DictReader(io.StringIO((study["out"] / f"table_{setting}.csv").read_text())):
            for name in ("model", "method", "file"):
                assert row[name][:1] not in ("=", "+", "-", "@", "\t", "\r"), (name, row[name])
            for k, v in row.items():
                if k not in ("rank", "model", "method", "file", "check", "lineage") and v:
                    float(v)  # numbers stay numbers (a negative value is not a formula)
    visual = {r["method"] for r in csv.DictReader(io.StringIO((study["out"] / "table_visual.csv").read_text()))}
    assert "'" + FORMULA in visual and "'+1 -2 @x" in visual


def test_markdown_cells_cannot_break_a_table(study):
    md = (study["out"] / "tables.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    head = None
    for line in md.splitlines():
        if not line.startswith("|"):
            head = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))  # unescaped pipes
        head = head or cells
        assert cells == head, line
    row = next(line for line in md.splitlines() if "evil" in line)
    assert "evil\\|method second line" in row


# --------------------------------------------------------------------------- files refused in one line
def test_an_oversized_result_is_refused_in_one_line(study, tmp_path, monkeypatch):
    from eval import verify

    padded = copy.deepcopy(study["results"]["npo-10"])
    padded["examples"][0]["generation"] += " padding" * 40_000
    path = tmp_path / "padded.json"
    path.write_text(json.dumps(padded))
    monkeypatch.setattr(verify, "MAX_RESULT_BYTES", study["paths"]["npo-10"].stat().st_size + 100_000)
    rep = build_report([study["paths"]["target"], path], tmp_path / "r", study["ref"])
    (rejected,) = rep["rejected"]
    assert rejected.path == str(path) and len(rejected.reasons) == 1 and "\n" not in rejected.reasons[0]
    assert "limit of a result file" in rejected.reasons[0]
    assert {r.label for r in rep["rows"]} == {"gold-10", "target"}
    assert "padded.json" in (tmp_path / "r" / "index.html").read_text()


def test_json_nested_deeper_than_the_schema_is_refused_in_one_line(study, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"provenance": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(RecursionError):
        json.loads(deep.read_text())  # what reading it naively would do
    nested = copy.deepcopy(study["results"]["npo-10"])
    node = nested["provenance"]["config"]
    for _ in range(40):  # a valid result, but nested far deeper than any result file
        node["x"] = {}
        node = node["x"]
    mid = tmp_path / "nested.json"
    mid.write_text(json.dumps(nested))
    rep = build_report([deep, study["paths"]["target"], mid], tmp_path / "r", study["ref"])
    reasons = {c.path: c.reasons for c in rep["rejected"]}
    for path in (deep, mid):
        assert len(reasons[str(path)]) == 1 and "nested deeper than the schema allows" in reasons[str(path)][0]
    assert [r.label for r in rep["rows"] if not r.is_gold] == ["target"]


def test_a_file_that_cannot_be_recomputed_does_not_stop_the_report(study, tmp_path, monkeypatch):
    """A row that fails to be made is listed with its reason. (Its numbers were recomputed when the file was
    checked, and the row reuses them: a file whose numbers cannot be recomputed is rejected by that check.)"""
    real = leaderboard.unverified_lineage

    def flaky(provenance):
        if provenance.get("model_fingerprint") == "fp-npo-10":
            raise ZeroDivisionError("boom")
        return real(provenance)

    monkeypatch.setattr(leaderboard, "unverified_lineage", flaky)
    rep = build_report([study["paths"]["npo-10"], study["paths"]["target"]], tmp_path / "r", study["ref"])
    assert [(c.path, c.reasons) for c in rep["rejected"]] == [
        (str(study["paths"]["npo-10"]), ["cannot be recomputed: ZeroDivisionError: boom"])]
    assert "target" in {r.label for r in rep["rows"]}


def test_a_plot_that_fails_is_a_note(study, tmp_path, monkeypatch):
    def broken(rows):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(plots, "tradeoff_plot", broken)
    rep = build_report([study["paths"]["npo-10"]], tmp_path / "r", study["ref"])
    assert "tradeoff.png could not be drawn: RuntimeError: no canvas" in rep["notes"]
    assert "forget_retain.png" in rep["plots"] and "no canvas" in (tmp_path / "r" / "index.html").read_text()


def test_report_files_replace_a_planted_symlink(study, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "r"
    out.mkdir()
    (out / "tables.md").symlink_to(victim)
    build_report([study["paths"]["npo-10"]], out, study["ref"])
    assert victim.read_text() == "keep me"
    assert not (out / "tables.md").is_symlink() and "clearbench leaderboard" in (out / "tables.md").read_text()
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())  # a report is meant to be read


# --------------------------------------------------------------------------- blank cells say why
def _row(label: str, metrics: dict, warnings=(), cells=()) -> Row:
    return Row(f"{label}.json", label, label, 0.0, "text", False, metrics, {}, warnings=list(warnings),
               cells=[list(c) for c in cells])


def test_blank_cells_carry_a_footnote_with_their_reason():
    cells = [("forget", "text"), ("holdout", "text"), ("forget", "image"), ("holdout", "image")]
    full = {"forget/text/forget_quality_d": 0.4, "forget/text/forget_quality_n": 40.0,
            "forget/text/forget_quality_log10p": -3.0, "mia/text/loss_auc": 0.7, "mia/image/loss_auc": 0.6,
            "mia/image/loss_privleak": -5.0}
    a = _row("a", full, cells=cells)
    b = _row("b", {k: v for k, v in full.items() if not k.startswith(("mia/text", "forget/text/forget_quality"))},
             warnings=["forget/text/forget_quality not computed: no forget/text/all examples"],
             cells=[c for c in cells if c != ("holdout", "text")])
    c = _row("c", {k: v for k, v in full.items() if k != "mia/image/loss_privleak"},
             warnings=["mia/image/loss_privleak not computed: the gold model's AUC is 1.0 (PrivLeak undefined)"],
             cells=cells)
    grids = {g.table.name: g for g in setting_grids([(1, a), (2, b), (3, c)])}
    text = grids["text"]
    shown = {col.key: j for j, col in enumerate(text.columns)}
    row_b = text.rows[1][3]
    assert row_b[shown["forget/text/forget_quality_d"]].text == "—"
    assert text.rows[0][3][shown["forget/text/forget_quality_d"]].sub == "n=40"
    notes = {i + 1: n for i, n in enumerate(text.notes)}
    assert notes[row_b[shown["forget/text/forget_quality_d"]].note] == "no forget/text/all examples"
    assert notes[row_b[shown["mia/text/loss_auc"]].note] == "no holdout text records (MIA compares forget with holdout records)"
    md = "\n".join(grid_markdown(text))
    assert "— [1]" in md and "- [1] no forget/text/all examples" in md
    # a column blank in every row is listed with its reason, not drawn as dashes
    assert any(col.key == "mia/text/min_k_pp_auc" for col, _ in text.hidden)
    image = grids["image"]
    privleak = [cells[[col.key for col in image.columns].index("mia/image/loss_privleak")] for *_, cells in image.rows]
    assert privleak[2].text == "—"
    assert image.notes[privleak[2].note - 1] == "the gold model's AUC is 1.0 (PrivLeak undefined)"


def test_blank_reasons_without_a_warning_name_what_is_missing():
    assert blank_reason("retain/joint/rouge_l", [], [("retain", "text")]) == "no retain/joint records were scored"
    assert blank_reason("forget/text/naming_acc", [], [("forget", "text")]).startswith("naming accuracy applies")
    assert blank_reason("forget/all/forget_quality_d", [], [("forget", "text")], has_gold=False) == \
        "no gold result to compare with"
    # PrivLeak's warning also explains the gold AUC stored beside it
    w = ["mia/image/min_k_privleak not computed: the gold model's AUC is 1.0 (PrivLeak undefined)"]
    assert blank_reason("mia/image/min_k_auc_gold", w, []) == "the gold model's AUC is 1.0 (PrivLeak undefined)"


def test_every_column_explains_itself(study):
    page = (study["out"] / "index.html").read_text()
    titles = re.findall(r'<th title="([^"]*)">', page)
    assert titles and all(t.strip() for t in titles)
    assert "KS statistic D" in page and 'class="legend"' in page


# --------------------------------------------------------------------------- plots people can read
def test_number_labels_do_not_collide():
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    pts = [(0.5 + rng.normal(0, 0.01), 0.5 + rng.normal(0, 0.01), str(i)) for i in range(12)]
    pts += [(0.2, 0.2, "13"), (0.2, 0.2, "14")]  # the same place: one shared label
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    plots.place_labels(fig, ax, pts)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert "13,14" in [t.get_text() for t in ax.texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_the_gold_star_is_drawn_above_every_marker(study):
    fig = Figure()
    ax = fig.add_subplot()
    rows = study["report"]["rows"]
    styles = plots.Styles(rows)
    for r in rows:
        styles.scatter(ax, r, 0.5, 0.5)  # every row at the same place: the star must stay visible
    gold = [c for c in ax.collections if c.get_zorder() == plots.GOLD_STYLE["zorder"]]
    assert len(gold) == 1 and all(c.get_zorder() < gold[0].get_zorder() for c in ax.collections if c is not gold[0])


# --------------------------------------------------------------------------- as a person sees it
@pytest.mark.skipif(shots.chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_rendered_page_fits_a_1400px_window(study, tmp_path):
    page = study["out"] / "index.html"
    m = shots.measure(page, width=1400)
    assert m["page"] <= 1400, m["page"]
    # 6 tables per forget setting (overview, 3 modalities, controls, cost) + cross-modal
    assert len(m["tables"]) == 18 + 5 and all(right <= 1400 for _, right in m["tables"]), m["tables"]
    assert all(right <= 1400 for _, right in m["images"]), m["images"]
    png = shots.screenshot(page, tmp_path / "shot.png", 1400, 1200)
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape == (1200, 1400) and pixels.std() > 10  # a page with content, not a blank


# --------------------------------------------------------------------------- attacks in the report
def test_attack_columns_are_recomputed_and_tampering_is_rejected(study, tmp_path):
    from eval.attacks.result import worst_case

    npo, target = study["results"]["npo-10"], study["results"]["target"]
    files = {}
    for name, res, attack in (("npo-q", npo, "quantize"), ("npo-r", npo, "relearn"), ("target-q", target, "quantize")):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(rf.make_attack(res, attack)))
    tampered = rf.make_attack(target, "paraphrase")
    tampered["settings"][0]["examples"][0]["lp_answer"] = [0.0] * len(tampered["settings"][0]["examples"][0]["lp_answer"])
    files["tampered"] = tmp_path / "tampered.json"
    files["tampered"].write_text(json.dumps(tampered))
    foreign = rf.make_attack(npo, "transform")  # npo's attack filed under the target's run
    files["foreign"] = tmp_path / "foreign.json"
    files["foreign"].write_text(json.dumps(foreign))
    attacks = {"npo-10": [files["npo-q"], files["npo-r"]], "target": [files["target-q"], files["tampered"],
                                                                      files["foreign"]],
               "no-such-run": [files["npo-q"]]}
    rep = build_report([study["paths"]["npo-10"], study["paths"]["target"]], tmp_path / "r", study["ref"],
                       attacks=attacks)
    reasons = {c.path: c.reasons for c in rep["rejected"]}
    assert any("recomputation gives" in r for r in reasons[str(files["tampered"])])
    assert any(r.startswith("model_fingerprint") for r in reasons[str(files["foreign"])])
    assert len(rep["rejected"]) == 3  # the tampered, the foreign and the orphan file
    rows = {r.label: r for r in rep["rows"]}
    want = worst_case([json.loads(files["npo-q"].read_text()), json.loads(files["npo-r"].read_text())])
    assert rows["npo"].metrics["worst_case/all/probability"] == want["worst_case/all/probability"]
    assert rows["npo"].metrics["worst_case/all/probability"] > rows["npo"].metrics["standard/all/probability"]
    assert set(rows["npo"].attacks) == {"quantize", "relearn"} and set(rows["target"].attacks) == {"quantize"}
    assert rows["npo"].attacks["quantize"]["strong"]["probability"] > rows["npo"].attacks["quantize"]["weak"][
        "probability"] > 0
    assert "paraphrase" not in rows["target"].attacks  # the tampered file's numbers never enter
    assert {"attacks.png", "recovery_curves.png"} <= set(rep["plots"])
    curve = rows["npo"].attacks["quantize"]["strong"]["curve"]
    assert [s for s, _ in curve] == [0, 1, 2] and curve[0][1] < curve[1][1] < curve[2][1]  # recovers step by step
    md = (tmp_path / "r" / "tables.md").read_text()
    assert "worst-case Prob ↓" in md and "### attacks" in md and "quantize: recovery Δ forget probability" in md
    assert "no attack result for this model" in md  # the gold row's blank attack cells say why
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'id="table-multimodal-attacks"' in page and 'id="table-attack-quantize"' in page
