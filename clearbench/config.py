"""Typed configuration: dataclasses filled from YAML presets and dotted ``a.b=value`` overrides.

Unknown keys and wrong types are errors that name the key and the fix. Every output directory
holds the fully resolved config as JSON; its hash (``config_hash``) goes into run and result files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clearbench.cluster_config import ClusterConfig
from clearbench.metaeval_config import MetaevalConfig
from clearbench.scenario_config import SCENARIOS, RestoreConfig, SequentialConfig
from clearbench.typed_config import (ConfigError, FieldError, check_numbers, deep_merge, from_dict, parse_overrides,
                                     to_dict)
from clearbench.types import FORGET_MODALITIES, forget_percent, unknown_name_message

T = TypeVar("T")

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def check_split(obj: Any, field: str, split: str) -> None:
    """``split`` is a forget split name (forgetNN); which ones exist is the world's business."""
    try:
        forget_percent(split)
    except ValueError as exc:
        raise FieldError(field, split, str(exc).removeprefix(f"{split!r} ")) from None


def config_hash(obj: Any) -> str:
    """Stable short hash of a config (dataclass or plain JSON data)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preset_path(preset: str) -> Path:
    """A preset name (``tiny``) resolves to ``configs/<name>.yaml``; a path is used as is."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PRESET_DIR / f"{preset}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(unknown_name_message("preset", preset, known) + f" (looked in {PRESET_DIR})")


def load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset's mapping, with the preset it ``inherit``s merged under it (no interpolation)."""
    path = Path(path)
    if path.resolve() in seen:
        chain = " -> ".join(p.stem for p in (*seen, path.resolve()))
        raise ConfigError(f"preset {path} inherits itself ({chain}); remove the 'inherit' that closes the loop")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("inherit", None)
    if base:
        data = deep_merge(load_yaml(preset_path(base), (*seen, path.resolve())), data)
    return data


def load_config(cls: type[T], preset: str | None, overrides: list[str] | None = None) -> T:
    data = load_yaml(preset_path(preset)) if preset else {}
    return from_dict(cls, deep_merge(data, parse_overrides(overrides)))


# --------------------------------------------------------------------------------------------
# Stage dataclasses. A preset YAML (configs/<name>.yaml) has one section per stage.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8  # CLEAR recipe: "LoRA r=8, alpha=32, dropout 0" (clear.md §2.3)
    alpha: int = 32
    dropout: float = 0.0
    # "language" = attention/MLP projections of the language model only; "all-linear" = every
    # nn.Linear except lm_head (CLEAR @init); anything else is a regex over module names.
    target_modules: str = "language"


@dataclasses.dataclass
class TrainConfig:
    lr: float = 1e-3
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 32  # the EFFECTIVE batch size; accumulation = batch / (micro * processes)
    micro_batch_size: int = 32
    # tokens per training row (image tokens included); longer rows lose the end of the answer, a prompt
    # that does not fit is an error. 0: no limit. (CLEAR's code hard-codes 1024 for LLaVA, clear.md §2.3)
    max_length: int = 0
    warmup_steps: int = 0
    schedule: typing.Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    grad_clip: float = 1.0
    seed: int = 0
    train_vision_tower: bool = True
    train_projector: bool = True
    train_language_model: bool = True
    gradient_checkpointing: bool = False
    mixed_precision: typing.Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    l1_lambda: float = 0.0  # L1 on trainable LoRA weights (or on theta - theta0 without LoRA)
    # LoRA runs: save merged weights (True) or the adapter only (False), on top of the model training started
    # from; load_model merges it back (clearbench/models/adapter.py). Full-parameter runs save all weights.
    save_merged: bool = True
    save_every: int = 0  # checkpoint every N optimizer steps (0: only at the end)
    log_every: int = 10
    augment: bool = True  # load-time image noise/jitter for image records
    # > 0: batches of similar length (each run of this many batches of the epoch's permutation is sorted by
    # length, then the batches are shuffled), so less compute goes to padding. 0: plain shuffling.
    group_by_length: int = 0
    # an experiment tracker of accelerate's (wandb, tensorboard, mlflow, ...; its package installed) that gets
    # every log.jsonl line, logging under the run's directory; "" or "none": off (clearbench.tracking)
    report_to: str = ""

    def __post_init__(self) -> None:  # lr=inf trained a model of NaNs; max_steps=-3 silently ran epochs
        check_numbers(self, positive=("lr", "batch_size", "micro_batch_size"),
                      non_negative=("epochs", "max_steps", "max_length", "warmup_steps", "min_lr_ratio", "weight_decay",
                                    "grad_clip", "seed", "l1_lambda", "save_every", "log_every", "group_by_length"))
        if self.max_steps == 0 and self.epochs == 0:
            raise FieldError("epochs", self.epochs, "train for epochs > 0, or set max_steps > 0")
        if self.min_lr_ratio > 1:
            raise FieldError("min_lr_ratio", self.min_lr_ratio, "a fraction of lr, in [0, 1]")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise FieldError("betas", self.betas, "Adam's two betas, each in [0, 1)")
        if self.report_to:  # checked at load: an uninstalled tracker would be dropped silently by accelerate
            from clearbench.tracking import check_report_to

            self.report_to = check_report_to(self.report_to)


