"""The model-producing stages: pretrain (tiny base), finetune (target on full, gold on retainXX).

A stage directory holds ``model/`` (safetensors + processor), ``config.json`` (the fully resolved
config), ``run.json`` (what was run on what: world fingerprint, parent model, steps, timings) and
``log.jsonl`` per phase. ``run.json`` is written last, so its presence means "finished".
A LoRA phase with ``train.save_merged: false`` saves only its adapter in ``model/``, on top of the
model the phase started from (``clearbench.models.adapter``); ``load_model`` merges it back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from clearbench import cost
from clearbench.config import BenchConfig, DataMix, PhaseConfig, TrainConfig, config_hash, to_dict
from clearbench.lora import apply_lora, enable_gradient_checkpointing, set_trainable
from clearbench.processes import is_main, wait_for_main
from clearbench.provenance import (check_model_world, device_info, library_versions, model_dir, model_fingerprint,
                                   write_json_atomic)
from clearbench.typed_config import without_added_defaults
from clearbench.train import ShuffleSampler, TrainResult, TrainRun, example_nll_loss, train
from clearbench.types import Record, check_name, forget_splits_in, retain_split


def select_records(world, mixes: list[DataMix], split: str | None = None) -> list[Record]:
    """Records of a phase; ``split`` replaces the config name "full" (finetune --split)."""
    out: list[Record] = []
    for mix in mixes:
        config = split if (split and mix.config == "full") else mix.config
        recs = world.records(
            config,
            modalities=mix.modalities or None,
            tasks=mix.tasks or None,
            image_roles=mix.image_roles or None,
        )
        if mix.fraction < 1.0:
            keep = np.random.default_rng(0).permutation(len(recs))[: round(mix.fraction * len(recs))]
            recs = [recs[i] for i in sorted(keep)]
        out.extend(recs * mix.repeat)
    return out


def prepare_model(model, phase: PhaseConfig):
    """LoRA wrapping / freeze switches / gradient checkpointing for one phase."""
    cfg = phase.train
    if cfg.lora.enabled:
        torch.manual_seed(cfg.seed)  # adapter initialisation is part of the run's randomness
        model = apply_lora(model, cfg.lora, cfg)
    set_trainable(model, cfg)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def finish_model(model):
    """Merge LoRA adapters into the weights (the saved checkpoint is a plain model)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapter_only(train: TrainConfig) -> bool:
    """A LoRA run with ``save_merged: false`` saves its adapter only (full-parameter runs have none)."""
    return train.lora.enabled and not train.save_merged


def save_model(model, processor, family, outs: list[Path], train: TrainConfig, parent: str | Path):
    """Save a trained (for LoRA: still peft-wrapped) ``model`` to each directory of ``outs``: the adapter
    alone on top of ``parent`` (the model training started from) when ``adapter_only(train)``, else the
    merged weights. Returns the merged model, for what comes next."""
    from clearbench.models import adapter

    if adapter_only(train):
        for out in outs:
            adapter.save(model, processor, out, parent, family.name)
        return finish_model(model)
    model = finish_model(model)
    for out in outs:
        family.save(model, processor, out)
    return model


def run_phase(model, processor, family, records: list[Record], phase: PhaseConfig, out_dir: Path, resume: bool):
    """Train one phase; returns the model unmerged (peft-wrapped for LoRA: ``save_model`` or ``finish_model``)."""
    model = prepare_model(model, phase)
    sampler = ShuffleSampler(records, phase.train.batch_size, seed=phase.train.seed,
                             group_by_length=phase.train.group_by_length)
    result = train(model, processor, family, sampler, example_nll_loss, phase.train,
                   TrainRun(out_dir, resume=resume, desc=phase.name))
    return model, result


def as_world(world):
    """A world, or the world directory a planned stage names (opened here: it may not exist at planning)."""
    if isinstance(world, (str, os.PathLike)):
        from clearbench.data import open_world

        return open_world(world)
    return world


