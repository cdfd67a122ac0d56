"""Learning-rate calibration: the rule on a toy sweep, validation records disjoint from the evaluation's, and a
tiny-smoke sweep end to end (stages, selection, report files)."""
from __future__ import annotations

import json

import pytest

from clearbench.calibration import select_lr
from clearbench.config import BenchConfig, ConfigError, load_config


def _pts(*rows):
    return [{"lr": lr, "forget": f, "retain": r} for lr, f, r in rows]


def test_rule_picks_the_most_forgetting_admissible_lr():
    # target retain 0.80, tolerance 10 %: retain must stay >= 0.72
    sweep = _pts((1e-5, 0.70, 0.80), (3e-5, 0.50, 0.78), (1e-4, 0.20, 0.73), (3e-4, 0.01, 0.40))
    assert select_lr(sweep, 0.80, 0.10) == (1e-4, True)  # 3e-4 forgets most but breaks retain
    assert select_lr(sweep, 0.80, 0.0) == (1e-5, True)  # only the lr that keeps retain exactly
    # ties in forgetting go to the smaller lr
    assert select_lr(_pts((1e-4, 0.2, 0.8), (1e-5, 0.2, 0.8)), 0.8, 0.1) == (1e-5, True)
    # nothing admissible: the smallest lr, flagged
    assert select_lr(_pts((1e-4, 0.2, 0.1), (1e-3, 0.1, 0.05)), 0.8, 0.1) == (1e-4, False)


def test_validation_records_are_disjoint_from_the_evaluated_ones(tiny_world):
    from eval.evaluate import EvalConfig, select_records
    from eval.validation import validation_records

    cfg = EvalConfig(forget="forget10", max_per_cell=3)
    val = validation_records(tiny_world, "forget10", "multimodal", cfg, n_per_cell=2)
    forget = [r for recs in val["forget"].values() for r in recs]
    scored = {r.id for c in ("forget10_perturbed", "retain_perturbed") for r in
              select_records(tiny_world.records(c), c, cfg)}
    assert forget and not {r.id for r in forget} & scored
    assert all(r.image_role in ("", "train") and r.group == "forget" for r in forget)
    assert {c.split("/")[0] for c in val["forget"]} == {"text", "image", "joint"}
    assert all(len(recs) <= 2 for recs in val["forget"].values())
    evaluated_retain = {r.author_id for r in tiny_world.records("retain_perturbed")}
    retain = [r for recs in val["retain"].values() for r in recs]
    assert retain and not {r.author_id for r in retain} & evaluated_retain
    text_only = validation_records(tiny_world, "forget10", "text", cfg, n_per_cell=2)
    assert list(text_only["forget"]) == ["text/qa"]
    with pytest.raises(ValueError, match="cap its cells"):  # no cap: the evaluation scores every record
        validation_records(tiny_world, "forget10", "multimodal", EvalConfig(forget="forget10"), n_per_cell=2)


def test_every_parameterisation_needs_a_grid():
    with pytest.raises(ConfigError, match="at least two distinct"):
        load_config(BenchConfig, "tiny-smoke", ["calibration.lrs={full: [1.0e-4]}"])


def test_tiny_smoke_sweep_runs_and_writes_the_choice(tmp_path):
    from clearbench.executor import run_study

    cfg = load_config(BenchConfig, "tiny-smoke", [
        "calibration.enabled=true", "study.methods=[grad_ascent]", "study.eval_max_per_config=0", "study.eval_max_per_cell=2",
        "calibration.lrs={full: [1.0e-5, 1.0e-2], lora: [1.0e-4, 1.0e-2]}", "calibration.n_per_cell=3"])
    out = tmp_path / "cal"
    ran = run_study(cfg, out, echo=lambda s: None)
    assert "calibrate/select" in ran and not any(n.startswith(("evaluate/", "gold")) for n in ran)
    report = json.loads((out / "calibrate" / "report" / "calibration.json").read_text())
    assert len(report["points"]) == 4 and set(report["chosen"]) == {"full", "lora"}
    for param, methods in report["chosen"].items():
        pts = [p for p in report["points"] if p["parameterisation"] == param]
        expected = select_lr(pts, report["target"]["retain"], cfg.calibration.retain_tolerance)
        assert (methods["grad_ascent"]["lr"], methods["grad_ascent"]["admissible"]) == expected
    big = next(p for p in report["points"] if p["parameterisation"] == "full" and p["lr"] == 1e-2)
    small = next(p for p in report["points"] if p["parameterisation"] == "full" and p["lr"] == 1e-5)
    assert big["forget"] < small["forget"]  # gradient ascent at 1e-2 forgets more than at 1e-5
    assert (out / "calibrate" / "report" / "calibration.png").stat().st_size > 10_000
    assert "grad_ascent" in (out / "calibrate" / "report" / "chosen_lrs.yaml").read_text()
    assert set(run_study(cfg, out, echo=lambda s: None).values()) == {"skipped"}
