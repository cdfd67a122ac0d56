"""Transform probes: the forget people's held-out photos, cropped, flipped, colour-jittered, noised or greyed.

An unlearned model that no longer names a person on the photos it was unlearned on may still name them on the
same photo seen slightly differently (UnLOK-VQA and MLLMU-Bench probe with other images of the person; CLEAR
with held-out ones). Each transform is one setting over the image and joint forget probes on held-out photos
(``image_roles``); its parameters are drawn per record from (seed, record id, transform), so a run is
reproducible, and every transformed image differs from the original while the record (the label) is unchanged.
"""
from __future__ import annotations

import dataclasses
import time
import zlib

import numpy as np
from PIL import Image

from clearbench.types import Record
from eval.attacks.probes import Setting, Target

NAME = "transform"
VERSION = 1
TRANSFORMS = ("crop", "flip", "jitter", "noise", "grayscale")


@dataclasses.dataclass
class Config:
    transforms: list[str] = dataclasses.field(default_factory=lambda: list(TRANSFORMS))
    image_roles: list[str] = dataclasses.field(default_factory=lambda: ["heldout"])  # "train": the unlearned photos
    crop_area: float = 0.7  # the crop keeps this share of the image (random position), resized back
    jitter: float = 0.4  # brightness, contrast and saturation factors in 1 +- [jitter/2, jitter]
    noise_std: float = 16.0  # Gaussian pixel noise, 0-255 scale
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"transform {unknown}: known {list(TRANSFORMS)}")
        if not (0 < self.crop_area < 1 and 0 < self.jitter < 1 and self.noise_std > 0):
            raise ValueError("transform crop_area and jitter must lie in (0, 1), noise_std > 0")


def transform_image(img: Image.Image, name: str, rng: np.random.Generator, cfg: Config) -> Image.Image:
    """``img`` (RGB) under transform ``name`` with parameters drawn from ``rng``."""
    # imported here: torchvision's import pulls in torch._dynamo, seconds of every process that imports eval
    import torchvision.transforms.v2.functional as TF

    img = img.convert("RGB")
    w, h = img.size
    if name == "crop":
        side = np.sqrt(cfg.crop_area)
        ch, cw = max(1, round(h * side)), max(1, round(w * side))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
    if name == "flip":
        return TF.horizontal_flip(img)
    if name == "jitter":
        def factor() -> float:
            return 1 + float(rng.choice([-1, 1]) * rng.uniform(cfg.jitter / 2, cfg.jitter))
        img = TF.adjust_brightness(img, factor())
        img = TF.adjust_contrast(img, factor())
        return TF.adjust_saturation(img, factor())
    if name == "noise":
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, cfg.noise_std, (h, w, 3))
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    if name == "grayscale":
        return TF.rgb_to_grayscale(img, num_output_channels=3)
    raise ValueError(f"transform {name!r}: known {list(TRANSFORMS)}")


def transformed(records: list[Record], name: str, cfg: Config) -> list[Record]:
    """The image records of ``cfg.image_roles`` with their image transformed (seeded per record)."""
    out = []
    for r in records:
        if r.image is None or r.image_role not in cfg.image_roles:
            continue
        rng = np.random.default_rng([cfg.seed, zlib.crc32(r.id.encode()), TRANSFORMS.index(name)])
        out.append(dataclasses.replace(r, image=transform_image(r.image, name, rng, cfg)))
    return out


def settings(target: Target, cfg: Config) -> list[str]:
    return list(cfg.transforms)


def run_setting(target: Target, cfg: Config, name: str) -> Setting:
    probes = transformed(target.probes, name, cfg)
    if not probes:
        return Setting(name, skipped=f"no forget probe on a photo of role {cfg.image_roles}")
    t0 = time.time()
    examples = target.score(target.load(), probes)
    return Setting(name, params={"records": len(probes), "image_roles": cfg.image_roles}, examples=examples,
                   seconds=time.time() - t0)
