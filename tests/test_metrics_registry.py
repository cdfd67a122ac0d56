"""The metric registry: our ``eval`` package, specs that say what they read, and a new metric as one
module plus one registry line (a toy metric shows up in the result keys, validation and the report)."""
from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from eval.aggregate import MetricOptions, aggregate, per_example_values
from eval.metrics import METRICS, comparisons, example_metrics, metric_versions, output, outputs, specs
from eval.metrics.spec import OUTPUT_FIELDS, Comparison, Composite, ExampleMetric, Output

_spec = importlib.util.spec_from_file_location(
    "_clearbench_metric_fixtures_reg", pathlib.Path(__file__).with_name("test_metrics_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- our eval, the builtin intact
def test_eval_resolves_to_this_repository_and_the_builtin_still_works(tmp_path):
    """PyPI has an unrelated ``eval`` distribution: ``from eval import metrics`` must load ours, and
    importing every package of ours must leave the builtin ``eval`` alone (run in a fresh interpreter
    started outside the repository, so the working directory cannot shadow anything)."""
    code = ("import builtins, sys\n"
            "from eval import metrics, leaderboard, evaluate\n"
            "from clearbench import cli\n"
            "import baselines, data_gen\n"
            "assert type(builtins.eval).__name__ == 'builtin_function_or_method', builtins.eval\n"
            "assert eval('6 * 7') == 42\n"
            "print(sys.modules['eval'].__file__)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert pathlib.Path(done.stdout.strip()).resolve() == REPO / "eval" / "__init__.py"


def test_no_module_binds_the_name_eval():
    """``import eval`` / ``import eval.x`` would rebind the builtin inside that module (DESIGN.md)."""
    bad = []
    for package in ("clearbench", "eval", "baselines", "data_gen", "tests"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    bad += [f"{path.relative_to(REPO)}:{node.lineno}" for a in node.names
                            if a.name.split(".")[0] == "eval" and a.asname is None]
    assert bad == []


# ----------------------------------------------------------------------------- specs
def test_every_family_is_versioned_and_exports_specs():
    assert metric_versions() == {n: m.VERSION for n, m in METRICS.items()}
    for name, module in METRICS.items():
        assert module.__name__ == f"eval.metrics.{name}"
        assert isinstance(module.VERSION, int) and module.VERSION >= 1
        assert module.SPECS and all(spec.version == module.VERSION for spec in module.SPECS), name
    known = outputs()  # raises on a name declared twice
    values = {m.name for m in example_metrics()}
    assert len(values) == len(example_metrics())
    for spec in specs():
        for header, k in spec.columns:
            assert k.split("/")[2] in known, (header, k)
    for c in comparisons():
        assert c.value in values, c
    with pytest.raises(ValueError, match="Did you mean 'rouge_l'"):
        output("rouge_k")


def _altered(ex, field: str):
    """``ex`` with one model output changed to another valid value of the same shape."""
    new = {"generation": "zz " + ex.generation[::-1],
           "lp_answer": [x * 0.5 - 0.1 for x in ex.lp_answer],
           "lp_paraphrased": [x * 0.5 - 0.1 for x in ex.lp_paraphrased],
           "lp_perturbed": [[x * 0.3 - 0.2 for x in row] for row in ex.lp_perturbed],
           "minkpp_mu": [x * 0.5 for x in ex.minkpp_mu],
           "minkpp_sigma": [x * 2.0 + 0.1 for x in ex.minkpp_sigma]}[field]
    return dataclasses.replace(ex, **{field: new})


@pytest.mark.parametrize("options", [MetricOptions(), MetricOptions(tr_reference="answer", tr_mode="clear")])
def test_needs_name_exactly_what_a_metric_reads(options):
    """Changing an output a metric does not declare never changes its value; changing those it declares
    changes it on some example (so ``needs`` is neither short nor padded)."""
    examples = fx.synthetic_examples(seed=3, per_cell=3)
    base = per_example_values(examples, options)
    one_changed = {f: per_example_values([_altered(ex, f) for ex in examples], options) for f in OUTPUT_FIELDS}
    for metric in example_metrics():
        assert metric.needs and set(metric.needs) <= set(OUTPUT_FIELDS), metric.name
        for field in set(OUTPUT_FIELDS) - set(metric.needs):
            assert all(one_changed[field][ex.id].get(metric.name) == base[ex.id].get(metric.name)
                       for ex in examples), (metric.name, field)
        every = examples
        for field in metric.needs:
            every = [_altered(ex, field) for ex in every]
        changed = per_example_values(every, options, [metric.name])
        assert any(changed[ex.id].get(metric.name) != base[ex.id].get(metric.name) for ex in examples), metric.name


def test_output_bounds_and_directions():
    unit = Output("x")
    assert unit.problem("retain/all/x", 0.5) is None and unit.problem("retain/all/x", 1.0) is None
    assert "out of bounds" in unit.problem("retain/all/x", 1.0 + 1e-12)
    assert "not a finite number" in unit.problem("retain/all/x", float("nan"))
    assert "not a finite number" in unit.problem("retain/all/x", True)
    assert output("n").problem("retain/all/n", 3.5) == "aggregate retain/all/n = 3.5 is out of bounds"
    assert output("loss_privleak").problem("mia/all/loss_privleak", -100.0 - 1e-12) is None
    # on the forget split less knowledge is better; the truth-ratio statistic is oriented per split
    assert output("rouge_l").arrow("retain") == "↑" and output("rouge_l").arrow("forget") == "↓"
    assert output("truth_ratio").arrow("forget") == "↑"
    with pytest.raises(ValueError, match="direction"):
        Output("y", better="up")


# ----------------------------------------------------------------------------- a new metric: one module + one line
def _toy_module() -> types.ModuleType:
    """What a contributor writes: eval/metrics/answer_words.py (here built in memory)."""
    mod = types.ModuleType("eval.metrics.answer_words")
    mod.VERSION = 1

    def spread(ctx) -> None:  # a composite of the toy's own cells
        parts = ["retain/all/answer_words", "forget/all/answer_words"]
        if all(p in ctx.metrics for p in parts):
            ctx.put("all/all/answer_words_gap", abs(ctx.metrics[parts[0]] - ctx.metrics[parts[1]]), parts)

    mod.SPECS = (
        ExampleMetric(Output("answer_words", header="Words", forget_better="lower"), mod.VERSION,
                      lambda ex, batch: min(1.0, len(ex.generation.split()) / 10), needs=("generation",)),
        Composite((Output("answer_words_gap", better="none"),), mod.VERSION, spread,
                  columns=(("Words gap", "all/all/answer_words_gap"),)),
    )
    return mod


def _words(examples, split):
    return np.mean([min(1.0, len(ex.generation.split()) / 10) for ex in examples if ex.eval_split == split])


def test_toy_metric_reaches_keys_validation_and_report(monkeypatch, tmp_path):
    from eval.leaderboard import build_report, columns, fmt, make_reference
    from eval.results import build_result, validate

    monkeypatch.setitem(METRICS, "answer_words", _toy_module())  # the one registry line
    world, gold = fx.synthetic_examples(seed=0), fx.synthetic_examples(seed=1, memorised=0.0)
    m = aggregate(world, gold)["metrics"]
    assert m["retain/all/answer_words"] == pytest.approx(_words(world, "retain"))
    assert "forget/joint/answer_words" in m and "mia/all/answer_words" not in m
    assert m["all/all/answer_words_gap"] == pytest.approx(abs(_words(world, "retain") - _words(world, "forget")))

    gold_res = json.loads(json.dumps(build_result(gold, aggregate(gold, gold), dict(
        fx.provenance(), model_fingerprint="gold-fp", model_path="runs/gold-10", gold="self"), gold=gold)))
    res = json.loads(json.dumps(build_result(world, aggregate(world, gold), dict(
        fx.provenance(), model_path="runs/npo-10", run={"method": "npo", "forget_modality": "joint"}), gold=gold_res)))
    assert res["provenance"]["metric_versions"]["answer_words"] == 1
    assert validate(res, gold_res) == []
    tampered = copy.deepcopy(res)
    tampered["aggregates"]["metrics"]["retain/all/answer_words"] += 0.01
    assert any(p.startswith("aggregate retain/all/answer_words = ") and "recomputation gives" in p
               for p in validate(tampered, gold_res))
    tampered["aggregates"]["metrics"]["retain/text/answer_words"] = 1.5
    assert "aggregate retain/text/answer_words = 1.5 is out of bounds" in validate(tampered, gold_res)

    (tmp_path / "gold-10.json").write_text(json.dumps(gold_res))
    (tmp_path / "npo-10.json").write_text(json.dumps(res))
    build_report([tmp_path / "npo-10.json"], tmp_path / "report", make_reference(tmp_path / "gold-10.json"))
    assert ("Words gap", "all/all/answer_words_gap") in columns()
    assert ("forget Words ↓", "forget/all/answer_words") in columns()
    md = (tmp_path / "report" / "tables.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "| retain Words ↑ |" in header and "| forget Words ↓ |" in header
    npo = next(line for line in md.splitlines() if line.startswith("| 1 | npo |"))
    assert fmt("retain/all/answer_words", m["retain/all/answer_words"]) in npo
    assert "forget/all/answer_words" in (tmp_path / "report" / "table_multimodal.csv").read_text().splitlines()[0]
    assert "retain Words ↑" in (tmp_path / "report" / "index.html").read_text()

    monkeypatch.delitem(METRICS, "answer_words")  # a clearbench without the metric refuses the file
    problems = validate(res)
    assert "aggregate retain/all/answer_words: unknown metric 'answer_words'" in problems
    assert any(p.startswith("metric_versions") for p in problems)


def test_a_comparison_needs_a_known_direction_of_comparison():
    with pytest.raises(ValueError, match="gold, holdout"):
        Comparison("z", (Output("z"),), 1, value="rouge_l", against="retain", compare=lambda a, b: {},
                   cells=lambda c: [])


def test_a_result_written_before_the_specs_is_refused_in_one_line():
    """tests/data/result_before_specs.json was written by main's code before the registry iterated specs. It
    recomputed bit for bit after the specs (metric specs commit); forget quality's and the truth ratio's new
    definitions (new VERSIONs) now refuse it with one line naming the cause."""
    from eval.results import validate

    old = json.loads((REPO / "tests" / "data" / "result_before_specs.json").read_text())
    problems = validate(old)
    assert len(problems) == 1 and problems[0].startswith("metric_versions ")
    assert "'forget_quality': 1" in problems[0] and "'truth_ratio': 2" in problems[0]
