"""Unlearning methods: hand-computed formulas, and every method trained on a tiny real LLaVA."""
from __future__ import annotations

import copy
import inspect
import math
import random
import re
from pathlib import Path

import pytest
import torch

import baselines
from baselines import (batches_for, clear_recipe, dpo, get_method, grad_ascent, grad_diff, idk, kl, llmu,
                       method_config, needs_reference_for, npo, resolve_config, retain_ft, rmu, scrub, simnpo, sku)
from baselines.batches import idk_records, load_refusals, random_records
from clearbench.losses import StepInfo, language_layers, logit_mask, masked_mse, mean_nll, model_inputs
from clearbench.reference import Reference
from clearbench.types import Modality, Record, Task

try:
    from tests.tiny_vlm import add_lora, tiny_target, tiny_vlm  # noqa: F401
    from tests.tiny_vlm import all_batches as _tiny_batches
except ImportError:
    from tiny_vlm import add_lora, tiny_target, tiny_vlm  # noqa: F401
    from tiny_vlm import all_batches as _tiny_batches

T = torch.tensor
ASCENT = ("grad_ascent", "grad_diff", "kl", "npo", "simnpo", "llmu", "dpo")


def all_batches() -> dict[str, dict[str, torch.Tensor]]:
    """tiny_vlm's hand-built batches, one per batch kind ("random_forget" rows are shaped like "random")."""
    bt = _tiny_batches()
    return bt | {"random_forget": bt["random"]}


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- formulas, by hand

def test_simple_formulas_by_hand():
    assert retain_ft.formula(T(2.0)).item() == 2.0
    assert grad_ascent.formula(T(2.0)).item() == -2.0
    assert grad_diff.formula(T(2.0), T(3.0), 0.5, 2.0).item() == pytest.approx(-1.0 + 6.0)
    assert kl.formula(T(2.0), T(0.25), 1.0, 1.0).item() == pytest.approx(-1.75)
    assert idk.formula(T(1.5), T(0.5), 1.0, 2.0).item() == pytest.approx(2.5)
    assert llmu.formula(T(2.0), T(3.0), T(0.5), 0.5, 1.0, 1.0).item() == pytest.approx(-1.0 + 3.0 + 0.5)
    assert sku.formula(T(2.0), T(3.0), T(0.5), 0.5, 1.0, 1.0).item() == pytest.approx(1.0 + 3.0 - 0.5)


def test_dpo_formula_by_hand():
    # idk log-ratio 1, forget log-ratio 0 -> margin 1; β = 0.1 -> -log σ(0.1)
    got = dpo.formula(T([-2.0]), T([-3.0]), T([-1.0]), T([-1.0]), beta=0.1)
    assert got.item() == pytest.approx(-math.log(sig(0.1)))
    got2 = dpo.formula(T([-2.0, -1.0]), T([-2.0, -1.0]), T([-1.0, -4.0]), T([-3.0, -1.0]), beta=0.5)
    assert got2.item() == pytest.approx((-math.log(sig(-1.0)) - math.log(sig(1.5))) / 2)
    assert dpo.clear_formula(T([-2.0, -4.0])).item() == pytest.approx(3.0)  # mean summed NLL


def test_npo_formula_by_hand():
    # π_θ/π_ref = 2 -> (2/β)·log(1 + 2^β)
    got = npo.formula(T([math.log(0.2)]), T([math.log(0.1)]), beta=0.5)
    assert got.item() == pytest.approx(4 * math.log(1 + 2 ** 0.5), rel=1e-5)
    # at π_θ = π_ref the loss is (2/β)·log 2 for every β
    assert npo.formula(T([-3.0, -1.0]), T([-3.0, -1.0]), beta=0.1).item() == pytest.approx(20 * math.log(2), rel=1e-5)


def test_npo_clear_formula_by_hand():
    p = torch.tensor([[[0.5, 0.5], [0.8, 0.2]]]).log()  # θ, (1, 2, 2)
    q = torch.tensor([[[0.25, 0.75], [0.8, 0.2]]]).log()  # reference
    beta, eps = 1.0, 1e-8
    entries = [0.5 / (0.25 + eps), 0.5 / (0.75 + eps), 0.8 / (0.8 + eps), 0.2 / (0.2 + eps)]
    expected = 2 / beta * sum(math.log(1 + r ** beta) for r in entries) / 4
    assert npo.clear_formula(p, q, beta).item() == pytest.approx(expected, rel=1e-5)


