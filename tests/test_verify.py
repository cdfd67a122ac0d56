"""Submission checking on a tiny-smoke study (real models): every part of the aggregates is recomputed, the gold
row is the --gold file's content, skipped checks are named, and ``leaderboard verify`` re-scores a sample with the
model and catches a fabricated per-example value that no file check can see. The tampering rows of issue 15 run
through the CLI in tests/test_hardening.py."""
from __future__ import annotations

import copy
import csv
import functools
import io
import json
from pathlib import Path

import pytest

from clearbench.cli import main
from clearbench.config import BenchConfig, load_config
from eval.aggregate import MetricOptions, aggregate
from eval.results import examples_of, ids_digest
from eval.verify import Reference, check_file, check_result, make_reference, sidecar_path

GA = "grad_ascent-multimodal-10"


@functools.cache
def smoke_study(root: str) -> dict:
    """A tiny-smoke study with grad_ascent (~1 min on a CPU), run once per session (tests/test_hardening.py
    reads it too). Treat it as read-only: copy a file before changing it."""
    from clearbench.executor import run_study

    out = Path(root) / "smoke"
    run_study(load_config(BenchConfig, "tiny-smoke", ["study.methods=[grad_ascent]"]), out, echo=lambda s: None)
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    return {"out": out, "world": out / "world", "gold_path": out / "results" / "gold-10.json", "results": results,
            "model": out / "unlearn" / GA}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return smoke_study(str(tmp_path_factory.getbasetemp() / "smoke-study"))


@pytest.fixture(scope="module")
def refs(study):
    return {"gold": make_reference(study["gold_path"]), "world": make_reference(world=study["world"]),
            "both": make_reference(study["gold_path"], world=study["world"])}


def _recomputed(result: dict, gold: dict) -> dict:
    """A tampered file made self-consistent: aggregates and the expected block recomputed, as a cheater would."""
    out = copy.deepcopy(result)
    ex = examples_of(out)
    out["aggregates"] = json.loads(json.dumps(aggregate(ex, examples_of(gold), MetricOptions.from_dict(
        out["aggregates"]["options"]))))
    out["expected"] = {"n_examples": len(ex), "ids_sha256": ids_digest([e.id for e in ex])}
    return out


@pytest.mark.parametrize("part", ["cells", "components", "warnings"])
def test_every_part_of_the_aggregates_is_recomputed(study, refs, part):
    bad = copy.deepcopy(study["results"][GA])
    aggs = bad["aggregates"]
    if part == "cells":
        aggs["cells"] = aggs["cells"][:-1]
    elif part == "components":
        k = next(iter(aggs["components"]))
        aggs["components"][k] = aggs["components"][k][:-1]
    else:
        aggs["warnings"] = []
    assert any(r.startswith(f"aggregates.{part} differs from recomputation") for r in check_result(bad, refs["gold"]))


def test_the_gold_row_is_the_gold_files_content(study, refs, tmp_path):
    """A file claiming the gold's fingerprint is rejected and the real gold row stays (it used to vanish)."""
    results = study["out"] / "results"
    fake = copy.deepcopy(study["results"]["target-10"])
    fake["provenance"]["model_fingerprint"] = study["results"]["gold-10"]["provenance"]["model_fingerprint"]
    (tmp_path / "fake.json").write_text(json.dumps(fake))
    files = [str(results / f"{n}.json") for n in ("target-10", GA)] + [str(tmp_path / "fake.json")]
    assert main(["leaderboard", "report", *files, "--gold", str(study["gold_path"]), "--out", str(tmp_path / "r")]) == 1
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r" / "table_multimodal.csv").read_text())))
    gold_rows = [r for r in rows if r["rank"] == "gold"]
    assert [r["file"] for r in gold_rows] == [str(study["gold_path"])]
    assert refs["gold"].is_gold(study["results"]["gold-10"]) and not refs["gold"].is_gold(fake)
    # a copy of the gold file (other whitespace) is still the gold
    assert refs["gold"].is_gold(json.loads(json.dumps(study["results"]["gold-10"], indent=1)))


