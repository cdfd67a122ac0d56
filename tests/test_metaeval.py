"""The meta-evaluation (issue 18): the pool's exposures checked from the records each finetune stage selects, the
AUC against scikit-learn's and on uninformative metrics, the labels and orientations, and a tiny-smoke pool end to
end (stages, manifest, report; an AUC recomputed from the stored result files)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clearbench.config import BenchConfig, ConfigError, load_config
from clearbench.metaeval import exposure_counts
from clearbench.run import build_study
from eval import metaeval
from eval.metaeval_report import suggest

SMALL_POOL = ("metaeval.groups={target: {exposure: all, seeds: [1], lengths: [1.0, 0.5], parameterisations: [full, lora]}, "
              "gold: {exposure: none, seeds: [1, 2], lengths: [1.0], parameterisations: [full]}, "
              "text_only: {exposure: text, seeds: [1], lengths: [1.0], parameterisations: [full]}, "
              "visual_only: {exposure: visual, seeds: [1], lengths: [1.0], parameterisations: [full]}}")


def _pool_finetunes(cfg, tmp_path):
    return [s for s in build_study(cfg, tmp_path / "study") if s.kind == "finetune" and s.name.startswith("pool/")]


def _authors(world, config):
    return {r.author_id for r in world.records(config)}


def test_pool_models_saw_the_forget_authors_as_their_exposure_says(tiny_world, tmp_path):
    """Every pool model of the tiny preset's grid (its real data mixes: text QA, naming, a quarter of the joint
    records, replayed pretrain data), counted from the records its finetune stage selects."""
    cfg = load_config(BenchConfig, "tiny", ["metaeval.enabled=true"])
    stages = _pool_finetunes(cfg, tmp_path)
    assert len(stages) == 12 + 12 + 3 + 3  # the default grid: targets, golds, text-only, visual-only
    forget, retain = _authors(tiny_world, "forget10"), _authors(tiny_world, "retain90")
    full = exposure_counts(tiny_world, cfg.finetune.resolved_phases(), "full", "forget10")
    assert all(full.values()), full  # the target's data holds the forget authors in every modality
    want = {"all": full, "none": {"text": 0, "image": 0, "joint": 0},
            "text": {"text": full["text"], "image": 0, "joint": 0},
            # the preset replays a seeded quarter of the joint records: of the forget split's own, for these models
            "visual": {"text": 0, "image": full["image"], "joint": round(0.25 * len(tiny_world.records(
                "forget10", modalities=["joint"], tasks=["caption", "qa"], image_roles=["train", ""])))}}
    from clearbench.stages import select_records

    seen_exposures = set()
    for stage in stages:
        exposure = stage.args["cfg"].metaeval.pool_groups()[stage.name.split("/")[1].split("-")[0]].exposure
        seen_exposures.add(exposure)
        phases, split = stage.args["cfg"].finetune.resolved_phases(), stage.args["split"]
        assert exposure_counts(tiny_world, phases, split, "forget10") == want[exposure], stage.name
        # and every pool model saw every retain author, as the target and the gold do
        selected = {r.author_id for p in phases for r in select_records(tiny_world, p.data, split=split)}
        assert retain <= selected and (forget <= selected) == (exposure != "none")
    assert seen_exposures == {"all", "none", "text", "visual"}


def test_lengths_seeds_and_lora_reach_the_finetune_phases(tmp_path):
    cfg = load_config(BenchConfig, "tiny-smoke", ["metaeval.enabled=true", "metaeval.groups.target.lengths=[0.5]",
                                                  "metaeval.groups.gold.exposure=none",
                                                  "metaeval.parameterisations.lora={train: {lora: {enabled: true}, lr: 0.01}}"])
    stages = {s.name: s for s in _pool_finetunes(cfg, tmp_path)}
    phase = stages["pool/target-lora-s2-x0.5"].args["cfg"].finetune.phase
    base = cfg.finetune.phase.train
    assert (phase.train.seed, phase.train.max_steps, phase.train.lr, phase.train.lora.enabled) == (2, base.max_steps // 2,
                                                                                                    0.01, True)
    assert stages["pool/gold-full-s1-x1"].args["split"] == "retain90"
    assert len({s.key for s in stages.values()}) == len(stages) == 6 + 12  # every pool model is its own stage
    # a preset's groups replace the default pool whole (else a default group could never be dropped)
    one = load_config(BenchConfig, "tiny-smoke", ["metaeval.enabled=true", "metaeval.groups={only: {exposure: none, "
                                                  "seeds: [4], lengths: [1.0], parameterisations: [full]}}"])
    assert [s.name for s in _pool_finetunes(one, tmp_path)] == ["pool/only-full-s4-x1"]


def test_pool_config_mistakes_fail_when_planned(tmp_path):
    with pytest.raises(ConfigError, match="Unknown parameterisation 'lorra'"):
        load_config(BenchConfig, "tiny-smoke", ["metaeval.groups.target.parameterisations=[lorra]"])
    cfg = load_config(BenchConfig, "tiny-smoke", ["metaeval.enabled=true", "metaeval.attacks=[quantise]"])
    with pytest.raises(ConfigError, match="Did you mean 'quantize'"):
        build_study(cfg, tmp_path)
    # a pool gold identical to the reference gold would compare it with itself
    cfg = load_config(BenchConfig, "tiny-smoke", ["metaeval.enabled=true", "metaeval.groups.gold.exposure=none",
                                                  "metaeval.groups.gold.seeds=[0]",
                                                  "metaeval.groups.gold.lengths=[1.0]",
                                                  "metaeval.groups.gold.parameterisations=[full]"])
    with pytest.raises(ConfigError, match="is the reference gold"):
        build_study(cfg, tmp_path)


def test_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for n_pos, n_neg in ((1, 1), (3, 5), (12, 17), (40, 9)):
        pos, neg = rng.integers(0, 4, n_pos).astype(float), rng.integers(0, 4, n_neg).astype(float)  # many ties
        labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        if len(set(labels)) == 2:
            assert metaeval.auc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)


def test_uninformative_metrics_get_auc_one_half():
    assert metaeval.auc([0.3] * 7, [0.3] * 9) == 0.5
    assert metaeval.auc_interval([0.3] * 7, [0.3] * 9, 200, 0) == (0.5, 0.5)
    # a random score, drawn alike for knowers and not: AUC 0.5 on average, and the interval covers 0.5 about as
    # often as its level says (over 300 pools of 12 positives and 12 negatives)
    rng = np.random.default_rng(1)
    aucs, covered = [], 0
    for i in range(300):
        pos, neg = rng.normal(size=12), rng.normal(size=12)
        aucs.append(metaeval.auc(pos, neg))
        lo, hi = metaeval.auc_interval(pos, neg, 300, i)
        covered += lo <= 0.5 <= hi
    assert abs(np.mean(aucs) - 0.5) < 0.02 and 0.88 <= covered / 300 <= 0.99
    assert metaeval.auc_interval(pos + 10, neg, 300, 0) == (1.0, 1.0)  # a separating score's interval: [1, 1]
    assert metaeval.auc_interval(pos + 3, neg, 300, 0)[0] > 0.6
    assert metaeval.auc_interval(pos, neg, 300, 0) == metaeval.auc_interval(pos, neg, 300, 0)  # seeded


def test_labels_and_orientations_follow_exposure_and_declared_direction():
    exposed = {"t": ["text", "image", "joint"], "g": [], "x": ["text"], "v": ["image", "joint"]}
    assert [metaeval.label(exposed[m], "forget/text/rouge_l") for m in "tgxv"] == [1, 0, 1, 0]
    assert [metaeval.label(exposed[m], "forget/image@heldout/naming_acc") for m in "tgxv"] == [1, 0, 0, 1]
    assert [metaeval.label(exposed[m], "forget/all/forget_quality") for m in "tgxv"] == [1, 0, None, None]
    # lower is better on forget: the value; higher (forget quality's p): its negative; MIA AUC: distance from gold's
    assert metaeval.knowledge("forget/text/rouge_l", 0.8) == 0.8
    assert metaeval.knowledge("forget/all/forget_quality", 0.01) == -0.01
    assert metaeval.knowledge("forget/text/truth_ratio", 0.9) == -0.9  # min(TR, 1/TR): 1 = indifferent
    assert metaeval.knowledge("mia/text/loss_auc", 0.9, gold=0.55) == pytest.approx(0.35)
    assert metaeval.knowledge("mia/text/loss_privleak", -40.0) == 40.0
    assert metaeval.orientation("forget/all/forget_quality_n") is None and metaeval.orientation("forget/text/n") is None
    assert metaeval.knowledge("relearn:forget_n10/text/probability_delta", 0.2) == 0.2
    assert metaeval.orientation("quantize:gold/text/probability") is None
    with pytest.raises(ValueError, match="Did you mean 'rouge_l'"):
        metaeval.orientation("forget/text/rouge_k")


def test_faithfulness_of_synthetic_pool_values():
    """Known answers: a rouge that the text-exposed models share with the targets, a forget quality that is lower
    for knowers, a constant; the one-modality models count per modality, and only against the no-exposure models
    in the cross-modal separation."""
    exposed = {**{f"t{i}": ["text", "image", "joint"] for i in range(4)}, **{f"g{i}": [] for i in range(4)},
               "x0": ["text"], "x1": ["text"], "v0": ["image", "joint"]}
    knows_text = {m: 1.0 if "text" in e else 0.0 for m, e in exposed.items()}
    values = {m: {"forget/text/rouge_l": 0.2 + 0.7 * knows_text[m], "forget/image/rouge_l": 0.4,
                  "forget/all/forget_quality": 1e-4 if m.startswith("t") else 0.6} for m in exposed}
    rows = metaeval.faithfulness(values, exposed, {}, n_boot=100, seed=0)
    text = rows["forget/text/rouge_l"]
    assert (text["auc"], text["n_pos"], text["n_neg"]) == (1.0, 6, 5)
    assert text["cross"]["text"]["auc"] == 1.0 and text["cross"]["image+joint"]["auc"] == 0.5
    assert rows["forget/image/rouge_l"]["auc"] == 0.5 and rows["forget/image/rouge_l"]["n_pos"] == 5
    fq = rows["forget/all/forget_quality"]
    assert (fq["auc"], fq["n_pos"], fq["n_neg"], fq["clean"]["auc"]) == (1.0, 4, 4, 1.0)


def test_suggested_column_ties_go_to_the_key_specific_to_its_modality():
    """Two text keys separate the pool perfectly; the one that also lights up for image-only exposure (a leak across
    modalities) loses the tie, whatever its name; a key that fails the robustness bar is never suggested."""
    exposed = {**{f"t{i}": ["text", "image", "joint"] for i in range(4)}, **{f"g{i}": [] for i in range(4)},
               "x0": ["text"], "x1": ["text"], "v0": ["image", "joint"], "v1": ["image", "joint"]}
    knows_text = {m: "text" in e for m, e in exposed.items()}
    values = {m: {"forget/text/rouge_l": 0.9 if k else 0.2, "forget/text/probability": 0.9 if k else 0.2}
              for m, k in knows_text.items()}
    for m in ("v0", "v1"):  # the image-only models (text negatives) score between on the leaky key only
        values[m]["forget/text/probability"] = 0.55
    rows = metaeval.faithfulness(values, exposed, {}, n_boot=100, seed=0)
    for r in rows.values():
        r["worst_auc"] = None
    assert rows["forget/text/probability"]["auc"] == rows["forget/text/rouge_l"]["auc"] == 1.0
    assert rows["forget/text/probability"]["cross"]["image+joint"]["auc"] == 1.0
    assert suggest(rows)["text"] == "forget/text/rouge_l"
    rows["forget/text/rouge_l"]["worst_auc"] = 0.6
    assert suggest(rows)["text"] == "forget/text/probability"


# ------------------------------------------------------------------------------------- end to end
def test_tiny_smoke_pool_runs_end_to_end(tmp_path):
    from clearbench.executor import run_study

    cfg = load_config(BenchConfig, "tiny-smoke", [
        "metaeval.enabled=true", "study.eval_max_per_config=0", "study.eval_max_per_cell=2", SMALL_POOL,
        "metaeval.attacks=[quantize, relearn]", "metaeval.bootstrap=200",
        "metaeval.attack_options={quantize: {schemes: [int8, int4]}, relearn: {n: [2], benign: [], curve_every: 0, "
        "train: {lr: 1.0e-3, max_steps: 2}}}"])
    out = tmp_path / "pool"
    ran = run_study(cfg, out, echo=lambda s: None)
    assert "report" in ran and "target" not in ran and not any(n.startswith("unlearn/") for n in ran)
    report_dir = out / "report"
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert {m["name"]: m["exposed"] for m in manifest["models"]} == {
        **{f"target-{p}-s1-x{x}": ["text", "image", "joint"] for p in ("full", "lora") for x in ("1", "0.5")},
        "gold-full-s1-x1": [], "gold-full-s2-x1": [], "text_only-full-s1-x1": ["text"],
        "visual_only-full-s1-x1": ["image", "joint"]}
    for m in manifest["models"]:  # provenance: the run record of the very model that was evaluated
        result = json.loads(open(m["result"]).read())
        assert m["run"]["model_fingerprint"] == result["provenance"]["model_fingerprint"]
        assert m["run"]["stage"] == "finetune" and (out / "pool" / m["name"] / "run.json").is_file()
    report = json.loads((report_dir / "metaeval.json").read_text())
    # an AUC recomputed independently from the stored result files: scikit-learn on the labelled values
    k = "forget/text/rouge_l"
    vals = {m["name"]: json.loads(open(m["result"]).read())["aggregates"]["metrics"][k] for m in manifest["models"]}
    labels = {m["name"]: int("text" in m["exposed"]) for m in manifest["models"]}
    names = sorted(vals)
    expected = roc_auc_score([labels[n] for n in names], [vals[n] for n in names])  # rouge: higher = knows
    assert report["keys"][k]["auc"] == pytest.approx(expected) and report["keys"][k]["n_pos"] == 5
    # robustness: the evaluation's forget keys after each attack setting; attack scores judged as metrics
    assert set(report["keys"][k]["robustness"]) == {"quantize:int8", "quantize:int4", "relearn:forget_n2"}
    assert "quantize:int4/text/probability" in report["keys"]
    assert "mia/text/loss_auc" in report["keys"] and not report["keys"]["mia/text/loss_auc"]["robustness"]
    md = (report_dir / "metaeval.md").read_text()
    assert "## Faithfulness and robustness: image" in md and "## Cross-modal" in md and "`forget/text/rouge_l`" in md
    assert (report_dir / "metaeval.png").stat().st_size > 20_000
    assert set(run_study(cfg, out, echo=lambda s: None).values()) == {"skipped"}
