"""Training steps per second of the tiny model with 1 or 2 torch threads, on an idle machine and beside busy processes.

    python benchmarks/bench_threads.py --world runs/tiny/world --model runs/tiny/base [--steps 200] [--busy 0 1]
        [--threads 1 2] [--governor on off]

Runs ``clearbench finetune`` for ``--steps`` optimizer steps of the tiny preset's finetune (batch 32) from
``--model``, once per (busy, threads, governor) triple, each in a fresh process (governor off:
``CLEARBENCH_FIXED_THREADS=1``, clearbench.threads), and prints the wall time of the training loop (run.json's
``train.seconds``: model loading and saving are left out) and steps/s, with the load average before each run.
``--busy N`` keeps N CPU-bound Python processes spinning beside the run (what a machine that does other things
looks like).
Question it answers: does a 2-thread torch worker stall when it shares its cores, and by how much.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(world: Path, model: Path, steps: int, threads: int, busy: int, governor: bool) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(2.0 if busy else 0.0)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ft"
            env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                "CLEARBENCH_FIXED_THREADS": "0" if governor else "1"}
            cmd = [sys.executable, "-m", "clearbench.cli", "finetune", "--world", str(world), "--model", str(model),
                   "--out", str(out), "finetune.phase.train.epochs=0", f"finetune.phase.train.max_steps={steps}"]
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.time() - t0
            if proc.returncode:
                raise SystemExit(f"finetune failed:\n{proc.stderr[-2000:]}")
            loop = json.loads((out / "run.json").read_text())["train"]["seconds"]  # the training loop's own time
            changes = re.findall(r"torch threads (\d+ -> \d+)", proc.stderr)
    finally:
        for p in spinners:
            p.kill()
    return {"threads": threads, "busy": busy, "governor": governor, "load_before": round(load, 2),
            "loop_s": round(loop, 1), "wall_s": round(wall, 1), "steps_per_s": round(steps / max(loop, 1e-9), 2),
            "changes": changes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--governor", nargs="+", choices=["on", "off"], default=["off", "on"])
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; {args.steps} finetune steps of batch 32 per run")
    print(f"{'threads':>7} {'busy':>4} {'governor':>8} {'load':>5} {'loop s':>7} {'steps/s':>8}  thread changes")
    for busy in args.busy:
        for threads in args.threads:
            for governor in args.governor if threads > 1 else ["off"]:
                r = run_once(args.world, args.model, args.steps, threads, busy, governor == "on")
                print(f"{r['threads']:>7} {r['busy']:>4} {governor:>8} {r['load_before']:>5} {r['loop_s']:>7} "
                      f"{r['steps_per_s']:>8}  {', '.join(r['changes']) or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
