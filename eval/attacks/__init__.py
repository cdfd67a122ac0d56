"""Attacks on an unlearned model: is the forgotten knowledge really gone? (docs/attacks.md)

Registry: a literal dict filled by explicit imports. An attack module has ``NAME``, ``VERSION``, a ``Config``
dataclass (its options, defaults from its paper), ``settings(target, cfg) -> [names]`` and
``run_setting(target, cfg, name) -> Setting``. ``attack(model, world, out, cfg)`` runs every setting of one
attack (each finished setting is cached beside ``out``, so a killed run resumes at the next one) and writes a
versioned result with per-example values (``eval.attacks.result``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from clearbench.config import config_hash, from_dict
from clearbench.cost import Meter
from clearbench.data import open_world
from clearbench.provenance import device_info, library_versions, write_json_atomic
from clearbench.types import unknown_name_message
from eval.attacks import in_context, paraphrase, quantize, relearn, transform
from eval.attacks.probes import AttackConfig, Setting, Target, fingerprint, open_target
from eval.attacks.result import build_result, load_result, validate, write_result
from eval.example import ExampleOutput
from eval.results import load_gold_result

ATTACKS = {
    "relearn": relearn,
    "quantize": quantize,
    "paraphrase": paraphrase,
    "transform": transform,
    "in_context": in_context,
}

__all__ = ["ATTACKS", "AttackConfig", "attack", "attack_versions", "get_attack", "load_result", "options_of",
           "validate_result"]


def get_attack(name: str):
    if name not in ATTACKS:
        raise ValueError(unknown_name_message("attack", name, ATTACKS))
    return ATTACKS[name]


def attack_versions() -> dict[str, int]:
    return {name: module.VERSION for name, module in ATTACKS.items()}


def options_of(cfg: AttackConfig) -> Any:
    """The attack's ``Config`` from ``cfg.options`` (unknown keys and wrong types fail, naming the key)."""
    return from_dict(get_attack(cfg.attack).Config, cfg.options, cfg.attack)


def validate_result(result: Any) -> list[str]:
    return validate(result, attack_versions())


def attack(model: str | Path, world, out: str | Path, cfg: AttackConfig, *, gold: str | Path | None = None,
           overwrite: bool = False) -> dict[str, Any]:
    """Run attack ``cfg.attack`` on ``model`` (an unlearned run or model directory) and ``world`` (a World or its
    directory) and write its result to ``out``; ``gold``: the gold model's evaluation result (its forget values are reported beside). Every bad
    input fails before a model is loaded."""
    module, options = get_attack(cfg.attack), options_of(cfg)
    out = Path(out)
    if isinstance(world, (str, os.PathLike)):
        world = open_world(world)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it (a killed run resumes from its cache)")
    target = open_target(model, world, cfg)
    gold_block = _gold(gold, target)
    t0 = time.time()
    key = {"model_fingerprint": fingerprint(target), "world_fingerprint": world.fingerprint,
           "config": dataclasses.asdict(cfg), "attack_version": module.VERSION}
    cache = _Cache(out.with_name(out.name + ".cache"), key)
    resumed = any(p.name != "meta.json" for p in cache.dir.glob("*.json"))  # settings of a killed run
    with Meter() as meter:  # the attack's cost: its scoring passes and any finetuning it does
        standard = cache.get("standard") or cache.put("standard", Setting("standard", examples=target.score(
            target.load(), target.probes)))
        settings = [cache.get(name) or cache.put(name, module.run_setting(target, options, name))
                    for name in module.settings(target, options)]
    provenance = _provenance(target, cfg, key["model_fingerprint"], world) | {
        "seconds": time.time() - t0, "cost": {"attack": meter.summary(complete=not resumed)}}
    result = build_result(cfg.attack, module.VERSION, provenance, dataclasses.asdict(options), standard.examples,
                          [s.to_dict() for s in settings], gold_block)
    write_result(out, result)
    shutil.rmtree(cache.dir, ignore_errors=True)
    return result


def _gold(gold: str | Path | None, target: Target) -> dict[str, Any] | None:
    """The gold result's examples of the probe records (same world and forget split), or None."""
    if gold is None:
        return None
    gold_result = load_gold_result(gold, target.forget)
    prov = gold_result.get("provenance", {})
    if prov.get("world_fingerprint") != target.world.fingerprint or prov.get("forget_split") != target.forget:
        raise ValueError(f"gold result {gold} is for world {str(prov.get('world_fingerprint'))[:12]}... / "
                         f"{prov.get('forget_split')}, not this world / {target.forget}: pass the gold model's "
                         f"evaluation on this world and forget split")
    ids = {r.id for r in target.probes}
    return {"model_fingerprint": prov.get("model_fingerprint"),
            "examples": [d for d in gold_result["examples"] if d["id"] in ids and d["split"] == target.eval_config]}


def _provenance(target: Target, cfg: AttackConfig, model_fp: str, world) -> dict[str, Any]:
    return {"config": dataclasses.asdict(cfg), "config_hash": config_hash(dataclasses.asdict(cfg)),
            "world_fingerprint": world.fingerprint, "forget_split": target.forget, "model_fingerprint": model_fp,
            "model_path": str(target.path), "library_versions": library_versions(), "seed": cfg.seed,
            "device": device_info()}


class _Cache:
    """Finished settings of an interrupted run (``<out>.cache/<setting>.json``), kept while ``key`` (model,
    world, config, attack version) is unchanged."""

    def __init__(self, path: Path, key: dict[str, Any]):
        self.dir = path
        meta = path / "meta.json"
        if meta.exists() and json.loads(meta.read_text()) != json.loads(json.dumps(key)):
            shutil.rmtree(path)
        if not meta.exists():
            write_json_atomic(meta, key)

    def get(self, name: str) -> Setting | None:
        path = self.dir / f"{name}.json"
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        d["examples"] = [ExampleOutput.from_dict(e) for e in d["examples"]]
        return Setting(**d)

    def put(self, name: str, setting: Setting) -> Setting:
        write_json_atomic(self.dir / f"{name}.json", setting.to_dict(), compact=True)
        return setting
