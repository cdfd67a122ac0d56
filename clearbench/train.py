"""The one training loop, used by pretrain, finetune and unlearn (accelerate underneath).

The loop owns optimisation, accumulation, LoRA/L1, checkpoints and logging; what is optimised is
a ``loss_fn(model, batches, step) -> (loss, logs)`` over collated batches of record kinds
("train" for pretrain/finetune; "forget", "retain", "idk", ... for unlearning).

Effective batch size is the input: each optimizer step draws one *global* batch per kind from a
deterministic sampler, splits it into ``processes x accumulation`` equal micro-batches and
weights each micro-batch loss by its share, so the update is the same for any process count
or micro-batch size (given per-example-mean losses). Data order and augmentation are functions
of (seed, step), which makes ``--resume`` end with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from clearbench import interrupt
from clearbench.augment import augment_records
from clearbench.config import TrainConfig
from clearbench.cost import count_step, count_tokens
from clearbench.lora import add_l1_grad, l1_anchor, l1_penalty
from clearbench.losses import StepInfo, answer_nll
from clearbench.provenance import recover_dir, write_dir_atomic, write_text_atomic
from clearbench.sharding import check_same_modules, check_supported, gather_sharded, is_fsdp, spread_images
from clearbench.threads import ThreadGovernor
from clearbench.tracking import Tracking
from clearbench.types import Record

LossFn = Callable[[torch.nn.Module, dict[str, dict], Any], tuple[torch.Tensor, dict[str, float]]]


class Sampler(Protocol):
    steps_per_epoch: int

    def global_batch(self, step: int) -> dict[str, list[Record]]: ...


class ShuffleSampler:
    """Epoch-wise seeded permutation of ``records``; a step takes the next ``batch_size`` of them
    (the tail that does not fill a batch is dropped for that epoch; a different tail each epoch)."""

    def __init__(self, records: Sequence[Record], batch_size: int, seed: int, kind: str = "train",
                 group_by_length: int = 0):
        if not records:
            raise ValueError("no training records selected: check the stage's data mix (config, tasks, modalities)")
        if group_by_length < 0:
            raise ValueError(f"group_by_length must be >= 0 (batches per length group), got {group_by_length}")
        self.records, self.batch_size, self.seed, self.kind = list(records), batch_size, seed, kind
        self.steps_per_epoch = max(1, len(self.records) // batch_size)
        self.group_by_length = group_by_length
        self._lengths = np.array([record_length(r) for r in self.records]) if group_by_length else None
        self._epoch, self._order = -1, None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's record order; with ``group_by_length`` = k, each run of k batches of the seeded
        permutation is sorted by length and the epoch's batches are then shuffled (HF's
        ``group_by_length``): every record is still seen once per epoch, in batches of similar
        length, so padding costs less (28 % of the tiny finetune's tokens were padding)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.records))
            if self.group_by_length:
                n = self.steps_per_epoch * self.batch_size
                group = self.group_by_length * self.batch_size
                chunks = [perm[i:i + group] for i in range(0, n, group)]
                perm = np.concatenate([c[np.argsort(-self._lengths[c], kind="stable")] for c in chunks])
                batches = perm[:n].reshape(self.steps_per_epoch, self.batch_size)
                perm = batches[rng.permutation(self.steps_per_epoch)].reshape(-1)
            self._epoch, self._order = epoch, perm
        return self._order

    def global_batch(self, step: int) -> dict[str, list[Record]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        idx = self._epoch_order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]
        return {self.kind: [self.records[i] for i in idx]}


def record_length(record: Record) -> int:
    """A record's length for grouping (characters of question and answer, plus a fixed cost for an image)."""
    return len(record.question) + len(record.answer) + (64 if record.image is not None else 0)


# ---------------------------------------------------------------------------------------------
_ACCELERATOR = None


