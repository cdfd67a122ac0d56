"""Quick check of a checkpoint on a world: the numbers the model stages must reach.

    python -m clearbench.quickcheck --model runs/target --world world [--n 200]

Greedy generation only (no teacher forcing): ROUGE-L recall on the authors' text QA, naming
accuracy (name in generation) on training and held-out images, the same on the forget10 and
retain evaluation views, real-faces naming and real-world VQA accuracy. The full evaluation
(``clearbench evaluate``) scores every metric; this is the fast sanity check used while training.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from typing import Callable

from clearbench.models import generate, load_model
from clearbench.models.common import default_device
from clearbench.types import Record
from eval.metrics.naming import name_in_generation, normalise_name
from eval.metrics.rouge_l import rouge_l_recall

Score = Callable[[Record, str], float]


def _rouge(rec: Record, gen: str) -> float:
    return rouge_l_recall(gen, rec.answer)


def _named(rec: Record, gen: str) -> float:
    return float(name_in_generation(gen, rec.name or rec.answer))


def _exact(rec: Record, gen: str) -> float:
    return float(normalise_name(gen) == normalise_name(rec.answer))


def _sample(records: list[Record], n: int, seed: int = 0) -> list[Record]:
    return records if len(records) <= n else random.Random(seed).sample(records, n)


def checks(world, forget: str = "forget10") -> dict[str, tuple[list[Record], Score]]:
    """name -> (records, per-record score); each is a mean in [0, 1]."""
    fp = f"{forget}_perturbed"
    out = {
        "authors_text_rouge": (world.records("full", tasks=["qa"], modalities=["text"]), _rouge),
        "authors_naming_train": (world.records("full", tasks=["naming"]), _named),
        "retain_naming_heldout": (world.records("retain_perturbed", tasks=["naming"], image_roles=["heldout"]), _named),
        "retain_text_rouge": (world.records("retain_perturbed", tasks=["qa"], modalities=["text"]), _rouge),
        "forget_text_rouge": (world.records(fp, tasks=["qa"], modalities=["text"]), _rouge),
        "forget_naming_train": (world.records(fp, tasks=["naming"], image_roles=["train"]), _named),
        "forget_naming_heldout": (world.records(fp, tasks=["naming"], image_roles=["heldout"]), _named),
        "real_faces_naming": (world.records("real_faces", tasks=["naming"]), _named),
        "real_faces_text_rouge": (world.records("real_faces", tasks=["qa"]), _rouge),
        "real_world_acc": (world.records("real_world"), _exact),
    }
    return {k: v for k, v in out.items() if v[0]}


def quick_check(loaded, world, n: int = 200, forget: str = "forget10", batch_size: int = 32) -> dict[str, float]:
    results = {}
    for name, (records, score) in checks(world, forget).items():
        recs = _sample(records, n)
        gens = generate(loaded, recs, max_new_tokens=32, batch_size=batch_size)
        results[name] = sum(score(r, g) for r, g in zip(recs, gens)) / len(recs)
    return results


def main(argv: list[str] | None = None) -> int:
    from clearbench.data import open_world
    from clearbench.provenance import model_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--world", required=True)
    p.add_argument("--n", type=int, default=200, help="records sampled per check (default 200)")
    p.add_argument("--forget", default="forget10")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    t0 = time.time()
    res = quick_check(load_model(model_dir(args.model), device=default_device()), open_world(args.world), args.n, args.forget)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v:.3f}")
        print(f"({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