@dataclasses.dataclass
class DataMix:
    """Which records of a world config a stage trains on (``repeat`` oversamples them)."""

    config: str = "full"
    tasks: list[str] = dataclasses.field(default_factory=list)  # empty = all
    modalities: list[str] = dataclasses.field(default_factory=list)  # empty = all
    image_roles: list[str] = dataclasses.field(default_factory=lambda: ["train", ""])
    repeat: int = 1
    fraction: float = 1.0  # seeded subsample (e.g. replay a share of the pretrain set while finetuning)

    def __post_init__(self) -> None:
        check_numbers(self, positive=("repeat", "fraction"))
        if self.fraction > 1:
            raise FieldError("fraction", self.fraction, "a share of the records, in (0, 1]")


@dataclasses.dataclass
class PhaseConfig:
    name: str = "train"
    data: list[DataMix] = dataclasses.field(default_factory=lambda: [DataMix()])
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    # "lm": next-token loss on the answers. "vision_attributes" (pretrain only): the vision tower alone
    # learns which attribute phrases a face description names; "vision_answers" (pretrain only): the vision
    # tower alone learns to classify short answers among those of the same question, e.g. the world VQA
    # (clearbench.vision_pretrain); "vision_multitask": both at once (captions -> attributes, VQA -> answers)
    objective: typing.Literal["lm", "vision_attributes", "vision_answers", "vision_multitask"] = "lm"


@dataclasses.dataclass
class ModelConfig:
    family: str = "tiny-llava"
    path: str = ""  # checkpoint dir or hub id for llava / qwen2-vl; tiny-llava is built by pretrain
    tiny: dict[str, Any] = dataclasses.field(default_factory=dict)  # TinyConfig fields


@dataclasses.dataclass
class WorldConfig:
    seed: int = 0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # data_gen WorldParams fields

    def __post_init__(self) -> None:
        check_numbers(self, non_negative=("seed",))
        if "seed" in self.params:
            raise FieldError("params.seed", self.params["seed"], "set world.seed instead (the study varies it)")


@dataclasses.dataclass
class PretrainConfig:
    phases: list[PhaseConfig] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FinetuneConfig:
    """One ``phase``, or a list of ``phases`` run in order (when given, ``phase`` is not used).
    In every phase the data config "full" stands for the split being finetuned on."""

    phase: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    # > 0 sets phase.train.warmup_steps to this many epochs of the selected records (CLEAR: one epoch,
    # "warmup_steps = max(1, max_steps // num_epochs)", clear.md §2.3); 0 keeps warmup_steps as given
    warmup_epochs: float = 0.0
    phases: list[PhaseConfig] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        check_numbers(self, non_negative=("warmup_epochs",))

    def resolved_phases(self) -> list[PhaseConfig]:
        return list(self.phases) if self.phases else [self.phase]


@dataclasses.dataclass
class StopConfig:
    """Checkpoint selection for unlearning. ``fixed``: train the configured steps/epochs (CLEAR's recipe).
    ``forget_prob_below``: every ``every`` steps, compute the mean answer probability exp(mean token
    log p) on ``n`` fixed forget-author records and stop at the first step where it is < ``threshold``
    (a number, or ``"gold"``: the same criterion computed once on ``gold_model``). Step 0 is recorded,
    never chosen; without a trigger the run ends at its configured steps."""

    rule: typing.Literal["fixed", "forget_prob_below"] = "fixed"
    every: int = 10
    n: int = 32
    # heldout: forgetXX_perturbed records on held-out photos (never trained on; image modalities only);
    # forget: a fixed seeded subset of the training forget records; auto: heldout when it exists, else forget
    source: typing.Literal["auto", "heldout", "forget"] = "auto"
    threshold: float | str = 0.0
    gold_model: str = ""

    def __post_init__(self) -> None:
        check_numbers(self, positive=("every", "n"))
        if isinstance(self.threshold, str) and self.threshold != "gold" or \
                not isinstance(self.threshold, str) and not 0 <= self.threshold <= 1:
            raise FieldError("threshold", self.threshold, "a probability in [0, 1] or 'gold'")


