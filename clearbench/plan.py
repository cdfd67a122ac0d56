"""A stage of a study as data, and its key (``clearbench.study`` plans stages, ``clearbench.executor`` runs them).

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
from clearbench.typed_config import without_added_defaults
from clearbench.provenance import sha256_file
from clearbench.unlearn import check_method_tables, resolve_method
from eval.evaluate import EvalConfig

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
