"""Shared pytest fixtures. Each owner keeps a clearly delimited section."""
import os
import tempfile

# Nothing in the tests may reach a hub or write to ~/.cache: set before datasets/transformers import.
_HF_TMP = tempfile.mkdtemp(prefix="clearbench-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# torch threads stay as set (clearbench.threads would drop them under load, and exact-equality tests compare runs)
os.environ.setdefault("CLEARBENCH_FIXED_THREADS", "1")
# under pytest-xdist (README: -n 2) each worker and the processes it starts get one torch thread unless a test sets
# another: a 2-thread op beside the other worker waits on its busy core (docs/performance.md, threads table)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HOME"] = os.path.join(_HF_TMP, "home")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_TMP, "datasets")

import pytest  # noqa: E402

# ============================================================================ data_gen: tiny world
# A small but complete world (all configs, images included) generated once per session.
# 20 authors so 5 % and 10 % give whole authors (1 and 2); later tests train a tiny model on it.

TINY_WORLD_PARAMS = dict(
    seed=0, authors=20, forget_percents=(5, 10), qa_per_author=8, images_per_author=6, heldout_images=2,
    public_figures=8, public_train_images=3, public_heldout_images=2, world_vqa=30, world_vqa_train=60,
    anonymous_faces=40, retain_eval_authors=5, image_size=64, workers=2,
)


def tiny_world_params(**overrides):
    from data_gen.generate import WorldParams

    return WorldParams(**{**TINY_WORLD_PARAMS, **overrides})


@pytest.fixture(scope="session")
def tiny_world_path(tmp_path_factory):
    """Directory of the tiny world (generated once; treat as read-only)."""
    from data_gen.generate import generate_world

    return generate_world(tmp_path_factory.mktemp("tiny") / "world", tiny_world_params())


@pytest.fixture(scope="session")
def tiny_world(tiny_world_path):
    """The tiny world opened with clearbench.data.open_world (a clearbench.data.World)."""
    from clearbench.data import open_world

    return open_world(tiny_world_path)

# ======================================================================== end data_gen: tiny world

# ---- model fixtures (clearbench.models; builders in tests/model_fixtures.py) -----------------
# Session-scoped tiny random checkpoints of every model family (tiny-llava, llava, qwen2-vl),
# saved like the real ones and loaded through clearbench.models.load_model. No downloads.

@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory):
    """{family name: dir of a tiny random checkpoint of that family}, built once per session."""
    from model_fixtures import FAMILY_BUILDERS

    root = tmp_path_factory.mktemp("model_checkpoints")
    return {name: build(root / name) for name, build in FAMILY_BUILDERS.items()}


@pytest.fixture(scope="session")
def tiny_llava_dir(family_checkpoints):
    return family_checkpoints["tiny-llava"]


@pytest.fixture(scope="session")
def loaded_families(family_checkpoints) -> dict:
    """{family name: clearbench.models.Loaded} (fp32, CPU). Tests that train must deepcopy the model."""
    from clearbench.models import load_model

    return {name: load_model(path) for name, path in family_checkpoints.items()}
# ---- end model fixtures -------------------------------------------------------------------

# ---- study fixtures (clearbench run; built in tests/study_fixtures.py) ---------------------
# The tiny-smoke study run with --jobs 2, once per session (test_run and test_cluster compare against it).
from study_fixtures import parallel  # noqa: E402,F401
# ---- end study fixtures -------------------------------------------------------------------
