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


def _report(out: Path, stages: list[tuple[str, float]], total: float, **extra) -> dict:
    return {"command": f"python -m clearbench.cli run --preset tiny --out {out} --jobs 2", "exit_code": 0,
            "total_seconds": total, "busy_processes": 0, "load_during_mean": 2.0,
            "stages": [{"stage": f"{kind}/{i}", "kind": kind, "seconds": s, "cost": {"cpu_seconds": s}}
                       for i, (kind, s) in enumerate(stages)],
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