def get_accelerator(mixed_precision: str = "auto"):
    """One Accelerator per process (accelerate keeps global state); DDP tolerates text-only
    batches that leave the vision tower without gradients."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        _ACCELERATOR = Accelerator(
            cpu=not torch.cuda.is_available(),  # without it, torchrun on CPU silently runs 1 process each
            mixed_precision=mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    return _ACCELERATOR


def accumulation_steps(cfg: TrainConfig, processes: int) -> int:
    per_step = cfg.micro_batch_size * processes
    if cfg.batch_size % per_step:
        raise ValueError(f"batch_size={cfg.batch_size} (effective) is not a multiple of micro_batch_size x processes "
                         f"= {cfg.micro_batch_size} x {processes}; pick a micro_batch_size that divides it")
    return cfg.batch_size // per_step


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * steps_per_epoch))


def lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * max(0.0, shape)

    return f


def split_chunks(batch: dict[str, list[Record]], n: int, spread: bool = False) -> list[dict[str, list[Record]]]:
    """Split every kind's global batch into ``n`` near-equal contiguous chunks; ``spread`` (FSDP): the records with
    an image first dealt over the chunks, so that every chunk has one when the batch has ``n``
    (clearbench.sharding.spread_images)."""
    out: list[dict[str, list[Record]]] = [{} for _ in range(n)]
    for kind, recs in batch.items():
        bounds = np.linspace(0, len(recs), n + 1).round().astype(int)
        if spread and len({any(r.image is not None for r in recs[a:b]) for a, b in zip(bounds, bounds[1:])}) > 1:
            recs = spread_images(recs, np.diff(bounds).tolist())  # only where the plain split would mix
        for i in range(n):
            out[i][kind] = recs[bounds[i]:bounds[i + 1]]
    return out


def example_nll_loss(model, batches: dict[str, dict], step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
    """Finetuning loss: per-example mean NLL over answer tokens, averaged over examples (the output
    head runs at answer positions only; same value as ``mean_nll`` over full logits)."""
    batch = batches["train"]
    nll = answer_nll(model, batch)
    return nll, {"nll": nll.item()}


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


# --------------------------------------------------------------------------------- checkpoints
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, step: int) -> None:
    def write(d: Path) -> None:
        save_file(trainable_state(model), str(d / "trainable.safetensors"))
        sd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, st in sd["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = val
        save_file(tensors, str(d / "optimizer.safetensors"))
        meta = {"step": step, "param_groups": sd["param_groups"], "scalars": scalars,
                "scheduler": scheduler.state_dict() | {"lr_lambdas": None}}
        (d / "state.json").write_text(json.dumps(meta, default=str))

    write_dir_atomic(ckpt_dir / "last", write)


def load_checkpoint(ckpt_dir: Path, model, optimizer, scheduler) -> int:
    d = ckpt_dir / "last"
    if not (d / "state.json").exists():
        return 0
    meta = json.loads((d / "state.json").read_text())
    state = load_file(str(d / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ValueError(f"checkpoint {d} does not match the model (unknown parameters {missing[:3]}); "
                         f"delete {ckpt_dir} or start without --resume")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
    opt_tensors = load_file(str(d / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, val in list(opt_tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    sched = {k: v for k, v in meta["scheduler"].items() if k != "lr_lambdas"}
    scheduler.load_state_dict(sched | {"lr_lambdas": [None] * len(optimizer.param_groups)})
    return int(meta["step"])


# ---------------------------------------------------------------------------------------- loop
@dataclasses.dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int


class Interrupt(Exception):
    """Raised by ``TrainRun.stop_at_step`` (tests simulate a killed run with it)."""


@dataclasses.dataclass
class TrainRun:
    """Where one training run writes and how it is driven: its directory (``checkpoints/``, ``log.jsonl``),
    resume from its last checkpoint, the progress-bar label, ``on_step(step, logs) -> stop`` called after every
    optimizer step (in-loop evaluation, early stopping), and a step to stop at (tests simulate a kill)."""

    out_dir: Path
    resume: bool = False
    desc: str = "train"
    on_step: Callable[[int, dict], bool] | None = None
    stop_at_step: int | None = None


@dataclasses.dataclass
class _Loop:
    """The parts of one run that every step uses (built by ``_start``)."""

    acc: Any
    wrapped: Any  # the model as accelerate prepared it (DDP on several processes)
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    anchor: dict[str, torch.Tensor] | None  # theta0 of the L1 penalty's non-LoRA parameters
    grad_acc: int
    total: int
    start: int


def train(model, processor, family, sampler: Sampler, loss_fn: LossFn, cfg: TrainConfig, run: TrainRun) -> TrainResult:
    """Optimise ``loss_fn`` (+ ``cfg.l1_lambda`` x the L1 penalty) for the configured steps; checkpoints go to
    ``run.out_dir/checkpoints``. ``model`` is the starting model, also on resume (the checkpoint is loaded here)."""
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loop = _start(model, sampler, cfg, run)
    acc = loop.acc

    def collate(records: list[Record]) -> dict:
        return family.collate(processor, records, max_length=cfg.max_length or None)

    tracking = Tracking.start(acc, cfg.report_to, out_dir, {"run": run.desc, **dataclasses.asdict(cfg)})
    log_file = _open_log(out_dir / "log.jsonl", loop.start if run.resume else None) if acc.is_main_process else None
    t0, last_loss, total = time.time(), float("nan"), loop.total
    bar = tqdm(range(loop.start, total), desc=run.desc, initial=loop.start, total=total,
               disable=not acc.is_main_process, dynamic_ncols=True)
    governor = ThreadGovernor()  # fewer torch threads while other processes hold cores (clearbench.threads)
    try:
        for step in bar:
            interrupt.check()  # a Ctrl-C lost in a finaliser still stops training at the next step
            governor.tick()
            if run.stop_at_step is not None and step == run.stop_at_step:
                raise Interrupt(f"stopped at step {step}")
            info = StepInfo(step=step, total_steps=total, epoch=step // sampler.steps_per_epoch)
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout etc.: a function of the step
            step_loss, step_logs = _accumulate(loop, cfg, sampler.global_batch(step), info, loss_fn, collate)
            record = {"step": step + 1} | _optimizer_step(loop, cfg, step_loss, step_logs)
            last_loss = record["loss"]
            if (step + 1) % max(1, cfg.log_every) == 0 or step + 1 == total:
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                tracking.log(record)  # the same record to the tracker, when train.report_to names one
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(out_dir / "checkpoints", model, loop.optimizer, loop.scheduler, step + 1)
            if run.on_step is not None and run.on_step(step + 1, record):
                total = step + 1
                break
    finally:
        governor.restore()
        bar.close()
        tracking.close()
        if log_file:
            log_file.close()
    acc.wait_for_everyone()
    gather_sharded(acc, loop.wrapped)  # FSDP: whole parameters on every process, for the stage's save
    return TrainResult(steps=total, final_loss=last_loss, seconds=time.time() - t0, resumed_from=loop.start)


def _open_log(path: Path, resumed_from: int | None):
    """The run's log.jsonl for appending: emptied on a fresh start; on resume cut to the steps up to the
    resumed checkpoint (a killed run logged steps past it, which the resumed run logs again)."""
    if resumed_from is None or not path.exists():
        return open(path, "w")
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= resumed_from:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut short by the kill
            continue
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    return open(path, "a")


def _start(model, sampler: Sampler, cfg: TrainConfig, run: TrainRun) -> _Loop:
    """Optimizer, schedule and accelerate for ``model``; the L1 anchor; the resumed checkpoint, if any."""
    acc = get_accelerator(cfg.mixed_precision)
    check_supported(acc, cfg.save_every)
    total = total_steps(cfg, sampler.steps_per_epoch)
    grad_acc = accumulation_steps(cfg, acc.num_processes)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    count_tokens(model)  # the stage's cost meter (clearbench.cost) counts what it processes
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total))
    ckpt_dir = Path(run.out_dir) / "checkpoints"
    if not run.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    elif acc.is_main_process:  # undo a checkpoint swap a kill interrupted; remove the temp dirs it left
        recover_dir(ckpt_dir / "last")
    acc.wait_for_everyone()
    wrapped, optimizer = acc.prepare(model, optimizer)
    params = [p for p in wrapped.parameters() if p.requires_grad]  # FSDP2 swaps in sharded (DTensor) parameters
    # theta0 is the starting model's, on the training device: taken before a resumed checkpoint is loaded
    anchor = l1_anchor(model) if cfg.l1_lambda > 0 else None
    start = load_checkpoint(ckpt_dir, model, optimizer, scheduler) if run.resume else 0
    wrapped.train()
    return _Loop(acc=acc, wrapped=wrapped, optimizer=optimizer, scheduler=scheduler, params=params, anchor=anchor,
                 grad_acc=grad_acc, total=total, start=start)


def _accumulate(loop: _Loop, cfg: TrainConfig, global_batch: dict[str, list[Record]], info: StepInfo,
                loss_fn: LossFn, collate: Callable[[list[Record]], dict]) -> tuple[float, dict[str, float]]:
    """Backward over this process's micro-batches of one global batch, each weighted by its share of the batch;
    returns this process's share of the step's loss and logs."""
    acc, grad_acc = loop.acc, loop.grad_acc
    first_kind = next(iter(global_batch))
    global_n = max(1, len(global_batch[first_kind]))
    chunks = split_chunks(global_batch, grad_acc * acc.num_processes, spread=is_fsdp(acc))
    step_loss, step_logs = 0.0, {}
    ddp = isinstance(loop.wrapped, torch.nn.parallel.DistributedDataParallel)
    for i, chunk in enumerate(chunks[acc.process_index * grad_acc:(acc.process_index + 1) * grad_acc]):
        weight = len(chunk[first_kind]) / global_n * acc.num_processes
        sync = acc.no_sync(loop.wrapped) if i < grad_acc - 1 and acc.num_processes > 1 else nullcontext()
        with sync:
            if weight == 0:  # an empty share: keep DDP's collective calls in step
                acc.backward(sum(p.sum() for p in loop.params) * 0.0)
                continue
            if cfg.augment:
                chunk = augment_records(chunk, seed=cfg.seed, step=info.step)
            batches = {k: _to_device(collate(recs), acc.device) for k, recs in chunk.items() if recs}
            check_same_modules(acc, batches)  # FSDP: images on every process or on none
            loss, logs = loss_fn(loop.wrapped, batches, step=info)
            if cfg.l1_lambda > 0:
                penalty = l1_penalty(acc.unwrap_model(loop.wrapped), loop.anchor)
                loss = loss + cfg.l1_lambda * (penalty.detach() if ddp else penalty)  # DDP: add_l1_grad below
                logs = dict(logs, l1=float(penalty.detach()))
            acc.backward(loss * weight)
        step_loss += float(loss.detach()) * weight / acc.num_processes
        for k, v in logs.items():
            step_logs[k] = step_logs.get(k, 0.0) + float(v) * weight / acc.num_processes
    if ddp and cfg.l1_lambda > 0:  # the penalty's gradient, once, outside DDP's backward hooks
        add_l1_grad(acc.unwrap_model(loop.wrapped), loop.params, loop.anchor, cfg.l1_lambda)
    return step_loss, step_logs


def _optimizer_step(loop: _Loop, cfg: TrainConfig, step_loss: float, step_logs: dict[str, float]) -> dict:
    """Clip, step, schedule; the step's log record (loss and logs summed over processes)."""
    acc = loop.acc
    # total gradient norm before clipping (logged: it exposes accumulation/scaling errors)
    grad_norm = acc.clip_grad_norm_(loop.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    loop.optimizer.step()
    count_step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    if acc.num_processes > 1:  # each process holds its share: sum them for the log
        shares = torch.tensor([step_loss, *step_logs.values()], device=acc.device)
        shares = acc.reduce(shares, reduction="sum").tolist()
        step_loss, step_logs = shares[0], dict(zip(step_logs, shares[1:]))
    return {"loss": step_loss, "grad_norm": float(grad_norm), "lr": loop.scheduler.get_last_lr()[0], **step_logs}
