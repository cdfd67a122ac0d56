"""Evaluate one model on one world and forget split: score every split, aggregate, write a result.

Per-example outputs are cached beside the result file (``NAME.cache/<config>.jsonl``) and keyed
by the model and config fingerprints, so an interrupted evaluation resumes where it stopped.
``shard=(i, n)`` scores a disjoint slice and writes a shard file; ``merge`` joins shard files
and aggregates them into the same result as a single run.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from clearbench.config import config_hash
from clearbench.cost import Meter, add_costs, count_tokens
from clearbench.eval_config import EvalConfig
from clearbench.provenance import check_model_world, device_info, library_versions, read_run, write_json_atomic
from clearbench.types import check_forget_split, holdout_split
from eval import outputs
from eval.aggregate import MetricOptions, MissingGoldError, aggregate, gold_command
from eval.example import ExampleOutput
from eval.own import as_own, own_provenance, run_label
from eval.own import load as load_own
from eval.results import build_result, examples_of, load_gold_result, write_result


def eval_configs(world, forget: str) -> list[str]:
    check_forget_split(forget)
    wanted = [f"{forget}_perturbed", "retain_perturbed", holdout_split(forget), "real_faces", "real_world"]
    missing = [c for c in wanted[:2] if c not in world.configs]
    if missing and getattr(world, "layout", "") == "clear":
        raise ValueError(f"CLEAR copy at {world.path} has no {', '.join(missing)} config(s); download them from "
                         f"therem/CLEAR (huggingface-cli download therem/CLEAR --repo-type dataset --local-dir "
                         f"{world.path})")
    if missing:
        raise ValueError(f"world has no {missing} config(s); it was generated without {forget}: "
                         f"regenerate it with that forget percentage")
    return [c for c in wanted if c in world.configs]


def cell_of(record) -> tuple[str, str, str]:
    """A record's evaluation cell within its config: (modality, task, image role)."""
    return (str(record.modality), str(record.task), record.image_role)


def select_records(records: Sequence, config: str, cfg: EvalConfig) -> list:
    """The records of one eval config that are scored, by id: all of them, a seeded sample of
    ``max_per_config`` (older configs), or of at most ``max_per_cell`` per cell. The sample depends only on
    the records, the config, the cell and the seed, so every model is scored on the same ids; records left
    out (e.g. forget10's text QA beyond 300) are free for calibration on data disjoint from evaluation."""
    recs = sorted(records, key=lambda r: r.id)
    if cfg.max_per_config and len(recs) > cfg.max_per_config:
        recs = random.Random(cfg.seed).sample(recs, cfg.max_per_config)
    elif cfg.max_per_cell:
        cells: dict[tuple[str, str, str], list] = {}
        for r in recs:
            cells.setdefault(cell_of(r), []).append(r)
        recs = [r for c, members in sorted(cells.items()) for r in (
            members if len(members) <= cfg.max_per_cell
            else random.Random(f"{cfg.seed}/{config}/{'/'.join(c)}").sample(members, cfg.max_per_cell))]
    return sorted(recs, key=lambda r: r.id)


def _parents(model_path: Path) -> list[dict[str, Any]]:
    """The chain of runs this model derives from, read from run.json files (nearest first)."""
    chain, path = [], Path(model_path)
    for _ in range(10):
        if not (path / "run.json").is_file():
            break
        info = read_run(path)
        chain.append({"path": str(path), "stage": info.get("stage"), "model_fingerprint": info.get("model_fingerprint")})
        parent = info.get("parent")
        if not parent:
            break
        path = Path(parent["path"] if isinstance(parent, dict) else parent)
    return chain


def _base_parents(base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A plain adapter's parents: its --base (with the base's own run chain when it has one)."""
    if base is None:
        return []
    return _parents(Path(base["path"])) or [{"path": base["path"], "stage": None,
                                             "model_fingerprint": base["model_fingerprint"]}]


def _run_record(model_path: Path) -> dict[str, Any]:
    """The model's run.json (its stage record), or {} when it has none."""
    return read_run(model_path) if (Path(model_path) / "run.json").is_file() else {}


def _run_summary(info: dict[str, Any]) -> dict[str, Any]:
    """``{"run": {method, forget_modality, l1_lambda, lora}}`` for an unlearned model (the leaderboard's
    row label and table), from its run record; empty for other models."""
    if info.get("stage") != "unlearn":
        return {}
    return {"run": {k: info.get(k) for k in ("method", "forget_modality", "l1_lambda", "lora")}}


