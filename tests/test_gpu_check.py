"""benchmarks/gpu_check.py's CPU fallback: the GPU check's code at the tests' tiny shapes writes every field."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
REFERENCE = {"finetune": None, "npo": "adapter-disabled", "kl": "adapter-disabled", "scrub": "adapter-disabled",
             "rmu": "adapter-disabled", "npo_full": "copy"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("gpu_check") / "gpu.json"
    assert module.main(["--cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cpu_fallback_reports_both_models(report):
    assert report["mode"] == "cpu-fallback" and report["complete"] and report["wall_s"] > 0
    assert report["environment"]["torch"] and report["settings"]["batch"] == 2
    assert set(report["models"]) == {"llava-1.5-7b", "qwen2-vl-2b"}
    assert "fsdp" not in report and "study" not in report  # GPU-only parts
    for name, model in report["models"].items():
        b = model["batch"]
        assert b["rows"] == 2 and b["image_tokens"] > 0 and b["answer_tokens"] > 0 and b["seq_len"] > b["image_tokens"]
        expected_rows = set(REFERENCE) - ({"npo_full"} if name == "llava-1.5-7b" else set())
        assert set(model["train"]) == expected_rows, name


def test_every_step_is_timed_and_every_adapter_learns(report):
    for name, model in report["models"].items():
        for row, r in model["train"].items():
            where = f"{name} {row}"
            assert r["reference"] == REFERENCE[row], where
            assert r["steps"] == 2 and r["step_s_first"] > 0 and r["step_s_median"] > 0, where
            assert len(r["loss"]) == 2 and all(math.isfinite(x) for x in r["loss"]), where
            assert r["peak_memory_gib"] is None and r["trainable_params"] > 0, where  # no CUDA: no GPU memory
            g = r["adapter_grads"]
            if row == "npo_full":
                assert not r["lora"] and g["tensors"] == 0, where
                continue
            # LoRA + gradient checkpointing: every adapter the loss reaches gets a gradient (B at the first step)
            assert r["lora"] and r["gradient_checkpointing"], where
            assert g["expected"] > 0 and g["zero_expected"] == [] and g["nonzero_any_step"] == g["expected"], where
            assert g["lora_B_nonzero_first_step"] > 0 and g["last_step_norm"] > 0, where
        # RMU's loss reads one early layer: the adapters above it get none, by design
        rmu = model["train"]["rmu"]["adapter_grads"]
        assert rmu["expected"] < rmu["tensors"]


def test_evaluation_pass_is_compared_with_the_per_sample_loop(report):
    for name, model in report["models"].items():
        e = model["eval"]
        assert e["records"] == 4 and e["suite_items_per_s"] > 0 and e["reference_items_per_s"] > 0, name
        assert e["speedup"] == pytest.approx(e["reference_s"] / e["suite_s"]), name
        assert e["max_abs_lp_diff"] < 1e-3, name  # fp32: both compute the same answer log-probs
