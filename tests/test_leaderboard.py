"""Leaderboard: the report recomputes every number, ranks by the documented rule, renders a
self-contained HTML page, and the validator rejects every kind of bad submission with its reason."""
from __future__ import annotations

import base64
import copy
import csv
import importlib.util
import io
import json
import pathlib
from html.parser import HTMLParser

import pytest

from clearbench.cli import main
from eval.aggregate import aggregate
from eval.leaderboard import (FQ_KEY, MU_KEY, RANK_KEY, RANKING_RULE, Reference, Row, build_report, check_file,
                              check_files, columns, csv_keys_all, fmt, make_reference, make_rows, rank_key, run_info,
                              tables)
from eval.report_columns import LEAD_COLUMNS, METAEVAL_VERSION, cost_values, lead_note, report_tables
from eval.results import build_result, recompute

_spec = importlib.util.spec_from_file_location("_clearbench_report_fixtures_lb",
                                               pathlib.Path(__file__).with_name("report_fixtures.py"))
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)
fx, MODELS, _json = rf.fx, rf.MODELS, rf.as_read

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    """A gold result and five valid results written to disk (no model involved)."""
    out = rf.write_results(tmp_path_factory.mktemp("lb"))
    out["ref"] = make_reference(out["gold_path"])  # validates the gold result (once: it costs a recomputation)
    return out


@pytest.fixture(scope="module")
def report(lb):
    ref = lb["ref"]
    out = lb["root"] / "report"
    return build_report(list(lb["paths"].values()), out, ref), out


def _reasons(lb, result, ref=None):
    path = lb["root"] / "bad.json"
    path.write_text(json.dumps(result))
    return check_file(path, ref or lb["ref"]).reasons


