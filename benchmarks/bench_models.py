"""Wall time of pretrain + target + one gold on the default world, and the quick-check numbers.

    python benchmarks/bench_models.py --world runs/tiny/world --out /tmp/bench-models [--preset tiny] [--jobs 2]

Runs the three model stages of the preset (base, target on ``full``, gold on ``retain90``),
timing each (``--jobs 2``: the target and the gold side by side in two processes with the torch
threads split between them, as ``clearbench run --jobs 2`` does), then prints the quick-check
table (ROUGE-L recall on authors' text QA, naming accuracy on training and held-out photos,
forget10 vs retain, real faces, real world) for each model. Issue targets: base >= 0.8 real-faces naming, >= 0.7 real-world VQA; target >= 0.9 text
ROUGE-L, >= 0.9 / 0.7 naming on training / held-out photos; gold near chance on forget10.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from clearbench.config import BenchConfig, load_config
from clearbench.data import open_world
from clearbench.models import load_model
from clearbench.quickcheck import quick_check
from clearbench.stages import finetune, model_dir, pretrain


def _finetune(preset: str, overrides: list[str], world_dir: str, out: str, split: str, name: str,
              threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    cfg = load_config(BenchConfig, preset, overrides)
    t = time.time()
    finetune(cfg, open_world(world_dir), Path(out) / "base", split, Path(out) / name, overwrite=True)
    return time.time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, help="a world dir (clearbench generate --out DIR)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--n", type=int, default=300, help="records per quick check")
    p.add_argument("--jobs", type=int, default=1, choices=[1, 2],
                   help="2: train the target and the gold at the same time (threads split)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(BenchConfig, args.preset, args.overrides)
    world, out = open_world(args.world), Path(args.out)
    times = {}
    t = time.time()
    pretrain(cfg, world, out / "base", overwrite=True)
    times["base"] = time.time() - t
    import torch

    stages = (("target", "full"), ("gold-10", "retain90"))
    t = time.time()
    if args.jobs == 1:
        for name, split in stages:
            times[name] = _finetune(args.preset, args.overrides, args.world, str(out), split, name,
                                    torch.get_num_threads())
    else:
        threads = max(1, torch.get_num_threads() // 2)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
            futures = {name: pool.submit(_finetune, args.preset, args.overrides, args.world, str(out), split, name,
                                         threads) for name, split in stages}
            times.update({name: f.result() for name, f in futures.items()})
    finetunes = time.time() - t
    rows = {name: quick_check(load_model(model_dir(out / name)), world, n=args.n) for name in times}
    keys = list(next(iter(rows.values())))
    print(f"{'':24s}" + "".join(f"{n:>10s}" for n in rows))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{rows[n][k]:10.3f}" for n in rows))
    print(f"{'wall time (s)':24s}" + "".join(f"{times[n]:10.0f}" for n in rows))
    total = times["base"] + finetunes
    print(f"total: {total:.0f} s (base {times['base']:.0f} s + target and gold {finetunes:.0f} s, jobs {args.jobs})")
    (out / "bench_models.json").write_text(json.dumps({"seconds": times, "total_seconds": total, "jobs": args.jobs,
                                                       "quick_check": rows}, indent=2))


if __name__ == "__main__":
    main()
