"""Time generate_world on the default world (200 authors, ~4,600 scene images, ~8,800 images in all).

    python benchmarks/bench_generate.py [--out DIR] [--workers 2]

Prints wall time, images/s and the size on disk. Target: < 2 min on the 2-core project machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="", help="where to write (default: a temp dir, removed afterwards)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from data_gen.generate import WorldParams, generate_world

    params = WorldParams(workers=args.workers)
    tmp = None if args.out else tempfile.mkdtemp(prefix="bench-world-")
    out = Path(args.out or tmp) / "world"
    try:
        start = time.perf_counter()
        generate_world(out, params, overwrite=True)
        wall = time.perf_counter() - start
        p = params
        people = p.authors + p.authors * max(p.forget_percents) // 100  # authors + holdout authors
        images = (people * (p.images_per_author + p.heldout_images + 1)  # scenes + canonical portrait
                  + p.public_figures * (p.public_train_images + p.public_heldout_images + 1)
                  + p.anonymous_faces + p.world_vqa + p.world_vqa_train)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        rows = sum(c["rows"] for c in json.loads((out / "manifest.json").read_text())["configs"].values())
        print(f"generate_world(default, workers={args.workers}): {wall:.1f} s wall, ~{int(images)} images "
              f"({images / wall:.0f} images/s), {rows} rows, {size / 1e6:.1f} MB on disk at {out}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