def check_out(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """A stage's output directory, created: a non-empty one needs ``resume`` (continue it) or ``overwrite`` (emptied)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file; give the run a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --resume to continue it "
                              f"or --overwrite to start again")
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def open_run_dir(out_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool,
                 view: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Create the stage directory ``out_dir`` and write its resolved ``config.json``. Resuming needs the settings
    the interrupted run trained with: a change in ``view(config)`` (what the weights depend on) is refused."""
    path = out_dir / "config.json"
    if resume and path.is_file():
        old, new = read_json(path), json.loads(json.dumps(config, default=str))
        change = _first_change(without_added_defaults(view(old)), without_added_defaults(view(new)))
        if change:
            raise ValueError(f"--resume: {change} differs from the interrupted run's {path}; resume with the same "
                             f"preset and overrides, or pass --overwrite to start again")
    check_out(out_dir, resume, overwrite)
    write_json_atomic(path, config)


def _first_change(old: Any, new: Any, where: str = "") -> str | None:
    """The first dotted key whose value differs, with both values ("a.b (1 -> 2)"), or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            change = _first_change(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if change:
                return change
        return None
    return None if old == new else f"{where} ({old!r} -> {new!r})"


def _sections(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda config: {k: config.get(k) for k in keys}


def run_record(stage: str, cfg: BenchConfig, world, extra: dict[str, Any]) -> dict[str, Any]:
    """The fields every stage's ``run.json`` holds (config hash, world, libraries, device), plus ``extra``."""
    return {
        "stage": stage,
        "config_hash": config_hash(cfg),
        "world_fingerprint": world.fingerprint,
        "library_versions": library_versions(),
        "device": device_info(),
        **extra,
    }


def pretrain(cfg: BenchConfig, world, out_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Build the tiny model (tokenizer trained on the world's text) and train the base phases."""
    from clearbench.models import tiny_llava

    if cfg.model.family != "tiny-llava":
        raise ValueError(f"pretrain builds the embedded tiny-llava only; family {cfg.model.family!r} "
                         f"starts from its own checkpoint: run clearbench finetune --model PATH")
    if not cfg.pretrain.phases:
        raise ValueError("the preset has no pretrain.phases")
    for phase in cfg.pretrain.phases:
        if adapter_only(phase.train):
            raise ValueError(f"pretrain phase {phase.name!r}: save_merged: false (adapter-only) is for finetune and "
                             f"unlearn; pretrain builds the base, which is saved whole: set save_merged: true")
    world, out_dir = as_world(world), Path(out_dir)
    if is_main():  # several processes (clearbench.launch_stage): every one trains, the main one writes
        open_run_dir(out_dir, to_dict(cfg), resume, overwrite, _sections("model", "pretrain"))
    wait_for_main()
    tiny_cfg = tiny_llava.TinyConfig(**cfg.model.tiny)
    t0 = time.time()
    with cost.Meter() as meter:
        model, processor, phases_done, trained_now = _pretrain_phases(cfg, world, out_dir / "phases", resume, tiny_cfg)
        final = out_dir / "model"
        if is_main():
            tiny_llava.save(model, processor, final, tiny_cfg)
    if not is_main():
        return out_dir
    write_json_atomic(out_dir / "run.json", run_record("pretrain", cfg, world, {
        "family": "tiny-llava", "parent": None, "model_fingerprint": model_fingerprint(final),
        "phases": phases_done, "seconds": time.time() - t0,
        "cost": meter.summary(complete=len(trained_now) == len(phases_done) and not any(
            p.get("resumed_from") for p in trained_now)),
    }))
    return out_dir


def _pretrain_phases(cfg: BenchConfig, world, current: Path, resume: bool, tiny_cfg):
    """Train (or, resuming, reload) the base's phases in order; returns the model, its processor, every phase's
    record and the records of the phases trained in this call."""
    from clearbench.models import get_family, tiny_llava

    family = get_family("tiny-llava")
    phases_done: list[dict[str, Any]] = []
    trained_now: list[dict[str, Any]] = []
    model = processor = None
    for i, phase in enumerate(cfg.pretrain.phases):
        phase_dir = current / f"{i}-{phase.name}"
        if (phase_dir / "done.json").exists() and resume:  # finished earlier: reload its weights
            model, processor = family.load(phase_dir / "model")
            phases_done.append(read_json(phase_dir / "done.json"))
            continue
        if model is None:
            if i == 0:
                tokenizer = tiny_llava.build_tokenizer(world.texts(), tiny_cfg.vocab_size)
                processor = tiny_llava.build_processor(tokenizer, tiny_cfg)
                model = tiny_llava.build_model(tiny_cfg, tokenizer)
            else:
                model, processor = family.load(current / f"{i - 1}-{cfg.pretrain.phases[i - 1].name}" / "model")
        records = select_records(world, phase.data)
        model.train()
        if phase.objective != "lm":
            from clearbench.vision_pretrain import TRAINERS

            result = TRAINERS[phase.objective](model, processor, records, phase.train, phase_dir, desc=phase.name)
        else:
            model, result = run_phase(model, processor, family, records, phase, phase_dir, resume)
            model = finish_model(model)
        info = {"phase": phase.name, "records": len(records), **dataclasses.asdict(result)}
        if is_main():
            tiny_llava.save(model, processor, phase_dir / "model", tiny_cfg)
            write_json_atomic(phase_dir / "done.json", info)
        phases_done.append(info)
        trained_now.append(info)
    return model, processor, phases_done, trained_now


def finetune(cfg: BenchConfig, world, parent: Path, split: str, out_dir: Path, *, resume: bool = False,
             overwrite: bool = False) -> Path:
    """Finetune ``parent`` on the authors of ``split`` (full -> target, retainXX -> gold)."""
    from clearbench.models import load_model

    phases = cfg.finetune.resolved_phases()
    for phase in phases:
        if phase.objective != "lm":
            raise ValueError(f"finetune phase {phase.name!r}: objective {phase.objective!r} is for pretrain phases; "
                             f"finetuning trains the answers (objective: lm)")
    world, out_dir = as_world(world), Path(out_dir)
    # "full" makes the target; the retain split of one of the world's forget splits makes that split's gold
    check_name("finetune split", split, ["full", *(retain_split(f) for f in forget_splits_in(world.configs))])
    if is_main():  # several processes (clearbench.launch_stage): every one trains, the main one writes
        open_run_dir(out_dir, to_dict(cfg) | {"split": split, "parent": str(parent)}, resume, overwrite,
                     _sections("model", "finetune", "split", "parent"))
    wait_for_main()
    parent_dir = model_dir(parent)
    check_model_world(parent, world.fingerprint, "parent model")
    loaded = load_model(parent_dir, family=cfg.model.family if cfg.model.family != "tiny-llava" else None)
    t0 = time.time()
    with cost.Meter() as meter:
        results = _finetune_phases(cfg, world, loaded, split, out_dir, resume, parent_dir)
    if not is_main():
        return out_dir
    n_records = sum(r["records"] for r in results)
    result = dataclasses.asdict(TrainResult(steps=sum(r["steps"] for r in results), final_loss=results[-1]["final_loss"],
                                            seconds=sum(r["seconds"] for r in results),
                                            resumed_from=results[0]["resumed_from"]))
    write_json_atomic(out_dir / "run.json", run_record("finetune", cfg, world, {
        "family": loaded.name, "split": split, "records": n_records,
        "parent": {"path": str(parent), "model_fingerprint": model_fingerprint(parent_dir)},
        "model_fingerprint": model_fingerprint(out_dir / "model"), "warmup_steps": results[-1]["warmup_steps"],
        "train": result, **({"phases": results} if len(phases) > 1 else {}),
        "seconds": time.time() - t0,
        "cost": meter.summary(complete=not any(r["resumed_from"] or r.get("reloaded") for r in results)),
    }))
    return out_dir


def _finetune_phases(cfg: BenchConfig, world, loaded, split: str, out_dir: Path, resume: bool,
                     start: Path) -> list[dict[str, Any]]:
    """Train the finetune phases in order from ``loaded`` (the model in directory ``start``); the last one saves
    ``out_dir/model``. One phase keeps the historical layout (train/); several go to train/<i>-<name>/."""
    from clearbench.models import load_model

    phases = cfg.finetune.resolved_phases()
    model, results, final = loaded.model, [], out_dir / "model"
    for i, phase in enumerate(phases):
        phase_dir = out_dir / "train" if len(phases) == 1 else out_dir / "train" / f"{i}-{phase.name}"
        if resume and (phase_dir / "done.json").exists():  # finished before the interruption
            model = load_model(phase_dir / "model").model
            results.append(read_json(phase_dir / "done.json") | {"reloaded": True})  # not this call's cost
            start = phase_dir / "model"
            continue
        records = select_records(world, phase.data, split=split)
        phase = finetune_phase(cfg, phase, len(records))
        model.train()
        model, result = run_phase(model, loaded.processor, loaded.family, records, phase, phase_dir, resume)
        info = {"phase": phase.name, "records": len(records), "warmup_steps": phase.train.warmup_steps,
                **dataclasses.asdict(result)}
        outs = ([phase_dir / "model"] if len(phases) > 1 else []) + ([final] if i == len(phases) - 1 else [])
        # the other processes of a multi-process run merge (LoRA) without saving
        model = save_model(model, loaded.processor, loaded.family, outs if is_main() else [], phase.train, start)
        if len(phases) > 1:
            if is_main():
                write_json_atomic(phase_dir / "done.json", info)
            start = phase_dir / "model"
        results.append(info)
    if is_main() and not final.is_dir():  # the last phase had finished before an interruption (older version)
        copy_model(start, final)
    return results


def finetune_phase(cfg: BenchConfig, phase: PhaseConfig, n_records: int) -> PhaseConfig:
    """A finetune phase with ``finetune.warmup_epochs`` resolved into warmup steps (an epoch is
    ``n_records // batch_size`` steps, as ShuffleSampler counts them)."""
    epochs = cfg.finetune.warmup_epochs
    if epochs == 0:
        return phase
    steps = round(epochs * max(1, n_records // phase.train.batch_size))
    return dataclasses.replace(phase, train=dataclasses.replace(phase.train, warmup_steps=steps))


def copy_model(src: Path, dst: Path) -> None:
    """Copy a model directory; an adapter's marker then points at its parent from the new place."""
    from clearbench.models import adapter

    tmp = dst.with_name(f".{dst.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if adapter.is_adapter_dir(tmp):
        adapter.relocate(tmp, src, dst)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
