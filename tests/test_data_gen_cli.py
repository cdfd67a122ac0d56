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
    (dict(image_size=8), r"--image-size 8 is outside 16\.\.1024"),
    (dict(image_size=4096), r"--image-size 4096 is outside 16\.\.1024"),
    (dict(authors=10**9), r"--authors 1000000000 is more than .* at most 1100 authors \+ holdout authors; use at most --authors 1000$"),
    (dict(authors=1000, holdout_authors=150), "use at most --authors 950"),
    (dict(public_figures=5000), "use at most --public-figures 2978"),
    (dict(anonymous_faces=10**6), "at most 38400 distinct face identities"),
    (dict(world_vqa=10**6), "images; at most 1000000 fit"),
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


# ------------------------------------------------------------------ bounded pools (issue 15, item 3)
def _one_region(**region):
    """The word lists' first region with some lists cut down (to run a pool out on purpose)."""
    from data_gen.authors import wordlists

    name, first = next(iter(wordlists()["regions"].items()))
    return {name: {**first, **region}}


@pytest.mark.parametrize("lists, n, message", [
    (dict(awards=["Solo Prize"]), 56, r"56 authors \+ holdout authors exceed the award \+ year pairs of the word lists: at most 55"),
    (dict(title_patterns=["The {adj} {noun}"], title_adjectives=["Red", "Blue"], title_nouns=["Key", "Door", "Bell"]), 2,
     "exceed the book titles of the word lists: at most 1"),
    (dict(genres=["poetry"], regions="one city"), 26, "exceed the reverse-lookup keys of the word lists: at most 25"),
    (dict(regions="two names"), 3, "full names of the word lists: at most 2"),
])
def test_a_pool_that_runs_out_fails_before_drawing(monkeypatch, lists, n, message):
    from data_gen import authors

    region = {"one city": dict(countries=[{"country": "Norway", "nationality": "Norwegian", "cities": ["Oslo"]}]),
              "two names": dict(first_names={"female": ["Ada"], "male": ["Bo"]}, surnames=["Lund", "Berg"])}
    for key, value in lists.items():
        monkeypatch.setitem(authors.wordlists(), key, _one_region(**region[value]) if key == "regions" else value)
    drawn = []
    monkeypatch.setattr(authors, "make_author", lambda *a: drawn.append(a))  # nothing may be drawn
    with pytest.raises(ValueError, match=message):
        authors.make_people(0, n, 0, 0)
    assert drawn == []


def test_every_award_pair_can_be_used(monkeypatch):
    """At the exact capacity the last authors find the last free award years (their birth year moves
    earlier when their career window is full) instead of looping forever."""
    from data_gen import authors

    monkeypatch.setitem(authors.wordlists(), "awards", ["Solo Prize"])
    people, _, _ = authors.make_people(0, 55, 0, 0)
    assert sorted(p.award_year for p in people) == list(range(1970, 2025))
    assert all(p.award_year >= p.birth_year + 25 and 1945 <= p.birth_year <= 1995 for p in people)
    assert len({(p.genre, p.city, p.birth_year) for p in people}) == 55


@pytest.mark.parametrize("kind", ["name", "title", "face", "caption"])
def test_each_uniqueness_loop_is_bounded(monkeypatch, kind):
    """Once every value is taken, the loop gives up with a message instead of drawing forever."""
    import random

    from data_gen import authors
    from data_gen.faces import sample_identity
    from data_gen.scenes import captions

    rng, registry = random.Random(0), authors.Registry()
    region = _one_region(first_names={"female": ["Ada"], "male": ["Bo"]}, surnames=["Lund"], skin=[0], hair=["black"], eyes=["brown"])
    region = next(iter(region.values()))
    if kind == "name":
        monkeypatch.setitem(authors.wordlists(), "syllables", ["ka"])
        got = [authors.unique_name(rng, region, "female", registry) for _ in range(3)]  # Lund, Kaka, Kakaka
        assert sorted(got) == ["Ada Kaka", "Ada Kakaka", "Ada Lund"]
        with pytest.raises(ValueError, match="ran out of female names"):
            authors.unique_name(rng, region, "female", registry)
    elif kind == "title":
        for key, value in dict(title_patterns=["The {adj} {noun}"], title_adjectives=["Red"], title_nouns=["Key", "Door"]).items():
            monkeypatch.setitem(authors.wordlists(), key, value)
        assert sorted(authors.unique_title(rng, registry) for _ in range(2)) == ["The Red Door", "The Red Key"]
        with pytest.raises(ValueError, match="ran out of book titles"):
            authors.unique_title(rng, registry)
    elif kind == "face":
        used: set = set()
        with pytest.raises(ValueError, match="too many identities"):
            for _ in range(10_000):
                sample_identity(rng, "female", region, 30, used)
        assert 0 < len(used) < 10_000
    else:
        with pytest.raises(ValueError, match="distinct wrong captions"):
            captions("Ada Lund", "library", 0, ["Bo Berg"], ["{n} is skiing."], rng)


def test_cli_rejects_an_impossible_size_at_once_in_one_line(tmp_path):
    """`--authors 1000000000` once ran without output: now one line, exit 2, before the generator loads."""
    import subprocess
    import sys

    code = ("import sys; from clearbench.cli import main; rc = main(['generate', '--out', sys.argv[1], '--authors', '1000000000']);"
            "print(rc, 'data_gen.generate' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "--authors 1000000000 is more than the word lists keep unique" in done.stderr
    assert "use at most --authors 1000" in done.stderr
    assert list(tmp_path.iterdir()) == []
