"""Scenarios beyond one forget split (``study.scenarios``): their stage plans and stage functions.

``forget`` is the study's own grid (clearbench.study); ``sequential`` (clearbench.scenarios.sequential) runs
successive deletion requests; ``restore`` (clearbench.scenarios.restore) the restorative RESTOR-style scenario.
Each step is an ordinary stage (keyed, resumed, run side by side with ``--jobs``); the scores are eval.scenarios'.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from clearbench.config import BenchConfig
from clearbench.scenarios.restore import corrupt_stage, restore_result_stage, restore_score_stage, restore_stages
from clearbench.scenarios.sequential import sequential_result_stage, sequential_score_stage, sequential_stages

# kind -> stage function, merged into clearbench.study.STAGE_FUNCTIONS; PRIOR_COST: the executor's ETA prior
STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sequential_score": sequential_score_stage,
    "sequential_result": sequential_result_stage,
    "corrupt": corrupt_stage,
    "restore_score": restore_score_stage,
    "restore_result": restore_result_stage,
}
PRIOR_COST = {"sequential_score": 0.3, "sequential_result": 0.05, "corrupt": 1.0, "restore_score": 0.3,
              "restore_result": 0.05}


def scenario_stages(cfg: BenchConfig, out: Path, base, target) -> list:
    """The stages of ``study.scenarios`` other than ``forget`` (clearbench.study adds them after its own)."""
    stages = []
    if "restore" in cfg.study.scenarios:
        stages += restore_stages(cfg, Path(out), target)
    if "sequential" in cfg.study.scenarios:
        stages += sequential_stages(cfg, Path(out), target)
    return stages
