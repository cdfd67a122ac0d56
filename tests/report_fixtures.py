"""Result files for the report's tests, written to disk as a study would (no model involved): a gold result
and one result per model, from the synthetic per-example values of test_metrics_fixtures.py."""
from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any

from eval.aggregate import aggregate
from eval.example import ExampleOutput
from eval.results import build_result

_spec = importlib.util.spec_from_file_location(
    "_clearbench_metric_fixtures_report", pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def run(method: str, modality: str, l1: float = 0.0, lora: bool = False) -> dict[str, Any]:
    return {"method": method, "forget_modality": modality, "l1_lambda": l1, "lora": lora}


# name: (memorised, run info or None, seed)
MODELS: dict[str, tuple[float, dict | None, int]] = {
    "target": (1.0, None, 0),
    "npo-10": (0.3, run("npo", "joint"), 2),
    "npo-l1-10": (0.5, run("npo", "joint", 1e-4, True), 3),
    "ga-text-10": (0.8, run("grad_ascent", "text"), 4),
    "rmu-image-10": (0.6, run("rmu", "image"), 5),
}


COSTLESS = {"rmu-image-10"}  # a result written before clearbench recorded costs


def cost(seed: int, steps: int) -> dict[str, Any]:
    """A cost record as clearbench.cost writes it (numbers made up, distinct per row)."""
    return {"wall_seconds": 10.0 * seed + 1.5, "cpu_seconds": 15.0 * seed, "peak_memory_mb": 900.0 + seed,
            "peak_memory_kind": "rss", "peak_memory_scope": "meter", "optimizer_steps": steps,
            "tokens_backward": 1000 * seed * (steps > 0), "tokens_forward_only": 500 * seed, "images": 8 * seed,
            "device": "cpu threads=1", "complete": True}


def as_read(obj: Any) -> Any:
    return json.loads(json.dumps(obj))  # as read back from disk


def gold_result() -> dict[str, Any]:
    gold_ex = fx.synthetic_examples(seed=1, memorised=0.0)
    prov = dict(fx.provenance(), model_fingerprint="gold-fp", model_path="runs/gold-10", gold="self")
    return as_read(build_result(gold_ex, aggregate(gold_ex, gold_ex), prov, gold=gold_ex))


def make_result(gold: dict[str, Any], memorised: float, run_info: dict | None, seed: int, name: str) -> dict[str, Any]:
    ex = fx.synthetic_examples(seed=seed, memorised=memorised)
    gold_ex = [ExampleOutput.from_dict(d) for d in gold["examples"]]
    prov = dict(fx.provenance(), model_fingerprint=f"fp-{name}", model_path=f"runs/{name}")
    if run_info is not None:
        prov["run"] = run_info
        if name not in COSTLESS:
            prov["cost"] = {"evaluation": cost(seed, 0), "training": cost(seed, 10)}
    return as_read(build_result(ex, aggregate(ex, gold_ex), prov, gold=gold))


def write_results(root: pathlib.Path, models: dict[str, tuple[float, dict | None, int]] = MODELS) -> dict[str, Any]:
    """{gold, gold_path, results: {name: result}, paths: {name: path}} with every file written under ``root``."""
    gold = gold_result()
    gold_path = root / "gold-10.json"
    gold_path.write_text(json.dumps(gold))
    results, paths = {}, {}
    for name, (mem, info, seed) in models.items():
        results[name] = make_result(gold, mem, info, seed, name)
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(results[name]))
    return {"root": root, "gold": gold, "gold_path": gold_path, "results": results, "paths": paths}


def make_attack(result: dict[str, Any], attack: str = "quantize", recovery: float = 0.5) -> dict[str, Any]:
    """An attack result on ``result``'s model: its forget examples as the standard probes and two settings whose
    answers are likelier by ``recovery`` (scaled log-probabilities) and by half of it."""
    from eval.attacks import ATTACKS
    from eval.attacks.result import build_result as build_attack

    standard = [ExampleOutput.from_dict(d) for d in result["examples"] if d["split"].startswith("forget")]

    def shifted(factor: float) -> list[dict[str, Any]]:
        return [{**ex.to_dict(), "lp_answer": [x * factor for x in ex.lp_answer]} for ex in standard]

    settings = [{"name": name, "params": {}, "in_sample": False, "skipped": "", "examples": shifted(1 - f * recovery),
                 "curve": [], "log": [], "seconds": 0.0} for name, f in (("strong", 1.0), ("weak", 0.5))]
    # the strong setting's recovery curve: step 0 (unattacked), step 1 (half way), step 2 (its own values)
    settings[0]["params"] = {"curve_ids": [ex.id for ex in standard], "steps": 2}
    settings[0]["curve"] = [{"step": 1, "examples": shifted(1 - 0.5 * recovery)}]
    prov = {k: result["provenance"][k] for k in ("world_fingerprint", "forget_split", "model_fingerprint",
                                                 "library_versions", "seed", "device")}
    prov |= {"config": {"attack": attack}, "config_hash": "0" * 64}
    return as_read(build_attack(attack, ATTACKS[attack].VERSION, prov, {}, standard, settings))
