"""Scenarios beyond one forget split (``study.scenarios``): their stage plans.

``forget`` is the study's own grid (clearbench.study); ``sequential`` (clearbench.scenarios.sequential) runs
successive deletion requests; ``restore`` (clearbench.scenarios.restore) the restorative RESTOR-style scenario.
Each step is an ordinary stage (keyed, resumed, run side by side with ``--jobs``; clearbench.run names each kind's
function); the scores are eval.scenarios', the report (``report/scenarios/``) eval.scenario_report's.
"""
from __future__ import annotations

from pathlib import Path

from clearbench.config import BenchConfig
from clearbench.plan import ScorerVersions, Stage, stage_key
from clearbench.scenarios.restore import restore_stages
from clearbench.scenarios.sequential import sequential_stages

REPORT_VERSION = 1  # the report's layout (eval.scenario_report)
# the executor's ETA prior of each kind of scenario stage
PRIOR_COST = {"sequential_score": 0.3, "sequential_result": 0.05, "corrupt": 1.0, "restore_score": 0.3,
              "restore_result": 0.05, "scenario_report": 0.1}


def scenario_stages(cfg: BenchConfig, out: Path, base: Stage | None, target: Stage,
                    versions: ScorerVersions) -> list[Stage]:
    """The stages of ``study.scenarios`` other than ``forget`` (clearbench.study adds them after its own), and
    with ``study.report`` their report in ``report/scenarios/``, after the study's report (which owns report/)."""
    out, stages = Path(out), []
    if "restore" in cfg.study.scenarios:
        stages += restore_stages(cfg, out, target, versions)
    if "sequential" in cfg.study.scenarios:
        stages += sequential_stages(cfg, out, target, versions)
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
