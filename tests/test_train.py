"""The one training loop on the tiny real model: resume equality, accumulation invariance,
LoRA + gradient checkpointing, L1 over every trainable parameter, and bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clearbench.config import LoraConfig, TrainConfig
from clearbench.lora import apply_lora, enable_gradient_checkpointing, l1_anchor, l1_penalty, set_trainable
from clearbench.models import load_model
from clearbench.train import Interrupt, ShuffleSampler, TrainRun, example_nll_loss, train
from model_fixtures import sample_records

HERE = Path(__file__).resolve().parent


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-2, max_steps=6, batch_size=4, micro_batch_size=4, warmup_steps=1, seed=3, log_every=1,
                augment=True)
    base.update(kw)
    return TrainConfig(**base)


def _records():
    return sample_records() * 2  # 8 records, mixed text / image / joint


def _run(model_dir, out, cfg, **kw):
    """Train a fresh load of ``model_dir`` (LoRA-wrapped when ``cfg.lora.enabled``) into ``out``."""
    loaded = load_model(model_dir)
    model = loaded.model.train()
    if cfg.lora.enabled:
        torch.manual_seed(cfg.seed)  # the adapters' initialisation, as stages.prepare_model draws it
        model = apply_lora(model, cfg.lora, cfg)
    set_trainable(model, cfg)
    sampler = ShuffleSampler(_records(), cfg.batch_size, seed=cfg.seed)
    result = train(model, loaded.processor, loaded.family, sampler, example_nll_loss, cfg, TrainRun(out, **kw))
    return model, result


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_training_changes_parameters_and_logs(tiny_llava_dir, tmp_path):
    before = _params(load_model(tiny_llava_dir).model)
    model, result = _run(tiny_llava_dir, tmp_path / "run", _cfg())
    after = _params(model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any("vision_tower" in n for n in changed) and any("language_model" in n for n in changed)
    lines = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 7))
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert result.steps == 6


def test_resume_ends_with_same_weights(tiny_llava_dir, tmp_path):
    cfg = _cfg(save_every=2)
    full, _ = _run(tiny_llava_dir, tmp_path / "full", cfg)
    with pytest.raises(Interrupt):
        _run(tiny_llava_dir, tmp_path / "cut", cfg, stop_at_step=3)  # killed during step 4; last ckpt: step 2
    assert (tmp_path / "cut" / "checkpoints" / "last" / "state.json").exists()
    resumed, result = _run(tiny_llava_dir, tmp_path / "cut", cfg, resume=True)
    assert result.resumed_from == 2
    a, b = _params(full), _params(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


class _Kill(BaseException):
    """A simulated kill -9: raised by the file operation it interrupts; nothing touches the disk after it."""


def _kill_at(monkeypatch, root: Path, n: int) -> None:
    """Make the ``n``-th ``os.replace`` / ``shutil.rmtree`` on an entry directly under ``root`` raise ``_Kill``,
    and every file operation after it do nothing (the process is dead)."""
    state = {"ops": 0, "dead": False}

    def wrap(real):
        def op(path, *args, **kw):
            if state["dead"]:
                return None
            if Path(path).parent == root:
                if state["ops"] == n:
                    state["dead"] = True
                    raise _Kill(f"killed before file operation {n}")
                state["ops"] += 1
            return real(path, *args, **kw)
        return op

    monkeypatch.setattr(os, "replace", wrap(os.replace))
    monkeypatch.setattr(shutil, "rmtree", wrap(shutil.rmtree))


def test_swap_dir_keeps_a_complete_directory_through_a_kill_at_every_operation(tmp_path, monkeypatch):
    from clearbench.provenance import recover_dir, write_dir_atomic

    def version(v):
        def write(d):
            for i in range(3):
                (d / f"f{i}").write_text(v)
        return write

    for n in range(4):  # the swap's operations: old aside, new in, old deleted (+1: no kill)
        out = tmp_path / f"k{n}" / "last"
        write_dir_atomic(out, version("old"))
        with monkeypatch.context() as m:
            _kill_at(m, out.parent, n)
            try:
                write_dir_atomic(out, version("new"))
            except _Kill:
                assert n < 3
        recover_dir(out)
        texts = {p.read_text() for p in out.iterdir()}
        assert texts == ({"old"} if n < 2 else {"new"}) and len(list(out.iterdir())) == 3, n
        assert [p.name for p in out.parent.iterdir()] == ["last"], n  # no temp or aside copy left


def test_a_kill_during_any_checkpoint_swap_resumes_to_the_same_weights_and_log(tiny_llava_dir, tmp_path,
                                                                               monkeypatch):
    """Checkpoints at steps 2 and 4 (file operations: 0 = the first rename; 1, 2, 3 = old aside, new in, old
    deleted of the second); a kill before each resumes from the last complete checkpoint, ends with the
    uninterrupted run's weights, logs each step once and leaves no temp directory."""
    cfg = _cfg(save_every=2)
    full, _ = _run(tiny_llava_dir, tmp_path / "full", cfg)
    full_log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    for n, resumed_from in [(0, 0), (1, 2), (2, 2), (3, 4)]:
        out = tmp_path / f"kill{n}"
        with monkeypatch.context() as m:
            _kill_at(m, out / "checkpoints", n)
            with pytest.raises(_Kill):
                _run(tiny_llava_dir, out, cfg)
        with open(out / "log.jsonl", "a") as f:
            f.write('{"step": 5, "lo')  # a line the kill cut short
        resumed, result = _run(tiny_llava_dir, out, cfg, resume=True)
        assert result.resumed_from == resumed_from, n
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert [line["step"] for line in log] == list(range(1, 7)), n
        assert [line["loss"] for line in log] == pytest.approx([line["loss"] for line in full_log], abs=1e-6)
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last"], n
        a, b = _params(full), _params(resumed)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=f"{n}: {name}")


