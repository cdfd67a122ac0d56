"""Optional diffusion backend for scene images (``--image-backend diffusers``).

CLEAR made its scene photos with an identity-conditioned diffusion model (PhotoMaker) from a
chosen face plus a prompt (clear.md §1.3). Here: a local diffusers img2img pipeline turns the
procedural scene (which already shows the author's face) into a new image guided by the caption;
an open_clip identity filter rejects outputs whose image embedding has cosine similarity to the
author's canonical portrait below ``threshold`` and retries (new seed) up to ``max_tries`` times,
keeping the most similar candidate. diffusers, torch and open_clip are imported lazily.

Model directory layout (``--diffusers-model DIR``): a diffusers ``StableDiffusionImg2ImgPipeline``
saved with ``save_pretrained`` plus ``DIR/identity/open_clip_config.json`` (``{"model_cfg": {...}}``,
open_clip CLIP arguments) and optionally ``DIR/identity/open_clip_model.safetensors``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image


def build_tiny_pipeline(size: int = 64, seed: int = 0):
    """A random-weight StableDiffusionImg2ImgPipeline from config (tests; feasibility.md §2f)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=size // 4, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=size)
    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + "a in on at the of with and by reading library stage park cafe desk beach".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                        eos_token="[EOS]", model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    sched = DDIMScheduler(steps_offset=1, clip_sample=False)
    return StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)


TINY_IDENTITY_CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
                     "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


class IdentityFilter:
    """open_clip image embeddings; ``similarity(a, b)`` is the cosine of their embeddings."""

    def __init__(self, model, image_size: int) -> None:
        import open_clip
        self.model = model.eval()
        self.preprocess = open_clip.image_transform(image_size, is_train=False)

    @classmethod
    def from_dir(cls, path) -> "IdentityFilter":
        import open_clip
        path = Path(path)
        cfg_file = path / "open_clip_config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"identity model {path}: open_clip_config.json is missing; save one with "
                                    f"data_gen.diffusion.save_identity_model(model_cfg, {path})")
        cfg = json.loads(cfg_file.read_text())["model_cfg"]
        model = open_clip.CLIP(**cfg)
        weights = path / "open_clip_model.safetensors"
        if weights.is_file():
            from safetensors.torch import load_file
            model.load_state_dict(load_file(weights))
        return cls(model, cfg["vision_cfg"]["image_size"])

    def embed(self, images: list[Image.Image]):
        import torch
        with torch.no_grad():
            x = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
            return torch.nn.functional.normalize(self.model.encode_image(x), dim=-1)

    def similarity(self, a: Image.Image, b: Image.Image) -> float:
        e = self.embed([a, b])
        return float(e[0] @ e[1])


def save_identity_model(model_cfg: dict, path, model=None) -> Path:
    """Write an identity-model directory (config, and weights if a model is given)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}, indent=2))
    if model is not None:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return path


def generate_consistent(pipe, filt: IdentityFilter, init: Image.Image, face: Image.Image, prompt: str, seed: int,
                        threshold: float = 0.7, max_tries: int = 3, steps: int = 10, strength: float = 0.5) -> tuple[Image.Image, float, int]:
    """img2img from ``init`` guided by ``prompt``; retry until the identity similarity to ``face`` reaches
    ``threshold`` (at most ``max_tries``). Returns (best image, its similarity, tries used)."""
    import torch
    best, best_sim = None, -2.0
    for t in range(max_tries):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        out = pipe(prompt=prompt, image=init, strength=strength, num_inference_steps=steps, guidance_scale=5.0,
                   generator=g, output_type="pil").images[0].resize(init.size)
        sim = filt.similarity(out, face)
        if sim > best_sim:
            best, best_sim = out, sim
        if sim >= threshold:
            return out, sim, t + 1
    return best, best_sim, max_tries


def refine_scene_images(params, scene_png: dict, portraits: dict, names: dict, scene_of: dict) -> dict:
    """The world's author scene images re-rendered by the diffusion backend (same keys, PNG bytes)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from tqdm import tqdm

    from data_gen.render import png_bytes
    from data_gen.scenes import SCENE_CAPTIONS

    model = Path(params.diffusers_model)
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"--diffusers-model {model}: no model_index.json; give a local diffusers pipeline directory "
                                f"(saved with save_pretrained)")
    torch.manual_seed(params.seed)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(model, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    filt = IdentityFilter.from_dir(model / "identity")
    out = {}
    for i, (key, png) in enumerate(tqdm(sorted(scene_png.items()), desc="diffusion scenes", mininterval=1.0)):
        aid, _ = key
        scene, variant = scene_of[key]
        prompt = SCENE_CAPTIONS[scene][variant % 2][0].format(n="a person")
        init, face = Image.open(io.BytesIO(png)).convert("RGB"), Image.open(io.BytesIO(portraits[aid])).convert("RGB")
        img, _, _ = generate_consistent(pipe, filt, init, face, prompt, params.seed * 100003 + i,
                                        params.identity_threshold, params.identity_max_tries, params.diffusion_steps)
        out[key] = png_bytes(img)
    return out
