"""Image rendering jobs (run in worker processes; imports only PIL and the drawing modules)."""
from __future__ import annotations

import io

from PIL import Image

from data_gen.authors import sub_rng
from data_gen.faces import Pose, portrait
from data_gen.scenes import render_scene, vqa_item


def png_bytes(img: Image.Image) -> bytes:
    """PNG without metadata (no timestamps, no text chunks): same pixels -> same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def render(job: tuple) -> tuple[bytes, dict]:
    """Render one image; the job carries its own seed key, so scheduling cannot change a pixel."""
    kind, seed, key, size, *rest = job
    rng = sub_rng(seed, "image", key)
    if kind == "scene":
        ident, scene = rest
        return png_bytes(render_scene(ident, scene, rng, size)), {}
    if kind == "portrait":
        (ident,) = rest
        bg = (rng.randint(150, 240), rng.randint(150, 240), rng.randint(150, 240))
        return png_bytes(portrait(ident, Pose.sample(rng) if key.startswith("f") else Pose(), size, bg)), {}
    item = vqa_item(rng, size)
    return png_bytes(item.pop("image")), item