def _training_cost(info: dict[str, Any]) -> dict[str, Any]:
    """``{"training": cost}`` of the run that made this model (its run record's; the leaderboard's cost columns for
    an unlearning run), empty when it has no run record or one written before costs were recorded."""
    return {"training": info["cost"]} if info.get("cost") else {}


def scoring_key(cfg: EvalConfig) -> dict[str, Any]:
    """The config fields per-example outputs depend on: the cache survives a change of metric
    options or batch size (those do not change what the model is asked), not of these."""
    key = {"forget": cfg.forget, "max_new_tokens": cfg.max_new_tokens, "max_per_config": cfg.max_per_config,
           "seed": cfg.seed, "generation": outputs.GENERATION}
    return key | ({"max_per_cell": cfg.max_per_cell} if cfg.max_per_cell else {})  # caches of older runs stay valid


# the config fields that choose which records are scored (select_records): a row and its gold must agree
SAMPLE_FIELDS: tuple[str, ...] = ("max_per_config", "max_per_cell", "seed")


def load_gold(gold: str | Path | None, cfg: EvalConfig, world_fingerprint: str) -> dict[str, Any] | None:
    """The gold result, checked against this world and forget split (before any scoring)."""
    if gold is None or gold == "self":
        return None
    gold_result = load_gold_result(gold, cfg.forget)
    gp = gold_result.get("provenance", {})
    if gp.get("world_fingerprint") != world_fingerprint:
        raise ValueError(f"gold result {gold} is from another world ({str(gp.get('world_fingerprint'))[:12]}...), "
                         f"not {world_fingerprint[:12]}...; evaluate the gold model on this world first: "
                         f"`{gold_command(cfg.forget)} --gold self`")
    if gp.get("forget_split") != cfg.forget:
        raise ValueError(f"gold result {gold} is for {gp.get('forget_split')}, not {cfg.forget}; "
                         f"use the gold model of {cfg.forget}: `{gold_command(cfg.forget)} --gold self`")
    theirs = gp.get("config") if isinstance(gp.get("config"), dict) else {}
    differ = [f"{k}={theirs[k]!r}" for k in SAMPLE_FIELDS if k in theirs and theirs[k] != getattr(cfg, k)]
    if differ:
        raise ValueError(f"gold result {gold} scored other examples ({', '.join(differ)}; this evaluation: "
                         + ", ".join(f"{k}={getattr(cfg, k)!r}" for k in SAMPLE_FIELDS)
                         + "): pass the gold result's caps and seed, or re-evaluate the gold model with these")
    return gold_result


def _open_cache(cache_dir: Path, key: dict[str, Any]) -> None:
    meta = cache_dir / "meta.json"
    if meta.exists() and json.loads(meta.read_text()) != key:
        shutil.rmtree(cache_dir)  # another model or config: stale per-example values
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        write_json_atomic(meta, key)


def score_model(model: str | Path, world, cfg: EvalConfig, cache_dir: Path | None,
                shard: tuple[int, int] = (0, 1), progress: bool = True, stop_after: int | None = None):
    """Score every eval config; returns (examples, expected ids, provenance)."""
    from clearbench.models.common import default_device
    start = time.perf_counter()
    own = as_own(model)  # a path, or an OwnModel: a plain adapter on --base, a label, a --target
    run_dir = Path(own.path)
    configs = eval_configs(world, cfg.forget)  # a missing split fails before the model loads
    run_label(own)  # a bad label fails before the model loads
    check_model_world(run_dir, world.fingerprint)
    if own.base is not None:
        check_model_world(own.base, world.fingerprint, "base model")
    loaded, fingerprint = load_own(own, default_device())  # bf16 on a GPU, fp32 on the CPU
    extra = own_provenance(own, fingerprint)  # --target's lineage fails before scoring
    cfg_dict = dataclasses.asdict(cfg)
    if cache_dir is not None:
        _open_cache(cache_dir, {"model_fingerprint": fingerprint, "scoring": scoring_key(cfg),
                                "world_fingerprint": world.fingerprint, "shard": list(shard)})
    examples: list[ExampleOutput] = []
    expected: list[str] = []
    count_tokens(loaded.model)
    # examples read back from the cache cost nothing now: such a pass's cost is marked incomplete
    cached = cache_dir is not None and any(cache_dir.glob("*.jsonl"))
    with Meter() as meter:  # this pass's cost (examples read from the cache cost nothing)
        for config in configs:
            recs = select_records(world.records(config), config, cfg)
            expected += [r.id for r in recs]
            cache = cache_dir / f"{config}.jsonl" if cache_dir is not None else None
            examples += outputs.score(loaded, recs, config, cache=cache, batch_size=cfg.batch_size,
                                      max_new_tokens=cfg.max_new_tokens,
                                      run=outputs.ScoreRun(shard=shard, progress=progress, stop_after=stop_after))
    record = _run_record(run_dir)
    provenance = {
        "config": cfg_dict | {"generation": outputs.GENERATION | {"max_new_tokens": cfg.max_new_tokens}},
        "config_hash": config_hash(cfg_dict),
        "world_fingerprint": world.fingerprint,
        "forget_split": cfg.forget,
        "model_fingerprint": fingerprint,
        "model_path": str(run_dir),
        "family": loaded.name,
        "parents": _parents(run_dir) or _base_parents(extra.get("base")),
        **_run_summary(record),
        **extra,
        "library_versions": library_versions(),
        "seed": cfg.seed,
        "device": device_info(),
        "runtime_seconds": round(time.perf_counter() - start, 3),  # loading and scoring in this process
        "cost": {"evaluation": meter.summary(complete=not cached), **_training_cost(record)},
    }
    return examples, expected, provenance