def test_effective_batch_is_independent_of_micro_batch(tiny_llava_dir, tmp_path):
    one, _ = _run(tiny_llava_dir, tmp_path / "a", _cfg(micro_batch_size=4, max_steps=3))
    acc, _ = _run(tiny_llava_dir, tmp_path / "b", _cfg(micro_batch_size=1, max_steps=3))
    logs = [[json.loads(l) for l in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab"]
    for key in ("loss", "grad_norm"):  # grad_norm (before clipping) would expose a mis-scaled accumulation
        assert [l[key] for l in logs[0]] == pytest.approx([l[key] for l in logs[1]], rel=1e-4)
    a, b = _params(one), _params(acc)
    for name in a:
        # Adam turns float noise in near-zero gradient entries (e.g. key biases, whose true gradient
        # is 0) into steps of up to lr; 1e-4 still catches any real difference in the update.
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=name)


def test_lora_with_gradient_checkpointing_trains_adapters_only(tiny_llava_dir, tmp_path):
    cfg = _cfg(lora=LoraConfig(enabled=True, r=4, alpha=8), gradient_checkpointing=True, max_steps=3,
               train_projector=False)
    loaded = load_model(tiny_llava_dir)
    model = apply_lora(loaded.model.train(), cfg.lora, cfg)
    set_trainable(model, cfg)
    enable_gradient_checkpointing(model)
    before = _params(model)
    train(model, loaded.processor, loaded.family, ShuffleSampler(_records(), 4, seed=0), example_nll_loss, cfg,
          TrainRun(tmp_path / "lora"))
    after = _params(model)
    lora_b = [n for n in before if "lora_B" in n]
    assert lora_b and all(not torch.equal(before[n], after[n]) for n in lora_b)
    frozen = [n for n in before if "lora_" not in n]
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all("language_model" in n for n in lora_b)  # "language" targets skip the CLIP q/v projections


def test_l1_penalty_covers_adapters_by_value_and_the_projector_copy_by_its_deviation(tiny_llava_dir):
    """LoRA with a trained projector: |A|, |B| plus |theta - theta0| of the projector's modules_to_save copy,
    which gets a penalty gradient once it has moved (the copy trained unpenalised before)."""
    cfg = _cfg(lora=LoraConfig(enabled=True, r=4, alpha=8), train_projector=True)
    model = apply_lora(load_model(tiny_llava_dir).model, cfg.lora, cfg)
    set_trainable(model, cfg)
    anchor = l1_anchor(model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    copies = [n for n in trainable if "lora_" not in n]
    assert copies and set(anchor) == set(copies)
    assert all(".multi_modal_projector.modules_to_save." in n for n in copies)
    with torch.no_grad():
        for n in copies:
            trainable[n].add_(0.01)
    adapters = sum(p.abs().sum() for n, p in trainable.items() if "lora_" in n)
    penalty = l1_penalty(model, anchor)
    torch.testing.assert_close(penalty, adapters + 0.01 * sum(trainable[n].numel() for n in copies))
    penalty.backward()
    for n in copies:
        assert torch.equal(trainable[n].grad, torch.ones_like(trainable[n])), n  # d|theta - theta0| = sign
    with pytest.raises(ValueError, match="has no starting value"):
        l1_penalty(model, {})


def test_l1_penalty_full_parameter_is_the_deviation_from_the_start(tiny_llava_dir):
    model = load_model(tiny_llava_dir).model
    set_trainable(model, _cfg(train_vision_tower=False))
    anchor = l1_anchor(model)
    assert set(anchor) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert float(l1_penalty(model, anchor)) == 0.0
    with torch.no_grad():
        model.lm_head.weight[0, :3] -= 0.5
    assert float(l1_penalty(model, anchor)) == pytest.approx(1.5)


def _lora_projector_cfg(**kw) -> TrainConfig:
    return _cfg(lora=LoraConfig(enabled=True, r=4, alpha=8), train_projector=True, train_vision_tower=False,
                augment=False, **kw)


def test_large_l1_gives_smaller_adapters_and_a_projector_closer_to_its_start(tiny_llava_dir, tmp_path):
    start = dict(load_model(tiny_llava_dir).model.named_parameters())
    adapters, moved = {}, {}
    for lam in (0.0, 1.0):
        model, _ = _run(tiny_llava_dir, tmp_path / f"l1-{lam}", _lora_projector_cfg(l1_lambda=lam, max_steps=4))
        adapters[lam] = sum(float(p.abs().sum()) for n, p in model.named_parameters() if "lora_" in n)
        copy = {n.removeprefix("base_model.model.").replace("modules_to_save.default.", ""): p
                for n, p in model.named_parameters() if ".modules_to_save." in n}  # the trained projector
        moved[lam] = sum(float((p - start[n]).abs().sum()) for n, p in copy.items())
    assert adapters[1.0] < adapters[0.0]
    assert 0 < moved[1.0] < moved[0.0]


def test_l1_lambda_zero_is_bit_identical_to_no_l1(tiny_llava_dir, tmp_path):
    plain, _ = _run(tiny_llava_dir, tmp_path / "plain", _lora_projector_cfg(max_steps=3))
    zero, _ = _run(tiny_llava_dir, tmp_path / "zero", _lora_projector_cfg(max_steps=3, l1_lambda=0.0))
    a, b = _params(plain), _params(zero)
    assert all(torch.equal(a[n], b[n]) for n in a)
    logs = [json.loads(line) for line in (tmp_path / "zero" / "log.jsonl").read_text().splitlines()]
    assert logs and all("l1" not in line for line in logs)


def test_resume_with_l1_ends_with_same_weights(tiny_llava_dir, tmp_path):
    """theta0 is the starting model's on resume too (not the checkpoint's): the projector copy's penalty
    would otherwise restart from zero."""
    cfg = _lora_projector_cfg(max_steps=6, save_every=2, l1_lambda=0.05)
    full, _ = _run(tiny_llava_dir, tmp_path / "full", cfg)
    with pytest.raises(Interrupt):
        _run(tiny_llava_dir, tmp_path / "cut", cfg, stop_at_step=3)
    resumed, result = _run(tiny_llava_dir, tmp_path / "cut", cfg, resume=True)
    assert result.resumed_from == 2
    logs = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["l1"] > 0
    a, b = _params(full), _params(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_bad_inputs_fail_before_training(tiny_llava_dir, tmp_path):
    with pytest.raises(ValueError, match="micro_batch_size"):
        _run(tiny_llava_dir, tmp_path / "x", _cfg(batch_size=4, micro_batch_size=3))
    cfg = _cfg(lora=LoraConfig(enabled=True, target_modules="q_projj"))
    with pytest.raises(ValueError, match="q_projj"):
        apply_lora(load_model(tiny_llava_dir).model, cfg.lora, cfg)
    with pytest.raises(ValueError, match="no training records"):
        ShuffleSampler([], 4, seed=0)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
def test_two_processes_match_one_process(tiny_llava_dir, tmp_path):
    """A 2-process gloo run (torchrun) gives the same loss curve as 1 process: the effective batch
    size is fixed by config, accumulation is derived from the process count."""
    script = HERE / "ddp_train_script.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    curves = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               str(script), str(tiny_llava_dir), str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
        curves[n] = [l["loss"] for l in log]
        assert json.loads((out / "world.json").read_text())["processes"] == n
    assert len(curves[1]) == len(curves[2]) == 4
    for a, b in zip(curves[1], curves[2]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a)), (curves[1], curves[2])


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process run")
def test_l1_penalty_over_two_ddp_processes_matches_one_plain_process(tiny_llava_dir, tmp_path):
    """LoRA + L1 on mixed text / image records: a process whose micro-batch has no image leaves the projector copy out
    of its forward pass but not out of the penalty (inside DDP's backward that failed: "marked ready twice"). 2 DDP
    processes (torchrun) give the loss curve and the weights of 1 process without DDP."""
    from ddp_train_script import launch
    from safetensors.torch import load_file

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    cmd = [sys.executable, str(HERE / "ddp_train_script.py"), str(tiny_llava_dir), str(tmp_path / "p1"), "lora-l1"]
    plain = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    two = launch(tiny_llava_dir, tmp_path / "p2", 2, "lora-l1")
    assert two.returncode == 0, two.stderr[-3000:]
    logs = {n: [json.loads(l) for l in (tmp_path / f"p{n}" / "log.jsonl").read_text().splitlines()] for n in (1, 2)}
    assert len(logs[1]) == len(logs[2]) == 4 and all(r["l1"] > 0 for r in logs[2])
    for key in ("loss", "l1", "grad_norm"):
        assert [r[key] for r in logs[2]] == pytest.approx([r[key] for r in logs[1]], rel=1e-5), key
    one, two_w = (load_file(str(tmp_path / f"p{n}" / "trainable.safetensors")) for n in (1, 2))
    assert one.keys() == two_w.keys() and any("modules_to_save" in k for k in one)
    for name in one:  # LoRA: the largest difference measured was 3e-8
        torch.testing.assert_close(two_w[name], one[name], rtol=1e-5, atol=1e-6, msg=name)


def test_group_by_length_sees_every_record_once_per_epoch_in_batches_of_similar_length():
    from clearbench.train import record_length
    from clearbench.types import Modality, Record, Task

    records = [Record(id=f"r{i}", author_id="a", split="t", modality=Modality.TEXT, task=Task.QA,
                      question="q" * (i % 37 + 1), answer="a" * ((7 * i) % 53 + 1)) for i in range(203)]
    plain = ShuffleSampler(records, 8, seed=5)
    grouped = ShuffleSampler(records, 8, seed=5, group_by_length=5)
    assert grouped.steps_per_epoch == plain.steps_per_epoch == 25

    def spread(sampler, epoch):
        batches = [sampler.global_batch(epoch * 25 + k)["train"] for k in range(25)]
        ids = [r.id for b in batches for r in b]
        assert len(ids) == len(set(ids)) == 200  # each record at most once, 3 dropped
        return ids, sum(max(map(record_length, b)) - min(map(record_length, b)) for b in batches)

    ids0, spread_grouped = spread(grouped, 0)
    ids1, _ = spread(grouped, 1)
    assert ids0 != ids1  # a new order each epoch
    assert spread_grouped < 0.5 * spread(plain, 0)[1]
    assert [r.id for r in ShuffleSampler(records, 8, seed=5, group_by_length=5).global_batch(30)["train"]] == \
        [r.id for r in grouped.global_batch(30)["train"]]  # deterministic in (seed, step): resume-safe
    with pytest.raises(ValueError, match="group_by_length"):
        ShuffleSampler(records, 8, seed=5, group_by_length=-1)