def _clear_unlearn_train() -> TrainConfig:
    # CLEAR @init forget.yaml for LLaVA (clear.md §3.4): "LoRA r=8, alpha=32, dropout 0, lr 1e-5, per-device
    # bs 2, GA 2, 5 epochs, warmup = 1 epoch, wd 0.01, seed 42, vision tower always frozen"; HF Trainer's
    # default linear schedule and Adam betas. (@init used LoRA only with L1; HEAD's Qwen2-VL runs had r=0.)
    return TrainConfig(lr=1e-5, epochs=5.0, batch_size=4, micro_batch_size=2, schedule="linear", weight_decay=0.01,
                       betas=[0.9, 0.999], seed=42, train_vision_tower=False, augment=False, log_every=1,
                       lora=LoraConfig(enabled=True, r=8, alpha=32, dropout=0.0))


@dataclasses.dataclass
class UnlearnConfig:
    """``clearbench unlearn``: a method from baselines/ on forgetXX of a target model."""

    method: str = ""  # a baselines.METHODS key (or --method)
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the method's Config fields
    # method -> Config fields for that method only (a preset's per-method tuning, e.g. {rmu: {alpha: 10}});
    # applied first: clear_recipe and then method_options override them
    options_by_method: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    clear_recipe: bool = False  # apply baselines.clear_recipe(method) before method_options
    forget: str = "forget10"
    # text: text QA only; visual: image records (naming, captions, joint QA); multimodal: both (CLEAR)
    forget_modality: typing.Literal[tuple(FORGET_MODALITIES)] = "multimodal"  # type: ignore[valid-type]
    random_k: int = 3  # answers per forget record in the "random" batch (CLEAR: "K=3 other forget items")
    refusals: str = ""  # refusal phrasings file for "idk" batches; "" = baselines/data/refusals.txt
    # auto: adapters disabled with LoRA, else a frozen copy; adapter-disabled: never copy the model
    reference: typing.Literal["auto", "adapter-disabled", "copy"] = "auto"
    lr_by_method: dict[str, float] = dataclasses.field(default_factory=dict)  # replaces train.lr per method
    warmup_epochs: float = 1.0  # > 0 sets train.warmup_steps to this many epochs (CLEAR: 1 epoch)
    train: TrainConfig = dataclasses.field(default_factory=_clear_unlearn_train)
    stop: StopConfig = dataclasses.field(default_factory=StopConfig)
    eval_every: int = 0  # > 0: in-loop answer probabilities every N steps -> curve.jsonl
    curve_n: int = 16  # records per (split, modality) in the curve
    # [i, n]: only the authors of the i-th (1-based) of n near-equal batches of the forget split's authors
    # (clearbench.unlearn.author_batches: smaller nested forget splits first, then by id); []: every author.
    # The sequential-requests scenario unlearns forget10 as n such requests, one after the other.
    forget_batch: list[int] = dataclasses.field(default_factory=list)
    # a world config unlearned instead of the forget split (the restorative scenario's corruption set, e.g.
    # corrupt_text_k2); its authors are left out of the retain split of ``forget``. "": the forget split.
    forget_config: str = ""

    def __post_init__(self) -> None:
        check_numbers(self, positive=("random_k", "curve_n"), non_negative=("warmup_epochs", "eval_every"))
        check_split(self, "forget", self.forget)
        if self.forget_batch and not (len(self.forget_batch) == 2 and 1 <= self.forget_batch[0] <= self.forget_batch[1]):
            raise FieldError("forget_batch", self.forget_batch, "[i, n] with 1 <= i <= n (request i of n), or [] for all")
        if self.forget_batch and self.forget_config:
            raise FieldError("forget_batch", self.forget_batch, "batches are of the forget split's authors; with "
                             "forget_config set, leave forget_batch empty")
        for method, lr in self.lr_by_method.items():
            if not (math.isfinite(lr) and lr > 0):
                raise FieldError(f"lr_by_method.{method}", lr, "must be a finite number > 0")