def test_simnpo_formula_by_hand():
    # log π = -4 over |y| = 2 tokens, β = 2, γ = 0.5: -(2/2)·log σ(-(2/2)·(-4) - 0.5) = -log σ(3.5)
    got = simnpo.formula(T([-4.0]), T([2.0]), beta=2.0, gamma=0.5)
    assert got.item() == pytest.approx(-math.log(sig(3.5)), rel=1e-5)


def test_scrub_distill_kl_and_formula_by_hand():
    teacher = torch.tensor([[[2.0, 0.0]]])
    student = torch.tensor([[[0.0, 0.0]]])
    tau = 2.0
    pt = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]  # softmax([2, 0] / 2)
    kl_ = sum(p * math.log(p / 0.5) for p in pt) * tau ** 2
    got = scrub.distill_kl(teacher, student, torch.tensor([[True]]), tau)
    assert got.item() == pytest.approx(kl_, rel=1e-5)
    assert scrub.formula("max", T(2.0), None, 0.1, 1.0).item() == -2.0
    assert scrub.formula("min", T(2.0), T(3.0), 0.1, 1.0).item() == pytest.approx(3.2)


def test_rmu_formula_and_control_vector_by_hand():
    u = rmu.control_vector(4, 6.5, seed=3)
    assert u.shape == (1, 1, 4) and u.norm().item() == pytest.approx(6.5) and (u >= 0).all()
    assert torch.equal(u, rmu.control_vector(4, 6.5, seed=3))  # fixed per run
    acts_f = torch.ones(2, 2, 2)
    control = torch.zeros(1, 1, 2)
    acts_r, ref_r = torch.full((1, 2, 2), 3.0), torch.full((1, 2, 2), 1.0)
    mask2, mask1 = torch.ones(2, 2, dtype=torch.bool), torch.tensor([[True, False]])
    assert rmu.formula(acts_f, control, mask2, acts_r, ref_r, mask1, alpha=10.0).item() == pytest.approx(1 + 10 * 4)


def test_rmu_scale_and_positions_by_hand():
    acts = torch.zeros(1, 3, 4)
    acts[0, 0, 0], acts[0, 1, 1], acts[0, 2, 2] = 3.0, 5.0, 100.0  # token norms 3, 5, 100
    mask = torch.tensor([[True, True, False]])
    assert rmu.scale(method_config("rmu"), acts, mask) == pytest.approx(3.0 * 4.0)  # default: 3 x mean norm
    assert rmu.scale(method_config("rmu", {"steering_coeff": 2.0}), acts, mask) == pytest.approx(8.0)
    assert rmu.scale(method_config("rmu", {"steering_scale": "absolute", "steering_coeff": 6.5}), acts, mask) == 6.5
    batch = {"labels": T([[-100, -100, 7, 8, 9], [-100, -100, -100, 7, 8]]), "attention_mask": torch.ones(2, 5)}
    assert rmu._mask(batch, "answer").tolist() == [[False, False, True, True, True], [False, False, False, True, True]]
    # "predict": the positions whose outputs predict answer tokens (the first one included, the last one not)
    assert rmu._mask(batch, "predict").tolist() == [[False, True, True, True, False], [False, False, True, True, False]]
    assert method_config("rmu", clear_recipe("rmu")).steering_scale == "absolute"
    with pytest.raises(ValueError, match="Did you mean 'norm'"):
        method_config("rmu", {"steering_scale": "nrom"})


def test_sku_negation_by_hand():
    assert sku.negate(T([1.0, 2.0]), T([1.5, 1.0])).tolist() == [0.5, 3.0]


# ---------------------------------------------------------------- every method on the tiny VLM

def _run(model, name, cfg, steps=3, lr=0.05, epoch=0):
    module = get_method(name)
    cfg = resolve_config(name, cfg, steps_per_epoch=1, total_steps=steps)  # as the trainer does, one step per epoch
    bt = all_batches()
    ref = Reference(model) if needs_reference_for(name, cfg) else None
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    logs_seen = []
    for s in range(steps):
        opt.zero_grad()
        total, logs = module.loss(model, {k: bt[k] for k in batches_for(name, cfg)}, ref, cfg, StepInfo(s, steps, epoch))
        assert torch.isfinite(total) and all(isinstance(v, float) for v in logs.values())
        total.backward()
        opt.step()
        logs_seen.append(logs)
    return ref, logs_seen


