"""``clearbench evaluate`` through ``clearbench.cli.main``: results, shards + merge, bad inputs (exit 2)."""
from __future__ import annotations

import json

import pytest

from clearbench.cli import main
from eval.results import validate
from test_evaluate import _build_models  # the same memoised checkpoints as tests/test_evaluate.py

FAST = ["--max-new-tokens", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def runs(tiny_world_path, tmp_path_factory):
    return _build_models(str(tiny_world_path), str(tmp_path_factory.getbasetemp() / "eval_models"))


@pytest.fixture(scope="module")
def gold_json(runs, tiny_world_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "gold-10.json"
    rc = main(["evaluate", "--model", str(runs["gold"]), "--world", str(tiny_world_path), "--gold", "self",
               "--out", str(out), *FAST])
    assert rc == 0
    return out


def test_gold_self_writes_a_valid_result(gold_json, capsys):
    result = json.loads(gold_json.read_text())
    assert validate(result) == []
    prov = result["provenance"]  # when, with which code, how long (as lm-eval's results record)
    assert prov["date"].endswith("+00:00") and prov["clearbench_version"] and prov["runtime_seconds"] > 0
    assert prov["git_revision"] is None or len(prov["git_revision"]["commit"]) == 40
    assert result["provenance"]["config"]["generation"]["max_new_tokens"] == 8
    assert result["aggregates"]["metrics"]["forget/all/forget_quality"] == 1.0


def test_shards_then_merge(runs, tiny_world_path, gold_json, tmp_path, capsys):
    parts = [tmp_path / f"t.shard{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        rc = main(["evaluate", "--model", str(runs["target"]), "--world", str(tiny_world_path), "--shard", f"{i}/2",
                   "--out", str(part), *FAST])
        assert rc == 0 and part.is_file()
    out = tmp_path / "target.json"
    assert main(["evaluate", "--merge", *map(str, parts), "--gold", str(gold_json), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert validate(result, json.loads(gold_json.read_text())) == []
    assert "merged 2 shards" in capsys.readouterr().out
    # an incomplete shard set is a bad input: exit 2, the message on stderr
    assert main(["evaluate", "--merge", str(parts[0]), "--gold", str(gold_json), "--out", str(tmp_path / "x.json")]) == 2
    assert "not a complete set" in capsys.readouterr().err


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("clearbench evaluate: error: ") and "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_exit_2_with_the_message_on_stderr(runs, tiny_world_path, gold_json, tmp_path, capsys):
    base = ["evaluate", "--model", str(runs["target"]), "--world", str(tiny_world_path), "--out",
            str(tmp_path / "r.json"), *FAST]
    err = _fails([*base, "--gold", str(tmp_path / "missing.json")], capsys)
    assert "no gold result at" in err and "clearbench evaluate --model runs/gold-10" in err
    err = _fails(base, capsys)  # no --gold at all: never a silently absent forget quality
    assert "--gold is required" in err and "--no-gold" in err
    err = _fails([*base, "--gold", "self", "--forget", "forget01"], capsys)
    assert "forget01" in err and "regenerate" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model").symlink_to(runs["target"] / "model", target_is_directory=True)
    (foreign / "run.json").write_text(json.dumps({"stage": "finetune", "world_fingerprint": "f" * 64}))
    err = _fails([*base[:2], str(foreign), *base[3:], "--gold", "self"], capsys)
    assert "trained on world" in err and "--world" in err
    err = _fails([*base[:4], str(tmp_path / "no-world"), *base[5:], "--gold", "self"], capsys)
    assert "no world at" in err
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(SystemExit):  # argparse: a malformed --shard is a usage error (exit 2)
        main([*base, "--gold", "self", "--shard", "2/2"])


def test_cell_caps_and_metric_options_from_the_command_line(runs, tiny_world_path, tmp_path, capsys):
    out = tmp_path / "capped.json"
    assert main(["evaluate", "--model", str(runs["gold"]), "--world", str(tiny_world_path), "--gold", "self",
                 "--out", str(out), "--max-per-cell", "1", "--fq-aggregation", "author_fact", *FAST]) == 0
    result = json.loads(out.read_text())
    assert validate(result) == []
    assert result["provenance"]["config"]["max_per_cell"] == 1
    assert result["aggregates"]["options"]["fq_aggregation"] == "author_fact"
    assert result["aggregates"]["options"]["tr_reference"] == "tofu"
    cells = {(e["split"], e["modality"], e["task"], e["image_role"]) for e in result["examples"]}
    assert len(result["examples"]) == len(cells)  # one record per cell
    printed = capsys.readouterr().out  # the compact summary: headline columns, a split x modality table
    assert "FQ D ↓ 0.0000" in printed and "Real ↑" in printed and len(printed.splitlines()) < 25
    assert any(line.split()[:2] == ["forget", "image"] for line in printed.splitlines())
    assert _fails(["evaluate", "--model", str(runs["gold"]), "--world", str(tiny_world_path), "--gold", "self",
                   "--out", str(tmp_path / "x.json"), "--max-per-cell", "2", "--max-per-config", "3"],
                  capsys).count("set one cap") == 1
