"""What every attack works on: the attacked model, its world and forget split, the probe records, scoring.

The probes are the evaluation's forget records (``forgetXX_perturbed``, capped as the evaluation caps them:
``eval.evaluate.select_records``, so they are the same ids), scored by the evaluation's one scoring pass (``eval.outputs.score``), so an attack's
per-example values are the evaluation's, on an attacked model or an altered record.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Sequence

from clearbench.cost import count_tokens
from clearbench.eval_config import AttackConfig
from clearbench.models import load_model
from clearbench.models.common import Loaded, default_device
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, read_run
from clearbench.types import Record, check_forget_split
from eval import outputs
from eval.evaluate import EvalConfig, select_records
from eval.example import ExampleOutput


@dataclasses.dataclass
class Setting:
    """One variant of an attack and the attacked model's outputs on its probe records. ``in_sample``: the attack
    saw these very answers (relearning on every forget record), so it measures relearnability, not leakage, and
    stays out of the worst case. ``skipped``: why it could not run (the world or the machine lacks something)."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    examples: list[ExampleOutput] = dataclasses.field(default_factory=list)
    in_sample: bool = False
    skipped: str = ""
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # [{"step", "examples": [dicts]}]
    log: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # training log rows, when it trains
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "in_sample": self.in_sample, "skipped": self.skipped,
                "examples": [ex.to_dict() for ex in self.examples], "curve": self.curve, "log": self.log,
                "seconds": self.seconds}


@dataclasses.dataclass
class Target:
    """The attacked model (``path``: as given, ``model_dir``: its weights), the world, the forget split, the
    probe records (sorted by id) and the scoring settings."""

    path: Path
    model_dir: Path
    world: Any
    forget: str
    probes: list[Record]
    cfg: AttackConfig

    @property
    def eval_config(self) -> str:
        return f"{self.forget}_perturbed"

    def load(self, *, for_training: bool = False) -> Loaded:
        """A fresh copy of the attacked model: fp32 on the CPU for training (accelerate places it, as the
        training stages do), else on the scoring device in its default dtype (as the evaluation)."""
        if for_training:
            return load_model(self.model_dir, device="cpu", dtype="float32")
        return load_model(self.model_dir, device=default_device())

    def score(self, loaded: Loaded, records: Sequence[Record]) -> list[ExampleOutput]:
        """The evaluation's scoring pass on ``records`` (their ids are the probes')."""
        count_tokens(loaded.model)  # the attack's cost meter counts its scoring passes
        return outputs.score(loaded, list(records), self.eval_config, batch_size=self.cfg.batch_size,
                             max_new_tokens=self.cfg.max_new_tokens, run=outputs.ScoreRun(progress=False))

    def training_records(self) -> list[Record]:
        """The forget split's training records (what the model was finetuned on, then unlearned)."""
        return sorted(self.world.records(self.forget), key=lambda r: r.id)


def model_forget_split(path: Path) -> str | None:
    """The forget split an unlearned model's run record names (None for other models)."""
    try:
        return read_run(path).get("forget")
    except FileNotFoundError:
        return None


def open_target(model: str | Path, world, cfg: AttackConfig) -> Target:
    """Check the model against the world and resolve the probes (fails before any model is loaded)."""
    path = Path(model)
    mdir = model_dir(path)
    if not mdir.is_dir():
        raise FileNotFoundError(f"no model at {path}: pass an unlearned run directory or a model directory")
    check_model_world(path, world.fingerprint)
    forget = cfg.forget or model_forget_split(path) or "forget10"
    check_forget_split(forget, world.configs)
    config = f"{forget}_perturbed"
    if config not in world.configs:
        raise ValueError(f"world {world.path} has no {config} config; regenerate it with {forget}")
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise ValueError(f"batch_size={cfg.batch_size} and max_new_tokens={cfg.max_new_tokens} must be >= 1")
    caps = EvalConfig(forget=forget, max_per_config=cfg.max_per_config, max_per_cell=cfg.max_per_cell, seed=cfg.seed)
    probes = select_records(world.records(config), config, caps)
    return Target(path=path, model_dir=mdir, world=world, forget=forget, probes=probes, cfg=cfg)


def seeded_subset(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    """``n`` records drawn by ``seed`` (all when n is 0 or at least their number), sorted by id."""
    recs = sorted(records, key=lambda r: r.id)
    if n and len(recs) > n:
        recs = sorted(random.Random(seed).sample(recs, n), key=lambda r: r.id)
    return recs


def stratified(records: Sequence[Record], per_modality: int, seed: int) -> list[Record]:
    """Up to ``per_modality`` seeded records of each modality (a small fixed probe set, e.g. a curve's)."""
    out = []
    for m in ("text", "image", "joint"):
        out += seeded_subset([r for r in records if str(r.modality) == m], per_modality, seed)
    return sorted(out, key=lambda r: r.id)


def fingerprint(target: Target) -> str:
    return model_fingerprint(target.model_dir)