def _forget_nll(model):
    b = all_batches()["forget"]
    with torch.no_grad():
        return mean_nll(model(**model_inputs(b)).logits, b["labels"]).item()


@pytest.mark.parametrize("name", sorted(baselines.METHODS))
def test_method_trains_full_parameter(tiny_target, name):
    model = copy.deepcopy(tiny_target).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    nll0 = _forget_nll(model)
    probe = all_batches()["retain"]
    ref_before = Reference(model)(probe)
    ref, _ = _run(model, name, method_config(name))
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), "parameters did not change"
    if ref is not None:
        assert ref.kind == "copy" and torch.equal(ref(probe), ref_before)
    if name in ASCENT:
        assert _forget_nll(model) > nll0 + 1e-3


@pytest.mark.parametrize("name", sorted(baselines.METHODS))
def test_method_reaches_lora_with_gradient_checkpointing(tiny_target, name):
    model = add_lora(copy.deepcopy(tiny_target), checkpointing=True)
    assert model.is_gradient_checkpointing
    cfg = method_config(name)
    probe = all_batches()["retain"]
    ref, _ = _run(model, name, cfg, steps=1, lr=0.0)  # lr 0: inspect the gradients of step 0
    lora_grads = [p.grad.abs().sum().item() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert lora_grads and max(lora_grads) > 0, "no gradient reached the LoRA weights"
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    if ref is not None:
        assert ref.kind == "adapter-disabled"
        before = ref(probe)
        _run(model, name, cfg, steps=2, lr=0.01)
        assert torch.equal(ref(probe), before)


@pytest.mark.parametrize("name", ["dpo", "npo", "llmu", "rmu", "sku"])
def test_clear_recipes_run(tiny_target, name):
    cfg = method_config(name, clear_recipe(name))
    model = copy.deepcopy(tiny_target).train()
    _run(model, name, cfg, steps=1)
    if name == "dpo":
        assert batches_for(name, cfg) == ("idk",) and not needs_reference_for(name, cfg)
    if name == "npo":
        assert cfg.mode == "clear" and cfg.beta == 1.0
    if name == "llmu":
        assert batches_for(name, cfg) == ("forget", "idk", "retain")
    if name == "rmu":
        assert (cfg.steering_coeff, cfg.steering_scale, cfg.alpha, cfg.positions) == (300.0, "absolute", 1.0, "valid")


def test_npo_retain_term_adds_the_retain_batch():
    assert batches_for("npo", method_config("npo", {"retain_weight": 1.0})) == ("forget", "retain")


def test_rmu_hook_sits_on_the_configured_layer(tiny_target):
    model = add_lora(copy.deepcopy(tiny_target), checkpointing=True)
    f = all_batches()["forget"]
    assert rmu.Config().layer_frac == pytest.approx(7 / 31)
    for frac, idx in ((0.0, 0), (1.0, 1)):
        acts = rmu.layer_activations(model, f, idx)
        with torch.no_grad():
            hidden = model(**model_inputs(f), output_hidden_states=True).hidden_states
        if idx == 0:  # hidden_states[i + 1] is layer i's output (the last one is normed, so compare layer 0 only)
            torch.testing.assert_close(acts, hidden[1])
        _, logs = _run(model, "rmu", method_config("rmu", {"layer_frac": frac}), steps=1, lr=0.0)
        assert logs[0]["layer"] == float(idx)
        layer_grads = {i: sum(p.grad.abs().sum().item() for n, p in layer.named_parameters() if p.grad is not None)
                       for i, layer in enumerate(language_layers(model))}
        assert layer_grads[idx] > 0 and all(g == 0 for i, g in layer_grads.items() if i > idx)
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("trained", ["all", "mlp"])
def test_rmu_steers_forget_activations_to_the_control_vector(tiny_target, trained):
    """Ten Adam steps of RMU at layer 0 (default c = 3x the layer's norm; alpha 10 as the tiny preset), training
    everything (the trainer's default) or only the hooked layer's MLP (WMDP trains MLPs of layers l-2..l):
    the trained weights of layer 0 change and layer 1's do not; the forget activations turn to u and close
    in on c·u while the retain activations keep their direction."""
    cfg = method_config("rmu", {"alpha": 10.0, "layer_frac": 0.0})
    model = copy.deepcopy(tiny_target).train()
    layers = language_layers(model)
    if trained == "mlp":
        model.requires_grad_(False)
        layers[0].mlp.requires_grad_(True)
    f, r = all_batches()["forget"], all_batches()["retain"]
    m_f, m_r = rmu._mask(f, cfg.positions), rmu._mask(r, cfg.positions)
    ref = Reference(model)
    with torch.no_grad():
        f0, r0 = rmu.layer_activations(model, f, 0), rmu.layer_activations(model, r, 0)
    c, u = rmu.scale(cfg, r0, m_r), rmu.control_vector(f0.shape[-1], 1.0, cfg.seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for s in range(10):
        opt.zero_grad()
        total, logs = rmu.loss(model, {"forget": f, "retain": r}, ref, cfg, StepInfo(s, 10, 0))
        total.backward()
        if s == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[0].mlp.parameters())
            assert logs["layer"] == 0.0 and logs["steering_c"] == pytest.approx(c)
        opt.step()
    with torch.no_grad():
        f1, r1 = rmu.layer_activations(model, f, 0), rmu.layer_activations(model, r, 0)
    mlp = {n for n, _ in model.named_parameters() if ".layers.0.mlp." in n and "language_model" in n}
    assert len(mlp) == 3 and all((model.get_parameter(n) - before[n]).abs().max() > 1e-3 for n in mlp)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()
               if ".layers.1." in n and "language_model" in n)

    def cos(h, m):
        return torch.nn.functional.cosine_similarity(h[m], u[0], dim=-1).mean().item()

    assert cos(f0, m_f) < 0.2 and cos(f1, m_f) > 0.7  # measured -0.03 -> 0.99 (all), 0.97 (mlp)
    assert masked_mse(f1, c * u, m_f) < 0.5 * masked_mse(f0, c * u, m_f)  # measured 1.02 -> 0.04 (all), 0.05 (mlp)
    assert abs(cos(r1, m_r) - cos(r0, m_r)) < 0.25  # the retain activations are not steered