@dataclasses.dataclass
class StudyConfig:
    """``clearbench run``: the grid of the study (forget splits x methods x variants x modalities)."""

    forget_splits: list[str] = dataclasses.field(default_factory=lambda: ["forget10"])
    methods: list[str] = dataclasses.field(default_factory=lambda: [
        "retain_ft", "grad_ascent", "grad_diff", "kl", "idk", "dpo", "npo", "llmu", "rmu", "scrub", "sku", "simnpo"])
    forget_modalities: list[str] = dataclasses.field(default_factory=lambda: ["multimodal"])
    # name suffix -> overrides of the unlearn section; "" is the plain run. Mappings merge with the inherited ones
    # (a preset's `inherit`, dotted overrides): set a variant to null to drop an inherited one.
    variants: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=lambda: {"": {}})
    metric_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # eval.aggregate.MetricOptions
    eval_batch_size: int = 32
    eval_max_per_config: int = 0  # 0: every record (CLEAR's code caps at 300); older presets
    eval_max_per_cell: int = 0  # > 0: at most this many per (config, modality, task, image role) cell, seeded
    evaluate_base: bool = True  # also score the base and target models
    report: bool = True
    # Replicates: [] runs the study once with the preset's own seeds (OUT/ as above). [s0, s1, ...] runs
    # one full study per seed under OUT/seed-<s>/ with world.seed and every train.seed (pretrain phases,
    # finetune, unlearn) set to s (clearbench.study.seed_config), and writes OUT/report/: mean ± sd over seeds.
    seeds: list[int] = dataclasses.field(default_factory=list)
    # Attacks (eval.attacks) run on every unlearned model and the target: names, each attack's Config fields, and
    # the probes' cap per cell (0: the evaluation's eval_max_per_cell)
    attacks: list[str] = dataclasses.field(default_factory=list)
    attack_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    attack_max_per_cell: int = 0
    # forget: the grid above (golds, unlearning runs, their evaluations, the report); restore / sequential: the
    # scenarios of clearbench.scenarios, set in the `restore` and `sequential` sections
    scenarios: list[typing.Literal[SCENARIOS]] = dataclasses.field(  # type: ignore[valid-type]
        default_factory=lambda: ["forget"])

    def __post_init__(self) -> None:
        self.variants = {name: overrides for name, overrides in self.variants.items() if overrides is not None}
        check_numbers(self, non_negative=("attack_max_per_cell",))
        check_numbers(self, positive=("eval_batch_size",), non_negative=("eval_max_per_config", "eval_max_per_cell"))
        if self.eval_max_per_config and self.eval_max_per_cell:
            raise FieldError("eval_max_per_cell", self.eval_max_per_cell,
                             f"set one cap: eval_max_per_config is {self.eval_max_per_config} too (set it to 0)")
        for i, split in enumerate(self.forget_splits):
            check_split(self, f"forget_splits[{i}]", split)
        for i, modality in enumerate(self.forget_modalities):
            if modality not in FORGET_MODALITIES:
                raise FieldError(f"forget_modalities[{i}]", modality, unknown_name_message(
                    "forget modality", modality, FORGET_MODALITIES))
        dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if dup:
            raise FieldError("seeds", self.seeds, f"lists {dup} more than once; give each replicate seed once")
        if any(s < 0 for s in self.seeds):
            raise FieldError("seeds", self.seeds, "seeds must be >= 0 (they seed numpy generators)")


def _parameterisations() -> dict[str, dict[str, Any]]:
    return {"full": {}, "lora": {"train": {"lora": {"enabled": True}}}}


@dataclasses.dataclass
class CalibrationConfig:
    """``clearbench run`` with ``enabled``: instead of the study, a learning-rate sweep per method and
    parameterisation on the target (forget split and modality: the study's first), scored on validation records
    disjoint from the evaluation's, and the rule of ``clearbench.calibration`` picks each method's lr."""

    enabled: bool = False
    # parameterisation -> overrides of the unlearn section (the variants that share its lrs name it)
    parameterisations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=_parameterisations)
    lrs: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # parameterisation -> lr grid
    retain_tolerance: float = 0.10  # admissible: retain-validation probability >= (1 - this) x the target's
    n_per_cell: int = 64  # validation records per (group, modality, task) cell

    def __post_init__(self) -> None:
        check_numbers(self, positive=("n_per_cell",), non_negative=("retain_tolerance",))
        for name, grid in self.lrs.items():
            if name not in self.parameterisations:
                raise FieldError(f"lrs.{name}", name, unknown_name_message("parameterisation", name,
                                                                          self.parameterisations))
            if len(grid) < 2 or any(not math.isfinite(lr) or lr <= 0 for lr in grid) or len(set(grid)) != len(grid):
                raise FieldError(f"lrs.{name}", grid, "must list at least two distinct finite learning rates > 0")


@dataclasses.dataclass
class BenchConfig:
    """Everything a preset can set. Stages read their own section."""

    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    sequential: SequentialConfig = dataclasses.field(default_factory=SequentialConfig)
    restore: RestoreConfig = dataclasses.field(default_factory=RestoreConfig)
    metaeval: MetaevalConfig = dataclasses.field(default_factory=MetaevalConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)  # resources; in no stage key