def finish(examples: Sequence[ExampleOutput], expected: Sequence[str], provenance: dict[str, Any], cfg: EvalConfig,
           gold: str | Path | None, out: Path, gold_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate against the gold result (or the model itself with gold='self') and write."""
    options = MetricOptions(**cfg.options)
    check_out(out, gold)
    if gold == "self":
        gold_examples = list(examples)
    elif gold is not None:
        gold_result = gold_result or load_gold(gold, cfg, provenance["world_fingerprint"])
        gold_examples = examples_of(gold_result)
    else:
        gold_examples = None
    aggregates = aggregate(examples, gold_examples, options)
    provenance = provenance | {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "git_revision": git_revision()}
    if gold == "self":
        provenance = provenance | {"gold": "self"}
    elif gold is not None:
        provenance = provenance | {"gold": str(gold)}
    result = build_result(examples, aggregates, provenance, gold=gold_result if gold_result else gold_examples,
                          expected_ids=expected)
    write_result(out, result)
    return result


def evaluate(model: str | Path, world, out: str | Path, *, gold: str | Path | None = None,
             cfg: EvalConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``model`` (a run or checkpoint directory, or an ``eval.own.OwnModel``: a plain PEFT adapter on its
    base, a label, a target to check lineage against) on every eval config of ``world`` and write the result.

    ``gold``: the gold model's result file, ``"self"`` when ``model`` is the gold model, or None
    (only with ``options={"require_gold": False}``). Bad inputs (missing split, another world,
    a gold result of another world or forget split) fail before the model runs."""
    cfg = cfg or EvalConfig()
    out = Path(out)
    eval_configs(world, cfg.forget)
    if gold is None and MetricOptions(**cfg.options).require_gold:
        raise MissingGoldError(
            f"forget quality and PrivLeak need the gold (retain-only) model's result for {cfg.forget}: pass "
            f"gold=<its result file> (produce it with `{gold_command(cfg.forget)} --gold self`), gold='self' for "
            f"the gold model itself, or options={{'require_gold': False}} to skip them deliberately")
    gold_result = load_gold(gold, cfg, world.fingerprint)
    examples, expected, provenance = score_model(model, world, cfg, out.with_suffix(".cache"), progress=progress)
    return finish(examples, expected, provenance, cfg, gold, out, gold_result)


def write_shard(model, world, out: Path, cfg: EvalConfig, shard: tuple[int, int], progress: bool = True) -> Path:
    out = Path(out)
    examples, expected, provenance = score_model(model, world, cfg, out.with_suffix(".cache"), shard, progress)
    write_json_atomic(out, {"shard": list(shard), "config": dataclasses.asdict(cfg), "provenance": provenance,
                            "expected": expected, "examples": [e.to_dict() for e in examples]})
    return out


def git_revision() -> dict[str, Any] | None:
    """{"commit", "dirty"} of the clearbench source when it is a git checkout (not an installed copy), else None."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def summary(result: dict[str, Any]) -> str:
    """A compact view of a result for the terminal: the leaderboard's headline columns, then per split x modality
    n, ROUGE-L, Prob, TR and naming accuracy, then membership inference and the warnings."""
    from eval.leaderboard import columns, fmt

    m, prov = result["aggregates"]["metrics"], result["provenance"]
    cells = {"rouge_l", "probability", "truth_ratio"}
    head = [f"{h} {fmt(k, m[k])}" for h, k in columns() if k in m and k.split("/")[2] not in cells]
    lines = [f"model {prov['model_fingerprint']} · world {prov['world_fingerprint'][:12]} · {prov['forget_split']} · "
             f"{len(result['examples'])} examples · {prov.get('runtime_seconds', float('nan')):.1f} s"]
    lines += [" | ".join(head[i:i + 6]) for i in range(0, len(head), 6)]
    lines.append(f"{'split':11s} {'modality':8s} {'n':>4s} {'ROUGE-L':>8s} {'Prob':>8s} {'TR':>8s} {'naming':>8s}")
    for split in ("forget", "retain", "holdout", "real_faces", "real_world"):
        for modality in ("text", "image", "joint"):
            if f"{split}/{modality}/n" in m:
                vals = [fmt(f"{split}/{modality}/{k}", m.get(f"{split}/{modality}/{k}"))
                        for k in ("rouge_l", "probability", "truth_ratio", "naming_acc")]
                lines.append(f"{split:11s} {modality:8s} {int(m[f'{split}/{modality}/n']):4d} "
                             + " ".join(f"{v:>8s}" for v in vals))
    mia = [f"{a} {m[f'mia/all/{a}_auc']:.3f}/" + (f"{m[f'mia/all/{a}_privleak']:+.1f}" if f"mia/all/{a}_privleak"
                                                   in m else "—")
           for a in ("loss", "min_k", "min_k_pp", "zlib") if f"mia/all/{a}_auc" in m]
    if mia:
        lines.append("membership inference, forget vs holdout (AUC/PrivLeak): " + " | ".join(mia))
    warnings = result["aggregates"].get("warnings") or []
    if warnings:
        lines.append(f"{len(warnings)} warning(s), first: {warnings[0]} (all in aggregates.warnings)")
    return "\n".join(lines)


def check_out(out: str | Path, gold: str | Path | None) -> None:
    """A result never replaces the gold result it is computed against (the leaderboard would lose its yardstick)."""
    if gold not in (None, "self") and Path(out).resolve() == Path(gold).resolve():
        raise ValueError(f"--out {out} is the gold result --gold {gold}: write the result to another file")


SHARD_KEYS = ("shard", "config", "provenance", "expected", "examples")


def read_shard(path: str | Path) -> dict[str, Any]:
    """A shard file written by ``write_shard``; anything else is a one-line error naming the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no shard file at {path}; write it with `clearbench evaluate ... --shard i/n --out {path}`")
    try:
        shard = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not a shard file (not JSON: {e})") from None
    if not isinstance(shard, dict) or any(k not in shard for k in SHARD_KEYS):
        raise ValueError(f"{path} is not a shard file of `clearbench evaluate --shard i/n` (it needs the keys "
                         f"{', '.join(SHARD_KEYS)}); pass the shard files only")
    return shard


def merge(shard_files: Sequence[str | Path], out: Path, gold: str | Path | None) -> dict[str, Any]:
    """Join the shard files of one evaluation (all of 0..n-1, one model, world and config)."""
    shards = [read_shard(p) for p in shard_files]
    n = {s["shard"][1] for s in shards}
    got = sorted(s["shard"][0] for s in shards)
    if len(n) != 1 or got != list(range(next(iter(n)))):
        raise ValueError(f"shards {[s['shard'] for s in shards]} are not a complete set 0..n-1 of one split; "
                         f"score the missing ones with --shard i/n")
    for what in ("model_fingerprint", "world_fingerprint", "config_hash"):
        if len({s["provenance"][what] for s in shards}) != 1:
            raise ValueError(f"shards have different {what}s (from different models, worlds or configs); "
                             f"merge the shards of one evaluation only")
    if len({json.dumps(sorted(s["expected"])) for s in shards}) != 1:
        raise ValueError("shards expect different example ids; merge the shards of one evaluation only")
    examples = outputs.merge_shards([[ExampleOutput.from_dict(d) for d in s["examples"]] for s in shards])
    cfg = EvalConfig(**shards[0]["config"])
    expected = shards[0]["expected"]
    order = {i: k for k, i in enumerate(expected)}  # a single run's order: by config, then id
    examples.sort(key=lambda ex: (order.get(ex.id, len(order)), ex.id))
    prov = shards[0]["provenance"] | {"runtime_seconds": round(sum(s["provenance"].get("runtime_seconds", 0.0)
                                                                   for s in shards), 3)}  # the shards' total
    if all("cost" in s["provenance"] for s in shards):
        prov["cost"] = {"evaluation": add_costs([s["provenance"]["cost"]["evaluation"] for s in shards])}
    gold_result = load_gold(gold, cfg, prov["world_fingerprint"])
    return finish(examples, expected, prov, cfg, gold, Path(out), gold_result)
