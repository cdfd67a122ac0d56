"""``clearbench generate``: write a synthetic world (docs/world_format.md) from one seed."""
from __future__ import annotations

import argparse
import json
import time


def _percents(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 1,5,10)") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate a synthetic world (authors, faces, QA, splits)",
                              description="Generate a deterministic synthetic world: one parquet per config, manifest.json, dataset card.")
    p.add_argument("--out", required=True, help="output directory (must be empty or absent unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0); same seed -> byte-identical files")
    p.add_argument("--authors", type=int, default=200, help="number of fictitious authors (default 200, as CLEAR/TOFU)")
    p.add_argument("--qa-per-author", type=int, default=20, help="text QA per author (default 20, as TOFU)")
    p.add_argument("--images-per-author", type=int, default=18, help="training images per author (default 18; CLEAR has ~18.8)")
    p.add_argument("--heldout-images", type=int, default=3, help="held-out (eval-only) images per author (default 3)")
    p.add_argument("--public-figures", type=int, default=50, help="real-faces control identities (default 50)")
    p.add_argument("--public-train-images", type=int, default=20,
                   help="training photos per public figure (default 20; 3 more are held out)")
    p.add_argument("--world-vqa", type=int, default=500, help="real-world VQA eval items (default 500; 6x as many go to pretrain)")
    p.add_argument("--anonymous-faces", type=int, default=2000,
                   help="non-author faces (scene photos) with attribute captions in pretrain (default 2000)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--forget-percents", type=_percents, default=(1, 5, 10), help="forget split percentages (default 1,5,10)")
    p.add_argument("--corruption-victims", type=int, default=None,
                   help="victim authors of the corruption sets (restorative scenario; default 5 %% of the authors, 0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--layout", choices=("clearbench", "clear"), default="clearbench",
                   help="'clear' also writes OUT/clear/<config>/*.parquet in the public CLEAR layout")
    p.add_argument("--image-backend", choices=("procedural", "diffusers"), default="procedural",
                   help="scene images: procedural PIL (default) or a local diffusers pipeline (--diffusers-model)")
    p.add_argument("--diffusers-model", default="", help="local diffusers pipeline directory for --image-backend diffusers")
    p.add_argument("--workers", type=int, default=2, help="image rendering processes (default 2; output does not depend on it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from data_gen.params import WorldParams

    params = WorldParams(seed=args.seed, authors=args.authors, qa_per_author=args.qa_per_author,
                         images_per_author=args.images_per_author, heldout_images=args.heldout_images,
                         public_figures=args.public_figures, public_train_images=args.public_train_images,
                         world_vqa=args.world_vqa, world_vqa_train=6 * args.world_vqa,
                         anonymous_faces=args.anonymous_faces,
                         image_size=args.image_size, forget_percents=args.forget_percents,
                         corruption_victims=args.corruption_victims, layout=args.layout,
                         image_backend=args.image_backend, diffusers_model=args.diffusers_model, workers=args.workers)
    params.validate()  # every size is checked before the generator and its image libraries load
    from data_gen.generate import generate_world

    start = time.perf_counter()
    out = generate_world(args.out, params, overwrite=args.overwrite)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = sum(c["rows"] for c in manifest["configs"].values())
    print(f"wrote world {manifest['fingerprint'][:12]} to {out}: {len(manifest['configs'])} configs, {rows} rows, "
          f"{time.perf_counter() - start:.1f} s")
    return 0
