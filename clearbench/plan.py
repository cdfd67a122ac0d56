"""A stage of a study as data, and its key (the planners of clearbench.study, .calibration, .metaeval and
.scenarios describe stages; ``clearbench.run`` names each kind's function; ``clearbench.executor`` runs them).

A stage's *key* hashes its own config section with the keys of the stages it reads, so a changed setting
re-runs exactly the stages downstream of it; a finished stage writes its key into its marker file last.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from clearbench.config import BenchConfig, ConfigError, StudyConfig, UnlearnConfig, from_dict, to_dict
from clearbench.eval_config import AttackConfig, EvalConfig
from clearbench.typed_config import without_added_defaults
from clearbench.provenance import sha256_file
from clearbench.unlearn import check_method_tables, resolve_method

STAGE_FILE = "stage.json"
FILE_KINDS = ("evaluate", "attack")  # stages whose output is one file: the marker sits beside it


@dataclasses.dataclass
class Stage:
    name: str  # e.g. "unlearn/npo-l1-multimodal-10"
    kind: str  # a STAGE_FUNCTIONS key
    path: Path  # output directory or file
    key: str
    args: dict[str, Any]  # STAGE_FUNCTIONS[kind](**args, resume=...) produces ``path``
    needs: tuple[str, ...] = ()  # names of the stages whose outputs it reads (for --jobs)

    @property
    def marker(self) -> Path:
        return (self.path if self.kind not in FILE_KINDS else self.path.parent / f".{self.path.stem}") / STAGE_FILE


@dataclasses.dataclass(frozen=True)
class ScorerVersions:
    """The versions of eval's scorers, which enter stage keys (a changed formula re-runs the stages it scores).
    The study runner (``clearbench.run``) reads them from eval/ and hands them to the planners."""

    metrics: dict[str, Any]
    attacks: dict[str, Any]
    metaeval: int = 0
    restore: int = 0
    sequential: int = 0


def stage_key(kind: str, section: Any, *upstream: str) -> str:
    blob = json.dumps({"kind": kind, "config": without_added_defaults(to_dict(section)), "upstream": list(upstream)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def unlearn_key(ucfg: UnlearnConfig) -> dict[str, Any]:
    """The unlearn section as one method's stage key sees it: the per-method tables narrowed to that
    method, so tuning one method in a preset does not re-run the others (``options_by_method`` is left
    out when it has no (non-empty) entry for the method: keys of runs made before it existed stay valid)."""
    section = to_dict(ucfg)
    section["lr_by_method"] = {k: v for k, v in section["lr_by_method"].items() if k == ucfg.method}
    options = {k: v for k, v in section.pop("options_by_method").items() if k == ucfg.method and v}
    if options:
        section["options_by_method"] = options
    return section


def unlearn_stage(cfg: BenchConfig, world: Path, path: Path, name: str, section: dict[str, Any], target: Stage,
                  golds: tuple[str, ...] = ()) -> Stage:
    """An unlearning run of ``target`` with the unlearn ``section`` (the method's options checked now, before
    anything runs), written to ``path``; ``golds``: gold stages its stop rule reads."""
    ucfg = dataclasses.replace(cfg, unlearn=from_dict(UnlearnConfig, section, "unlearn"))
    try:
        check_method_tables(ucfg.unlearn)
        method, mcfg = resolve_method(ucfg.unlearn)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (stage {name})") from None
    # the method's code and its resolved options are inputs too: editing a method re-runs exactly its stages
    code = {"method_source": sha256_file(Path(inspect.getfile(method)))[:16], "method_config": dataclasses.asdict(mcfg)}
    return Stage(name, "unlearn", path, stage_key("unlearn", unlearn_key(ucfg.unlearn) | code, target.key),
                 {"cfg": ucfg, "world": world, "target": target.path, "out_dir": path}, ("world", target.name) + golds)


def eval_config(study: StudyConfig, forget: str) -> EvalConfig:
    """The evaluation of every model of a study on ``forget`` (caps, batch size and metric options from ``study``)."""
    return EvalConfig(forget=forget, batch_size=study.eval_batch_size, max_per_config=study.eval_max_per_config,
                      max_per_cell=study.eval_max_per_cell, options={**study.metric_options, "require_gold": True})


def finetune_stage(cfg: BenchConfig, out: Path, name: str, path: Path, split: str, base: Stage | None) -> Stage:
    """Finetuning ``split`` of the world in ``out/world`` into ``path``, from the base stage (None: the preset's
    checkpoint ``model.path``)."""
    base_key = base.key if base else stage_key("checkpoint", cfg.model)
    parent = base.path if base else Path(cfg.model.path)
    args = {"cfg": cfg, "world": out / "world", "parent": parent, "split": split, "out_dir": path}
    return Stage(name, "finetune", path, stage_key("finetune", {"finetune": cfg.finetune, "split": split}, base_key),
                 args, ("world", "base") if base else ("world",))


def evaluation_stage(name: str, path: Path, ecfg: EvalConfig, model: Stage, gold: Stage | None, world: Path,
                     versions: ScorerVersions) -> Stage:
    """The evaluation of ``model``'s output into ``path`` against the gold's result (``gold`` None: it is the gold)."""
    # the metric versions are inputs too: a changed formula re-aggregates (from the evaluation's cache)
    key = stage_key("evaluate", ecfg, model.key, gold.key if gold else "self", json.dumps(versions.metrics))
    args = {"model": model.path, "world": world, "out": path, "gold": gold.path if gold else "self", "cfg": ecfg}
    return Stage(name, "evaluate", path, key, args, ("world", model.name) + ((gold.name,) if gold else ()))


def attack_stage(name: str, path: Path, acfg: AttackConfig, model: Stage, gold: Stage, world: Path,
                 versions: ScorerVersions) -> Stage:
    """One attack on ``model`` into ``path``, scored against the gold's result."""
    key = stage_key("attack", acfg, model.key, gold.key, json.dumps([versions.attacks[acfg.attack], versions.metrics]))
    return Stage(name, "attack", path, key,
                 {"model": model.path, "world": world, "out": path, "cfg": acfg, "gold": gold.path},
                 ("world", model.name, gold.name))
