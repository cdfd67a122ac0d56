"""The GPU check: memory and speed of the GPU presets' models, the evaluation speed-up, FSDP, the tiny study.

    python benchmarks/gpu_check.py --out gpu.json [--study] [--cpu]     (or: bash benchmarks/gpu_check.sh OUT_DIR)

For an LLaVA-1.5-7B-shaped and a Qwen2-VL-2B-shaped model (random weights from configs, no download), with each
preset's train config (LoRA r8 + gradient checkpointing, fp32 weights + bf16 autocast on a GPU) at batch 8 of
336 px photos and ~256 text tokens: peak GPU memory and step time of a plain finetune step and of each
reference-model method family (NPO, KL, SCRUB: the adapter-disabled reference; RMU: its frozen layer; Qwen2-VL's
full-parameter NPO: a frozen copy), and whether every LoRA adapter got a gradient; one evaluation pass's items/s
against bench_eval.py's per-sample reference loop on the same model; a sharded (FSDP2) training run against a plain
one; optionally ``clearbench run --preset tiny`` with its wall time (time-bounded). Expected: under 8 minutes on
one H200 with --study (not yet measured: no GPU was available when this was written).

Without CUDA (or with --cpu) the same code runs at the tests' tiny shapes: batch 2, small images, 2 steps, no
FSDP run and no study, in well under a minute; tests/test_gpu_check.py runs it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_train as gt  # puts the repo root and tests/ on sys.path

from clearbench.eval_config import GENERATION

ROWS = ("finetune", "npo", "kl", "scrub", "rmu")
FULL_ROWS = {"qwen2-vl-2b": ("npo_full",)}  # the qwen2-vl-2b preset's plain variant is full-parameter


def eval_row(spec: gt.Spec, records: list, batch: int, max_new_tokens: int) -> dict:
    """items/s of the suite's scoring pass (eval.outputs.score) and of bench_eval.py's per-sample loop."""
    from bench_eval import reference_loop

    from clearbench.models import Loaded, get_family
    from eval import outputs

    cuda = torch.cuda.is_available()
    config, processor = spec.parts()
    model = gt.build(spec, "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32, config).eval()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    loaded = Loaded(model, processor, get_family(spec.family))
    start = gt._sync()
    suite = outputs.score(loaded, records, "forget10", batch_size=batch, max_new_tokens=max_new_tokens,
                          run=outputs.ScoreRun(progress=False))
    t_suite, start = gt._sync() - start, gt._sync()
    ref = reference_loop(loaded, records, max_new_tokens)
    t_ref = gt._sync() - start
    diff = max(abs(a - b) for e in suite for a, b in zip(e.lp_answer, ref[e.id]))
    return {"records": len(records), "batch_size": batch, "max_new_tokens": max_new_tokens, "dtype": str(model.dtype).removeprefix("torch."),
            "suite_s": t_suite, "reference_s": t_ref, "suite_items_per_s": len(records) / t_suite,
            "reference_items_per_s": len(records) / t_ref, "speedup": t_ref / t_suite, "max_abs_lp_diff": diff}


def model_rows(spec: gt.Spec, args, tiny: bool) -> dict:
    """Every training row and the evaluation row of one model."""
    cuda = torch.cuda.is_available()
    _, processor = spec.parts()
    px, text = (64, 48) if tiny else (336, 256)
    data = {kind: gt.records(processor, args.batch, px, text, kind) for kind in ("forget", "retain")}
    out = {"batch": gt.batch_shape(spec, data, args.batch), "train": {}}
    for row in ROWS + FULL_ROWS.get(spec.name, ()):
        t = time.perf_counter()
        out["train"][row] = gt.train_row(spec, row, data, args.batch, args.steps, torch.float32)
        out["train"][row]["wall_s"] = time.perf_counter() - t
        print(f"{spec.name} {row}: {json.dumps(out['train'][row])}", flush=True)
        if cuda:  # the row's model and reference go before the next row builds its own
            gc.collect()
            torch.cuda.empty_cache()
    eval_records = gt.records(processor, args.eval_records, px, 48, "eval", image_every=2)
    out["eval"] = eval_row(spec, eval_records, args.eval_batch, 8 if tiny else GENERATION["max_new_tokens"])
    print(f"{spec.name} eval: {json.dumps(out['eval'])}", flush=True)
    return out


def fsdp_check(processes: int, timeout: int) -> dict:
    """tests/ddp_train_script.py (LoRA, image records) under configs/accelerate/fsdp.yaml with ``processes`` processes
    against 1 plain process: their loss and gradient-norm curves must agree."""
    from ddp_train_script import launch

    with tempfile.TemporaryDirectory(prefix="gpu-check-fsdp-") as tmp:
        model_dir = gt.mf.build_tiny_default(Path(tmp) / "model")
        logs, worlds = {}, {}
        for n, fsdp in ((1, False), (processes, True)):
            out = Path(tmp) / f"{'fsdp' if fsdp else 'plain'}{n}"
            proc = launch(model_dir, out, n, "lora-image", fsdp=fsdp, timeout=timeout)
            if proc.returncode:
                return {"ok": False, "processes": n, "fsdp": fsdp, "stderr_tail": proc.stderr[-2000:]}
            logs[fsdp] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
            worlds[fsdp] = json.loads((out / "world.json").read_text())
    rel = max(abs(a[k] - b[k]) / max(1e-8, abs(a[k])) for a, b in zip(logs[False], logs[True]) for k in ("loss", "grad_norm"))
    return {"ok": rel < 1e-3, "processes": processes, "world": worlds[True], "max_rel_diff": rel,
            "loss_plain": [r["loss"] for r in logs[False]], "loss_fsdp": [r["loss"] for r in logs[True]]}


def study(timeout: int, jobs: int) -> dict:
    """``clearbench run --preset tiny`` in a subprocess, stopped after ``timeout`` s; stages finished by then."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-study-") as tmp:
        cmd = [sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny", "--out", str(Path(tmp) / "study"),
               "--jobs", str(jobs)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(gt.ROOT), os.environ.get("PYTHONPATH", "")]))
        start = time.perf_counter()
        # its own process group: at the time limit the run and the --jobs workers it started all get SIGTERM
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                _, err = proc.communicate()
            rc = None
        wall, tail = time.perf_counter() - start, (err or "")[-1500:]
        done = sorted(str(p.parent.relative_to(Path(tmp) / "study")) for p in (Path(tmp) / "study").rglob("run.json"))
    return {"wall_s": wall, "timed_out": rc is None, "returncode": rc, "timeout_s": timeout, "jobs": jobs,
            "stages_finished": done, "stderr_tail": tail}


