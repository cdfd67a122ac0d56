"""Wall time of pretrain + target + one gold on the default world, and the quick-check numbers.

    python benchmarks/bench_models.py --world runs/tiny/world --out /tmp/bench-models [--preset tiny]

Runs the three model stages of the preset (base, target on ``full``, gold on ``retain90``),
timing each, then prints the quick-check table (ROUGE-L recall on authors' text QA, naming
accuracy on training and held-out photos, forget10 vs retain, real faces, real world) for each
model. Issue targets: base >= 0.8 real-faces naming, >= 0.7 real-world VQA; target >= 0.9 text
ROUGE-L, >= 0.9 / 0.7 naming on training / held-out photos; gold near chance on forget10.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from clearbench.config import BenchConfig, load_config
from clearbench.data import open_world
from clearbench.models import load_model
from clearbench.quickcheck import quick_check
from clearbench.stages import finetune, model_dir, pretrain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, help="a world dir (clearbench generate --out DIR)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--n", type=int, default=300, help="records per quick check")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(BenchConfig, args.preset, args.overrides)
    world, out = open_world(args.world), Path(args.out)
    times = {}
    t = time.time()
    pretrain(cfg, world, out / "base", overwrite=True)
    times["base"] = time.time() - t
    for name, split in (("target", "full"), ("gold-10", "retain90")):
        t = time.time()
        finetune(cfg, world, out / "base", split, out / name, overwrite=True)
        times[name] = time.time() - t
    rows = {name: quick_check(load_model(model_dir(out / name)), world, n=args.n) for name in times}
    keys = list(next(iter(rows.values())))
    print(f"{'':24s}" + "".join(f"{n:>10s}" for n in rows))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{rows[n][k]:10.3f}" for n in rows))
    print(f"{'wall time (s)':24s}" + "".join(f"{times[n]:10.0f}" for n in rows))
    print(f"total: {sum(times.values()):.0f} s")
    (out / "bench_models.json").write_text(json.dumps({"seconds": times, "quick_check": rows}, indent=2))


if __name__ == "__main__":
    main()
