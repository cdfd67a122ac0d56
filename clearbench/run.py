"""``clearbench run``: the whole study from one preset, skipping stages whose outputs are up to date.

The study is a list of stages (generate, pretrain, finetune target and golds, evaluate, unlearn x
method x L1 x forget modality, evaluate each, report). Each stage's *key* hashes its own config
section with the keys of the stages it reads, so a changed setting re-runs exactly the stages
downstream of it. A finished stage writes ``stage.json`` (its key) last; a directory without it was
interrupted and is resumed (training checkpoints, the evaluation cache), one with another key is
redone from scratch. ``run.jsonl`` in the study directory logs every stage start, skip and end.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from clearbench.config import BenchConfig, to_dict
from clearbench.provenance import write_json_atomic

STAGE_FILE = "stage.json"


@dataclasses.dataclass
class Stage:
    name: str  # e.g. "unlearn/npo-l1-multimodal-forget10"
    kind: str  # generate | pretrain | finetune | evaluate | unlearn | report
    path: Path  # output directory or file
    key: str
    action: Callable[[bool], Any]  # action(resume) produces ``path``

    @property
    def marker(self) -> Path:
        return (self.path if self.kind not in ("evaluate",) else self.path.parent / f".{self.path.stem}") / STAGE_FILE


def stage_key(kind: str, section: Any, *upstream: str) -> str:
    blob = json.dumps({"kind": kind, "config": to_dict(section), "upstream": list(upstream)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def state_of(stage: Stage) -> str:
    """'done' (same key), 'stale' (finished with another key), 'partial' (interrupted) or 'new'."""
    if stage.marker.exists():
        return "done" if json.loads(stage.marker.read_text()).get("key") == stage.key else "stale"
    if stage.path.exists():
        return "partial"
    return "new"


def _clear(stage: Stage) -> None:
    if stage.path.is_dir():
        shutil.rmtree(stage.path)
    elif stage.path.exists():
        stage.path.unlink()
    if stage.kind == "evaluate":  # its per-example cache
        shutil.rmtree(stage.path.with_suffix(".cache"), ignore_errors=True)
    if stage.marker.exists():
        stage.marker.unlink()


class RunLog:
    def __init__(self, path: Path, total: int):
        self.path, self.total, self.t0 = path, total, time.time()
        self.durations: dict[str, list[float]] = {}

    def write(self, **event: Any) -> None:
        event = {"time": round(time.time() - self.t0, 2), **event}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def eta(self, remaining: list[Stage]) -> float:
        """Seconds left, from the mean duration of finished stages of the same kind."""
        known = [sum(v) / len(v) for v in self.durations.values() if v]
        fallback = sum(known) / len(known) if known else 0.0
        return sum(
            (sum(self.durations[s.kind]) / len(self.durations[s.kind])) if self.durations.get(s.kind) else fallback
            for s in remaining
        )


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def execute(stages: list[Stage], log_path: Path, echo: Callable[[str], None] = print) -> dict[str, str]:
    """Run the stages in order; returns {stage name: what happened}."""
    log = RunLog(log_path, len(stages))
    outcome: dict[str, str] = {}
    for i, stage in enumerate(stages):
        state = state_of(stage)
        prefix = f"[{i + 1}/{len(stages)}] {stage.name}"
        if state == "done":
            outcome[stage.name] = "skipped"
            log.write(event="skip", stage=stage.name, key=stage.key)
            echo(f"{prefix}: up to date, skipped")
            continue
        if state == "stale":
            _clear(stage)
        resume = state == "partial"
        eta = log.eta(stages[i:])
        echo(f"{prefix}: {'resuming' if resume else 'running'}" + (f" (ETA {_fmt(eta)})" if eta else ""))
        log.write(event="start", stage=stage.name, kind=stage.kind, key=stage.key, resume=resume)
        t0 = time.time()
        stage.action(resume)
        took = time.time() - t0
        log.durations.setdefault(stage.kind, []).append(took)
        write_json_atomic(stage.marker, {"key": stage.key, "stage": stage.name, "seconds": took})
        log.write(event="end", stage=stage.name, seconds=round(took, 2))
        outcome[stage.name] = "resumed" if resume else ("redone" if state == "stale" else "ran")
        echo(f"{prefix}: done in {_fmt(took)}")
    echo(f"study finished in {_fmt(time.time() - log.t0)}")
    return outcome


def save_config(cfg: BenchConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", to_dict(cfg))
