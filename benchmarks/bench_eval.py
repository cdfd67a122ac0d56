"""The suite's evaluation pass vs a straightforward per-sample reference loop, same model and data.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py [--world DIR] [--authors 40] [--limit 0]

Suite: ``eval.outputs.score`` per eval config (records batched and sorted by length, one
teacher-forced row per *distinct* answer variant, Min-K%++ statistics from the answer's own
forward, one batched greedy generation per chunk that sees the image).
Reference: what per-sample peer code does (CLEAR ``mm/eval.py``, clear.md §6, at batch size 1):
per record a forward for the answer's probability, one for the paraphrase (also when it equals
the answer, as CLEAR's face-rec and real tasks do), one per perturbed answer, a separate forward
for the MIA scores, and one greedy generation.

Both run the same tiny model (the embedded default shape, briefly trained on ``full`` so that it
emits end-of-turn tokens like a real model) on the same records with the same max_new_tokens.
Prints items/s of both, the ratio, and the largest |difference| of the answer log-probs the two
computed (they must agree). Without --world a world of ``--authors`` authors is generated in a
temp dir. Goal: >= 5x on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def build_model(world, out: Path, steps: int):
    from clearbench.config import TrainConfig
    from clearbench.lora import set_trainable
    from clearbench.models import load_model, tiny_llava
    from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train

    base = tiny_llava.build(world.texts(), out / "base", tiny_llava.TinyConfig())
    loaded = load_model(base)
    if steps:
        cfg = TrainConfig(lr=3e-3, max_steps=steps, batch_size=16, micro_batch_size=16, augment=False, log_every=50)
        set_trainable(loaded.model.train(), cfg)
        records = world.records("full", image_roles=["train", ""])
        train(loaded.model, loaded.processor, loaded.family, ShuffleSampler(records, 16, seed=0), example_nll_loss,
              cfg, TrainRun(out / "train", desc="train (setup)"))
    loaded.model.eval()
    return loaded


def reference_loop(loaded, records, max_new_tokens: int) -> dict[str, list[float]]:
    """Batch 1, one model pass per metric input; returns {id: answer log-probs} for the check."""
    import torch

    from clearbench.losses import token_logprobs
    from clearbench.models.common import generate

    model = loaded.model

    def forward(rec, answer):
        batch = {k: v.to(model.device) for k, v in loaded.collate([rec], answers=[answer]).items()}  # gpu_check.py
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (1, T, V)
        return logits, labels

    lps: dict[str, list[float]] = {}
    with torch.no_grad():
        for rec in records:
            logits, labels = forward(rec, rec.answer)  # probability
            lp, mask = token_logprobs(logits, labels)
            lps[rec.id] = lp[mask].tolist()
            forward(rec, rec.paraphrased_answer or rec.answer)  # paraphrase (truth ratio)
            for pert in rec.perturbed_answers:  # one pass per perturbed answer
                forward(rec, pert)
            logits, labels = forward(rec, rec.answer)  # MIA: loss, zlib, min-k, min-k++ statistics
            _, mask = token_logprobs(logits, labels)
            logp = torch.log_softmax(logits[:, :-1][mask], -1)
            mu = (logp.exp() * logp).sum(-1)
            ((logp.exp() * logp.pow(2)).sum(-1) - mu.pow(2)).clamp(min=0).sqrt()
            generate(loaded, [rec], max_new_tokens=max_new_tokens, batch_size=1)  # ROUGE / naming
    return lps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="", help="an existing world dir (default: generate one in a temp dir)")
    ap.add_argument("--authors", type=int, default=40, help="authors of the generated world (forget05 and forget10: a multiple of 20)")
    ap.add_argument("--forget", default="forget10")
    ap.add_argument("--limit", type=int, default=0, help="records per eval config (0: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="the suite's batch size")
    ap.add_argument("--train-steps", type=int, default=60, help="setup training of the model (0: random weights)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from clearbench.data import open_world
    from eval import outputs
    from eval.evaluate import EvalConfig, eval_configs, select_records

    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        if args.world:
            world_dir = Path(args.world)
        else:
            from data_gen.generate import WorldParams, generate_world

            world_dir = tmp / "world"
            generate_world(world_dir, WorldParams(authors=args.authors, forget_percents=(5, 10), image_size=64, workers=2))
        world = open_world(world_dir)
        loaded = build_model(world, tmp, args.train_steps)
        configs = eval_configs(world, args.forget)
        records = {c: select_records(world.records(c), c, EvalConfig(max_per_config=args.limit)) for c in configs}
        n = sum(len(r) for r in records.values())
        max_new = outputs.GENERATION["max_new_tokens"]
        print(f"world {world_dir} ({world.fingerprint[:12]}), {args.forget}: {n} records in {len(configs)} configs; "
              f"threads={torch.get_num_threads()}, max_new_tokens={max_new}")

        spent = {"teacher_forced": 0.0, "generate": 0.0}

        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    spent[name] += time.perf_counter() - t
            return wrapper

        outputs.teacher_forced = timed("teacher_forced", outputs.teacher_forced)
        outputs.generate = timed("generate", outputs.generate)
        t0 = time.perf_counter()
        suite = {c: outputs.score(loaded, recs, c, batch_size=args.batch_size, run=outputs.ScoreRun(progress=False))
                 for c, recs in records.items()}
        t_suite = time.perf_counter() - t0
        gen_tokens = sum(len(loaded.processor.tokenizer(e.generation, add_special_tokens=False)["input_ids"])
                         for exs in suite.values() for e in exs)

        t0 = time.perf_counter()
        ref = {}
        for recs in records.values():
            ref.update(reference_loop(loaded, recs, max_new))
        t_ref = time.perf_counter() - t0

        diff = max(abs(a - b) for exs in suite.values() for e in exs for a, b in zip(e.lp_answer, ref[e.id]))
        variants = sum(1 + len(r.perturbed_answers) + 2 for recs in records.values() for r in recs)
        print(f"mean generated tokens per record: {gen_tokens / n:.1f}; reference forwards: {variants} + {n} "
              f"generations")
        print(f"suite     : {t_suite:7.1f} s  {n / t_suite:8.1f} items/s  (batch {args.batch_size}; "
              f"teacher-forced {spent['teacher_forced']:.1f} s, generation {spent['generate']:.1f} s)")
        print(f"reference : {t_ref:7.1f} s  {n / t_ref:8.1f} items/s  (batch 1, one pass per metric)")
        print(f"speed-up  : {t_ref / t_suite:.1f}x   max |lp_answer suite - reference| = {diff:.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
