"""benchmarks/plot_scaling.py: bench_study reports of several world sizes -> one table row each, in order, and a plot."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "plot_scaling.py"


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("plot_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(out: Path, stages: list[tuple[str, float]], total: float, stage_list: list[dict] | None = None,
            **extra) -> dict:
    """A bench_study report; its stages from (kind, seconds) pairs or, as they are, from ``stage_list``."""
    return {"command": f"python -m clearbench.cli run --preset tiny --out {out} --jobs 2", "exit_code": 0,
            "total_seconds": total, "busy_processes": 0, "load_during_mean": 2.0,
            "stages": [{"stage": f"{kind}/m{i}-10", "kind": kind, "seconds": s, "cost": {"cpu_seconds": s},
                        "start": 10.0 * i} for i, (kind, s) in enumerate(stages)] if stage_list is None else stage_list,
            "quality": [{"met": True}, {"met": False}], **extra}


def test_rows_are_ordered_by_authors_and_older_reports_read_their_world(scaling, tmp_path):
    # an older report (no "world"): its size comes from the study directory it names
    old_out = tmp_path / "old"
    (old_out / "world").mkdir(parents=True)
    (old_out / "world" / "manifest.json").write_text(json.dumps({"params": {"authors": 200}}))
    old = _report(old_out, [("finetune", 600.0), ("finetune", 540.0), ("evaluate", 60.0)], 900.0)
    new = _report(tmp_path / "new", [("finetune", 120.0), ("evaluate", 30.0)], 240.0,
                  world={"authors": 50}, kinds={"finetune": {"stages": 1, "seconds": 120.0},
                                                "evaluate": {"stages": 1, "seconds": 30.0}})
    rows = scaling.rows([old, new], "authors")
    assert [r["x"] for r in rows] == [50, 200]
    assert rows[1]["kinds"]["finetune"] == pytest.approx(19.0) and rows[1]["wall_min"] == pytest.approx(15.0)
    assert rows[1]["core_min"] == pytest.approx(20.0) and rows[1]["quality"] == "1/2"
    text = scaling.table(rows, "authors")
    assert text.splitlines()[2].startswith("| 50 | 4.0 |") and text.splitlines()[3].startswith("| 200 | 15.0 |")


def test_cli_writes_the_table_and_plot_and_rejects_a_missing_file(scaling, tmp_path, capsys):
    runs = []
    for n, total in ((50, 300.0), (100, 500.0)):
        path = tmp_path / f"{n}.json"
        path.write_text(json.dumps(_report(tmp_path / str(n), [("unlearn", total / 2)], total,
                                           world={"authors": n}, forget_splits=["forget10"])))
        runs.append(str(path))
    png = tmp_path / "scaling.png"
    assert scaling.main([*runs, "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 100 | 8.3 |" in capsys.readouterr().out
    assert scaling.main([*runs, "--by", "forget"]) == 0
    assert "| 10 % |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such file"):
        scaling.main([str(tmp_path / "absent.json")])


def test_by_forget_counts_only_the_forget_split_stages_and_their_span(scaling, tmp_path):
    def stage(name, kind, start, seconds):
        return {"stage": name, "kind": kind, "seconds": seconds, "start": start, "cost": {"cpu_seconds": seconds}}
    # a whole study (forget10) and a --reuse run (forget01) that ran only the stages of its split
    whole = _report(tmp_path / "a", [], 1000.0, forget_splits=["forget10"], stage_list=[
        stage("world", "generate", 0, 40), stage("base", "pretrain", 40, 400), stage("target", "finetune", 440, 300),
        stage("gold-10", "finetune", 440, 280), stage("unlearn/ga-10", "unlearn", 740, 60),
        stage("evaluate/ga-10", "evaluate", 800, 50), stage("report", "report", 850, 20)])
    reused = _report(tmp_path / "b", [], 200.0, forget_splits=["forget01"], stage_list=[
        stage("gold-01", "finetune", 0, 150), stage("evaluate/ga-01", "evaluate", 150, 30)])
    middle = _report(tmp_path / "c", [], 100.0, forget_splits=["forget05"], stage_list=[
        stage("gold-05", "finetune", 0, 90)])
    rows = scaling.rows([whole, middle, reused], "forget")
    assert [r["x"] for r in rows] == ["1 %", "5 %", "10 %"]  # by number, not as text
    rows = [rows[0], rows[2]]
    assert rows[1]["wall_min"] == pytest.approx((870 - 440) / 60) and rows[0]["wall_min"] == pytest.approx(3.0)
    assert rows[1]["kinds"]["finetune"] == pytest.approx(280 / 60) and rows[1]["kinds"]["pretrain"] == 0
    assert rows[1]["core_min"] == pytest.approx(390 / 60)  # the report is not counted (as for whole runs)
    # an older report without start times reads them from its study's run.jsonl (the last run of each stage)
    out = tmp_path / "old"
    out.mkdir()
    events = [{"time": 0.0, "event": "start", "stage": "gold-01", "kind": "finetune"},  # an interrupted first run
              {"time": 5.0, "event": "end", "stage": "gold-01", "seconds": 5.0},
              {"time": 0.0, "event": "start", "stage": "gold-01", "kind": "finetune"},
              {"time": 100.0, "event": "start", "stage": "report", "kind": "report"},
              {"time": 100.0, "event": "end", "stage": "gold-01", "seconds": 100.0},
              {"time": 120.0, "event": "end", "stage": "report", "seconds": 20.0}]
    (out / "run.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    old = _report(out, [], 130.0, forget_splits=["forget01"], stage_list=[{"stage": "gold-01", "kind": "finetune",
                  "seconds": 100.0}, {"stage": "report", "kind": "report", "seconds": 20.0}])
    assert scaling.rows([old], "forget")[0]["wall_min"] == pytest.approx(2.0)
    with pytest.raises(SystemExit, match="no forget-split stages"):
        scaling.rows([_report(tmp_path / "c", [("unlearn", 5.0)], 5.0)], "forget")
