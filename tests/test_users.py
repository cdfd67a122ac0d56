"""For the people who use it (issue 20): real CLEAR data from the CLI, methods as plugins, own checkpoints,
the ecosystem's formats. Everything runs through ``clearbench.cli.main`` on tiny real models and worlds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearbench.cli import main
from clearbench.data import ClearCopy, open_clear, open_data
from eval.results import validate

FAST = ["--max-new-tokens", "4", "--batch-size", "16"]
SHAPE = dict(image_size=32, patch_size=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1, heads=2,
             mlp=64, vocab_size=512)
CLEAR_COLUMNS = ("clear/all/real", "clear/all/retain", "clear/all/forget", "clear/all/fq")


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------- 1. CLEAR copies
@pytest.fixture(scope="module")
def clear_world(tmp_path_factory) -> Path:
    """A tiny world written with --layout clear: WORLD/clear/ is a copy in therem/CLEAR's layout."""
    out = tmp_path_factory.mktemp("users") / "world"
    assert main(["generate", "--out", str(out), "--authors", "20", "--qa-per-author", "2", "--images-per-author", "2",
                 "--heldout-images", "1", "--public-figures", "6", "--public-train-images", "1", "--world-vqa", "4",
                 "--anonymous-faces", "0", "--forget-percents", "5,10", "--image-size", "32", "--workers", "1",
                 "--layout", "clear"]) == 0
    return out


@pytest.fixture(scope="module")
def plain_model(clear_world, tmp_path_factory) -> Path:
    """An untrained tiny checkpoint (tokenizer trained on the copy's text) with no clearbench run record."""
    from clearbench.models import tiny_llava

    out = tmp_path_factory.mktemp("users") / "plain"
    return tiny_llava.build(open_clear(clear_world / "clear").texts(), out, tiny_llava.TinyConfig(**SHAPE))


def _restyle(src: Path, dst: Path, style: str) -> Path:
    """The same copy under the hub branch's ``<config>/train/0000.parquet`` or flat ``<config>.parquet`` names."""
    for f in sorted(src.glob("*/*.parquet")):
        config = f.parent.name
        target = dst / config / "train" / "0000.parquet" if style == "branch" else dst / f"{config}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dst


def test_a_clear_copy_is_told_apart_from_a_world_and_fingerprinted_by_content(clear_world, tmp_path):
    copy = open_data(clear_world / "clear")
    assert isinstance(copy, ClearCopy) and not isinstance(open_data(clear_world), ClearCopy)
    # both file-name styles of the hub (and flat files) are the same data: same records, same fingerprint
    for style in ("branch", "flat"):
        other = open_data(_restyle(clear_world / "clear", tmp_path / style, style))
        assert isinstance(other, ClearCopy) and other.configs == copy.configs
        assert other.fingerprint == copy.fingerprint
        assert [r.answer for r in other.records("forget10")] == [r.answer for r in copy.records("forget10")]
    # clearbench's forget10 = CLEAR's forget10 images plus the text QA of forget10+tofu
    recs = copy.records("forget10")
    assert {(str(r.modality), str(r.task)) for r in recs} == {("joint", "caption"), ("image", "naming"), ("text", "qa")}
    assert copy.splits["forget10"] and set(copy.splits["forget05"]) < set(copy.splits["forget10"])
    # same names and sizes, other content: another fingerprint
    flat = tmp_path / "flat"
    table = pq.read_table(flat / "forget10.parquet")
    caps = [c[:-1] + ("!" if c[-1] != "!" else "?") for c in table.column("caption").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(caps)),
                   flat / "forget10.parquet")
    assert open_data(flat).fingerprint != copy.fingerprint


