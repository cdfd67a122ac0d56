"""`clearbench generate` and generate_world: bad inputs fail loudly, nothing on disk is damaged."""
import json

import pytest

from clearbench.cli import main
from conftest import tiny_world_params
from data_gen.generate import generate_world

SMALL = ["--authors", "10", "--forget-percents", "10", "--qa-per-author", "2", "--images-per-author", "1",
         "--heldout-images", "0", "--public-figures", "0", "--world-vqa", "0", "--anonymous-faces", "0", "--workers", "1"]


@pytest.mark.parametrize("override, message", [
    (dict(authors=-3), "--authors must be an integer >= 1, got -3"),
    (dict(qa_per_author=0), "--qa-per-author must be an integer >= 1"),
    (dict(images_per_author=0), "--images-per-author must be an integer >= 1"),
    (dict(heldout_images=-1), "--heldout-images must be an integer >= 0"),
    (dict(public_train_images=-1), "--public-train-images must be an integer >= 0"),
    (dict(public_figures=3), "--public-figures 3"),
    (dict(image_size=8), "--image-size 8 is too small"),
    (dict(qa_per_author=99), "exceeds the 23 question templates"),
    (dict(authors=30, forget_percents=(5,)), r"forget percentage 5 % of 30 authors is 1.5 authors, not a whole number; use a number of authors that is a multiple of 20"),
    (dict(forget_percents=(0,)), "not an integer between 1 and 99"),
    (dict(forget_percents=(5, 5)), "repeats a percentage"),
    (dict(layout="hf"), "--layout 'hf' is unknown"),
    (dict(image_backend="gan"), "--image-backend 'gan' is unknown"),
    (dict(image_backend="diffusers"), "needs --diffusers-model"),
    (dict(holdout_authors=1), "smaller than the largest forget split"),
])
def test_bad_parameters_are_rejected_before_writing(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        generate_world(tmp_path / "w", tiny_world_params(**override))
    assert not (tmp_path / "w").exists() and list(tmp_path.iterdir()) == []


def test_cli_prints_one_clear_error_line(tmp_path, capsys):
    rc = main(["generate", "--out", str(tmp_path / "w"), "--authors", "30", "--forget-percents", "1,5,10"])
    err = capsys.readouterr().err
    assert rc == 2 and "forget percentage 1 % of 30 authors" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse: unknown flag / not a number
        main(["generate", "--out", str(tmp_path / "w"), "--autors", "5"])
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(tmp_path / "w"), "--forget-percents", "five"])


def test_existing_non_empty_out_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    rc = main(["generate", "--out", str(out), *SMALL])
    assert rc == 2 and "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me" and [p.name for p in tmp_path.iterdir()] == ["w"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        generate_world(tmp_path / "file", tiny_world_params())


def test_cli_generates_and_overwrites(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["generate", "--out", str(out), "--seed", "3", *SMALL]) == 0
    assert "wrote world" in capsys.readouterr().out
    first = json.loads((out / "manifest.json").read_text())
    assert first["seed"] == 3 and first["params"]["authors"] == 10 and first["configs"]["forget10"]["rows"] > 0
    assert first["params"]["public_train_images"] == 20 and first["params"]["anonymous_faces"] == 0
    assert set(first["files"]) == {f"data/{c}.parquet" for c in first["configs"]}
    (out / "stale.txt").write_text("old")
    assert main(["generate", "--out", str(out), "--seed", "4", "--overwrite", *SMALL, "--public-train-images", "2"]) == 0
    second = json.loads((out / "manifest.json").read_text())
    assert second["params"]["public_train_images"] == 2
    assert second["seed"] == 4 and second["fingerprint"] != first["fingerprint"] and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temp or backup dirs left behind