def test_scrub_paper_schedule_passes():
    """SCRUB's loop: per epoch a forget pass of max steps (first msteps epochs only), then a retain pass."""
    cfg = resolve_config("scrub", method_config("scrub"), steps_per_epoch=3, total_steps=20)
    assert (cfg.schedule, cfg.max_epochs, cfg.pass_steps) == ("paper", 2, 3)
    got = "".join("M" if scrub.phase(StepInfo(s, 20, s // 3), cfg) == "max" else "m" for s in range(16))
    assert got == "MMMmmmMMMmmmmmmm"
    assert resolve_config("scrub", method_config("scrub", {"pass_steps": 2}), 3, 20).pass_steps == 2  # set by hand
    with pytest.raises(ValueError, match="resolve_config"):
        scrub.phase(StepInfo(0, 20, 0), method_config("scrub"))  # unresolved: no silent guess of the pass length
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        resolve_config("scrub", method_config("scrub"), 0, 20)
    assert resolve_config("npo", method_config("npo"), 3, 20) == method_config("npo")  # no hook: unchanged


def test_scrub_alternate_schedule(tiny_target):
    cfg = method_config("scrub", {"schedule": "alternate", "max_epochs": 1, "max_every": 2})
    assert [scrub.phase(StepInfo(s, 8, 0), cfg) for s in range(4)] == ["max", "min", "max", "min"]
    assert [scrub.phase(StepInfo(s, 8, 1), cfg) for s in range(4, 8)] == ["min"] * 4
    model = copy.deepcopy(tiny_target).train()
    _, logs = _run(model, "scrub", cfg, steps=3)
    assert [entry["phase_max"] for entry in logs] == [1.0, 0.0, 1.0]
    _, logs = _run(model, "scrub", cfg, steps=2, epoch=1)
    assert [entry["phase_max"] for entry in logs] == [0.0, 0.0]


def test_sku_negation_full_parameter(tiny_target):
    model = copy.deepcopy(tiny_target).train()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    _run(model, "sku", method_config("sku"), steps=2)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    sku.on_train_end(model, theta0, method_config("sku"))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, theta0[n] - (theta[n] - theta0[n]))
    assert any(not torch.equal(theta[n], theta0[n]) for n in theta)


def test_sku_negation_lora_negates_the_effective_update(tiny_target):
    model = add_lora(copy.deepcopy(tiny_target), checkpointing=False)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _run(model, "sku", method_config("sku"), steps=2, lr=0.5)
    lora_layers = [m for m in model.modules() if hasattr(m, "get_delta_weight") and hasattr(m, "lora_A")]
    harmful = [m.get_delta_weight("default").clone() for m in lora_layers]
    assert any(d.abs().sum() > 0 for d in harmful)
    sku.on_train_end(model, theta0, method_config("sku"))
    for m, d in zip(lora_layers, harmful):
        torch.testing.assert_close(m.get_delta_weight("default"), -d)  # W0 + Δ' = W0 − (W_harm − W0)


def test_sku_clear_recipe_skips_negation(tiny_target):
    model = copy.deepcopy(tiny_target)
    theta0 = {n: p.detach().clone() + 1 for n, p in model.named_parameters()}
    sku.on_train_end(model, theta0, method_config("sku", clear_recipe("sku")))
    assert all(not torch.equal(p, theta0[n]) for n, p in model.named_parameters())


# ---------------------------------------------------------------- answer-position logits == full logits

# every method with its default config, plus the variants that change which terms run
ANSWER_LOGITS_CASES = [(name, {}, 0) for name in sorted(baselines.METHODS)] + [
    ("scrub", {}, 1),  # the min phase: KL and NLL of the retain batch from one forward
    ("npo", {"retain_weight": 1.0}, 0), ("dpo", {"retain_weight": 1.0}, 0), ("llmu", {"completions": "idk"}, 0),
    ("llmu", {"completions": "random_forget"}, 0),
    ("npo", clear_recipe("npo"), 0), ("dpo", clear_recipe("dpo"), 0),
]


def _loss_grads_head_rows(model, name, cfg, batches, ref, step):
    """One step's loss, logs and parameter gradients, and the row count of every output-head call."""
    cfg = resolve_config(name, cfg, steps_per_epoch=1, total_steps=4)
    rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: rows.append(args[0].shape[:-1].numel()))
    model.zero_grad(set_to_none=True)
    try:
        total, logs = get_method(name).loss(model, batches, ref, cfg, StepInfo(step, 4, 0))
        total.backward()
    finally:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return total.detach(), logs, grads, rows


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name,overrides,step", ANSWER_LOGITS_CASES)
def test_method_on_answer_logits_matches_full_logits(tiny_target, monkeypatch, name, overrides, step, lora):
    """The methods' NLL / log-prob / KL terms run the output head at answer positions only (answer_logits,
    reference included); forcing the full-logits path (a forward without ``logits_to_keep``) gives the same
    loss, logs and gradients. The head is checked to see N answer rows instead of B x T."""
    cfg = method_config(name, overrides)
    model = copy.deepcopy(tiny_target).train()
    if lora:
        model = add_lora(model, checkpointing=True)
    ref = Reference(model) if needs_reference_for(name, cfg) else None
    with torch.no_grad():  # move away from the reference (and LoRA B from 0) so that KL terms have gradients
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    bt = all_batches()
    batches = {k: bt[k] for k in batches_for(name, cfg)}
    new, logs_new, g_new, rows_new = _loss_grads_head_rows(model, name, cfg, batches, ref, step)
    monkeypatch.setattr("clearbench.losses._takes_logits_to_keep", lambda m: False)
    old, logs_old, g_old, rows_old = _loss_grads_head_rows(model, name, cfg, batches, ref, step)

    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    assert logs_new.keys() == logs_old.keys()
    for key in logs_old:
        assert logs_new[key] == pytest.approx(logs_old[key], rel=1e-5, abs=1e-6), key
    assert g_new.keys() == g_old.keys() and len(g_old) > 0
    for n in g_old:
        torch.testing.assert_close(g_new[n], g_old[n], rtol=1e-4, atol=1e-6, msg=n)
    full = {b["input_ids"].numel() for b in batches.values()}
    answers = {int(logit_mask(b["labels"]).sum()) for b in batches.values()}
    assert len(rows_new) == len(rows_old) and set(rows_old) <= full
    if name == "rmu":  # hidden states only: the forward stops before the head
        assert rows_new == []
    elif getattr(cfg, "mode", "") == "clear" and name == "npo":  # CLEAR's NPO: ratios over every position
        assert rows_new == rows_old
    else:
        assert rows_new and set(rows_new) <= answers and not answers & full


# ---------------------------------------------------------------- registry and contract

def test_unknown_method_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Unknown method 'npp'\. Did you mean 'npo'\?"):
        get_method("npp")


def test_method_config_rejects_unknown_keys_and_wrong_types():
    assert method_config("npo", {"beta": 1}).beta == 1.0  # int accepted for float
    with pytest.raises(ValueError, match="Did you mean 'beta'"):
        method_config("npo", {"betta": 0.2})
    with pytest.raises(TypeError, match="'beta' must be float"):
        method_config("npo", {"beta": "0.2"})
    with pytest.raises(TypeError, match="must be int"):
        method_config("scrub", {"max_every": True})
    with pytest.raises(ValueError, match="Did you mean 'clear'"):
        method_config("dpo", {"mode": "clera"})
    with pytest.raises(ValueError, match="takes no options"):
        method_config("grad_ascent", {"beta": 1.0})


@pytest.mark.parametrize("name", sorted(baselines.METHODS))
def test_module_contract(name):
    module = baselines.METHODS[name]
    assert module.NAME == name and Path(module.__file__).stem == name
    assert set(module.BATCHES) <= set(baselines.BATCH_KINDS) and isinstance(module.NEEDS_REFERENCE, bool)
    assert module.__doc__ and "=" in module.__doc__ and "20" in module.__doc__  # paper (year) and formula
    assert list(inspect.signature(module.loss).parameters) == ["model", "batches", "ref", "cfg", "step"]
    source = Path(module.__file__).read_text()
    imported = set(re.findall(r"^(?:from|import) baselines(?:\.(\w+))?", source, flags=re.M))
    assert len(source.splitlines()) <= 150 and imported <= {"terms"}  # short; no other method, only shared terms


# ---------------------------------------------------------------- extra batch kinds

def _rec(i: int, answer: str) -> Record:
    return Record(id=f"r{i}", author_id=f"a{i}", split="forget10", modality=Modality.TEXT, task=Task.QA,
                  question=f"Where was author {i} born?", answer=answer, paraphrased_answer="p",
                  perturbed_answers=("x", "y"))


def test_refusals_file_has_100_distinct_phrasings():
    refusals = load_refusals()
    assert len(refusals) >= 100 and len(set(refusals)) == len(refusals)
    assert all(r == r.strip() and r for r in refusals)


def test_idk_and_random_records_keep_the_question():
    forget = [_rec(i, f"answer {i}") for i in range(3)]
    refusals = load_refusals()
    out = idk_records(forget, refusals, random.Random(0))
    assert [r.question for r in out] == [r.question for r in forget]
    assert all(r.answer in refusals and r.perturbed_answers == () for r in out)
    rnd = random_records(forget, forget, random.Random(0), k=2)
    assert len(rnd) == 6 and [r.question for r in rnd] == [f.question for f in forget for _ in range(2)]
    assert all(r.answer != forget[i // 2].answer for i, r in enumerate(rnd))
    assert random_records(forget, forget, random.Random(5), k=2) == random_records(forget, forget, random.Random(5), k=2)
    with pytest.raises(ValueError, match="no record in the pool"):
        random_records(forget[:1], forget[:1], random.Random(0))


def test_llmu_and_sku_ask_for_their_donors():
    assert batches_for("llmu", method_config("llmu")) == ("forget", "random", "retain")  # the paper: normal data
    assert batches_for("llmu", method_config("llmu", {"completions": "random_forget"})) == ("forget", "random_forget", "retain")
    assert batches_for("sku", method_config("sku")) == ("forget", "random_forget", "retain")  # SKU: other harmful answers
    with pytest.raises(ValueError, match="Did you mean 'random_forget'"):
        method_config("llmu", {"completions": "random_foget"})