def test_evaluate_on_a_clear_copy_through_the_cli_reports_clears_columns(clear_world, plain_model, tmp_path, capsys):
    out = tmp_path / "gold.json"
    code, printed, err = _cli(["evaluate", "--model", plain_model, "--world", clear_world / "clear", "--forget",
                               "forget10", "--gold", "self", "--out", out, *FAST], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert validate(result) == []
    assert result["provenance"]["world_fingerprint"] == open_clear(clear_world / "clear").fingerprint
    metrics = result["aggregates"]["metrics"]
    assert all(k in metrics for k in CLEAR_COLUMNS) and metrics["clear/all/fq"] == 1.0
    assert {e["split"] for e in result["examples"]} == {"forget10_perturbed", "retain_perturbed", "real_faces", "real_world"}
    for header in ("Real", "Retain", "Forget", "FQ"):
        assert header in printed
    # a target scored against that gold on the same copy: CLEAR's columns again, FQ against the gold
    code, _, err = _cli(["evaluate", "--model", plain_model, "--world", clear_world / "clear", "--gold", out,
                         "--out", tmp_path / "again.json", *FAST], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "again.json").read_text())["aggregates"]["metrics"]["clear/all/fq"] == 1.0


def test_world_errors_name_the_layout_and_the_fix(clear_world, plain_model, tmp_path, capsys):
    def err_of(world) -> str:
        code, _, err = _cli(["evaluate", "--model", plain_model, "--world", world, "--gold", "self",
                             "--out", tmp_path / "r.json", *FAST], capsys)
        assert code == 2 and "Traceback" not in err
        return err

    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "notes.txt").write_text("hello")
    err = err_of(tmp_path / "neither")
    assert "is neither a clearbench world (manifest.json" in err and "copy of the public CLEAR dataset" in err
    partial = tmp_path / "partial"
    shutil.copytree(clear_world, partial)
    (partial / "manifest.json").unlink()
    assert "manifest.json is missing; regenerate with: clearbench generate" in err_of(partial)
    lacking = tmp_path / "lacking"
    shutil.copytree(clear_world / "clear", lacking)
    shutil.rmtree(lacking / "forget10_perturbed")
    err = err_of(lacking)
    assert "CLEAR copy at" in err and "no forget10_perturbed" in err and "therem/CLEAR" in err
    assert "no world at" in err_of(tmp_path / "absent")
    assert not (tmp_path / "r.json").exists()


