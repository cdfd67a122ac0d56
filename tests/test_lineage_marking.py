"""The leaderboard marks a row whose model is not verified to descend from the target (eval.own's lineage): in
tables.md, index.html and the CSVs, and as a warning of ``leaderboard validate``; the suite's own runs and
verified own models stay unmarked. Synthetic result files (tests/report_fixtures.py), no model involved."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import pathlib

import pytest

from clearbench.cli import main
from eval.leaderboard import UNVERIFIED_MARK, build_report, make_reference
from eval.own import NO_TARGET, OWN_FIELD, OwnModel, own_provenance, unverified_lineage

_spec = importlib.util.spec_from_file_location("_clearbench_report_fixtures_lineage",
                                               pathlib.Path(__file__).with_name("report_fixtures.py"))
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)

UNVERIFIED = "unverified: no run record, adapter marker or --base names the model's parent"
# name: (provenance fields an own-model evaluation adds, expected lineage note or None)
OWN = {
    "mine-unverified": ({"lineage": {"target": "runs/target", "target_fingerprint": "fp-target", "ancestors": [],
                                     "verified": False, "relation": UNVERIFIED}, OWN_FIELD: True}, UNVERIFIED),
    "mine-no-target": ({OWN_FIELD: True}, NO_TARGET),
    "mine-verified": ({"lineage": {"target": "runs/target", "target_fingerprint": "fp-target",
                                   "ancestors": ["fp-target"], "verified": True,
                                   "relation": "descends from the target (run records)"}, OWN_FIELD: True}, None),
}
METHOD = {"mine-unverified": "mine_a", "mine-no-target": "mine_b", "mine-verified": "mine_c"}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The gold, the target and a study row (npo-10: no lineage, as `clearbench run` writes it) beside three
    own-model results of the multimodal table: unverified lineage, no lineage at all, verified lineage."""
    models = {k: rf.MODELS[k] for k in ("target", "npo-10")}
    models |= {name: (0.4 + 0.1 * i, rf.run(METHOD[name], "joint"), 10 + i) for i, name in enumerate(OWN)}
    out = rf.write_results(tmp_path_factory.mktemp("lineage"), models)
    for name, (fields, _) in OWN.items():
        out["results"][name]["provenance"] |= fields
        out["paths"][name].write_text(json.dumps(out["results"][name]))
    ref = make_reference(out["gold_path"])
    out["report"] = build_report(list(out["paths"].values()), out["root"] / "report", ref)
    return out


def test_the_lineage_note_of_each_kind_of_result(board):
    assert unverified_lineage(board["results"]["npo-10"]["provenance"]) is None  # the suite's own run
    assert unverified_lineage(board["results"]["target"]["provenance"]) is None
    for name, (_, why) in OWN.items():
        assert unverified_lineage(board["results"][name]["provenance"]) == why, name
    assert unverified_lineage({"base": {"path": "runs/target"}}) == NO_TARGET  # a plain adapter, no --target
    assert unverified_lineage({"lineage": {"verified": "yes"}}) == "unverified"  # only true is verified


def test_an_own_model_evaluation_records_that_it_is_one(tmp_path):
    labelled = own_provenance(OwnModel(tmp_path, method="mine", forget_modality="text"), "fp")
    assert labelled[OWN_FIELD] is True and unverified_lineage(labelled) == NO_TARGET
    assert own_provenance(OwnModel(tmp_path), "fp") == {}  # a plain `clearbench evaluate --model`: nothing added


def test_the_report_marks_unverified_rows_only(board):
    rows = {pathlib.Path(r.path).stem: r for r in board["report"]["rows"]}
    marked = {name for name, r in rows.items() if r.label.endswith(f" {UNVERIFIED_MARK}")}
    assert marked == {"mine-unverified", "mine-no-target"}
    report = board["root"] / "report"
    md = (report / "tables.md").read_text()
    multimodal = md.split("## multimodal forgetting")[1].split("\n## ")[0]
    assert f"| mine_a {UNVERIFIED_MARK} |" in multimodal and f"| mine_b {UNVERIFIED_MARK} |" in multimodal
    assert "| npo |" in multimodal and "| mine_c |" in multimodal  # the study row and the verified one: unmarked
    notes = [line for line in md.splitlines() if "lineage not verified against the target" in line]
    assert len(notes) == 2 and all(line.startswith(f"- {UNVERIFIED_MARK} ") for line in notes)
    assert any("mine-unverified.json" in n and UNVERIFIED in n for n in notes)
    assert any("mine-no-target.json" in n and "without --target" in n for n in notes)
    page = (report / "index.html").read_text()
    assert page.count('<li class="lineage">') == 2 and f"mine_a {UNVERIFIED_MARK}" in page
    table = {r["file"]: r for r in csv.DictReader(io.StringIO((report / "table_multimodal.csv").read_text()))}
    lineage = {pathlib.Path(f).stem: r["lineage"] for f, r in table.items()}
    assert lineage["mine-unverified"] == UNVERIFIED and lineage["mine-no-target"] == NO_TARGET
    assert lineage["npo-10"] == lineage["mine-verified"] == lineage["target"] == ""


def test_validate_warns_but_accepts(board, capsys):
    paths = board["paths"]
    code = main(["leaderboard", "validate", *map(str, paths.values()), "--gold", str(board["gold_path"])])
    out = capsys.readouterr()
    assert code == 0 and out.out.count("ok ") == len(paths) and "REJECTED" not in out.err
    warnings = [line for line in out.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("lineage not verified against the target" in w for w in warnings)
    assert {pathlib.Path(w.split(": ")[1]).stem for w in warnings} == {"mine-unverified", "mine-no-target"}
