"""Optional experiment tracking (train.report_to, clearbench.tracking): off by default and out of stage keys,
checked at config load, and when on a tracker of accelerate's gets every log.jsonl line of a training run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearbench.config import BenchConfig, ConfigError, TrainConfig, load_config
from clearbench.plan import stage_key
from clearbench.tracking import PROJECT, trackers
from clearbench.typed_config import to_dict


def test_off_by_default_and_left_out_of_stage_keys():
    assert TrainConfig().report_to == "" and TrainConfig(report_to="none").report_to == ""
    section = to_dict(TrainConfig())
    del section["report_to"]
    assert stage_key("finetune", TrainConfig()) == stage_key("finetune", section)


def _load_error(value: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(BenchConfig, "tiny-smoke", [f"finetune.phase.train.report_to={value}"])
    return str(info.value)


def test_an_unknown_tracker_is_refused_at_load_naming_the_allowed_values():
    err = _load_error("tensorbored")
    assert "\n" not in err and "report_to='tensorbored'" in err and "finetune.phase.train" in err
    assert "one of none, " in err and all(name in err for name in trackers())


def test_an_uninstalled_tracker_is_refused_at_load_naming_its_package():
    missing = [name for name, installed in trackers().items() if not installed]
    if not missing:
        pytest.skip("every tracker accelerate knows is installed here")
    err = _load_error(missing[0])
    assert "\n" not in err and f"the tracker package {missing[0]} is not installed" in err


class RecordingTracker:
    """A tracker as accelerate's register_tracker_class takes one: writes what it is given under its logging dir."""

    name = "clearbench_test"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str):
        self.dir = Path(logging_dir) / run_name

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict):
        (self.dir / "config.json").write_text(json.dumps(values))

    def log(self, values: dict, step: int | None = None, **kwargs):
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def finish(self):
        (self.dir / "finished").write_text("")


@pytest.fixture
def recording_tracker(monkeypatch):
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker

    kind = type("RecordingTracker", (RecordingTracker, GeneralTracker), {})
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, kind.name, kind)
    return kind.name


def test_a_training_run_logs_its_lines_to_the_tracker(recording_tracker, tiny_llava_dir, tmp_path):
    from clearbench.lora import set_trainable
    from clearbench.models import load_model
    from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, get_accelerator, train
    from model_fixtures import sample_records

    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=4, micro_batch_size=4, log_every=2, report_to=recording_tracker)
    loaded = load_model(tiny_llava_dir)
    set_trainable(loaded.model.train(), cfg)
    train(loaded.model, loaded.processor, loaded.family, ShuffleSampler(sample_records(), 4, seed=0),
          example_nll_loss, cfg, TrainRun(tmp_path / "run", desc="finetune"))
    logged = tmp_path / "run" / PROJECT
    jsonl = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in jsonl] == [2, 3]  # every log_every-th step and the last
    assert [json.loads(line) for line in (logged / "log.jsonl").read_text().splitlines()] == jsonl
    config = json.loads((logged / "config.json").read_text())
    assert config["run"] == "finetune" and config["report_to"] == recording_tracker and config["lora.r"] == 8
    assert config["betas"] == "[0.9, 0.98]" and (logged / "finished").exists()
    assert get_accelerator().trackers == []  # detached: the next run of the process starts clean


@pytest.mark.skipif(not trackers().get("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_writes_its_event_files(tiny_llava_dir, tmp_path):
    from clearbench.lora import set_trainable
    from clearbench.models import load_model
    from clearbench.train import ShuffleSampler, TrainRun, example_nll_loss, train
    from model_fixtures import sample_records

    cfg = TrainConfig(lr=1e-2, max_steps=2, batch_size=4, micro_batch_size=4, log_every=1, report_to="tensorboard")
    loaded = load_model(tiny_llava_dir)
    set_trainable(loaded.model.train(), cfg)
    train(loaded.model, loaded.processor, loaded.family, ShuffleSampler(sample_records(), 4, seed=0),
          example_nll_loss, cfg, TrainRun(tmp_path / "run"))
    assert list((tmp_path / "run" / PROJECT).glob("events.out.tfevents.*"))
