"""Stage keys are pinned: a refactor must not re-run a finished study.

``tests/data/stage_keys.json`` holds every stage's key for the shipped presets (and a replicate study).
A deliberate change of a key (a new generator version, a changed preset value) updates the pin with
``CLEARBENCH_UPDATE_PINS=1 python -m pytest tests/test_stage_keys.py`` and a line in its ``reasons``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PIN = Path(__file__).parent / "data" / "stage_keys.json"
STUDIES = {  # pin name -> (preset, overrides)
    "tiny": ("tiny", []),
    "tiny-smoke": ("tiny-smoke", []),
    "tiny-seeds": ("tiny", ["study.seeds=[0,1,2]"]),
    "llava-1.5-7b": ("llava-1.5-7b", []),
    "qwen2-vl-2b": ("qwen2-vl-2b", []),
    "paper": ("paper", []),
}


def _keys(preset: str, overrides: list[str]) -> dict[str, str]:
    from clearbench.config import BenchConfig, load_config
    from clearbench.run import build_study

    cfg = load_config(BenchConfig, preset, overrides)
    return {s.name: s.key for s in build_study(cfg, Path("/nonexistent/study"))}


def test_stage_keys_match_the_pin():
    pinned = json.loads(PIN.read_text())
    now = {name: _keys(*spec) for name, spec in STUDIES.items()}
    if os.environ.get("CLEARBENCH_UPDATE_PINS") == "1":
        PIN.write_text(json.dumps(pinned | {"studies": now}, indent=1, sort_keys=True) + "\n")
        pytest.skip("pins rewritten; add the reason to its 'reasons' list")
    for name, keys in now.items():
        old = pinned["studies"][name]
        assert sorted(keys) == sorted(old), f"{name}: stages added/removed: {sorted(set(keys) ^ set(old))[:5]}"
        changed = [s for s in keys if keys[s] != old[s]]
        assert not changed, f"{name}: {len(changed)} stage keys changed, e.g. {changed[:5]}"
