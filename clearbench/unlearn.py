"""The unlearning stage: target model + one method of baselines/ on forgetXX -> runs/<method>-XX.

An epoch is one pass over the forget records (seeded shuffle); each step's global batch holds the
kinds the method asks for (``batches_for``): the next B forget records, B retain records drawn by
(seed, step), refusals ("idk") and mismatched answers ("random") built from that step's forget rows,
so ``--resume`` ends with the same weights. Every bad input fails before the model is loaded.

The output directory is a stage directory like finetune's (``model/`` merged, or the LoRA adapter
alone on top of the target with ``train.save_merged: false``; ``config.json``,
``run.json`` written last, ``log.jsonl``) plus ``stop.jsonl`` / ``curve.jsonl`` when early stopping or
in-loop evaluation is on (clearbench.unlearn_monitor). Checkpoint selection is declared in ``unlearn.stop`` (see
StopConfig). ``unlearn.forget_batch = [i, n]`` unlearns the i-th of n batches of the split's authors only;
``unlearn.forget_config`` another world config (a corruption set) instead of the split.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import baselines
from baselines import METHODS, batches_for, clear_recipe, get_method, method_config, needs_reference_for
from baselines.batches import REFUSALS_PATH, idk_records, load_refusals, random_records
from clearbench import cost, scoring, stages
from clearbench.config import BenchConfig, ConfigError, PhaseConfig, TrainConfig, UnlearnConfig, config_hash, to_dict
from clearbench.models import load_model
from clearbench.models.common import Loaded, default_device
from clearbench.processes import is_main, wait_for_main
from clearbench.provenance import check_model_world, model_dir, model_fingerprint, write_json_atomic
from clearbench.reference import Reference
from clearbench.train import TrainRun, get_accelerator, total_steps, train as train_loop
from clearbench.types import (FORGET_MODALITIES, Record, check_forget_split, check_name, forget_percent,
                              forget_splits_in, retain_split)
from clearbench.unlearn_monitor import Monitor


class UnlearnSampler:
    """Deterministic in (seed, step): the ``global_batch(step)`` train() splits into micro-batches."""

    def __init__(self, forget: Sequence[Record], retain: Sequence[Record], kinds: Sequence[str], batch_size: int,
                 seed: int, refusals: Sequence[str] = (), random_k: int = 1):
        self.forget, self.retain, self.kinds = list(forget), list(retain), tuple(kinds)
        self.batch_size, self.seed, self.refusals, self.random_k = batch_size, seed, list(refusals), random_k
        self.steps_per_epoch = max(1, len(self.forget) // batch_size)  # the tail is dropped, a different one each epoch

    def global_batch(self, step: int) -> dict[str, list[Record]]:
        b = self.batch_size
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.forget))
        rows = [self.forget[i] for i in perm[pos * b:(pos + 1) * b]]
        out: dict[str, list[Record]] = {}
        for kind in self.kinds:
            if kind == "forget":
                out[kind] = rows
            elif kind == "retain":
                idx = np.random.default_rng([self.seed, step, 1]).choice(len(self.retain), b, replace=len(self.retain) < b)
                out[kind] = [self.retain[i] for i in idx]
            elif kind == "idk":  # same order as the forget rows: DPO pairs them row by row
                out[kind] = idk_records(rows, self.refusals, random.Random(f"{self.seed}:{step}:idk"))
            elif kind in ("random", "random_forget"):  # each forget row with other records' answers
                rng = random.Random(f"{self.seed}:{step}:{kind}")
                out[kind] = random_records(rows, self._donors(kind), rng, self.random_k)
        return out

    def _donors(self, kind: str) -> list[Record]:
        """"random": the run's retain records (LLMU's "normal data"); "random_forget": the other forget records
        (CLEAR's "other forget items", SKU)."""
        return self.forget if kind == "random_forget" else self.retain


def _subset(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    recs = sorted(records, key=lambda r: r.id)
    return recs if len(recs) <= n else sorted(random.Random(seed).sample(recs, n), key=lambda r: r.id)


# ---------------------------------------------------------------------------------- validation
def _require_model(path: Path, world, what: str) -> None:
    if not model_dir(path).is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist: pass a run directory (runs/target) or a model directory")
    check_model_world(path, world.fingerprint, what)


@dataclasses.dataclass
class Plan:
    """Everything resolved from the config and the world before any model is loaded."""

    method: Any
    method_cfg: Any
    kinds: tuple[str, ...]
    needs_ref: bool
    train: TrainConfig
    forget: list[Record]
    retain: list[Record]
    retain_config: str
    refusals: list[str]
    stop_records: list[Record]
    stop_source: str
    gold_model: Path | None  # the gold model whose level is the stop threshold ("gold"), when a rule reads one


def plan(cfg: UnlearnConfig, world, target: Path) -> Plan:
    """Validate every input (one clear error each) and resolve the run."""
    check_method_tables(cfg)
    method, method_cfg = resolve_method(cfg)
    forget, retain, retain_config = _forget_and_retain(cfg, world)
    train = dataclasses.replace(cfg.train, lr=cfg.lr_by_method.get(cfg.method, cfg.train.lr))
    if len(forget) < train.batch_size:
        raise ValueError(f"{cfg.forget_config or cfg.forget} ({cfg.forget_modality}) has {len(forget)} records, fewer "
                         f"than unlearn.train.batch_size={train.batch_size}; lower the batch size")
    per_epoch = max(1, len(forget) // train.batch_size)  # as UnlearnSampler counts steps
    if cfg.warmup_epochs > 0:
        train = dataclasses.replace(train, warmup_steps=round(cfg.warmup_epochs * per_epoch))
    # options given in epochs become steps of this run
    method_cfg = baselines.resolve_config(cfg.method, method_cfg, per_epoch, total_steps(train, per_epoch))
    kinds, needs_ref = batches_for(cfg.method, method_cfg), needs_reference_for(cfg.method, method_cfg)
    if needs_ref and cfg.reference == "adapter-disabled" and not train.lora.enabled:
        raise ValueError(f"method {cfg.method!r} needs a reference model, but unlearn.reference=adapter-disabled "
                         f"needs LoRA (unlearn.train.lora.enabled=true); enable LoRA or allow a frozen copy "
                         f"(unlearn.reference=auto or copy; it costs one more copy of the model)")
    refusals = _refusals(cfg) if "idk" in kinds else []
    _require_model(target, world, "target model")
    stop_records, stop_source = _stop_records(cfg, world, forget)
    # the fixed rule has no threshold: a preset's threshold "gold" (without a gold model) is not read then
    gold = Path(cfg.stop.gold_model) if cfg.stop.threshold == "gold" and stop_records else None
    return Plan(method, method_cfg, kinds, needs_ref, train, forget, retain, retain_config, refusals,
                stop_records, stop_source, gold)


def check_method_names(names: Sequence[str], where: str) -> None:
    """Every name is a method (built-in or plugin module), else a ConfigError naming ``where[i]`` (did you mean)."""
    for i, name in enumerate(names):
        try:
            get_method(name)
        except ValueError as exc:
            raise ConfigError(f"{where}[{i}]: {exc}") from None


def check_method_tables(cfg: UnlearnConfig) -> None:
    """Every per-method entry (lr_by_method, options_by_method) names a method, and its options are that
    method's: all of them, not only this run's method (a typo fails when the config is loaded)."""
    for field in ("lr_by_method", "options_by_method"):
        for key in getattr(cfg, field):
            try:
                get_method(key)  # a built-in method or a plugin module (baselines.get_method)
            except ValueError as exc:
                raise ConfigError(f"method in unlearn.{field}: {exc}") from None
    for key, opts in cfg.options_by_method.items():
        _method_config(f"unlearn.options_by_method.{key}", key, opts)


def resolve_method(cfg: UnlearnConfig) -> tuple[Any, Any]:
    """The method module and its Config: options_by_method[method], then CLEAR's recipe, then method_options."""
    if not cfg.method:
        raise ConfigError(f"no unlearning method: pass --method (one of {', '.join(sorted(METHODS))})")
    method = get_method(cfg.method)
    options = (cfg.options_by_method.get(cfg.method, {}) | (clear_recipe(cfg.method) if cfg.clear_recipe else {})
               | cfg.method_options)
    return method, _method_config("unlearn.method_options", cfg.method, options)


def _method_config(where: str, method: str, options: dict[str, Any]) -> Any:
    try:
        return method_config(method, options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def author_batches(world, forget: str, n: int) -> list[list[str]]:
    """``forget``'s authors in ``n`` near-equal batches (deletion requests), in a fixed order: the authors of the
    smaller nested forget splits first (forget10 in ten batches of the default world: the first is forget01),
    then by id."""
    authors = world.splits.get(forget) or []
    if n > len(authors):
        raise ValueError(f"{forget} has {len(authors)} authors, too few for {n} requests of at least one author "
                         f"each; request at most {len(authors)} batches or use a larger forget split")
    nested = [s for s in forget_splits_in(world.configs) if forget_percent(s) <= forget_percent(forget)]
    rank = {a: min(forget_percent(s) for s in nested if a in world.splits.get(s, ())) for a in authors}
    ordered = sorted(authors, key=lambda a: (rank[a], a))
    return [[str(a) for a in part] for part in np.array_split(np.array(ordered, dtype=object), n)]


def _of_batch(cfg: UnlearnConfig, world, records: list[Record]) -> list[Record]:
    """``records`` of the authors of ``unlearn.forget_batch`` ([i, n]); all of them without one."""
    if not cfg.forget_batch:
        return records
    keep = set(author_batches(world, cfg.forget, cfg.forget_batch[1])[cfg.forget_batch[0] - 1])
    return [r for r in records if r.author_id in keep]


def _forget_and_retain(cfg: UnlearnConfig, world) -> tuple[list[Record], list[Record], str]:
    """The forget records of the forget modality (of the ``forget_batch`` authors, or of ``forget_config``), and
    every record of the complementary retain split (without ``forget_config``'s authors)."""
    check_forget_split(cfg.forget, world.configs)
    retain_config = retain_split(cfg.forget)
    if retain_config not in world.configs:
        raise ValueError(f"world {world.path} has {cfg.forget} but no {retain_config}: regenerate the world")
    if cfg.forget_config:
        check_name("unlearn.forget_config", cfg.forget_config, world.configs)
        forget = world.records(cfg.forget_config, modalities=FORGET_MODALITIES[cfg.forget_modality])
        if not forget:
            raise ValueError(f"{cfg.forget_config} has no records for forget_modality={cfg.forget_modality!r}")
        authors = {r.author_id for r in forget}  # e.g. the victims: their true facts are not retain data here
        return forget, [r for r in world.records(retain_config) if r.author_id not in authors], retain_config
    forget = _of_batch(cfg, world, world.records(cfg.forget, modalities=FORGET_MODALITIES[cfg.forget_modality]))
    if not forget:
        raise ValueError(f"forget_modality={cfg.forget_modality!r}: {cfg.forget} of this world has no "
                         f"{'image' if cfg.forget_modality == 'visual' else 'text'} records (a world generated without "
                         f"them?); use forget_modality=text, visual or multimodal to match what it holds")
    return forget, world.records(retain_config), retain_config  # retain: always both modalities


def _refusals(cfg: UnlearnConfig) -> list[str]:
    path = Path(cfg.refusals or REFUSALS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"method {cfg.method!r} trains on refusals but the refusal file {path} is missing; "
                                f"set unlearn.refusals to a file with one refusal per line")
    return load_refusals(path)


def _stop_records(cfg: UnlearnConfig, world, forget: list[Record]) -> tuple[list[Record], str]:
    s = cfg.stop
    if s.rule == "fixed":
        return [], ""
    if s.threshold == "gold":
        if not s.gold_model:
            raise ValueError("unlearn.stop.threshold=gold needs unlearn.stop.gold_model (e.g. runs/gold-10)")
        _require_model(Path(s.gold_model), world, "gold model")
    heldout: list[Record] = []
    if s.source != "forget" and f"{cfg.forget}_perturbed" in world.configs and cfg.forget_modality != "text" \
            and not cfg.forget_config:
        heldout = _of_batch(cfg, world, world.records(f"{cfg.forget}_perturbed", image_roles=["heldout"],
                                                      modalities=FORGET_MODALITIES[cfg.forget_modality]))
    if s.source == "heldout" and not heldout:
        raise ValueError(f"unlearn.stop.source=heldout: {cfg.forget}_perturbed has no held-out-image records for "
                         f"forget_modality={cfg.forget_modality} (text has none); use stop.source=forget")
    source = "heldout" if heldout else "forget"
    return _subset(heldout or forget, s.n, cfg.train.seed), source


# ---------------------------------------------------------------------------------------- stage
def unlearn(cfg: BenchConfig, world, target: str | Path, out_dir: str | Path, *, resume: bool = False,
            overwrite: bool = False, stop_at_step: int | None = None) -> Path:
    """Run ``cfg.unlearn.method`` on ``cfg.unlearn.forget`` of ``target``; returns the run directory."""
    world, target, out_dir = stages.as_world(world), Path(target), Path(out_dir)
    p = plan(cfg.unlearn, world, target)
    if is_main():  # several processes (clearbench.launch_stage): the main one opens the directory, the others wait
        _open_run_dir(cfg, p, target, out_dir, resume, overwrite)
    wait_for_main()
    family_name = cfg.model.family if cfg.model.family != "tiny-llava" else None
    loaded = load_model(model_dir(target), family=family_name)
    threshold = _threshold(cfg.unlearn, p, family_name)
    t0 = time.time()
    with cost.Meter() as meter:
        acc = get_accelerator(p.train.mixed_precision)
        model, ref, initial = _prepare(loaded.model.train().to(acc.device), p, cfg.unlearn.reference)
        trained = Loaded(model, loaded.processor, loaded.family)
        # every process evaluates (the same stop decision); one writes
        monitor = Monitor(functools.partial(scoring.answer_probability, trained), cfg.unlearn, p, out_dir,
                          acc.is_main_process)
        ckpt = out_dir / "checkpoints" / "last" / "state.json"
        done = json.loads(ckpt.read_text())["step"] if resume and ckpt.exists() else 0
        monitor.start(_curve_views(world, cfg.unlearn) if cfg.unlearn.eval_every else {}, done, threshold)
        sampler = UnlearnSampler(p.forget, p.retain, p.kinds, p.train.batch_size, p.train.seed, p.refusals,
                                 cfg.unlearn.random_k)
        loss = functools.partial(p.method.loss, ref=ref, cfg=p.method_cfg)  # train() calls loss(model, batches, step=)
        result = train_loop(model, loaded.processor, loaded.family, sampler, loss, p.train,
                            TrainRun(out_dir, resume=resume, desc=f"unlearn {cfg.unlearn.method}",
                                     on_step=monitor.on_step, stop_at_step=stop_at_step))
        if hasattr(p.method, "on_train_end"):
            p.method.on_train_end(model, initial, p.method_cfg)
    if not acc.is_main_process:
        return out_dir
    stages.save_model(model, loaded.processor, loaded.family, [out_dir / "model"], p.train, model_dir(target))
    info = _run_info(cfg.unlearn, p, loaded.name, target, out_dir) | {
        "reference": ref.kind if ref else None, "steps": result.steps, "train": dataclasses.asdict(result),
        "stop": monitor.summary(result.steps), "seconds": time.time() - t0,
        "cost": meter.summary(complete=not result.resumed_from)}
    write_json_atomic(out_dir / "run.json", stages.run_record("unlearn", cfg, world, info))
    return out_dir


def _open_run_dir(cfg: BenchConfig, p: Plan, target: Path, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to resume a finished run or one with other settings; write the resolved config."""
    if resume and (out_dir / "run.json").exists():
        raise FileExistsError(f"{out_dir} is a finished run (run.json exists); pass --overwrite to run it again")
    config = to_dict(cfg) | {"target": str(target), "resolved": {"train": to_dict(p.train),
                                                                 "method_config": dataclasses.asdict(p.method_cfg)}}
    stages.open_run_dir(out_dir, config, resume, overwrite, _resume_view)


def _resume_view(config: dict[str, Any]) -> dict[str, Any]:
    """What an unlearning run's weights depend on: the other methods' entries of the per-method tables do not
    count (tuning another method of a study must not block resuming this one); this method's are resolved."""
    tables = ("lr_by_method", "options_by_method")
    unlearn = {k: v for k, v in (config.get("unlearn") or {}).items() if k not in tables}
    for field in ("forget_batch", "forget_config"):
        if not unlearn.get(field):  # the whole split, as in runs written before the field existed
            unlearn.pop(field, None)
    return {"model": config.get("model"), "target": config.get("target"), "resolved": config.get("resolved"),
            "unlearn": unlearn}


def _threshold(ucfg: UnlearnConfig, p: Plan, family_name: str | None) -> float:
    """The early-stopping threshold: the configured number, or the gold model's level on the same records
    (computed once); NaN when no rule reads one."""
    if not p.stop_records:
        return math.nan
    if p.gold_model is None:
        return float(ucfg.stop.threshold)
    gold = load_model(model_dir(p.gold_model), family=family_name, device=default_device())
    return scoring.answer_probability(gold, p.stop_records)


def _prepare(model, p: Plan, reference: str):
    """The model to train (LoRA, freezing), the reference the method compares with, and theta0 when the
    method's ``on_train_end`` or the full-parameter L1 penalty reads it."""
    lora = p.train.lora.enabled
    ref = Reference(model) if p.needs_ref and lora and reference == "copy" else None  # a copy of the target
    torch.manual_seed(p.train.seed)  # LoRA A is drawn from the global RNG: same adapters in every attempt
    model = stages.prepare_model(model, PhaseConfig(name="unlearn", data=[], train=p.train))
    if p.needs_ref and ref is None:
        ref = Reference(model)  # LoRA: the same network, adapters disabled; full-parameter: a frozen copy
    needs_init = hasattr(p.method, "on_train_end")
    initial = {n: q.detach().clone() for n, q in model.named_parameters() if q.requires_grad} if needs_init else None
    return model, ref, initial


def _run_info(ucfg: UnlearnConfig, p: Plan, family: str, target: Path, out_dir: Path) -> dict[str, Any]:
    mcfg = dataclasses.asdict(p.method_cfg)
    return {
        "family": family, "method": ucfg.method, "method_config": mcfg, "method_config_hash": config_hash(mcfg),
        "clear_recipe": ucfg.clear_recipe, "batch_kinds": list(p.kinds), "forget": ucfg.forget,
        "forget_modality": ucfg.forget_modality, "retain": p.retain_config,
        **({"forget_batch": ucfg.forget_batch, "forget_config": ucfg.forget_config,
            "forget_authors": sorted({r.author_id for r in p.forget})} if ucfg.forget_batch or ucfg.forget_config else {}),
        "records": {"forget": len(p.forget), "retain": len(p.retain)},
        "parent": {"path": str(target), "model_fingerprint": model_fingerprint(model_dir(target))},
        "model_fingerprint": model_fingerprint(out_dir / "model"), "lr": p.train.lr, "l1_lambda": p.train.l1_lambda,
        "lora": p.train.lora.enabled,
    }


def _curve_views(world, cfg: UnlearnConfig) -> dict[str, list[Record]]:
    """'forget/text/prob' etc.: curve_n fixed records per (split view, modality), every modality shown."""
    views = {"forget": cfg.forget_config or f"{cfg.forget}_perturbed", "retain": "retain_perturbed"}
    out = {}
    for group, config in views.items():
        if config not in world.configs:
            continue
        for modality in ("text", "image", "joint"):
            recs = world.records(config, modalities=[modality])
            recs = _of_batch(cfg, world, recs) if group == "forget" else recs
            if recs:
                out[f"{group}/{modality}/prob"] = _subset(recs, cfg.curve_n, cfg.train.seed)
    return out
