"""Scenarios beyond one forget split (``study.scenarios``): their stage plans and stage functions.

``forget`` is the study's own grid (clearbench.study); ``sequential`` (clearbench.scenarios.sequential) runs
successive deletion requests; ``restore`` (clearbench.scenarios.restore) the restorative RESTOR-style scenario.
Each step is an ordinary stage (keyed, resumed, run side by side with ``--jobs``); the scores are eval.scenarios',
the report (``report/scenarios/``) eval.scenario_report's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from clearbench.config import BenchConfig
from clearbench.plan import Stage, stage_key
from clearbench.scenarios.common import RESULT_FILE
from clearbench.scenarios.restore import corrupt_stage, restore_result_stage, restore_score_stage, restore_stages
from clearbench.scenarios.sequential import sequential_result_stage, sequential_score_stage, sequential_stages
from eval.scenario_report import build_scenario_report

REPORT_VERSION = 1  # the report's layout (eval.scenario_report)


def report_stage(restore: list[Path], sequential: list[Path], dest: Path, resume: bool) -> None:
    """``report/scenarios/``: the scenarios' tables, plots and page (eval.scenario_report)."""
    build_scenario_report([Path(p) / RESULT_FILE for p in restore], [Path(p) / RESULT_FILE for p in sequential], dest)


# kind -> stage function, merged into clearbench.study.STAGE_FUNCTIONS; PRIOR_COST: the executor's ETA prior
STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sequential_score": sequential_score_stage,
    "sequential_result": sequential_result_stage,
    "corrupt": corrupt_stage,
    "restore_score": restore_score_stage,
    "restore_result": restore_result_stage,
    "scenario_report": report_stage,
}
PRIOR_COST = {"sequential_score": 0.3, "sequential_result": 0.05, "corrupt": 1.0, "restore_score": 0.3,
              "restore_result": 0.05, "scenario_report": 0.1}


def scenario_stages(cfg: BenchConfig, out: Path, base: Stage | None, target: Stage) -> list[Stage]:
    """The stages of ``study.scenarios`` other than ``forget`` (clearbench.study adds them after its own), and
    with ``study.report`` their report in ``report/scenarios/``, after the study's report (which owns report/)."""
    out, stages = Path(out), []
    if "restore" in cfg.study.scenarios:
        stages += restore_stages(cfg, out, target)
    if "sequential" in cfg.study.scenarios:
        stages += sequential_stages(cfg, out, target)
    results = {kind: [s for s in stages if s.kind == f"{kind}_result"] for kind in ("restore", "sequential")}
    if cfg.study.report and stages:
        done = results["restore"] + results["sequential"]
        needs = tuple(s.name for s in done) + (("report",) if "forget" in cfg.study.scenarios else ())
        dest = out / "report" / "scenarios"
        stages.append(Stage("scenarios/report", "scenario_report", dest,
                            stage_key("scenario_report", {"report": REPORT_VERSION}, *[s.key for s in done]),
                            {"restore": [s.path for s in results["restore"]],
                             "sequential": [s.path for s in results["sequential"]], "dest": dest}, needs))
    return stages