def test_checks_without_the_world_or_the_gold_are_named(study, capsys):
    results = study["out"] / "results"
    assert main(["leaderboard", "validate", str(results / f"{GA}.json")]) == 0
    err = capsys.readouterr().err
    assert "note: without --gold" in err and "note: without --world" in err
    assert main(["leaderboard", "validate", str(results / f"{GA}.json"), "--gold", str(study["gold_path"]),
                 "--world", str(study["world"])]) == 0
    assert "note:" not in capsys.readouterr().err


def test_unreadable_files_are_one_line_reasons(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert check_file(deep, Reference()).reasons == [
        "cannot be read as a JSON result file: JSON nested deeper than the schema allows (16 levels)"]
    from eval import verify

    monkeypatch.setattr(verify, "MAX_RESULT_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "y" * 2000}))
    assert check_file(big, Reference()).reasons[0].endswith("over the 0 MiB limit of a result file")


def _fabricate(result: dict, gold: dict) -> dict:
    """One retain example's generation changed to its answer... with its log-probabilities raised to match:
    self-consistent, greedy-consistent, and the aggregates recomputed: only the model can tell."""
    bad = copy.deepcopy(result)
    d = next(d for d in bad["examples"] if d["split"] == "retain_perturbed")
    d["lp_answer"] = [max(mu, -0.01) for mu in d["minkpp_mu"]]
    d["generation"] = d["answer"]
    return _recomputed(bad, gold)


def test_verify_rescores_with_the_model_and_catches_a_fabricated_value(study, tmp_path, capsys):
    gold = study["results"]["gold-10"]
    honest, fabricated = tmp_path / "ga.json", tmp_path / "ga-fabricated.json"
    honest.write_text(json.dumps(study["results"][GA]))
    fabricated.write_text(json.dumps(_fabricate(study["results"][GA], gold)))
    base = ["--gold", str(study["gold_path"]), "--world", str(study["world"])]
    assert main(["leaderboard", "validate", str(fabricated), *base]) == 0  # every file check passes
    capsys.readouterr()
    verify = ["leaderboard", "verify", "--model", str(study["model"]), "--world", str(study["world"]),
              "--sample", "1000"]
    assert main([*verify, str(honest)]) == 0
    assert main([*verify, str(fabricated)]) == 1
    err = capsys.readouterr().err
    assert "REJECTED" in err and "lp_answer" in err and "re-scored" in err
    record = json.loads(sidecar_path(fabricated).read_text())
    assert record["outcome"] == "failed" and record["model_fingerprint"] == study["results"][GA]["provenance"][
        "model_fingerprint"] and len(record["sample"]["ids"]) == len(study["results"][GA]["examples"])
    # the report: the honest file is "re-scored", the fabricated one rejected by its sidecar
    out = tmp_path / "report"
    assert main(["leaderboard", "report", str(honest), str(fabricated), str(sidecar_path(honest)), *base,
                 "--out", str(out)]) == 1
    rows = {r["file"]: r for r in csv.DictReader(io.StringIO((out / "table_multimodal.csv").read_text()))}
    assert rows[str(honest)]["check"] == "re-scored" and rows[str(study["gold_path"])]["check"] == "recomputed"
    assert str(fabricated) not in rows
    assert "re-scoring with the model failed" in (out / "tables.md").read_text()
    # a file changed after verification no longer carries its sidecar's verdict
    changed = json.loads(honest.read_text())
    changed["provenance"]["note"] = "edited"
    honest.write_text(json.dumps(changed))
    assert any("was written for other content" in r for r in check_file(honest, make_reference()).reasons)


def test_verify_refuses_another_model(study, tmp_path, capsys):
    path = tmp_path / "ga.json"
    path.write_text(json.dumps(study["results"][GA]))
    assert main(["leaderboard", "verify", str(path), "--model", str(study["out"] / "target"),
                 "--world", str(study["world"])]) == 1
    err = capsys.readouterr().err
    assert "pass the model the result was scored with" in err
    assert "the stage record" in err  # target's run.json names no method, the result says grad_ascent
    assert json.loads(Path(sidecar_path(path)).read_text())["outcome"] == "failed"
