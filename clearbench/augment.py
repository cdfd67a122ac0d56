"""Load-time image augmentation for training (stored images stay noise-free: noise doubles PNG size).

Deterministic in (seed, step, record id), so a resumed run sees exactly the same pixels.
"""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np
from PIL import Image

from clearbench.types import Record, Task


def augment_image(image: Image.Image, rng: np.random.Generator, flip: bool = True) -> Image.Image:
    """Shift by up to 1/16 of the side, random horizontal flip (unless ``flip=False``: answers that
    name a position, like VQA's "top left", would become wrong), brightness/colour jitter, light noise."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    h, w, _ = arr.shape
    max_shift = max(1, min(h, w) // 16)
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    arr = np.roll(arr, shift=(int(dy), int(dx)), axis=(0, 1))
    if rng.random() < 0.5 and flip:
        arr = arr[:, ::-1]
    arr = arr * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8, size=3)  # brightness, per-channel colour shift
    arr = arr + rng.normal(0.0, 3.0, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def augment_records(batch: dict[str, list[Record]], seed: int, step: int) -> dict[str, list[Record]]:
    out = {}
    for kind, records in batch.items():
        new = []
        for rec in records:
            if rec.image is not None:
                rng = np.random.default_rng([seed, step, zlib.crc32(rec.id.encode())])
                rec = dataclasses.replace(rec, image=augment_image(rec.image, rng, flip=rec.task != Task.VQA))
            new.append(rec)
        out[kind] = new
    return out
