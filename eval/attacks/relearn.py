"""Relearning attack: finetune the unlearned model briefly, then re-score the forget records it did not see.

Adversarial relearning (Deeb & Roger 2024, arXiv 2410.08827; Łucki et al. 2024, arXiv 2409.18025): finetune on
``n`` forget records (seeded choice) for a fixed budget (``train``: steps, lr), then score the OTHER forget
probes; ``n: all`` relearns every forget record and is scored on all of them (in-sample: relearnability, kept
out of the worst case). Benign relearning (Hu et al. 2024, arXiv 2406.13356; Łucki et al.'s "10 unrelated
examples"): the same budget on ``benign_n`` retain or public (pretrain) records that share no answer and no
forget person with the forget set. The recovery curve: a fixed small probe set scored every ``curve_every``
steps. Training is the core's loop (``clearbench.train.train``, the finetuning loss ``example_nll_loss``).
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from clearbench.config import TrainConfig
from clearbench.lora import apply_lora, set_trainable
from clearbench.models.common import Loaded, default_dtype
from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train
from clearbench.types import Record, retain_split
from eval.attacks.probes import Setting, Target, seeded_subset, stratified

NAME = "relearn"
VERSION = 1
BENIGN_SOURCES = {"retain": "the retain split's training records", "public": "the pretrain (public) records"}


def _budget() -> TrainConfig:
    # An attacker with the weights finetunes as their owner did: full-parameter, CLEAR's finetuning lr (1e-5,
    # clear.md §2.3), a few steps of a small batch, no schedule; the tiny model needs ~1e-3 (docs/attacks.md)
    return TrainConfig(lr=1e-5, max_steps=20, batch_size=4, micro_batch_size=4, warmup_steps=0, schedule="constant",
                       weight_decay=0.0, augment=False, log_every=1, train_vision_tower=False)


@dataclasses.dataclass
class Config:
    n: list[int | str] = dataclasses.field(default_factory=lambda: [10, 50, "all"])  # forget records relearned
    benign: list[str] = dataclasses.field(default_factory=lambda: ["retain", "public"])  # BENIGN_SOURCES keys
    benign_n: int = 10  # benign records (Łucki et al.: "10 unrelated examples")
    train: TrainConfig = dataclasses.field(default_factory=_budget)
    curve_every: int = 5  # score the curve probes every k steps (0: no curve)
    curve_n: int = 4  # curve probes per modality
    seed: int = 0  # which records are relearned, which are the curve's

    def __post_init__(self) -> None:
        for n in self.n:
            if n != "all" and not (isinstance(n, int) and n >= 1):
                raise ValueError(f"relearn n={n!r}: a number of forget records >= 1, or 'all'")
        unknown = [b for b in self.benign if b not in BENIGN_SOURCES]
        if unknown:
            raise ValueError(f"relearn benign sources {unknown}: known {sorted(BENIGN_SOURCES)}")
        if self.benign_n < 1 or self.curve_every < 0 or self.curve_n < 1:
            raise ValueError("relearn benign_n and curve_n must be >= 1, curve_every >= 0")
        if self.train.max_steps < 1:
            raise ValueError(f"relearn train.max_steps={self.train.max_steps}: the budget is a number of steps >= 1")


def settings(target: Target, cfg: Config) -> list[str]:
    return [f"forget_n{n}" if n != "all" else "forget_all" for n in cfg.n] + [f"benign_{b}" for b in cfg.benign]


def run_setting(target: Target, cfg: Config, name: str) -> Setting:
    plan = _plan(target, cfg, name)
    if isinstance(plan, Setting):
        return plan
    records, probes, setting = plan
    t0 = time.time()
    curve_records = stratified(probes, cfg.curve_n, cfg.seed)
    loaded, log, curve = _relearn(target, cfg, records, curve_records)
    setting.examples = target.score(loaded, probes)
    setting.params |= {"train": dataclasses.asdict(cfg.train), "steps": cfg.train.max_steps,
                       "curve_ids": [r.id for r in curve_records]}
    setting.log, setting.curve, setting.seconds = log, curve, time.time() - t0
    return setting


def _plan(target: Target, cfg: Config, name: str) -> tuple[list[Record], list[Record], Setting] | Setting:
    """The records relearned, the records probed after, the setting (or a skipped one saying why)."""
    forget = target.training_records()
    if name.startswith("benign_"):
        source = name.removeprefix("benign_")
        records = benign_records(target, source, cfg.benign_n, cfg.seed)
        if not records:
            return Setting(name, skipped=f"no {BENIGN_SOURCES[source]} in this world share nothing with the forget set")
        return records, target.probes, Setting(name, params={"source": source, "records": [r.id for r in records]})
    n = name.removeprefix("forget_n").removeprefix("forget_")
    if n != "all" and int(n) >= len(forget):
        return Setting(name, skipped=f"n={n} is not below the {len(forget)} records of {target.forget} "
                                     f"(forget_all relearns them all)")
    records = forget if n == "all" else seeded_subset(forget, int(n), cfg.seed)
    seen = {r.id for r in records}
    probes = target.probes if n == "all" else [p for p in target.probes if p.id not in seen]
    if not probes:
        return Setting(name, skipped=f"relearning {n} records leaves no other forget probe")
    return records, probes, Setting(name, params={"n": n, "records": sorted(seen)}, in_sample=n == "all")


def benign_records(target: Target, source: str, n: int, seed: int) -> list[Record]:
    """``n`` seeded records of ``source`` whose answer is no forget answer and that name no forget person."""
    config = retain_split(target.forget) if source == "retain" else "pretrain"
    if config not in target.world.configs:
        return []
    forget = target.training_records() + target.probes
    answers = {a.casefold() for r in forget for a in (r.answer, r.paraphrased_answer) if a}
    names = {r.name.casefold() for r in forget if r.name}
    pool = [r for r in target.world.records(config, image_roles=["train", ""])
            if r.answer.casefold() not in answers and not any(nm in f"{r.question} {r.answer}".casefold() for nm in names)]
    return seeded_subset(pool, n, seed)


def _relearn(target: Target, cfg: Config, records: list[Record], curve_records: list[Record]):
    """Finetune a fresh copy of the model on ``records``; (the trained model, its log, its curve points)."""
    loaded = target.load(for_training=True)
    model = loaded.model.train()
    if cfg.train.lora.enabled:
        torch.manual_seed(cfg.train.seed)  # the adapters' initialisation, as the training stages draw it
        model = apply_lora(model, cfg.train.lora, cfg.train)
    set_trainable(model, cfg.train)
    trained = Loaded(model, loaded.processor, loaded.family, loaded.path)
    curve: list[dict[str, Any]] = []
    total = cfg.train.max_steps

    def on_step(step: int, logs: dict) -> bool:
        if cfg.curve_every and step % cfg.curve_every == 0 and step != total:
            curve.append({"step": step, "examples": [ex.to_dict() for ex in target.score(trained, curve_records)]})
        return False

    with tempfile.TemporaryDirectory(prefix="clearbench-relearn-") as tmp:
        sampler = ShuffleSampler(records, cfg.train.batch_size, seed=cfg.seed)
        train(model, loaded.processor, loaded.family, sampler, example_nll_loss, cfg.train,
              TrainRun(Path(tmp), desc=f"relearn {len(records)}", on_step=on_step))
        log = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    # scored in the dtype the standard probes were scored in (bf16 on a GPU), so the delta is the relearning's
    model.to(dtype=default_dtype(next(model.parameters()).device, None)).eval()
    return trained, log, curve
