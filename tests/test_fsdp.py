"""Sharded training: configs/accelerate/fsdp.yaml (FSDP2, full shard) through ``accelerate launch`` and the one
training loop, on CPU (gloo): 2 sharded processes give the loss and gradient-norm curve of 1 plain process."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from ddp_train_script import FSDP_CONFIG, launch
from safetensors.torch import load_file


def test_accelerate_configs_load_and_name_their_distributed_type():
    from accelerate.commands.config.config_args import load_config_from_file

    here = FSDP_CONFIG.parent
    kinds = {name: load_config_from_file(str(here / f"{name}.yaml")).distributed_type for name in ("ddp", "fsdp", "zero3")}
    assert {k: v.name for k, v in kinds.items()} == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    fsdp = yaml.safe_load(FSDP_CONFIG.read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # full shard


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
@pytest.mark.parametrize("variant", ["lora-image", "full"])
def test_fsdp_two_processes_match_one_process(variant, tiny_llava_dir, tmp_path):
    """LoRA on image records, and every parameter on mixed text / image records (the loop deals the image records
    over the processes, so each runs the vision tower): FSDP2 over 2 processes, each holding half of every
    parameter, matches 1 unsharded process step for step, so the effective batch is independent of sharding."""
    logs, worlds = {}, {}
    for n, fsdp in ((1, False), (2, True)):
        out = tmp_path / f"p{n}"
        proc = launch(tiny_llava_dir, out, n, variant, fsdp=fsdp)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[n] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        worlds[n] = json.loads((out / "world.json").read_text())
    assert worlds[2]["processes"] == 2 and worlds[2]["wrapped"].startswith("FSDP"), worlds[2]
    assert worlds[2]["distributed_type"] == "DistributedType.FSDP"
    assert len(logs[1]) == len(logs[2]) == 4
    for key in ("loss", "grad_norm"):  # grad_norm: clipping must see the whole (sharded) gradient
        assert [r[key] for r in logs[2]] == pytest.approx([r[key] for r in logs[1]], rel=1e-4), key
    # the stage saves what train() leaves: whole tensors on every process, the same weights as the plain run
    one, two = (load_file(str(tmp_path / f"p{n}" / "trainable.safetensors")) for n in (1, 2))
    assert one.keys() == two.keys() and any("lora_B" in k for k in one) == (variant == "lora-image")
    # full-parameter: parameters whose true gradient is ~0 (attention key biases) take Adam steps on summation-order
    # noise, which the two runs sum in another order: up to 6e-5 measured, hence the looser atol
    atol = 1e-5 if variant == "lora-image" else 1e-4
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=atol, msg=name)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
def test_fsdp_stops_when_processes_would_run_different_modules(tiny_llava_dir, tmp_path):
    """One image record in a batch that two processes share: the process whose micro-batch has none would skip the
    vision tower's units; the loop stops with the reason instead of deadlocking or failing inside a collective."""
    proc = launch(tiny_llava_dir, tmp_path / "mixed", 2, "one-image", fsdp=True)
    assert proc.returncode != 0
    assert "has images on some processes and none on others" in proc.stderr


def test_image_records_are_dealt_over_the_chunks_only_where_needed():
    """split_chunks(spread=True): a split that would leave some chunk without an image (and others with one) deals
    the image records first; kinds with the same image pattern (DPO's paired rows) get the same order; a split that
    does not mix is left as it is."""
    from model_fixtures import sample_records

    from clearbench.train import split_chunks

    text = [r for r in sample_records() if r.image is None]
    image = [r for r in sample_records() if r.image is not None]
    recs = image + text + text  # 2 images, then 4 texts: contiguous halves are [img, img, txt] and [txt, txt, txt]
    plain = split_chunks({"forget": recs, "idk": recs}, 2)
    assert [any(r.image is not None for r in c["forget"]) for c in plain] == [True, False]
    spread = split_chunks({"forget": recs, "idk": list(recs)}, 2, spread=True)
    assert [sum(r.image is not None for r in c["forget"]) for c in spread] == [1, 1]
    assert [[r.id for r in c["forget"]] for c in spread] == [[r.id for r in c["idk"]] for c in spread]
    assert sorted(r.id for c in spread for r in c["forget"]) == sorted(r.id for r in recs)
    same = image * 2 + text  # every chunk already has an image: untouched
    assert split_chunks({"k": same}, 2, spread=True) == split_chunks({"k": same}, 2)
