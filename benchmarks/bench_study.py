"""Wall time of the default study from a clean output directory, per stage kind and in total, with the machine's
core count and load, what each stage cost (run.json's ``cost``) and whether the model-quality targets were met.

    python benchmarks/bench_study.py --out /tmp/bench-study [--preset tiny] [--jobs 2] [--busy 1] [--json F]
        [-- OVERRIDES...]

``--busy N`` starts N CPU-bound background processes (a plain Python loop each) for the whole run: the figure
for a machine that does other things (issue: the total with one busy process should stay within 2x idle).
``--out`` must not exist (a clean run); ``--fresh`` deletes it first; ``--reuse`` runs in an existing study directory
and times only the stages that run (the others are reused from the earlier run; for the forget-split figure, where
world, base and target do not change); ``--stage-store DIR`` passes a stage store to ``clearbench run``
(clearbench.stage_store: a world, base or finetune found there is copied in, not made; its row in the stage
table says "(from store)"). Everything after ``--`` is passed to
``clearbench run`` as config overrides (e.g. ``world.params.authors=100`` or
``study.forget_splits=[forget05]`` for the scaling figures; ``benchmarks/plot_scaling.py`` tabulates and plots
several runs' ``--json`` files).

The load average is sampled every 10 s during the run; compare figures taken at similar loads. Quality targets
(issue 19; read from the study's own evaluation results of the base, target and gold):
- base: real-faces naming >= 0.8, real-world VQA ROUGE-L >= 0.7;
- target: text ROUGE-L >= 0.9 (forget and retain authors), naming >= 0.9 on training photos and >= 0.7 on
  held-out photos (retain authors: the forget authors' held-out photos are the unlearning's test);
- gold: forget naming <= 0.3 (near chance: it never saw those faces).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (model, result key, comparison, threshold)
TARGETS = [
    ("base", "real_faces/image/naming_acc", ">=", 0.8),
    ("base", "real_world/joint/rouge_l", ">=", 0.7),
    ("target", "forget/text/rouge_l", ">=", 0.9),
    ("target", "retain/text/rouge_l", ">=", 0.9),
    ("target", "forget/image@train/naming_acc", ">=", 0.9),
    ("target", "retain/image@train/naming_acc", ">=", 0.9),
    ("target", "retain/image@heldout/naming_acc", ">=", 0.7),
    ("gold", "forget/image/naming_acc", "<=", 0.3),
]


class LoadSampler(threading.Thread):
    def __init__(self, every: float = 10.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stage_times(out: Path, skip_lines: int = 0) -> list[dict]:
    """(stage, kind, seconds, start) of every stage that ran or was copied from a stage store (kind "<kind> (from
    store)"), from the study's run.jsonl (after its first ``skip_lines``); ``start`` is seconds after the run began."""
    kinds, rows = {}, []
    for line in (out / "run.jsonl").read_text().splitlines()[skip_lines:]:
        e = json.loads(line)
        if e["event"] == "start":
            kinds[e["stage"]] = (e["kind"], e["time"])
        elif e["event"] == "end":
            kind, start = kinds.get(e["stage"], ("?", None))
            rows.append({"stage": e["stage"], "kind": kind, "seconds": e["seconds"], "start": start})
        elif e["event"] == "fetch":
            rows.append({"stage": e["stage"], "kind": f"{e['kind']} (from store)", "seconds": e["seconds"],
                         "start": e["time"]})
    return rows


def stage_cost(out: Path, stage: str) -> dict | None:
    """The cost record of a stage's run.json (training stages) or result provenance (evaluations)."""
    run = out / stage / "run.json"
    if run.is_file():
        return json.loads(run.read_text()).get("cost")
    if stage.startswith("evaluate/"):
        res = out / "results" / f"{stage.split('/', 1)[1]}.json"
        if res.is_file():
            return (json.loads(res.read_text())["provenance"].get("cost") or {}).get("evaluation")
    return None


def study_facts(out: Path) -> dict:
    """The world's size and the study's forget splits (for the scaling figures), from the study's own files."""
    facts: dict = {}
    manifest, config = out / "world" / "manifest.json", out / "config.json"
    if manifest.is_file():
        params = json.loads(manifest.read_text())["params"]
        facts["world"] = {k: params.get(k) for k in ("authors", "qa_per_author", "images_per_author",
                                                      "forget_percents", "public_figures")}
    if config.is_file():
        facts["forget_splits"] = json.loads(config.read_text())["study"]["forget_splits"]
    return facts


