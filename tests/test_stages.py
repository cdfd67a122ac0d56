"""Multi-phase finetuning (finetune.phases): each phase trains on its own mix, in order, and resumes."""
import json
import shutil

import torch
from safetensors.torch import load_file

from clearbench.config import BenchConfig, from_dict


def _phases_cfg():
    train = {"lr": 3e-3, "max_steps": 3, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 1, "log_every": 1}
    return from_dict(BenchConfig, {"finetune": {"phases": [
        {"name": "faces", "data": [{"config": "full", "tasks": ["naming"]}], "train": train},
        {"name": "facts", "data": [{"config": "full", "tasks": ["qa"], "modalities": ["text"]}], "train": train},
    ]}})


def test_finetune_phases_run_in_order_on_their_own_data(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.stages import finetune

    out = finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "retain90", tmp_path / "gold")
    run = json.loads((out / "run.json").read_text())
    assert [p["phase"] for p in run["phases"]] == ["faces", "facts"]
    # "full" in each mix stands for the finetuned split: retain90 naming, then retain90 text QA
    assert run["phases"][0]["records"] == len(tiny_world.records("retain90", tasks=["naming"]))
    assert run["phases"][1]["records"] == len(tiny_world.records("retain90", tasks=["qa"], modalities=["text"]))
    assert run["train"]["steps"] == 6 and run["records"] == sum(p["records"] for p in run["phases"])
    for i, name in enumerate(["faces", "facts"]):
        log = (out / "train" / f"{i}-{name}" / "log.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in log] == [1, 2, 3]
    w0 = load_file(str(tiny_llava_dir / "model.safetensors"))
    w1 = load_file(str(out / "train" / "0-faces" / "model" / "model.safetensors"))
    w2 = load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0) and any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_interrupted_phases_resume_without_redoing_finished_phases(tiny_llava_dir, tiny_world, tmp_path):
    from clearbench.stages import finetune

    full = finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "full", tmp_path / "a")
    # the same run killed during its second phase: phase 0 finished, phase 1 and the final model not
    cut = tmp_path / "b"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "train" / "1-facts")
    shutil.rmtree(cut / "model")
    (cut / "run.json").unlink()
    first_log = (cut / "train" / "0-faces" / "log.jsonl").read_text()
    finetune(_phases_cfg(), tiny_world, tiny_llava_dir, "full", cut, resume=True)
    assert (cut / "train" / "0-faces" / "log.jsonl").read_text() == first_log  # not trained again
    a, b = load_file(str(full / "model" / "model.safetensors")), load_file(str(cut / "model" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
