"""The evaluation suite end to end on a tiny model trained on the tiny world: result validity,
one scoring pass (batching/padding correctness), resume, shards, and bad inputs."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from pathlib import Path

import pytest
import torch

from clearbench import scoring
from clearbench.config import TrainConfig
from clearbench.cost import check_cost
from clearbench.lora import set_trainable
from clearbench.models import load_model, tiny_llava
from clearbench.provenance import model_fingerprint, write_json_atomic
from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train
from eval import outputs
from eval.aggregate import MissingGoldError
from eval.evaluate import EvalConfig, cell_of, eval_configs, evaluate, merge, select_records, write_shard
from eval.results import recompute, validate

# A smaller shape than the default (4 image tokens, width 64): the mechanics do not depend on size.
SHAPE = tiny_llava.TinyConfig(image_size=32, patch_size=16, vision_width=32, text_width=64, mlp=256,
                              vocab_size=1024)
CFG = EvalConfig(forget="forget10", batch_size=16, max_new_tokens=12)


# ------------------------------------------------------------------------------------ fixtures
@functools.cache
def _build_models(world_path: str, root: str) -> dict[str, Path]:
    """base (tokenizer trained on the world's text) -> target (full) and gold (retain90), 30 steps
    each. Memoised so the CLI test module reuses the same checkpoints."""
    from clearbench.data import open_world

    world = open_world(world_path)
    root_p = Path(root)
    base = tiny_llava.build(world.texts(), root_p / "base", SHAPE)
    runs = {}
    for name, split in (("target", "full"), ("gold", "retain90")):
        loaded = load_model(base)
        cfg = TrainConfig(lr=5e-3, max_steps=30, batch_size=16, micro_batch_size=16, seed=0, log_every=10,
                          augment=False)
        model = loaded.model.train()
        set_trainable(model, cfg)
        records = world.records(split, image_roles=["train", ""])
        train(model, loaded.processor, loaded.family, ShuffleSampler(records, cfg.batch_size, seed=0),
              example_nll_loss, cfg, TrainRun(root_p / name / "train", desc=name))
        run = root_p / name
        tiny_llava.save(model.eval(), loaded.processor, run / "model", SHAPE)
        write_json_atomic(run / "run.json", {
            "stage": "finetune", "split": split, "world_fingerprint": world.fingerprint, "parent": None,
            "model_fingerprint": model_fingerprint(run / "model")})
        runs[name] = run
    return runs


@pytest.fixture(scope="session")
def eval_models(tiny_world_path, tmp_path_factory) -> dict[str, Path]:
    """{"target": run dir trained on full, "gold": run dir trained on retain90} (each with run.json)."""
    return _build_models(str(tiny_world_path), str(tmp_path_factory.getbasetemp() / "eval_models"))


@pytest.fixture(scope="session")
def gold_eval(eval_models, tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_results") / "gold-10.json"
    return out, evaluate(eval_models["gold"], tiny_world, out, gold="self", cfg=CFG, progress=False)


@pytest.fixture(scope="session")
def target_eval(eval_models, tiny_world, gold_eval, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_results") / "target.json"
    return out, evaluate(eval_models["target"], tiny_world, out, gold=gold_eval[0], cfg=CFG, progress=False)


@pytest.fixture(scope="module")
def target_loaded(eval_models):
    from clearbench.stages import model_dir

    return load_model(model_dir(eval_models["target"]))


def _data_cells(world, forget: str) -> set[tuple[str, str]]:
    """(split, modality) of every record, and (split, modality@role) where a cell has both photo roles."""
    from eval.example import split_of

    roles: dict[tuple[str, str], set[str]] = {}
    for c in eval_configs(world, forget):
        for r in world.records(c):
            roles.setdefault((split_of(c), str(r.modality)), set()).add(r.image_role)
    return set(roles) | {(s, f"{m}@{r}") for (s, m), rs in roles.items() if len(rs - {""}) > 1 for r in rs}


def _mixed(world, n_per: int = 3):
    """A few records of every (config, modality, task) group of the forget10 evaluation."""
    seen: dict[tuple, int] = {}
    out = []
    for config in eval_configs(world, "forget10"):
        for r in sorted(world.records(config), key=lambda r: r.id):
            k = (config, str(r.modality), str(r.task))
            if seen.get(k, 0) < n_per:
                seen[k] = seen.get(k, 0) + 1
                out.append(r)
    return out


# ------------------------------------------------------------------------------ end to end
def test_gold_self_result_is_valid_complete_and_recomputes(gold_eval, tiny_world):
    out, result = gold_eval
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert validate(on_disk) == []
    assert {tuple(c) for c in on_disk["aggregates"]["cells"]} == _data_cells(tiny_world, "forget10")
    metrics = on_disk["aggregates"]["metrics"]
    fq = {k: v for k, v in metrics.items() if k.endswith("/forget_quality")}
    assert set(fq) == {f"forget/{m}/forget_quality" for m in ("text", "image", "joint", "all")}
    assert all(v == 1.0 for v in fq.values()), fq
    assert metrics["forget/all/modality_gap"] == 0.0
    assert recompute(on_disk)["metrics"] == metrics
    n = sum(len(tiny_world.records(c)) for c in eval_configs(tiny_world, "forget10"))
    assert len(on_disk["examples"]) == n == on_disk["expected"]["n_examples"]
    prov = on_disk["provenance"]
    assert prov["config"]["generation"] == outputs.GENERATION | {"max_new_tokens": CFG.max_new_tokens}
    assert prov["gold"] == "self" and prov["world_fingerprint"] == tiny_world.fingerprint


def test_target_result_against_gold(target_eval, gold_eval, tiny_world):
    out, result = target_eval
    gold = json.loads(gold_eval[0].read_text())
    on_disk = json.loads(out.read_text())
    assert validate(on_disk) == [] and validate(on_disk, gold) == []
    assert {tuple(c) for c in on_disk["aggregates"]["cells"]} == _data_cells(tiny_world, "forget10")
    metrics = on_disk["aggregates"]["metrics"]
    assert recompute(on_disk)["metrics"] == metrics == recompute(on_disk, gold)["metrics"]
    for m in ("text", "image", "joint", "all"):
        assert 0.0 <= metrics[f"forget/{m}/forget_quality"] <= 1.0
    assert "mia/all/loss_auc" in metrics and "all/all/model_utility" in metrics
    assert on_disk["gold"]["model_fingerprint"] == gold["provenance"]["model_fingerprint"]
    assert on_disk["provenance"]["model_fingerprint"] != gold["provenance"]["model_fingerprint"]
    # the tiny model learned something: its answers are likelier than chance and it generates text
    assert metrics["retain/all/probability_raw"] > 10 / SHAPE.vocab_size
    assert sum(bool(e["generation"]) for e in on_disk["examples"]) > len(on_disk["examples"]) // 2
    cost = on_disk["provenance"]["cost"]["evaluation"]  # what the scoring pass cost: forward passes only
    assert not check_cost(cost) and cost["complete"] and cost["optimizer_steps"] == cost["tokens_backward"] == 0
    assert cost["tokens_forward_only"] > len(on_disk["examples"]) and cost["images"] > 0
    assert "training" not in on_disk["provenance"]["cost"]  # its run.json has no cost record
    for bad, problem in ((-1.0, "negative"), (None, "missing or not a number")):
        broken = copy.deepcopy(on_disk)
        broken["provenance"]["cost"]["evaluation"]["wall_seconds"] = bad
        assert any(f"provenance.cost.evaluation.wall_seconds is {problem}" in p for p in validate(broken))


# ---------------------------------------------------------------------------- one scoring pass
def _direct(loaded, record, answer):
    """Batch-1 forward of one (record, answer), independent of eval.outputs: answer-token
    log-probs and the Min-K%++ mu / sigma at those positions."""
    batch = loaded.collate([record], answers=[answer])
    labels = batch.pop("labels")[0]  # (T,)
    with torch.no_grad():
        logits = loaded.model(**batch).logits[0].double()  # (T, V)
    logp = torch.log_softmax(logits, -1)
    pos = [t for t in range(1, labels.shape[0]) if labels[t] != -100]
    lp = [float(logp[t - 1, labels[t]]) for t in pos]
    p = logp.exp()
    mu = [float((p[t - 1] * logp[t - 1]).sum()) for t in pos]
    sigma = [math.sqrt(max(0.0, float((p[t - 1] * logp[t - 1] ** 2).sum()) - m * m)) for t, m in zip(pos, mu)]
    return lp, mu, sigma


def test_teacher_forced_batched_equals_direct_batch1_forward(target_loaded, tiny_world):
    records = _mixed(tiny_world, 2)
    items = [(r, a) for r in records for a in dict.fromkeys([r.answer, r.paraphrased_answer or r.answer,
                                                             *r.perturbed_answers])]
    got = outputs.teacher_forced(target_loaded, items, batch_size=16, stats=True)
    worst = 0.0
    for (rec, ans), (lp, mu, sigma) in zip(items, got):
        ref_lp, ref_mu, ref_sigma = _direct(target_loaded, rec, ans)
        assert len(lp) == len(ref_lp) == len(mu) == len(sigma) > 0, (rec.id, ans)
        for a, b in zip(lp + mu + sigma, ref_lp + ref_mu + ref_sigma):
            worst = max(worst, abs(a - b))
    assert worst < 1e-5, worst


def test_score_batched_equals_batch1_and_runs_one_pass(target_loaded, tiny_world, monkeypatch):
    records = _mixed(tiny_world, 2)
    config = "forget10_perturbed"
    calls = {"tf_rows": 0, "gen_rows": 0, "gen_calls": 0}
    real_tf, real_gen = outputs.teacher_forced, outputs.generate

    def spy_tf(loaded, items, batch_size, stats):
        calls["tf_rows"] += len(items)
        return real_tf(loaded, items, batch_size, stats)

    def spy_gen(loaded, recs, **kw):
        calls["gen_rows"] += len(recs)
        calls["gen_calls"] += 1
        return real_gen(loaded, recs, **kw)

    monkeypatch.setattr(outputs, "teacher_forced", spy_tf)
    monkeypatch.setattr(outputs, "generate", spy_gen)
    batched = outputs.score(target_loaded, records, config, batch_size=16, max_new_tokens=12,
                            run=outputs.ScoreRun(progress=False))
    distinct = sum(len(dict.fromkeys([r.answer, r.paraphrased_answer or r.answer, *r.perturbed_answers]))
                   for r in records)
    # one teacher-forced row per distinct answer variant, one generation per record, nothing else
    assert calls == {"tf_rows": distinct, "gen_rows": len(records), "gen_calls": 1}
    single = outputs.score(target_loaded, records, config, batch_size=1, max_new_tokens=12,
                           run=outputs.ScoreRun(progress=False))
    assert [e.id for e in batched] == sorted(r.id for r in records) == [e.id for e in single]
    for b, s in zip(batched, single):
        assert b.generation == s.generation, (b.id, b.generation, s.generation)
        rows_b = [b.lp_answer, b.lp_paraphrased, *b.lp_perturbed, b.minkpp_mu, b.minkpp_sigma]
        rows_s = [s.lp_answer, s.lp_paraphrased, *s.lp_perturbed, s.minkpp_mu, s.minkpp_sigma]
        for rb, rs in zip(rows_b, rows_s):
            assert len(rb) == len(rs) and all(abs(x - y) < 1e-4 * max(1.0, abs(y)) for x, y in zip(rb, rs)), b.id
        assert b.problems() == []
        if b.task == "naming":  # the paraphrase of a name is the name: scored once, stored twice
            assert b.lp_paraphrased == b.lp_answer


def test_generation_sees_the_image(target_loaded, tiny_world, monkeypatch):
    records = [r for r in _mixed(tiny_world, 2) if r.image is not None][:4] + \
        [r for r in _mixed(tiny_world, 2) if r.image is None][:2]
    batch = target_loaded.collate(records, for_generation=True)
    image_id = target_loaded.processor.image_token_id
    n_img = (SHAPE.image_size // SHAPE.patch_size) ** 2
    assert batch["pixel_values"].shape[0] == 4
    assert [(row == image_id).sum().item() for row in batch["input_ids"]] == [n_img] * 4 + [0] * 2
    seen = []
    real = target_loaded.model.generate

    def spy(**kw):
        seen.append(kw)
        return real(**kw)

    monkeypatch.setattr(target_loaded.model, "generate", spy)
    outputs.generate(target_loaded, records, max_new_tokens=4, batch_size=16)
    assert seen and seen[0]["pixel_values"].shape[0] == 4 and seen[0]["do_sample"] is False
    # and the image changes what the model predicts: the same prompts with the images rotated
    swapped = [dataclasses.replace(r, image=records[(i + 1) % 4].image) for i, r in enumerate(records[:4])]
    with torch.no_grad():
        a = target_loaded.model(**target_loaded.collate(records[:4], for_generation=True)).logits[:, -1]
        b = target_loaded.model(**target_loaded.collate(swapped, for_generation=True)).logits[:, -1]
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------------------- resume
def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def _assert_same_examples(a: list[dict], b: list[dict]) -> None:
    """Same ids, generations and identity fields; log-probs equal within batching noise."""
    floats = ("lp_answer", "lp_paraphrased", "minkpp_mu", "minkpp_sigma")
    assert [e["id"] for e in a] == [e["id"] for e in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in floats + ("lp_perturbed",)} == \
            {k: v for k, v in y.items() if k not in floats + ("lp_perturbed",)}
        for key in floats:
            assert len(x[key]) == len(y[key]) and all(_close(p, q) for p, q in zip(x[key], y[key])), (x["id"], key)
        assert [len(r) for r in x["lp_perturbed"]] == [len(r) for r in y["lp_perturbed"]]
        assert all(_close(p, q) for r, s in zip(x["lp_perturbed"], y["lp_perturbed"]) for p, q in zip(r, s))


@pytest.fixture()
def scored(monkeypatch) -> list[str]:
    """Ids of the records outputs.score actually scores (not served from the cache), in order."""
    ids: list[str] = []
    real = outputs.score_chunk

    def counting(loaded, recs, *a, **k):
        ids.extend(r.id for r in recs)
        return real(loaded, recs, *a, **k)

    monkeypatch.setattr(outputs, "score_chunk", counting)
    return ids


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_resume_after_interruption_equals_uninterrupted_run(target_loaded, tiny_world, tmp_path, scored):
    config = "forget10_perturbed"
    records = sorted(tiny_world.records(config), key=lambda r: r.id)
    kw = dict(batch_size=8, max_new_tokens=6, run=outputs.ScoreRun(chunk_size=16, progress=False))
    reference = outputs.score(target_loaded, records, config, **kw)
    scored.clear()

    cache = tmp_path / "cache" / f"{config}.jsonl"
    with pytest.raises(KeyboardInterrupt):
        outputs.score(target_loaded, records, config, cache=cache, batch_size=8, max_new_tokens=6,
                      run=outputs.ScoreRun(chunk_size=16, progress=False, stop_after=1))
    assert len(_lines(cache)) == 16 and len(scored) == 16
    first = set(scored)
    scored.clear()
    resumed = outputs.score(target_loaded, records, config, cache=cache, **kw)
    assert len(scored) == len(records) - 16 and not first & set(scored)  # only the remaining records
    assert [e.to_dict() for e in resumed] == [e.to_dict() for e in reference]
    assert len(_lines(cache)) == len(records)

    # a torn last line (killed mid-write) is ignored, rescored, and does not swallow the next line
    lines = _lines(cache)
    cache.write_text("\n".join(lines[:20]) + "\n" + lines[20][: len(lines[20]) // 2])
    assert len(outputs.read_cache(cache)) == 20
    scored.clear()
    again = outputs.score(target_loaded, records, config, cache=cache, **kw)
    assert len(scored) == len(records) - 20
    # chunks now start at record 20, so batches hold other neighbours: equal up to float noise
    _assert_same_examples([e.to_dict() for e in again], [e.to_dict() for e in reference])
    assert len(outputs.read_cache(cache)) == len(_lines(cache)) == len(records)
    scored.clear()
    outputs.score(target_loaded, records, config, cache=cache, **kw)
    assert scored == []  # complete cache: nothing is rescored


def test_evaluate_resumes_from_its_cache(eval_models, tiny_world, gold_eval, tmp_path, scored):
    """evaluate() keeps per-example values beside the result: a rerun scores nothing; a metric
    option change reuses them; another model's cache is discarded."""
    out = tmp_path / "gold.json"
    import eval.evaluate as ev

    with pytest.raises(KeyboardInterrupt):
        ev.score_model(eval_models["gold"], tiny_world, CFG, out.with_suffix(".cache"), progress=False,
                       stop_after=1)
    n_first = len(scored)
    assert 0 < n_first < gold_eval[1]["expected"]["n_examples"]
    result = evaluate(eval_models["gold"], tiny_world, out, gold="self", cfg=CFG, progress=False)
    assert len(scored) == gold_eval[1]["expected"]["n_examples"]  # each record scored exactly once
    assert validate(result) == []
    assert not result["provenance"]["cost"]["evaluation"]["complete"]  # part of it came from the cache
    scored.clear()
    clear_cfg = EvalConfig(**{**CFG.__dict__, "options": {"tr_mode": "clear"}})
    evaluate(eval_models["gold"], tiny_world, out, gold="self", cfg=clear_cfg, progress=False)
    assert scored == []
    evaluate(eval_models["target"], tiny_world, out, gold="self", cfg=CFG, progress=False)
    assert len(scored) == gold_eval[1]["expected"]["n_examples"]  # the gold's cached values were not reused


# ---------------------------------------------------------------------------------- shards
def test_shards_merge_to_the_single_run(eval_models, tiny_world, target_eval, gold_eval, tmp_path):
    gold_path, (_, single) = gold_eval[0], target_eval
    parts = [write_shard(eval_models["target"], tiny_world, tmp_path / f"t.shard{i}.json", CFG, (i, 2),
                         progress=False) for i in range(2)]
    ids = [{d["id"] for d in json.loads(p.read_text())["examples"]} for p in parts]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    merged = merge(parts, tmp_path / "t.json", gold_path)
    assert validate(merged) == []
    _assert_same_examples(merged["examples"], single["examples"])
    ma, mb = merged["aggregates"]["metrics"], single["aggregates"]["metrics"]
    assert set(ma) == set(mb)
    assert all(_close(ma[k], mb[k]) for k in ma), [k for k in ma if not _close(ma[k], mb[k])]
    assert merged["aggregates"]["cells"] == single["aggregates"]["cells"]
    assert merged["expected"] == single["expected"]
    costs = [json.loads(p.read_text())["provenance"]["cost"]["evaluation"] for p in parts]
    assert merged["provenance"]["cost"]["evaluation"]["tokens_forward_only"] == sum(c["tokens_forward_only"] for c in costs)
    assert merged["provenance"]["cost"]["evaluation"]["processes"] == 2

    with pytest.raises(ValueError, match="not a complete set"):
        merge(parts[:1], tmp_path / "x.json", gold_path)
    with pytest.raises(ValueError, match="not a complete set"):
        merge([parts[0], parts[0]], tmp_path / "x.json", gold_path)
    other = write_shard(eval_models["gold"], tiny_world, tmp_path / "g.shard1.json", CFG, (1, 2), progress=False)
    with pytest.raises(ValueError, match="different model_fingerprints"):
        merge([parts[0], other], tmp_path / "x.json", gold_path)
    with pytest.raises(FileNotFoundError, match="--shard"):
        merge([parts[0], tmp_path / "missing.json"], tmp_path / "x.json", gold_path)
    assert not (tmp_path / "x.json").exists()


def test_the_study_evaluate_stage_scores_shards_in_processes_and_merges(eval_models, tiny_world_path, target_eval,
                                                                        gold_eval, tmp_path):
    """cluster.kinds.evaluate.shards: 2 -> the study's evaluate stage scores half of the records in each of two
    spawned processes (one thread each) and merges them into the result one process writes."""
    from clearbench.run import evaluate_stage

    out = tmp_path / "results" / "target.json"
    evaluate_stage(eval_models["target"], tiny_world_path, out, gold_eval[0], CFG, resume=False, shards=2)
    parts = sorted((tmp_path / "results" / "target.shards").glob("shard-*-of-2.json"))
    ids = [{d["id"] for d in json.loads(p.read_text())["examples"]} for p in parts]
    assert len(ids) == 2 and ids[0] and ids[1] and not ids[0] & ids[1]
    merged, single = json.loads(out.read_text()), target_eval[1]
    assert validate(merged) == []
    _assert_same_examples(merged["examples"], single["examples"])
    ma, mb = merged["aggregates"]["metrics"], single["aggregates"]["metrics"]
    assert set(ma) == set(mb) and all(_close(ma[k], mb[k]) for k in ma), [k for k in ma if not _close(ma[k], mb[k])]
    assert merged["aggregates"]["cells"] == single["aggregates"]["cells"] and merged["expected"] == single["expected"]


# ------------------------------------------------------------------------------ bad inputs
@pytest.fixture()
def no_model_load(monkeypatch):
    """Bad inputs must fail before the model loads (not after minutes of scoring)."""
    import clearbench.models as models

    def refuse(*a, **k):
        raise AssertionError("the model was loaded although the inputs are bad")

    monkeypatch.setattr(models, "load_model", refuse)


def test_missing_forget_split_is_an_error(eval_models, tiny_world, tmp_path, no_model_load):
    cfg = EvalConfig(**{**CFG.__dict__, "forget": "forget01"})  # the tiny world has forget05 and forget10
    with pytest.raises(ValueError, match=r"no \['forget01_perturbed'\] config.*regenerate"):
        evaluate(eval_models["gold"], tiny_world, tmp_path / "r.json", gold="self", cfg=cfg, progress=False)
    world = copy.copy(tiny_world)  # a world generated without forget05
    world.configs = tuple(c for c in tiny_world.configs if "05" not in c)
    with pytest.raises(ValueError, match="forget05"):
        evaluate(eval_models["gold"], world, tmp_path / "r.json", gold="self",
                 cfg=EvalConfig(**{**CFG.__dict__, "forget": "forget05"}), progress=False)
    with pytest.raises(ValueError, match="Unknown forget split 'forget11'|forget11"):
        evaluate(eval_models["gold"], tiny_world, tmp_path / "r.json", gold="self",
                 cfg=EvalConfig(**{**CFG.__dict__, "forget": "forget11"}), progress=False)
    assert not (tmp_path / "r.json").exists()


def test_model_from_another_world_is_an_error(eval_models, tiny_world, tmp_path, no_model_load):
    run = tmp_path / "foreign"
    (run).mkdir()
    (run / "model").symlink_to(eval_models["target"] / "model", target_is_directory=True)
    write_json_atomic(run / "run.json", {"stage": "finetune", "world_fingerprint": "f" * 64})
    for model in (run, run / "model"):  # a run dir, or its model/ dir
        with pytest.raises(ValueError, match=r"trained on world ffffffffffff.*--world"):
            evaluate(model, tiny_world, tmp_path / "r.json", gold="self", cfg=CFG, progress=False)


def test_bad_gold_results_are_errors(eval_models, tiny_world, gold_eval, tmp_path, no_model_load):
    gold = json.loads(gold_eval[0].read_text())
    other_world = tmp_path / "gold-other-world.json"
    other_world.write_text(json.dumps({**gold, "provenance": {**gold["provenance"], "world_fingerprint": "0" * 64}}))
    with pytest.raises(ValueError, match="another world"):
        evaluate(eval_models["target"], tiny_world, tmp_path / "r.json", gold=other_world, cfg=CFG, progress=False)
    other_split = tmp_path / "gold-05.json"
    other_split.write_text(json.dumps({**gold, "provenance": {**gold["provenance"], "forget_split": "forget05"}}))
    with pytest.raises(ValueError, match="is for forget05, not forget10"):
        evaluate(eval_models["target"], tiny_world, tmp_path / "r.json", gold=other_split, cfg=CFG, progress=False)
    with pytest.raises(MissingGoldError, match=r"produce it with `clearbench evaluate --model runs/gold-10"):
        evaluate(eval_models["target"], tiny_world, tmp_path / "r.json", gold=tmp_path / "nope.json", cfg=CFG,
                 progress=False)
    with pytest.raises(MissingGoldError, match=r"clearbench evaluate --model runs/gold-10 .* --gold self"):
        evaluate(eval_models["target"], tiny_world, tmp_path / "r.json", gold=None, cfg=CFG, progress=False)
    assert not (tmp_path / "r.json").exists()


def test_genuine_gold_of_another_forget_split_is_an_error(eval_models, tiny_world, gold_eval, tmp_path):
    """A genuine forget05 gold result against a forget10 evaluation (not just a relabelled file)."""
    cfg05 = EvalConfig(**{**CFG.__dict__, "forget": "forget05", "max_per_config": 6})
    gold05 = tmp_path / "gold-05.json"
    evaluate(eval_models["gold"], tiny_world, gold05, gold="self", cfg=cfg05, progress=False)
    assert validate(json.loads(gold05.read_text())) == []
    with pytest.raises(ValueError, match="is for forget05, not forget10"):
        evaluate(eval_models["target"], tiny_world, tmp_path / "r.json", gold=gold05, cfg=CFG, progress=False)


@pytest.mark.parametrize("family", ["tiny-llava", "llava", "tiny-llava+lora"])
def test_packed_prompt_sharing_equals_one_row_per_answer(loaded_families, family):
    """The packed path (one prompt, several answers in a row) against the generic per-row path,
    on the hub-format LLaVA-1.5 checkpoint too (its template puts a space before the end token)
    and under a peft LoRA wrapper (unlearning's early-stopping criterion scores such a model)."""
    from clearbench.config import LoraConfig
    from clearbench.lora import apply_lora
    from model_fixtures import sample_records

    loaded = loaded_families[family.split("+")[0]]
    if family.endswith("+lora"):
        cfg = TrainConfig(lora=LoraConfig(enabled=True, r=4))
        model = apply_lora(copy.deepcopy(loaded.model), cfg.lora, cfg)
        for name, param in model.named_parameters():  # non-zero adapters, so LoRA changes the outputs
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
        loaded = dataclasses.replace(loaded, model=model.eval())
        assert scoring.packed_model(loaded) is not None
    records = sample_records()
    items = [(r, a) for r in records for a in dict.fromkeys([r.answer, r.paraphrased_answer or r.answer,
                                                             *r.perturbed_answers])]
    packed = outputs.teacher_forced(loaded, items, batch_size=3, stats=True)
    rows = scoring.teacher_forced_rows(loaded, items, batch_size=3, stats=True)
    if family.endswith("+lora"):  # the adapters are active in the packed path too
        plain = outputs.teacher_forced(loaded_families["tiny-llava"], items, batch_size=3, stats=True)
        assert max(abs(x - y) for a, b in zip(packed, plain) for x, y in zip(a[0], b[0])) > 1e-3
    for a, b in zip(packed, rows):
        assert [len(x) for x in a] == [len(x) for x in b]
        assert all(abs(x - y) < 1e-5 for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def test_per_item_stats_flags_match_one_call_per_kind(loaded_families):
    """The evaluation scores every answer variant in one pass and asks Min-K%++ statistics for the answers only:
    each item's log-probs and statistics equal those of a call that scores it with stats on or off for all, on the
    packed path and the per-row path."""
    from model_fixtures import sample_records

    loaded = loaded_families["tiny-llava"]
    records = sample_records()
    items = [(r, a) for r in records for a in dict.fromkeys([r.answer, *r.perturbed_answers])]
    flags = [a == r.answer for r, a in items]
    assert any(flags) and not all(flags)
    for run in (outputs.teacher_forced, scoring.teacher_forced_rows):
        mixed = run(loaded, items, batch_size=3, stats=flags)
        on, off = run(loaded, items, batch_size=3, stats=True), run(loaded, items, batch_size=3, stats=False)
        for flag, got, a, b in zip(flags, mixed, on, off):
            want = a if flag else b
            assert [len(x) for x in got] == [len(x) for x in want]
            assert got[1] if flag else not got[1]
            assert all(abs(x - y) < 1e-5 for xs, ys in zip(got, want) for x, y in zip(xs, ys))
    with pytest.raises(ValueError, match="flags for"):
        outputs.teacher_forced(loaded, items, batch_size=3, stats=flags[:-1])


# ------------------------------------------------------------------------------ per-cell caps
def test_per_cell_caps_are_seeded_and_never_exceeded(tiny_world):
    from collections import Counter

    cfg = EvalConfig(forget="forget10", max_per_cell=2, seed=3)
    for config in eval_configs(tiny_world, "forget10"):
        recs = tiny_world.records(config)
        chosen = select_records(recs, config, cfg)
        full, got = Counter(cell_of(r) for r in recs), Counter(cell_of(r) for r in chosen)
        assert got == {c: min(2, k) for c, k in full.items()}, config  # every cell, none above the cap
        assert [r.id for r in select_records(recs[::-1], config, cfg)] == [r.id for r in chosen]
    forget = tiny_world.records("forget10_perturbed")
    other = select_records(forget, "forget10_perturbed", dataclasses.replace(cfg, seed=4))
    assert [r.id for r in other] != [r.id for r in select_records(forget, "forget10_perturbed", cfg)]
    with pytest.raises(ValueError, match="set one cap"):
        EvalConfig(max_per_config=3, max_per_cell=2)
    with pytest.raises(ValueError, match="max_per_cell must be an integer >= 0"):
        EvalConfig(max_per_cell=-1)


def test_capped_evaluation_scores_the_same_ids_for_every_model(eval_models, tiny_world, tmp_path):
    cfg = dataclasses.replace(CFG, max_per_cell=2, max_new_tokens=4)
    gold = evaluate(eval_models["gold"], tiny_world, tmp_path / "gold.json", gold="self", cfg=cfg, progress=False)
    target = evaluate(eval_models["target"], tiny_world, tmp_path / "target.json", gold=tmp_path / "gold.json",
                      cfg=cfg, progress=False)
    assert sorted(e["id"] for e in gold["examples"]) == sorted(e["id"] for e in target["examples"])
    assert validate(target, json.loads((tmp_path / "gold.json").read_text())) == []
    m = target["aggregates"]["metrics"]
    for mod in ("image", "joint"):  # the forget authors' training and held-out photos, each its own cell
        assert m[f"forget/{mod}@train/n"] + m[f"forget/{mod}@heldout/n"] == m[f"forget/{mod}/n"]
        assert m[f"forget/{mod}@heldout/n"] >= 1
    assert target["provenance"]["config"]["max_per_cell"] == 2