def quality(out: Path, forget_split: str = "forget10") -> list[dict]:
    """The targets, read from the results of the study's (first) forget split (``target-10.json`` ...)."""
    rows, suffix = [], forget_split.removeprefix("forget")
    for model, key, op, threshold in TARGETS:
        path = out / "results" / f"{model}-{suffix}.json"
        value = json.loads(path.read_text())["aggregates"]["metrics"].get(key) if path.is_file() else None
        met = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        rows.append({"model": model, "key": key, "target": f"{op} {threshold}", "value": value, "met": met})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound background processes during the run")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    ap.add_argument("--reuse", action="store_true", help="run in an existing --out; time only the stages that run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--stage-store", type=Path, help="clearbench run's stage store (default: none; "
                                                     "CLEARBENCH_STAGE_STORE is not passed on)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.fresh and args.reuse:
        raise SystemExit("--fresh and --reuse exclude each other")
    log = args.out / "run.jsonl"
    earlier = len(log.read_text().splitlines()) if args.reuse and log.is_file() else 0
    if args.out.exists() and not args.reuse:
        if not args.fresh:
            raise SystemExit(f"{args.out} exists: a benchmark starts from a clean directory "
                             "(--fresh deletes it, --reuse times only the stages that still run)")
        shutil.rmtree(args.out)
    before = os.getloadavg()
    busy = busy_processes(args.busy)
    sampler = LoadSampler()
    sampler.start()
    cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", args.preset, "--out", str(args.out),
           "--jobs", str(args.jobs), *(["--stage-store", str(args.stage_store)] if args.stage_store else []),
           *args.overrides]
    env = {k: v for k, v in os.environ.items() if k != "CLEARBENCH_STAGE_STORE"}  # a store only when asked
    t0 = time.time()
    try:
        code = subprocess.call(cmd, cwd=ROOT, env=env)
    finally:
        total = time.time() - t0
        sampler.stop.set()
        for p in busy:
            p.kill()
    stages = stage_times(args.out, earlier) if log.is_file() else []
    facts = study_facts(args.out)
    report = {
        "command": " ".join(cmd), "preset": args.preset, "overrides": args.overrides, **facts,
        "reused_earlier_stages": args.reuse, "stage_store": str(args.stage_store) if args.stage_store else None,
        "exit_code": code, "total_seconds": round(total, 1),
        "cores": os.cpu_count(), "busy_processes": args.busy, "load_before": [round(x, 2) for x in before],
        "load_during_mean": round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None,
        "kinds": kind_totals(stages),
        "stages": [s | {"cost": stage_cost(args.out, s["stage"])} for s in stages],
        "quality": quality(args.out, (facts.get("forget_splits") or ["forget10"])[0]) if code == 0 else [],
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return code


def kind_totals(stages: list[dict]) -> dict[str, dict]:
    """Per stage kind (world, pretrain, finetune, unlearn, evaluate, report ...): how many stages and their summed
    seconds (stage time: stages that ran side by side add up to more than the wall time)."""
    out: dict[str, dict] = {}
    for s in stages:
        k = out.setdefault(s["kind"], {"stages": 0, "seconds": 0.0})
        k["stages"] += 1
        k["seconds"] = round(k["seconds"] + s["seconds"], 1)
    return out


def print_report(r: dict) -> None:
    print(f"\n{r['command']}\nexit code {r['exit_code']}; {r['cores']} cores, {r['busy_processes']} busy background "
          f"process(es); load average before {r['load_before']}, mean during {r['load_during_mean']}")
    by_kind: dict[str, list[float]] = {}
    for s in r["stages"]:
        by_kind.setdefault(s["kind"], []).append(s["seconds"])
    print(f"{'stage kind':<22} {'stages':>6} {'sum of stage seconds':>21} {'longest':>9}")
    for kind, secs in by_kind.items():
        print(f"{kind:<22} {len(secs):>6} {sum(secs):>21.1f} {max(secs):>9.1f}")
    print(f"{'total (wall)':<22} {'':>6} {r['total_seconds']:>21.1f}  = {r['total_seconds'] / 60:.1f} min")
    for s in r["stages"]:
        c = s["cost"] or {}
        copied = " (from store: the cost of the run that made it)" if s["kind"].endswith("(from store)") else ""
        print(f"  {s['stage']:<44} {s['seconds']:>8.1f} s" + copied + (
            f"  cpu {c['cpu_seconds']:>8.1f} s  steps {c['optimizer_steps']:>6}  tokens fwd+bwd "
            f"{c['tokens_backward']:>11,} fwd {c['tokens_forward_only']:>11,}"
            f"  peak {c['peak_memory_mb']:>6.0f} MiB" if c else ""))
    for q in r["quality"]:
        value = "missing" if q["value"] is None else f"{q['value']:.3f}"
        print(f"  quality {q['model']:<7} {q['key']:<34} {value:>8} (target {q['target']}): "
              f"{'met' if q['met'] else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
