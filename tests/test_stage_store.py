"""The stage store (clearbench.stage_store): a second study directory copies the world, base and finetunes another
study made, under the same stage keys and code, instead of making them again; anything else is made."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clearbench.config import BenchConfig, load_config
from clearbench.executor import Progress, state_of
from clearbench.run import build_study
from clearbench.stage_store import ENTRY_FILE, STORED_KINDS, StageStore
from study_fixtures import SMOKE_OVERRIDES


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` but the stage marker."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "stage.json"}


def _bench_study():
    spec = importlib.util.spec_from_file_location("bench_study", Path(__file__).parent.parent / "benchmarks" /
                                                  "bench_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stored(parallel, tmp_path) -> tuple[BenchConfig, list, StageStore]:
    """The smoke study's config, its stages and a store holding its world, base and finetunes."""
    cfg = load_config(BenchConfig, "tiny-smoke", SMOKE_OVERRIDES)
    first = [s for s in build_study(cfg, parallel[0]) if s.kind in STORED_KINDS]
    store = StageStore(tmp_path / "store")
    assert [store.put(s) for s in first] == [True] * len(first)
    assert [store.put(s) for s in first] == [False] * len(first)  # already there: left as it is
    return cfg, first, store


def test_second_study_copies_world_base_and_finetunes_from_the_store(parallel, tmp_path):
    cfg, first, store = _stored(parallel, tmp_path)
    assert sorted({s.kind for s in first}) == sorted(STORED_KINDS) and len(first) >= 4  # world, base, target, gold(s)
    out = tmp_path / "second"
    (out / "target").mkdir(parents=True)
    (out / "target" / "half-written").write_text("x")  # an interrupted target: the stored one replaces it
    stages = build_study(cfg, out)
    notes: list[str] = []
    run = Progress(stages, out / "run.jsonl", notes.append, 1, store)
    for stage, made in zip([s for s in stages if s.kind in STORED_KINDS], first):
        assert stage.key == made.key
        assert run.begin(stage) is None, stage.name  # copied, not started
        assert run.outcome[stage.name] == "fetched" and state_of(stage) == "done"
        assert _files(stage.path) == _files(made.path)  # the same bytes, without the store's own entry file
        assert not (stage.path / ENTRY_FILE).exists()
        assert json.loads(stage.marker.read_text())["from_store"] == str(store.entry(stage))
    assert not (out / "target" / "half-written").exists()
    events = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["fetch"] * len(first)
    rows = _bench_study().stage_times(out)  # the benchmark's stage table names them as copies
    assert [r["kind"] for r in rows] == [f"{s.kind} (from store)" for s in first]
    entry = json.loads((store.entry(first[0]) / ENTRY_FILE).read_text())
    assert entry["key"] == first[0].key and entry["source"] == str(first[0].path.resolve())
    # the next stage (an unlearning run) is not a stored kind: it starts
    nxt = next(s for s in stages if s.kind == "unlearn")
    assert not store.has(nxt) and run.begin(nxt) is not None


def test_store_needs_the_same_key_and_code(parallel, tmp_path):
    cfg, first, store = _stored(parallel, tmp_path)
    assert all(StageStore(store.root).has(s) for s in first)
    assert not any(StageStore(store.root, code="0" * 16).has(s) for s in first)  # other code: nothing reused
    changed = load_config(BenchConfig, "tiny-smoke", SMOKE_OVERRIDES + ["finetune.phase.train.lr=1.0e-3"])
    states = {s.name: store.has(s) for s in build_study(changed, tmp_path / "other") if s.kind in STORED_KINDS}
    assert states.pop("world") and states.pop("base")  # upstream of the change: same keys
    assert states and not any(states.values())  # the finetunes' keys changed: made again


def test_dry_run_names_stages_in_the_store(parallel, tmp_path):
    _, first, store = _stored(parallel, tmp_path)
    env = dict(os.environ, CLEARBENCH_STAGE_STORE=str(store.root))  # the store from the environment
    done = subprocess.run([sys.executable, "-m", "clearbench.cli", "run", "--preset", "tiny-smoke", "--out",
                           str(tmp_path / "new"), "--dry-run", *SMOKE_OVERRIDES], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    states = {line.split()[1]: line.split(None, 2)[2] for line in done.stdout.splitlines() if line.startswith("[")}
    assert {name for name, state in states.items() if state == "in the stage store"} == {s.name for s in first}
    assert {state for name, state in states.items() if name not in {s.name for s in first}} == {"new"}


def test_store_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        StageStore(tmp_path / "f", code="x")


def test_a_copy_that_fails_is_made_here_instead(parallel, tmp_path, monkeypatch):
    cfg, first, store = _stored(parallel, tmp_path)

    def disk_full(stage):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "fetch", disk_full)  # the failure a full disk gives, injected
    stages = build_study(cfg, tmp_path / "second")
    notes: list[str] = []
    started = Progress(stages, tmp_path / "second" / "run.jsonl", notes.append, 1, store).begin(stages[0])
    assert started is not None and not started.resume  # made here, from the start
    assert any("WARNING: could not copy it from the stage store" in n and "No space left" in n for n in notes)


def test_an_entry_deleted_while_the_study_starts_is_made_here(parallel, tmp_path, monkeypatch):
    """The entry is there when the study looks and gone when it copies (deleted by hand in between): the stage is
    made, not recorded as fetched with nothing in its directory."""
    cfg, first, store = _stored(parallel, tmp_path)
    real_has = store.has

    def deleted_after_look(stage):
        there = real_has(stage)
        shutil.rmtree(store.entry(stage), ignore_errors=True)
        monkeypatch.setattr(store, "has", real_has)
        return there

    monkeypatch.setattr(store, "has", deleted_after_look)
    stages = build_study(cfg, tmp_path / "second")
    run = Progress(stages, tmp_path / "second" / "run.jsonl", [].append, 1, store)
    started = run.begin(stages[0])
    assert started is not None and run.outcome.get(stages[0].name) != "fetched"
