"""In-loop evaluation of an unlearning run (clearbench.unlearn): the early-stopping criterion (``stop.jsonl``) and
the curve of answer probabilities (``curve.jsonl``), both resumed with the training checkpoint they belong to."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from clearbench.config import UnlearnConfig
from clearbench.provenance import write_text_atomic
from clearbench.types import Record


def _jsonl_resume(path: Path, resume: bool, upto: int, write: bool) -> list[dict]:
    """Rows of an earlier attempt up to step ``upto`` (the checkpoint resumed from); ``write``: the file is rewritten
    with them (atomically: the other processes of the run may be reading it)."""
    rows = []
    if resume and path.exists():
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= upto]
    if write:
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


class Monitor:
    """In-loop answer probabilities of the model being trained: the early-stopping criterion (``stop.jsonl``)
    and the curve (``curve.jsonl``); ``score(records)`` computes one. ``p`` is the run's clearbench.unlearn.Plan."""

    def __init__(self, score: Callable[[list[Record]], float], ucfg: UnlearnConfig, p: Any, out_dir: Path, write: bool):
        self.score, self.cfg, self.records, self.out_dir, self.write = score, ucfg, p.stop_records, out_dir, write
        self.source, self.gold_model = p.stop_source, p.gold_model
        self.rows: list[dict] = []
        self.views: dict[str, list[Record]] = {}
        self.threshold, self.chosen = math.nan, None

    def start(self, views: dict[str, list[Record]], done: int, threshold: float) -> None:
        """Keep the rows of an interrupted attempt up to step ``done``; at step 0 record the starting point.
        ``views``: the curve's records ('forget/text/prob' -> records), empty without a curve."""
        self.threshold = threshold
        if self.records:
            self.rows = _jsonl_resume(self.out_dir / "stop.jsonl", done > 0, done, self.write)
        self.views = views
        if self.views:
            _jsonl_resume(self.out_dir / "curve.jsonl", done > 0, done, self.write)
        if done == 0:
            if self.records:
                self.criterion(0)
            if self.views:
                self.curve(0)

    def criterion(self, step: int) -> bool:
        value = self.score(self.records)
        row = {"step": step, "forget_prob": value, "below": value < self.threshold}
        self.rows.append(row)
        if self.write:
            _append(self.out_dir / "stop.jsonl", row)
        return row["below"]

    def curve(self, step: int) -> None:
        row = {"step": step} | {k: self.score(recs) for k, recs in self.views.items()}
        if self.write:
            _append(self.out_dir / "curve.jsonl", row)

    def on_step(self, step: int, logs: dict) -> bool:
        """train()'s callback: True stops training at this step (the rule triggered)."""
        stop = False
        if self.records and step % self.cfg.stop.every == 0 and self.criterion(step):
            self.chosen, stop = step, True
        if self.views and step % self.cfg.eval_every == 0:
            self.curve(step)
        return stop

    def summary(self, steps: int) -> dict[str, Any]:
        """run.json's ``stop``: the rule, its criterion rows and the step chosen (the last one without a trigger)."""
        s = self.cfg.stop
        out: dict[str, Any] = {"rule": s.rule}
        if self.records:
            out |= {"every": s.every, "n": len(self.records), "source": self.source, "threshold": s.threshold,
                    "threshold_value": self.threshold, "gold_model": str(self.gold_model) if self.gold_model else None,
                    "triggered": self.chosen is not None, "criterion": self.rows}
        out["chosen_step"] = self.chosen if self.chosen is not None else steps
        return out
