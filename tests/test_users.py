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