def test_finetune_and_unlearn_on_a_clear_copy(clear_world, plain_model, tmp_path, capsys):
    world = clear_world / "clear"
    code, _, err = _cli(["finetune", "--preset", "tiny-smoke", "--world", world, "--model", plain_model, "--split",
                         "retain90", "--out", tmp_path / "gold", "finetune.phase.train.max_steps=1"], capsys)
    assert code == 0, err
    run = json.loads((tmp_path / "gold" / "run.json").read_text())
    assert run["world_fingerprint"] == open_clear(world).fingerprint and run["records"] > 0
    code, _, err = _cli(["unlearn", "--preset", "tiny-smoke", "--world", world, "--model", tmp_path / "gold",
                         "--method", "grad_ascent", "--forget", "forget10", "--out", tmp_path / "ga",
                         "unlearn.train.max_steps=1"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ga" / "run.json").read_text())["method"] == "grad_ascent"


# ---------------------------------------------------------------------------------- 2. methods as plugins
def _doc_plugin() -> str:
    """The plugin of docs/submitting.md's worked example, exactly as written there."""
    doc = (Path(__file__).parents[1] / "docs" / "submitting.md").read_text()
    start = doc.index("```python\n# my_methods/weighted_gd.py\n") + len("```python\n")
    return doc[start:doc.index("```", start)]


def _package(root: Path, name: str, files: dict[str, str]) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text("")
    for file, text in files.items():
        (root / name / file).write_text(text)
    return root


def test_a_plugin_that_breaks_the_contract_is_refused_naming_what_is_wrong(clear_world, plain_model, tmp_path,
                                                                           monkeypatch, capsys):
    from baselines import get_method

    broken = _doc_plugin().replace("def loss(", "def not_loss(").replace('("forget", "retain")', '("forget", "retian")')
    monkeypatch.syspath_prepend(str(_package(tmp_path, "users_broken", {"m.py": broken})))
    base = ["unlearn", "--world", clear_world / "clear", "--model", plain_model, "--out", tmp_path / "u"]
    code, _, err = _cli([*base, "--method", "users_broken.m"], capsys)
    assert code == 2 and "method plugin 'users_broken.m'" in err and "does not follow the method contract" in err
    assert "loss is missing" in err and "BATCHES is not a tuple of batch kinds" in err and "NAME is" not in err
    code, _, err = _cli([*base, "--method", "users_absent.m"], capsys)
    assert code == 2 and "cannot import the plugin module" in err and "PYTHONPATH" in err
    with pytest.raises(ValueError, match=r"Unknown method 'npp'\. Did you mean 'npo'\?.*dotted path"):
        get_method("npp")
    assert not (tmp_path / "u").exists()


@pytest.fixture(scope="module")
def plugin_study(tmp_path_factory):
    """A tiny-smoke study of grad_ascent and the documented plugin, run through the CLI."""
    root = tmp_path_factory.mktemp("plugin")
    _package(root, "my_methods", {"weighted_gd.py": _doc_plugin()})
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    out = root / "study"
    argv = ["run", "--preset", "tiny-smoke", "--out", str(out), "study.methods=[grad_ascent,my_methods.weighted_gd]"]
    assert main(argv) == 0
    yield root, out, argv
    mp.undo()


def test_a_plugin_method_runs_in_a_study_and_its_edit_reruns_exactly_its_stages(plugin_study, capsys):
    root, out, argv = plugin_study
    capsys.readouterr()
    result = json.loads((out / "results" / "my_methods.weighted_gd-multimodal-10.json").read_text())
    assert result["provenance"]["run"]["method"] == "my_methods.weighted_gd" and validate(result) == []
    log = [json.loads(line) for line in (out / "unlearn" / "my_methods.weighted_gd-multimodal-10"
                                         / "log.jsonl").read_text().splitlines()]
    assert log and all({"forget_nll", "retain_nll"} <= set(e) for e in log)

    def states() -> dict[str, str]:
        assert main([*argv, "--dry-run"]) == 0
        rows = [line.split("] ", 1)[1].split() for line in capsys.readouterr().out.splitlines()]
        return {name: state for name, state in rows}

    assert set(states().values()) == {"done"}
    plugin = root / "my_methods" / "weighted_gd.py"
    plugin.write_text(plugin.read_text().replace("alpha: float = 0.5", "alpha: float = 0.5  # tuned later"))
    stale = {name for name, state in states().items() if state != "done"}
    assert stale and all(state == "stale" for name, state in states().items() if name in stale)
    assert stale == {name for name in states() if "my_methods.weighted_gd" in name} | {"report"}
    assert any(n.startswith("unlearn/") for n in stale) and any(n.startswith("evaluate/") for n in stale)


def test_the_documented_plugin_command_takes_its_options(plugin_study, capsys):
    root, out, _ = plugin_study
    code, _, err = _cli(["unlearn", "--preset", "tiny-smoke", "--world", out / "world", "--model", out / "target",
                         "--method", "my_methods.weighted_gd", "--forget", "forget10", "--out", root / "wgd",
                         "unlearn.method_options.alpha=0.3", "unlearn.train.max_steps=1"], capsys)
    assert code == 0, err
    run = json.loads((root / "wgd" / "run.json").read_text())
    assert run["method"] == "my_methods.weighted_gd" and run["method_config"] == {"alpha": 0.3}


# ---------------------------------------------------------------------------------- 3. own checkpoints
@pytest.fixture(scope="module")
def peft_adapter(plugin_study) -> Path:
    """A plain PEFT LoRA adapter on the study's target, as peft's save_pretrained writes it (no clearbench marker)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from clearbench.models import load_model

    root, out, _ = plugin_study
    torch.manual_seed(0)
    model = get_peft_model(load_model(out / "target" / "model").model,
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(root / "my_adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {f.name for f in (root / "my_adapter").iterdir()}
    return root / "my_adapter"


def _evaluate_own(out: Path, model, result: Path, *flags) -> list:
    return ["evaluate", "--model", model, "--world", out / "world", "--gold", out / "results" / "gold-10.json",
            "--max-per-cell", "4", "--out", result, *FAST, *flags]


def test_an_own_peft_adapter_evaluates_with_a_label_and_its_lineage(plugin_study, peft_adapter, tmp_path, capsys):
    from clearbench.provenance import model_fingerprint

    root, out, _ = plugin_study
    result_path = tmp_path / "mine.json"
    code, _, err = _cli(_evaluate_own(out, peft_adapter, result_path, "--base", out / "target", "--target",
                                      out / "target", "--method", "my_method", "--forget-modality", "visual",
                                      "--l1", "0.01"), capsys)
    assert code == 0, err
    prov = json.loads(result_path.read_text())["provenance"]
    target_fp = model_fingerprint(out / "target" / "model")
    assert prov["run"] == {"method": "my_method", "forget_modality": "visual", "l1_lambda": 0.01, "lora": True}
    assert prov["base"]["model_fingerprint"] == target_fp and prov["parents"][0]["model_fingerprint"] == target_fp
    assert prov["lineage"]["verified"] is True and prov["lineage"]["target_fingerprint"] == target_fp
    assert prov["lineage"]["ancestors"][0] == target_fp and prov["model_fingerprint"] != target_fp
    # the adapter changes the model: another fingerprint than the target's, another one on another base
    from clearbench.models import plain_adapter
    assert plain_adapter.fingerprint(peft_adapter, out / "gold-10") != prov["model_fingerprint"]
    # the leaderboard accepts it and puts it in the visual table under its label
    code, printed, err = _cli(["leaderboard", "validate", result_path, "--gold", out / "results" / "gold-10.json",
                               "--world", out / "world"], capsys)
    assert code == 0 and printed.startswith("ok "), err
    code, _, err = _cli(["leaderboard", "report", result_path, out / "results" / "target-10.json", "--gold",
                         out / "results" / "gold-10.json", "--out", tmp_path / "report"], capsys)
    assert code == 0, err
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "my_method + LoRA + L1" in tables.split("## visual forgetting")[1].split("\n## ")[0]


def test_own_model_inputs_are_checked_before_scoring(plugin_study, peft_adapter, plain_model, tmp_path, capsys):
    root, out, _ = plugin_study
    r = tmp_path / "r.json"

    def fails(model, *flags) -> str:
        code, _, err = _cli(_evaluate_own(out, model, r, *flags), capsys)
        assert code == 2 and "Traceback" not in err
        return err

    assert "PEFT adapter without clearbench's marker: pass --base DIR" in fails(peft_adapter)
    assert "--base is for a plain PEFT adapter" in fails(out / "target", "--base", out / "base")
    err = fails(peft_adapter, "--base", out / "target", "--target", out / "gold-10")
    assert "not to the target" in err and "gold-10" in err
    assert "label a --method" in fails(out / "target", "--forget-modality", "text")
    assert "--method needs --forget-modality" in fails(out / "target", "--method", "mine")
    err = fails(out / "unlearn" / "grad_ascent-multimodal-10", "--method", "npo", "--forget-modality", "multimodal")
    assert "--method 'npo' but the model's stage record" in err and "'grad_ascent'" in err
    assert not r.exists()
    # a checkpoint with no records at all: scored, its lineage recorded as unverified
    code, _, err = _cli(_evaluate_own(out, plain_model, r, "--target", out / "target"), capsys)
    assert code == 0, err
    lineage = json.loads(r.read_text())["provenance"]["lineage"]
    assert lineage["verified"] is False and lineage["ancestors"] == [] and "unverified" in lineage["relation"]


# ---------------------------------------------------------------------------------- 4. tiny-smoke's cap
def test_tiny_smoke_fills_every_clear_column(plugin_study):
    """tiny-smoke's eval_max_per_cell gives every result every CLEAR column; the only aggregates left out are the
    image PrivLeaks, because the gold model's image AUC is 1.0 in its 20-author world whatever the cap."""
    import math

    from clearbench.config import BenchConfig, load_config

    _, out, _ = plugin_study
    files = sorted((out / "results").glob("*.json"))
    cfg = load_config(BenchConfig, "tiny-smoke")
    assert cfg.study.eval_max_per_cell == 4
    assert len(files) == 3 + 2 * len(cfg.study.variants)  # base, target, gold + 2 methods per variant
    for f in files:
        aggregates = json.loads(f.read_text())["aggregates"]
        assert all(math.isfinite(aggregates["metrics"][k]) for k in CLEAR_COLUMNS), f.name
        assert all(w.startswith("mia/image/") and "PrivLeak undefined" in w for w in aggregates["warnings"]), f.name


# ---------------------------------------------------------------------------------- 5. formats
def test_export_to_open_unlearning_has_its_files_keys_and_values(plugin_study, tmp_path, capsys):
    from scipy.stats import ks_2samp

    from clearbench.commands.export import FORMATS
    from eval import export

    _, out, _ = plugin_study
    assert FORMATS == tuple(export.FORMATS)
    logs = {}
    for name in ("target-10", "gold-10"):
        code, printed, err = _cli(["export", "--format", "open-unlearning", out / "results" / f"{name}.json",
                                   "--out", tmp_path / name], capsys)
        assert code == 0, err
        assert {p.name for p in (tmp_path / name).iterdir()} == {"CLEARBENCH_EVAL.json", "CLEARBENCH_SUMMARY.json"}
        logs[name] = json.loads((tmp_path / name / "CLEARBENCH_EVAL.json").read_text())
    ev = logs["target-10"]
    summary = json.loads((tmp_path / "target-10" / "CLEARBENCH_SUMMARY.json").read_text())
    # open-unlearning's layout: metric -> {"agg_value", "value_by_index": {"0": {...}}}; the summary: metric -> agg_value
    for prefix in ("forget", "retain", "ra", "wf"):
        for metric in ("Q_A_Prob", "Q_A_PERT_Prob", "Q_A_ROUGE", "Truth_Ratio"):
            entry = ev[f"{prefix}_{metric}"]
            assert set(entry) == {"agg_value", "value_by_index"} and "0" in entry["value_by_index"]
    assert {"prob", "avg_loss"} <= set(ev["forget_Q_A_Prob"]["value_by_index"]["0"])
    assert {"rougeL_recall", "ground_truth", "generation"} <= set(ev["forget_Q_A_ROUGE"]["value_by_index"]["0"])
    assert set(summary) == {"forget_Truth_Ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                            "model_utility", "privleak", "clear_real", "clear_retain", "clear_forget", "clear_fq"}
    assert all(summary[k] == ev[k]["agg_value"] for k in summary) and list(ev) == sorted(ev)
    # the values are clearbench's own, under TOFU's definitions
    metrics = json.loads((out / "results" / "target-10.json").read_text())["aggregates"]["metrics"]
    for name, k in (("forget_Q_A_Prob", "forget/text/probability"), ("forget_Q_A_ROUGE", "forget/text/rouge_l"),
                    ("forget_Truth_Ratio", "forget/text/truth_ratio"), ("retain_Truth_Ratio", "retain/text/truth_ratio"),
                    ("ra_Q_A_Prob_normalised", "real_faces/text/probability"),
                    ("wf_Q_A_Prob_normalised", "real_world/joint/probability"), ("model_utility", "all/all/model_utility"),
                    ("clear_fq", "clear/all/fq")):
        assert ev[name]["agg_value"] == pytest.approx(metrics[k], rel=1e-12), name
    # open-unlearning's forget quality (KS test on forget_truth_ratio scores against the retain model's logs) read
    # from the exports of the target and the gold gives clearbench's forget quality
    scores = {n: [v["score"] for v in logs[n]["forget_truth_ratio"]["value_by_index"].values()] for n in logs}
    assert ks_2samp(scores["target-10"], scores["gold-10"]).pvalue == pytest.approx(metrics["forget/all/forget_quality"])
    # an existing export is refused without --overwrite; an invalid result is refused before anything is written
    code, _, err = _cli(["export", "--format", "open-unlearning", out / "results" / "target-10.json", "--out",
                         tmp_path / "target-10"], capsys)
    assert code == 2 and "--overwrite" in err
    bad = json.loads((out / "results" / "target-10.json").read_text())
    bad["aggregates"]["metrics"]["forget/text/probability"] = 0.5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, err = _cli(["export", "--format", "open-unlearning", tmp_path / "bad.json"], capsys)
    assert code == 2 and "not a valid result file" in err and not (tmp_path / "bad.open-unlearning").exists()


def _card(path: Path) -> dict:
    """A dataset card's metadata, parsed by huggingface_hub's card parser when installed, else as YAML."""
    try:
        from huggingface_hub import DatasetCard
    except ImportError:
        import yaml

        return yaml.safe_load(path.read_text().split("---\n")[1])
    return DatasetCard.load(path).data.to_dict()


def test_dataset_cards_of_the_world_and_its_clear_export_parse_and_load(clear_world):
    import datasets

    from data_gen.writer import size_category

    manifest = json.loads((clear_world / "manifest.json").read_text())
    for root, configs in ((clear_world, set(manifest["configs"])), (clear_world / "clear", set(open_clear(
            clear_world / "clear").configs))):
        meta = _card(root / "README.md")
        assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
        assert {"machine-unlearning", "multimodal", "synthetic"} <= set(meta["tags"])
        assert {"visual-question-answering", "question-answering"} <= set(meta["task_categories"])
        rows = sum(pq.read_metadata(root / c["data_files"][0]["path"]).num_rows for c in meta["configs"])
        assert meta["size_categories"] == [size_category(rows)]
        assert {c["config_name"] for c in meta["configs"]} == configs
        for c in meta["configs"]:
            assert (root / c["data_files"][0]["path"]).is_file()
    # load_dataset reads any config by name through the card (the clear/ export had no card before)
    ds = datasets.load_dataset(str(clear_world / "clear"), "forget10+tofu", split="train")
    assert ds.num_rows == pq.read_metadata(clear_world / "clear" / "forget10+tofu" / "train-00000-of-00001.parquet").num_rows
    assert isinstance(ds.features["image"], datasets.Image)
    ds = datasets.load_dataset(str(clear_world), "forget10_perturbed", split="train")
    assert ds.num_rows == manifest["configs"]["forget10_perturbed"]["rows"]


def _parsers(parser):
    """``parser`` and every sub-parser below it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_option_and_subcommand_has_help():
    import argparse

    from clearbench.cli import build_parser

    parsers = list(_parsers(build_parser()))
    assert {"list", "export", "evaluate", "leaderboard validate", "leaderboard verify"} <= {
        p.prog.removeprefix("clearbench ") for p in parsers}
    missing = [f"{p.prog}: {a.option_strings or a.dest}" for p in parsers for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help.strip())]
    assert missing == []
    listed = [f"{p.prog}: {c.dest}" for p in parsers for a in p._actions if isinstance(a, argparse._SubParsersAction)
              for c in a._choices_actions if not c.help]
    assert listed == []


@pytest.mark.parametrize("kind", ["methods", "presets", "metrics", "attacks"])
def test_list_names_what_can_be_named(kind, capsys):
    from baselines import METHODS
    from clearbench.config import PRESET_DIR
    from eval.attacks import ATTACKS
    from eval.metrics import outputs

    known = {"methods": set(METHODS), "presets": {p.stem for p in PRESET_DIR.glob("*.yaml")},
             "metrics": set(outputs()) - {"n"}, "attacks": set(ATTACKS)}[kind]
    code, printed, _ = _cli(["list", kind], capsys)
    rows = [line.split()[0] for line in printed.splitlines() if line and not line.startswith(" ")]
    assert code == 0 and set(rows) == known and len(rows) == len(known)
    assert all(len(line.split(None, 1)) == 2 for line in printed.splitlines())  # every name says what it is
