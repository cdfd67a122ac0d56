"""Optional experiment tracking through accelerate's trackers (``train.report_to``).

Off by default ("" or "none": accelerate's tracking is not even imported). On, every training run starts one
tracker of the named kind (project ``PROJECT``) with the run's output directory as its logging directory,
logs the scalars of each log.jsonl line at that line's step and finishes the tracker when the run ends. The
process keeps one Accelerator for all its runs (clearbench.train.get_accelerator), so the tracker is attached
to it for one run only; ``Accelerator.end_training`` is not called because it also destroys the process group
that later runs of a distributed process still need (the tracker part of it, ``finish``, is).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clearbench.typed_config import FieldError

OFF = ("", "none")
PROJECT = "clearbench"


def trackers() -> dict[str, bool]:
    """{the name of each tracker accelerate knows: whether its package is installed} (a tracker registered with
    ``accelerate.tracking.register_tracker_class`` is installed by definition)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    available = {str(t) for t in get_available_trackers()}
    return {name: name in available or name not in LoggerType for name in sorted(LOGGER_TYPE_TO_CLASS)}


def check_report_to(value: str) -> str:
    """``report_to`` as the config keeps it ("" when off); an unknown or uninstalled tracker is a FieldError."""
    if value.strip().lower() in OFF:
        return ""
    known = trackers()
    installed = ", ".join(n for n, ok in known.items() if ok) or "none"
    if value not in known:
        raise FieldError("report_to", value, f"not a tracker of accelerate's: one of none, {', '.join(known)} "
                                             f"(installed here: {installed})")
    if not known[value]:
        raise FieldError("report_to", value, f"the tracker package {value} is not installed (pip install {value}; "
                                             f"installed trackers here: {installed})")
    return value


def flat_config(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A config as the flat scalars trackers store as hyperparameters (nested keys dotted, lists as JSON)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out |= flat_config(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    return out


class Tracking:
    """One training run's tracker; ``log`` and ``close`` do nothing when tracking is off."""

    def __init__(self, acc: Any = None):
        self.acc = acc

    @classmethod
    def start(cls, acc: Any, report_to: str, out_dir: Path, config: dict[str, Any]) -> Tracking:
        """Start the ``report_to`` tracker on ``acc`` (``Accelerator.init_trackers``), logging under ``out_dir``."""
        if not report_to:
            return cls()
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        kind = LOGGER_TYPE_TO_CLASS[report_to]
        tracker = kind(PROJECT, str(out_dir)) if kind.requires_logging_directory else kind(PROJECT)
        saved, acc.log_with, acc.trackers = acc.log_with, [tracker], []
        try:
            acc.init_trackers(PROJECT, config=flat_config(config))  # an instance in log_with is started as is
        finally:
            acc.log_with = saved
        return cls(acc)

    def log(self, record: dict[str, Any]) -> None:
        """One log.jsonl record: its scalars at its step (on the main process, as accelerate logs)."""
        if self.acc is not None:
            self.acc.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        if self.acc is not None:
            for tracker in self.acc.trackers:
                tracker.finish()
            self.acc.trackers, self.acc = [], None
