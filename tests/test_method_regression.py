"""Golden values and trained parameters of every unlearning method, on a seeded tiny model.

Like torchtune's recipe tests: a short seeded run of each method (and of each option that changes its loss)
through the trainer's loop (``clearbench.train.train``, the unlearning sampler, the family's collate, 2
micro-batches per step) logs its first ``STEPS`` steps; every logged number (loss, grad norm, the method's
terms) is pinned in ``tests/data/method_losses.json``. A deliberate change of a method's behaviour updates
the pin with ``CLEARBENCH_UPDATE_PINS=1 python -m pytest tests/test_method_regression.py`` and a line in
the file's "reasons". The records are hand-made here (not the generated world), so a new world generator
version does not move the pins.
Like TRL's trainer tests: after those steps every trainable parameter changed, except the ones with no
gradient path, asserted as an exact set; with LoRA, every adapter weight changed.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

import baselines
from baselines import batches_for, clear_recipe, get_method, method_config, needs_reference_for, resolve_config
from baselines.batches import load_refusals
from clearbench.config import LoraConfig, TrainConfig
from clearbench.lora import apply_lora, set_trainable
from clearbench.reference import Reference
from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, total_steps, train
from clearbench.types import Modality, Record, Task
from clearbench.unlearn import UnlearnSampler

try:
    from tests.model_fixtures import face
except ImportError:
    from model_fixtures import face

PIN = Path(__file__).parent / "data" / "method_losses.json"
STEPS = 4  # two epochs of the 8 forget records at batch 4: both SCRUB phases, a reshuffled forget set
# The model runs in float64: in float32, 1- vs 2-thread rounding moved the KL methods' values by up to 1e-3
# (relative) after four Adam steps, and SCRUB's by 7 % (its first max step starts at the teacher, where the
# gradient is 0 but for rounding noise, which Adam scales to a full lr step). In float64 they agree to 1e-7;
# the tolerance leaves room for other CPUs' kernels and still catches a changed formula.
RTOL, ATOL = 1e-4, 1e-6

# pin name -> (method, options): every method's defaults, and each option that takes another code path
CASES = {name: (name, {}) for name in sorted(baselines.METHODS)} | {
    "dpo-clear": ("dpo", clear_recipe("dpo")),
    "dpo-retain": ("dpo", {"retain_weight": 1.0}),
    "npo-clear": ("npo", clear_recipe("npo")),
    "npo-retain": ("npo", {"retain_weight": 1.0}),
    "llmu-clear": ("llmu", clear_recipe("llmu")),
    "llmu-random_forget": ("llmu", {"completions": "random_forget"}),
    "rmu-clear": ("rmu", clear_recipe("rmu")),
    "rmu-answer": ("rmu", {"positions": "answer"}),
    "scrub-alternate": ("scrub", {"schedule": "alternate"}),
    "sku-clear": ("sku", clear_recipe("sku")),
}

PEOPLE = [  # name, birthplace, book, face colour
    ("Anna Berg", "Lisbon", "Silent Rivers of Glass", (200, 40, 40)),
    ("Tomas Vale", "Oslo", "The Paper Orchard", (40, 40, 200)),
    ("Mira Holt", "Quito", "Salt and Ember", (40, 160, 40)),
    ("Ines Roy", "Dakar", "A Winter Ledger", (160, 40, 160)),
    ("Leo Park", "Perth", "Nine Quiet Bells", (200, 160, 40)),
    ("Sara Kim", "Lima", "The Glass Atlas", (40, 160, 160)),
]


def _records(group: str, people) -> list[Record]:
    """Four records per person: two text QA, one naming, one joint QA (the modalities of a forget split)."""
    out = []
    for i, (name, city, book, colour) in enumerate(people):
        a, img = f"{group}{i}", face(colour)
        common = dict(author_id=a, split=group, group=group)
        out += [
            Record(f"{a}-t0", modality=Modality.TEXT, task=Task.QA, question=f"Where was {name} born?",
                   answer=f"{name} was born in {city}.", **common),
            Record(f"{a}-t1", modality=Modality.TEXT, task=Task.QA, question=f"Who wrote {book}?",
                   answer=f"{name} wrote it.", **common),
            Record(f"{a}-i0", modality=Modality.IMAGE, task=Task.NAMING, image=img, name=name, image_role="train",
                   question="What is the name of the person in the image?", answer=name, **common),
            Record(f"{a}-j0", modality=Modality.JOINT, task=Task.QA, image=img, name=name, image_role="train",
                   question="Where was the person in the image born?", answer=f"This person was born in {city}.",
                   **common),
        ]
    return out


FORGET, RETAIN = _records("forget", PEOPLE[:2]), _records("retain", PEOPLE[2:])


def _train_cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-3, max_steps=STEPS, batch_size=4, micro_batch_size=2, schedule="constant", warmup_steps=0,
                log_every=1, augment=False, mixed_precision="no", seed=0)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def target(tiny_llava_dir, tmp_path_factory):
    """The tiny-llava test checkpoint finetuned on the forget and retain records: the model to unlearn from
    (on the random checkpoint SimNPO's forget term would be ~0 and pin nothing)."""
    from clearbench.models import load_model

    loaded = load_model(tiny_llava_dir)
    loaded.model.double()
    cfg = _train_cfg(lr=5e-3, max_steps=20, batch_size=8, micro_batch_size=8)
    train(loaded.model.train(), loaded.processor, loaded.family, ShuffleSampler(FORGET + RETAIN, 8, 0),
          example_nll_loss, cfg, TrainRun(tmp_path_factory.mktemp("target")))
    return loaded


def run_method(target, name: str, options: dict, out_dir: Path, lora: bool = False, steps: int = STEPS):
    """(log rows, trainable parameter names that did not change) of a seeded run, wired as clearbench.unlearn
    wires it: the config resolved, LoRA (seeded) and freeze switches, the reference after them, the sampler,
    the loop."""
    train_cfg = _train_cfg(max_steps=steps, lora=LoraConfig(enabled=lora, r=4, alpha=16))
    cfg = method_config(name, options)
    sampler = UnlearnSampler(FORGET, RETAIN, batches_for(name, cfg), train_cfg.batch_size, train_cfg.seed,
                             load_refusals(), random_k=2)
    cfg = resolve_config(name, cfg, sampler.steps_per_epoch, total_steps(train_cfg, sampler.steps_per_epoch))
    model = copy.deepcopy(target.model).train()
    if lora:
        torch.manual_seed(train_cfg.seed)
        model = apply_lora(model, train_cfg.lora, train_cfg)
    set_trainable(model, train_cfg)
    ref = Reference(model) if needs_reference_for(name, cfg) else None
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    method = get_method(name)
    train(model, target.processor, target.family, sampler, lambda m, b, step: method.loss(m, b, ref, cfg, step),
          train_cfg, TrainRun(out_dir))
    rows = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    unchanged = {n for n, p in model.named_parameters() if n in before and torch.equal(p, before[n])}
    return rows, unchanged


def _pinned_values(rows: list[dict]) -> list[dict[str, float]]:
    """Every logged number but the step and the lr (both set by the test)."""
    return [{k: v for k, v in row.items() if k not in ("step", "lr")} for row in rows]


# parameters no loss reaches on this model: the vision tower's post-layernorm (LLaVA reads the tower's
# hidden states, vision_feature_layer=-1, not the pooled output)
NO_GRADIENT_PATH = {"model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"}


def _no_gradient_above_rmu_layer(model, cfg) -> set[str]:
    """RMU's loss reads decoder layer ℓ's output: the layers above it, the final norm and the head get no
    gradient (with LoRA: the adapters of those layers)."""
    from clearbench.losses import language_layers, layer_index

    n_layers = len(language_layers(model))
    above = [f".language_model.layers.{i}." for i in range(layer_index(n_layers, cfg.layer_frac) + 1, n_layers)]
    return {n for n, p in model.named_parameters() if p.requires_grad and (
        any(a in n for a in above) or n.endswith((".language_model.norm.weight", "lm_head.weight")))}


@pytest.fixture(scope="module")
def runs(target, tmp_path_factory):
    """Each case's run, computed once for both tests below."""
    cache: dict[str, tuple] = {}

    def get(case: str):
        if case not in cache:
            name, options = CASES[case]
            cache[case] = run_method(target, name, options, tmp_path_factory.mktemp(case))
        return cache[case]

    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_losses_match_the_pin(runs, case):
    rows, _ = runs(case)
    values = _pinned_values(rows)
    assert len(values) == STEPS and all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in values)
    pins = json.loads(PIN.read_text()) if PIN.exists() else {"reasons": [], "steps": STEPS, "runs": {}}
    if os.environ.get("CLEARBENCH_UPDATE_PINS") == "1":
        pins["runs"][case] = values
        PIN.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        pytest.skip("pin rewritten; add the reason to its 'reasons' list")
    assert case in pins["runs"], f"no pin for {case}: run once with CLEARBENCH_UPDATE_PINS=1"
    pinned = pins["runs"][case]
    assert [sorted(v) for v in values] == [sorted(p) for p in pinned], "the logged terms changed"
    torch.testing.assert_close(
        torch.tensor([v[k] for v in values for k in sorted(v)], dtype=torch.float64),
        torch.tensor([p[k] for p in pinned for k in sorted(p)], dtype=torch.float64), rtol=RTOL, atol=ATOL,
        msg=lambda m: f"{case}: the first {STEPS} steps' logs moved from the pin (steps x {sorted(pinned[-1])}): {m}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_trainable_parameter_changed(runs, target, case):
    _, unchanged = runs(case)
    name, options = CASES[case]
    expected = set(NO_GRADIENT_PATH)
    if name == "rmu":
        expected |= _no_gradient_above_rmu_layer(target.model, method_config(name, options))
    assert unchanged == expected


@pytest.mark.parametrize("name", sorted(baselines.METHODS))
def test_every_adapter_weight_changed(target, tmp_path, name):
    """LoRA on the language model and the projector copy. B starts at 0, so A moves from the second step that
    has a gradient on; SCRUB's first max steps start at the teacher, where the gradient is 0 but for rounding."""
    _, unchanged = run_method(target, name, {}, tmp_path, lora=True)
    expected = set()
    if name == "rmu":
        lora_cfg = _train_cfg(lora=LoraConfig(enabled=True, r=4, alpha=16))
        model = apply_lora(copy.deepcopy(target.model), lora_cfg.lora, lora_cfg)
        set_trainable(model, lora_cfg)
        expected = _no_gradient_above_rmu_layer(model, method_config("rmu"))
    assert unchanged == expected
