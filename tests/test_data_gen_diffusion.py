"""Optional diffusers backend, on tiny random-weight components built from config (no downloads)."""
import random

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from conftest import tiny_world_params  # noqa: E402
from data_gen.diffusion import TINY_IDENTITY_CFG, IdentityFilter, build_tiny_pipeline, generate_consistent, save_identity_model  # noqa: E402
from data_gen.faces import Pose, portrait, sample_identity  # noqa: E402
from data_gen.generate import generate_world  # noqa: E402
from data_gen.scenes import render_scene  # noqa: E402


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import open_clip
    import torch

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("diffusers") / "pipe"
    build_tiny_pipeline(64).save_pretrained(d)
    save_identity_model(TINY_IDENTITY_CFG, d / "identity", open_clip.CLIP(**TINY_IDENTITY_CFG))
    return d


def test_identity_filter_accepts_and_retries(tiny_models):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_models, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    filt = IdentityFilter.from_dir(tiny_models / "identity")
    region = {"skin": [2], "hair": ["black"], "eyes": ["brown"]}
    ident = sample_identity(random.Random(0), "female", region, 40, set())
    face, init = portrait(ident, Pose(), 64), render_scene(ident, "library", random.Random(1), 64)
    assert filt.similarity(face, face) == pytest.approx(1.0, abs=1e-5)
    img, sim, tries = generate_consistent(pipe, filt, init, face, "a person reading in a library", seed=0, threshold=-1.0, max_tries=3, steps=2)
    assert tries == 1 and img.size == (64, 64) and -1.0 <= sim <= 1.0
    img2, sim2, tries2 = generate_consistent(pipe, filt, init, face, "a person reading in a library", seed=0, threshold=1.5, max_tries=2, steps=2)
    assert tries2 == 2 and sim2 >= sim - 1e-6  # never accepted: keeps the best of the tries


def test_generate_world_with_diffusers_backend(tiny_models, tmp_path):
    small = dict(authors=10, forget_percents=(10,), qa_per_author=2, images_per_author=1, heldout_images=0, public_figures=0,
                 world_vqa=0, world_vqa_train=0, anonymous_faces=0, retain_eval_authors=1, workers=1)
    proc = generate_world(tmp_path / "proc", tiny_world_params(**small))
    diff = generate_world(tmp_path / "diff", tiny_world_params(image_backend="diffusers", diffusers_model=str(tiny_models),
                                                             diffusion_steps=2, identity_max_tries=1, **small))
    from clearbench.data import open_world

    a = open_world(proc).records("forget10", tasks=["naming"])[0].image
    b = open_world(diff).records("forget10", tasks=["naming"])[0].image
    assert a.size == b.size and a.tobytes() != b.tobytes()