def environment() -> dict:
    import accelerate
    import peft
    import transformers

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "gpus": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="", help="write the results as JSON here")
    ap.add_argument("--cpu", action="store_true", help="the CPU fallback (the default without CUDA)")
    ap.add_argument("--models", default="llava-1.5-7b,qwen2-vl-2b")
    ap.add_argument("--batch", type=int, default=0, help="training batch (default 8 on a GPU, 2 on a CPU)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per row (default 3 GPU / 2 CPU)")
    ap.add_argument("--eval-records", type=int, default=0, help="records per evaluation row (default 16 GPU / 4 CPU)")
    ap.add_argument("--eval-batch", type=int, default=16, help="the scoring pass's batch size")
    ap.add_argument("--fsdp", choices=("auto", "on", "off"), default="auto", help="auto: on a GPU only")
    ap.add_argument("--study", action="store_true", help="also run `clearbench run --preset tiny` (GPU only)")
    ap.add_argument("--study-timeout", type=int, default=180, help="seconds before the study is stopped")
    ap.add_argument("--study-jobs", type=int, default=2)
    args = ap.parse_args(argv)
    args.tiny = args.cpu or not torch.cuda.is_available()
    args.batch = args.batch or (2 if args.tiny else 8)
    args.steps = args.steps or (2 if args.tiny else 3)
    args.eval_records = args.eval_records or (4 if args.tiny else 16)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    result = {"schema": 1, "mode": "cpu-fallback" if args.tiny else "gpu", "complete": False,
              "environment": environment(), "models": {},
              "settings": {k: getattr(args, k) for k in ("batch", "steps", "eval_records", "eval_batch")}}

    def save() -> None:  # after every section, so a run stopped by a time limit still leaves what it measured
        result["wall_s"] = time.perf_counter() - start
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))

    chosen = args.models.split(",")
    for spec in [s for s in gt.specs(args.tiny) if s.name in chosen]:
        result["models"][spec.name] = model_rows(spec, args, args.tiny)
        save()
    if args.fsdp == "on" or (args.fsdp == "auto" and not args.tiny):
        result["fsdp"] = fsdp_check(min(2, max(1, torch.cuda.device_count())), timeout=300)
        print(f"fsdp: {json.dumps(result['fsdp'])}", flush=True)
        save()
    if args.study and not args.tiny:
        result["study"] = study(args.study_timeout, args.study_jobs)
        print(f"study: {json.dumps(result['study'])}", flush=True)
    result["complete"] = True
    save()
    print(f"gpu_check: {result['mode']} done in {result['wall_s']:.1f} s" + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