def _csv_rows(path):
    return {r["model"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


# --------------------------------------------------------------------------- report content
def test_tables_hold_recomputed_numbers(lb, report):
    rep, out = report
    assert set(rep["tables"]) == {"text", "visual", "multimodal"}
    csv_rows = _csv_rows(out / "table_multimodal.csv")
    assert set(csv_rows) == {"gold-10", "target", "npo", "npo + LoRA + L1"}
    md = (out / "tables.md").read_text()
    multimodal = md.split("## multimodal forgetting")[1].split("\n## ")[0]
    for label, name in (("npo", "npo-10"), ("npo + LoRA + L1", "npo-l1-10"), ("target", "target")):
        # recomputed metrics; the cost columns as the run measured them (its provenance)
        fresh = recompute(lb["results"][name], lb["gold"])["metrics"] | cost_values(lb["results"][name]["provenance"])
        row = csv_rows[label]
        for key in csv_keys_all():
            assert (float(row[key]) == fresh[key]) if key in fresh else row[key] == "", (label, key)
        lines = [line for line in multimodal.splitlines() if line.startswith("| ") and f"| {label} |" in line]
        assert len(lines) == len(report_tables())  # one line per table of the setting
        for line, table in zip(lines, report_tables()):
            for col in table.columns:
                if col.key in fresh:
                    assert fmt(col.key, fresh[col.key]) in line, (label, col.key)
    assert float(csv_rows["gold-10"][FQ_KEY]) == 1.0 and csv_rows["gold-10"]["rank"] == "gold"
    assert float(csv_rows["npo + LoRA + L1"]["l1_lambda"]) == 1e-4
    # settings: text / visual tables hold their method plus the reference rows (gold, target)
    assert set(_csv_rows(out / "table_text.csv")) == {"gold-10", "target", "grad_ascent"}
    assert set(_csv_rows(out / "table_visual.csv")) == {"gold-10", "target", "rmu"}
    for header, _ in columns()[:4]:
        assert header in md  # CLEAR's Real / Retain / Forget / FQ columns
    assert RANKING_RULE in md


def test_overview_leads_with_the_metaeval_columns(lb, report):
    """The meta-evaluation's picks (LEAD_COLUMNS) follow model utility in the overview, are keys the evaluation
    produces, show their recomputed values, and both report pages say where they come from."""
    rep, out = report
    keys = [c.key for c in report_tables()[0].columns]
    at = keys.index(MU_KEY) + 1
    lead = [k for _, k in LEAD_COLUMNS]
    new = [k for k in lead if k not in keys[:at]]  # a lead key already shown before (FQ D) is not repeated
    assert keys[at:at + len(new)] == new and len(set(keys)) == len(keys)
    fresh = recompute(lb["results"]["npo-10"], lb["gold"])["metrics"]
    assert all(k in fresh for k in lead)
    row = _csv_rows(out / "table_multimodal.csv")["npo"]
    assert all(float(row[k]) == fresh[k] for k in lead)
    assert f"meta-evaluation version {METAEVAL_VERSION}" in lead_note()
    assert lead_note() in (out / "tables.md").read_text()
    assert 'id="lead-columns"' in (out / "index.html").read_text()


def test_numbers_are_recomputed_not_copied(lb, tmp_path):
    res = copy.deepcopy(lb["results"]["npo-10"])
    stored = res["aggregates"]["metrics"]
    stored[MU_KEY] *= 1 + 1e-12  # within validation tolerance: accepted, but not what the report shows
    path = tmp_path / "npo-10.json"
    path.write_text(json.dumps(res))
    rep = build_report([path], tmp_path / "r", lb["ref"])
    row = next(r for r in rep["rows"] if r.label == "npo")
    assert row.metrics[MU_KEY] == recompute(res, lb["gold"])["metrics"][MU_KEY] != stored[MU_KEY]


def test_ranking_order(report):
    rep, out = report
    entries = rep["tables"]["multimodal"]
    assert entries[0][0] is None and entries[0][1].is_gold  # gold first, unranked
    ranked = [row for rank, row in entries[1:]]
    assert [rank for rank, _ in entries[1:]] == [1, 2, 3]
    ds = [(r.metrics[RANK_KEY], -r.metrics[MU_KEY]) for r in ranked]
    assert ds == sorted(ds)
    assert [r["model"] for r in csv.DictReader(io.StringIO((out / "table_multimodal.csv").read_text()))][1:] == \
        [r.label for r in ranked]


def test_ties_in_forget_quality_are_broken_by_model_utility():
    def row(label, d, mu):
        return Row(label, label, label, 0.0, "multimodal", False, {RANK_KEY: d, MU_KEY: mu}, {})
    rows = [row("a", 0.5, 0.2), row("b", 0.1, 0.1), row("c", 0.5, 0.4), row("d", 0.1, 0.3), row("e", 1.0, 0.9)]
    rows.append(Row("f", "f", "f", 0.0, "multimodal", False, {MU_KEY: 1.0}, {}))  # no FQ: last
    assert [r.label for r in sorted(rows, key=rank_key)] == ["d", "b", "c", "a", "e", "f"]


def test_pngs_are_written(report):
    rep, out = report
    assert {"tradeoff.png", "fq_modality.png"} <= set(rep["plots"])
    for name in rep["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.details, self.external, self.th = [], [], 0, [], []
        self.scripts, self._in_script, self.text = [], False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("id"))
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "details":
            self.details += 1
        elif tag == "th":
            self.th.append(a)
        elif tag == "script":
            self._in_script = True
            if "src" in a:
                self.external.append(a["src"])
        if tag == "link" or ("href" in a and not a["href"].startswith("#")):
            self.external.append(a.get("href"))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def test_html_is_self_contained(lb, report):
    rep, out = report
    page = _Page()
    page.feed((out / "index.html").read_text())
    page.close()
    crossmodal = ["table-matrix-probability", "table-matrix-forget_quality_d", "table-matrix-naming_acc", "table-leak",
                  "table-spearman"]  # the study has all three forget settings
    assert page.tables == [f"table-{s}-{t.name}" for s in ("text", "visual", "multimodal")
                           for t in report_tables()] + crossmodal
    assert page.external == []
    assert len(page.imgs) == len(rep["plots"])
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    n_rows = sum(len(e) for e in rep["tables"].values())
    assert page.details == n_rows  # one collapsible provenance per row
    text = "".join(page.text)
    assert "fp-npo-10" in text and "grad_ascent" in text and RANKING_RULE in text
    npo = recompute(lb["results"]["npo-10"], lb["gold"])["metrics"]
    for k in (RANK_KEY, "forget/all/forget_quality_log10p", MU_KEY):  # D with its n, log10 p beside it
        assert fmt(k, npo[k]) in text
    assert f"n={npo['forget/all/forget_quality_n']:.0f}" in text
    assert "addEventListener" in "".join(page.scripts)  # sortable headers


def test_rejected_files_are_listed_and_skipped(lb, tmp_path):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["aggregates"]["metrics"][FQ_KEY] = 0.999
    path = tmp_path / "cheat.json"
    path.write_text(json.dumps(bad))
    rep = build_report([lb["paths"]["target"], path], tmp_path / "r", lb["ref"])
    assert [c.path for c in rep["rejected"]] == [str(path)]
    assert all(r.path != str(path) for r in rep["rows"])
    md = (tmp_path / "r" / "tables.md").read_text()
    assert f"- {path}: " in md and "recomputation gives" in md
    page = (tmp_path / "r" / "index.html").read_text()
    assert "cheat.json" in page and "recomputation gives" in page


def test_curves_drawn_when_present_and_skipped_when_absent(lb, tmp_path):
    res = copy.deepcopy(lb["results"]["npo-10"])
    res["curve"] = [{"step": s, "forget_loss": 1.0 + s, "forget_quality": 0.1 * s} for s in range(4)]
    path = tmp_path / "npo-10.json"
    path.write_text(json.dumps(res))
    run_dir, empty_dir = tmp_path / "runs" / "dpo-10", tmp_path / "runs" / "idk-10"
    run_dir.mkdir(parents=True), empty_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run": {"method": "dpo", "l1_lambda": 0.0}}))
    (run_dir / "curve.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s}) + "\n" for s in range(3)))
    rep = build_report([path], tmp_path / "r", lb["ref"], [run_dir, empty_dir])
    assert {"curve_npo.png", "curve_dpo.png"} <= set(rep["plots"])
    assert (tmp_path / "r" / "curve_dpo.png").read_bytes().startswith(PNG)
    assert any("idk-10" in n and "no curve.jsonl" in n for n in rep["notes"])


def test_run_info_accessor():
    assert run_info({"run": {"method": "npo", "forget_modality": "text"}})["method"] == "npo"
    assert run_info({"config": {"unlearn": {"method": "dpo", "forget_modality": "image"}}})["method"] == "dpo"
    assert run_info({"parents": [{"path": "runs/x", "method": "kl", "l1_lambda": 0.1}]})["method"] == "kl"
    assert run_info({"parents": [{"path": "runs/x", "run": {"method": "idk"}}]})["method"] == "idk"
    assert run_info({"parents": [{"path": "runs/target", "stage": "finetune"}], "config": {}}) is None
    assert run_info({"run": {"method": "npo", "forget_modality": ["text", "image"]}})["forget_modality"] == "multimodal"
    with pytest.raises(ValueError, match="forget_modality 'smell'"):
        run_info({"run": {"method": "npo", "forget_modality": "smell"}})


# --------------------------------------------------------------------------- validator, one case each
def test_valid_files_are_accepted(lb):
    ref = lb["ref"]
    for path in [lb["gold_path"], *lb["paths"].values()]:
        assert check_file(path, ref).reasons == [], path


def test_wrong_schema_version(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["schema_version"] = 0
    assert "schema_version is 0, this clearbench reads 1" in _reasons(lb, bad)


def test_missing_schema_version(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    del bad["schema_version"]
    assert "schema_version is None, this clearbench reads 1" in _reasons(lb, bad)


def test_missing_provenance_field(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    del bad["provenance"]["model_fingerprint"]
    del bad["provenance"]["seed"]
    reasons = _reasons(lb, bad)
    assert "provenance is missing 'model_fingerprint'" in reasons
    assert "provenance is missing 'seed'" in reasons


def test_world_fingerprint_differs(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["provenance"]["world_fingerprint"] = "a" * 64
    want = f"world_fingerprint {'a' * 64!r} differs from the leaderboard's {'f' * 64!r} (gold result {lb['gold_path']})"
    assert want in _reasons(lb, bad)
    flags = Reference(world_fingerprint="b" * 64, forget_split="forget10", source="flags")
    assert any("differs from the leaderboard's 'bbbb" in r for r in _reasons(lb, lb["results"]["npo-10"], flags))


def test_forget_split_differs(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["provenance"]["forget_split"] = "forget05"
    assert any(r.startswith("forget_split 'forget05' differs from the leaderboard's 'forget10'")
               for r in _reasons(lb, bad))


def test_values_out_of_bounds(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["aggregates"]["metrics"]["retain/all/rouge_l"] = 1.5
    bad["aggregates"]["metrics"][FQ_KEY] = -0.2
    reasons = _reasons(lb, bad)
    assert "aggregate retain/all/rouge_l = 1.5 is out of bounds" in reasons
    assert f"aggregate {FQ_KEY} = -0.2 is out of bounds" in reasons


def test_tampered_aggregate(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    true_mu = bad["aggregates"]["metrics"][MU_KEY]
    bad["aggregates"]["metrics"][MU_KEY] = 0.99
    assert f"aggregate {MU_KEY} = 0.99 but recomputation gives {true_mu}" in _reasons(lb, bad)


def test_other_metric_options_are_rejected(lb):
    """Internally consistent but scored with the truth ratio against the answer: not comparable."""
    from eval.aggregate import MetricOptions
    from eval.results import examples_of, validate

    other = copy.deepcopy(lb["results"]["npo-10"])
    ex, gold_ex = examples_of(other), examples_of(lb["gold"])
    other["aggregates"] = _json(aggregate(ex, gold_ex, MetricOptions(tr_reference="answer")))
    assert validate(other, lb["gold"]) == []  # a valid file on its own
    reasons = _reasons(lb, other)
    assert any(r.startswith("metric option tr_reference='answer' differs from the leaderboard's 'tofu'")
               for r in reasons), reasons


def test_tampered_per_example_values(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    ex = next(e for e in bad["examples"] if e["split"] == "retain_perturbed")
    ex["lp_answer"] = [x * 0.1 for x in ex["lp_answer"]]  # claim a likelier answer, keep the aggregates
    reasons = _reasons(lb, bad)
    assert any(r.startswith("aggregate retain/all/probability = ") and "but recomputation gives" in r
               for r in reasons)


def test_duplicated_example(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["examples"].append(copy.deepcopy(bad["examples"][5]))
    assert f"example {bad['examples'][5]['id']!r} is duplicated" in _reasons(lb, bad)


def test_missing_example(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    n = len(bad["examples"])
    bad["examples"].pop(7)
    assert (f"examples do not match the expected ids ({n - 1} unique examples, {n} expected): "
            "missing or extra examples") in _reasons(lb, bad)


def test_gold_reference_is_not_the_leaderboards(lb):
    other_ex = fx.synthetic_examples(seed=9, memorised=0.0)
    other = _json(build_result(other_ex, aggregate(other_ex, other_ex),
                               dict(fx.provenance(), model_fingerprint="other-gold"), gold=other_ex))
    other["provenance"]["model_fingerprint"] = "other-gold"
    ex = fx.synthetic_examples(seed=2, memorised=0.3)
    prov = dict(fx.provenance(), model_fingerprint="fp-x", run=MODELS["npo-10"][1])
    bad = _json(build_result(ex, aggregate(ex, other_ex), prov, gold=other))
    reasons = _reasons(lb, bad)
    assert "embedded gold model_fingerprint 'other-gold' != gold result's 'gold-fp'" in reasons
    assert any(r.startswith(f"{len(bad['gold']['examples'])} embedded gold examples differ from the gold result")
               for r in reasons)
    # the same file is accepted by a leaderboard whose gold is that other gold
    path = lb["root"] / "other-gold.json"
    path.write_text(json.dumps(other))
    assert _reasons(lb, bad, make_reference(path)) == []


def test_missing_embedded_gold(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["gold"] = None
    assert "result embeds no gold examples but a gold result was given" in _reasons(lb, bad)


def test_unreadable_and_malformed_files(lb, tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    assert check_file(path, Reference()).reasons[0].startswith("cannot be read as a JSON result file")
    path.write_text("[1, 2]")
    assert check_file(path, Reference()).reasons == ["result is not a JSON object"]
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["provenance"]["run"]["forget_modality"] = "smell"
    assert any("forget_modality 'smell'" in r for r in _reasons(lb, bad))


def test_reference_without_gold_is_the_majority(lb, tmp_path):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["provenance"]["world_fingerprint"] = "c" * 64
    path = tmp_path / "other-world.json"
    path.write_text(json.dumps(bad))
    ref, checked = check_files([lb["paths"]["target"], lb["paths"]["ga-text-10"], path], Reference())
    assert ref.world_fingerprint == "f" * 64 and ref.forget_split == "forget10"
    assert [bool(c.reasons) for c in checked] == [False, False, True]
    assert any("world_fingerprint 'cccc" in r and "majority" in r for r in checked[2].reasons)


def test_gold_disagreeing_with_flags_is_an_error(lb):
    with pytest.raises(ValueError, match="--forget says 'forget05'"):
        make_reference(lb["gold_path"], forget_split="forget05")


# --------------------------------------------------------------------------- CLI
def test_cli_validate_and_report(lb, tmp_path, capsys):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["schema_version"] = 2
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    good = [str(lb["paths"]["npo-10"]), str(lb["paths"]["target"])]
    gold = ["--gold", str(lb["gold_path"])]
    assert main(["leaderboard", "validate", *good, *gold]) == 0
    assert main(["leaderboard", "validate", *good, str(bad_path), *gold]) == 1
    err = capsys.readouterr().err
    assert f"REJECTED {bad_path}" in err and "schema_version is 2" in err
    out = tmp_path / "report"
    assert main(["leaderboard", *good, str(bad_path), *gold, "--out", str(out)]) == 1
    assert (out / "index.html").is_file() and (out / "table_multimodal.csv").is_file()
    assert "bad.json" in (out / "tables.md").read_text()
    assert main(["leaderboard", *good]) == 2  # no --out: loud error
    assert main(["leaderboard", "validate", *good, "--gold", str(tmp_path / "nope.json")]) == 2


def test_without_gold_flag_the_self_gold_file_is_the_reference_row(lb):
    ref, checked = check_files([lb["paths"]["npo-10"], lb["gold_path"]], Reference())
    assert all(not c.reasons for c in checked)
    entries = tables(make_rows(checked, ref))["multimodal"]
    assert [(rank, row.label, row.is_gold) for rank, row in entries] == [(None, "gold-10", True), (1, "npo", False)]


# --------------------------------------------------------------------------- cost (clearbench.cost)
def test_cost_columns_and_plot(lb, report):
    rep, out = report
    tabs = rep["tables"]
    joint = {r.label: r for _, r in tabs["multimodal"]}
    npo = joint["npo"]
    assert npo.metrics["cost/training/wall_seconds"] == 21.5 and npo.metrics["cost/training/tokens_backward"] == 2000
    assert fmt("cost/training/tokens_backward", 1234567.0) == "1,234,567"
    md = (out / "tables.md").read_text()
    assert "### cost" in md and "tokens fwd+bwd" in md
    rows = _csv_rows(out / "table_visual.csv")
    assert rows["rmu"]["cost/training/wall_seconds"] == ""  # a result written before costs were recorded
    assert float(_csv_rows(out / "table_multimodal.csv")["npo"]["cost/training/peak_memory_mb"]) == 902.0
    assert "no cost record in the result" in md
    assert "cost.png" in rep["plots"] and (out / "cost.png").read_bytes().startswith(PNG)


def test_negative_or_missing_cost_fields_are_rejected(lb):
    bad = copy.deepcopy(lb["results"]["npo-10"])
    bad["provenance"]["cost"]["training"]["tokens_backward"] = -3
    assert any("provenance.cost.training.tokens_backward is negative" in r for r in _reasons(lb, bad))
    bad = copy.deepcopy(lb["results"]["npo-10"])
    del bad["provenance"]["cost"]["evaluation"]["peak_memory_mb"]
    assert any("provenance.cost.evaluation.peak_memory_mb is missing" in r for r in _reasons(lb, bad))
