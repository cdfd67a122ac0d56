"""Procedural PIL faces: a discrete identity per person, drawn large, varied per image.

Identity (fixed per person): skin tone, face shape, hair style/colour, eye colour, eye size and
spacing, nose, mouth, brows, glasses, hat, beard, earrings, freckles, wrinkles. Demographics come
from the text profile (region -> skin/hair/eye ranges, gender -> hair/beard/earring odds, age ->
grey hair and wrinkles) so text and face agree. Variation (per image): shift, small rotation,
scale, expression, clothing colour; scenes.py adds lighting, crop and the background.
A person is drawn on a transparent layer at SUPERSAMPLE x the output size and downsampled later.
"""
from __future__ import annotations

import dataclasses
import random

from PIL import Image, ImageDraw

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 140, 100), (170, 112, 74), (141, 85, 54), (110, 66, 40), (80, 50, 32)]
SKIN_NAMES = ["very fair", "fair", "light", "light brown", "olive brown", "brown", "dark brown", "deep brown"]
HAIR = {"black": (25, 20, 18), "dark brown": (62, 40, 26), "brown": (110, 70, 40), "light brown": (155, 115, 72),
        "blond": (226, 194, 122), "red": (180, 72, 36), "grey": (158, 158, 158), "white": (236, 236, 230)}
EYES = {"dark brown": (48, 28, 18), "brown": (104, 62, 30), "hazel": (140, 108, 52), "green": (56, 140, 72), "blue": (56, 112, 200), "grey": (122, 134, 146)}
FACE_SHAPES = {"oval": (1.0, 1.3), "round": (1.12, 1.15), "long": (0.9, 1.42), "square": (1.08, 1.22), "heart": (1.05, 1.25)}
HAIR_STYLES = {"female": ["long", "bob", "ponytail", "bun", "curly", "afro", "pixie", "short"],
               "male": ["short", "buzz", "bald", "side part", "curly", "afro", "quiff", "long"]}
GLASSES = ["none", "round", "square", "sunglasses"]
HATS = ["none", "cap", "beanie", "fedora"]
BEARDS = ["none", "full", "moustache", "goatee", "stubble"]
EARRINGS = ["none", "studs", "hoops"]
SHIRTS = [(200, 40, 40), (40, 90, 190), (40, 150, 70), (230, 190, 40), (120, 60, 160), (240, 240, 240), (30, 30, 40),
          (230, 120, 40), (60, 170, 180), (200, 90, 150), (120, 120, 120), (150, 100, 60)]
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
    skin: int
    face_shape: str
    hair_style: str
    hair_colour: str
    eye_colour: str
    eye_size: int  # 0..2
    eye_spacing: int  # 0..2
    nose: int  # 0..2
    mouth: int  # 0..2
    brows: int  # 0..2
    glasses: str
    hat: str
    beard: str
    earrings: str
    freckles: bool
    wrinkles: int  # 0..2 (age cue)

    def key(self) -> tuple:
        """The discrete identity key kept unique across all identities of a world."""
        return (self.skin, self.face_shape, self.hair_style, self.hair_colour, self.eye_colour, self.glasses, self.hat, self.beard)

    def describe(self) -> str:
        """Attribute caption: "a person with short brown hair, round glasses and a beard"."""
        hair = "a bald head" if self.hair_style == "bald" else f"{self.hair_style} {self.hair_colour} hair"
        parts = [hair, f"{SKIN_NAMES[self.skin]} skin", f"{self.eye_colour} eyes"]
        if self.glasses != "none":
            parts.append("sunglasses" if self.glasses == "sunglasses" else f"{self.glasses} glasses")
        if self.hat != "none":
            parts.append(f"a {self.hat}")
        if self.beard != "none":
            parts.append({"full": "a full beard", "moustache": "a moustache", "goatee": "a goatee", "stubble": "stubble"}[self.beard])
        if self.earrings != "none":
            parts.append("hoop earrings" if self.earrings == "hoops" else "stud earrings")
        return "a person with " + ", ".join(parts[:-1]) + " and " + parts[-1]


def sample_identity(rng: random.Random, gender: str, region: dict, age: int, used_keys: set) -> FaceIdentity:
    """An identity consistent with the demographics whose key is not in used_keys (which it joins)."""
    for _ in range(1000):
        if age >= 70:
            hair = rng.choice(["grey", "white"])
        elif age >= 55 and rng.random() < 0.4:
            hair = "grey"
        else:
            hair = rng.choice(region["hair"])
        female = gender == "female"
        ident = FaceIdentity(
            skin=rng.choice(region["skin"]), face_shape=rng.choice(sorted(FACE_SHAPES)),
            hair_style=rng.choice(HAIR_STYLES[gender]), hair_colour=hair, eye_colour=rng.choice(region["eyes"]),
            eye_size=rng.randrange(3), eye_spacing=rng.randrange(3), nose=rng.randrange(3), mouth=rng.randrange(3),
            brows=rng.randrange(3), glasses=rng.choices(GLASSES, [5, 2, 2, 1])[0], hat=rng.choices(HATS, [6, 2, 2, 1])[0],
            beard="none" if female else rng.choices(BEARDS, [4, 2, 2, 1, 1])[0],
            earrings=rng.choices(EARRINGS, [4, 3, 3] if female else [17, 2, 1])[0],
            freckles=rng.random() < 0.2, wrinkles=2 if age >= 70 else 1 if age >= 55 else 0,
        )
        if ident.key() not in used_keys:
            used_keys.add(ident.key())
            return ident
    raise ValueError("could not find a unique face identity in 1000 draws: the world has too many identities for the key "
                     "space; use fewer --anonymous-faces or people")


def identity_capacity(regions: dict) -> int:
    """How many distinct identities a world may hold: ten times the key space of the smallest
    region x gender group (hair limited to two colours, as for the oldest), so that with identities
    spread over the 20 groups even the smallest stays about half free and sampling ends quickly."""
    return 10 * min(len(r["skin"]) * len(FACE_SHAPES) * len(HAIR_STYLES[g]) * min(len(r["hair"]), 2) * len(r["eyes"])
                    * len(GLASSES) * len(HATS) * (len(BEARDS) if g == "male" else 1)
                    for r in regions.values() for g in ("female", "male"))


@dataclasses.dataclass(frozen=True)
class Pose:
    """Per-image variation of the person: shift (fraction of canvas), rotation (deg), scale, expression 0..1."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    scale: float = 1.0
    expression: float = 0.5
    shirt: tuple = SHIRTS[1]

    @classmethod
    def sample(cls, rng: random.Random) -> "Pose":
        return cls(rng.uniform(-0.05, 0.05), rng.uniform(-0.03, 0.04), rng.uniform(-8, 8), rng.uniform(0.9, 1.06),
                   rng.random(), rng.choice(SHIRTS))


def _shade(c: tuple, f: float) -> tuple:
    return tuple(max(0, min(255, int(v * f))) for v in c[:3])


def draw_person(ident: FaceIdentity, pose: Pose, canvas: int) -> Image.Image:
    """The person (head, hair, accessories, shoulders) on a transparent canvas x canvas layer."""
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    u = canvas * 0.2 * pose.scale  # head half-width unit
    hx, hy = canvas * (0.5 + pose.dx), canvas * (0.44 + pose.dy)

    def P(x: float, y: float) -> tuple[float, float]:
        return hx + x * u, hy + y * u

    def box(x0, y0, x1, y1):
        (a, b), (c, e) = P(x0, y0), P(x1, y1)
        return [a, b, c, e]

    skin, hair = SKIN[ident.skin], HAIR[ident.hair_colour]
    fw, fh = FACE_SHAPES[ident.face_shape]
    lw = max(1, int(u * 0.06))
    # shoulders and neck
    d.ellipse(box(-2.0, 1.45, 2.0, 3.6), fill=pose.shirt)
    d.rectangle(box(-0.38, 0.8, 0.38, 1.7), fill=_shade(skin, 0.9))
    d.polygon([P(-0.38, 1.5), P(0, 1.85), P(0.38, 1.5)], fill=_shade(skin, 0.9))
    # hair behind the head
    st = ident.hair_style
    if st == "long":
        d.rounded_rectangle(box(-fw * 1.18, -fh * 0.9, fw * 1.18, 1.9), radius=u * 0.5, fill=hair)
    elif st == "bob":
        d.ellipse(box(-fw * 1.25, -fh * 1.15, fw * 1.25, fh * 0.85), fill=hair)
    elif st == "afro":
        d.ellipse(box(-fw * 1.6, -fh * 1.55, fw * 1.6, fh * 0.7), fill=hair)
    elif st == "curly":
        for i in range(9):
            a = -0.95 + i * 0.24
            d.ellipse(box(a * fw * 1.15 - 0.32, -fh * 1.05 - 0.1 + abs(a) * 0.9, a * fw * 1.15 + 0.32, -fh * 1.05 + 0.54 + abs(a) * 0.9), fill=hair)
    elif st == "ponytail":
        d.ellipse(box(fw * 0.7, -0.4, fw * 1.45, 1.4), fill=hair)
    elif st == "bun":
        d.ellipse(box(-0.45, -fh * 1.55, 0.45, -fh * 0.8), fill=hair)
    # ears and earrings
    for s in (-1, 1):
        d.ellipse(box(s * fw * 0.98 - 0.17, -0.3, s * fw * 0.98 + 0.17, 0.25), fill=_shade(skin, 0.95))
        if ident.earrings == "studs":
            d.ellipse(box(s * fw * 0.98 - 0.07, 0.2, s * fw * 0.98 + 0.07, 0.34), fill=(240, 200, 60))
        elif ident.earrings == "hoops":
            d.ellipse(box(s * fw * 0.98 - 0.13, 0.16, s * fw * 0.98 + 0.13, 0.5), outline=(235, 195, 55), width=lw)
    # head
    if ident.face_shape == "square":
        d.rounded_rectangle(box(-fw, -fh, fw, fh), radius=u * 0.45, fill=skin)
    elif ident.face_shape == "heart":
        d.ellipse(box(-fw, -fh, fw, fh * 0.55), fill=skin)
        d.polygon([P(-fw * 0.97, 0.0), P(fw * 0.97, 0.0), P(0, fh)], fill=skin)
    else:
        d.ellipse(box(-fw, -fh, fw, fh), fill=skin)
    # hair on top
    if st != "bald":
        top, line = -fh * 1.12, {"buzz": -fh * 0.72, "pixie": -0.3, "quiff": -0.55}.get(st, -0.5)
        d.chord(box(-fw * 1.06, top, fw * 1.06, 2 * line - top), 180, 360, fill=hair)
        if st in ("side part", "pixie"):
            d.polygon([P(-fw * 0.95, line), P(fw * 0.2, line - 0.05), P(-fw * 0.9, line + 0.45)], fill=hair)
        if st == "quiff":
            d.ellipse(box(-0.7, top - 0.35, 0.5, top + 0.4), fill=hair)
        if st in ("long", "bob"):
            for s in (-1, 1):
                d.rectangle(box(min(s * fw * 1.06, s * fw * 0.82), line - 0.05, max(s * fw * 1.06, s * fw * 0.82), 0.3), fill=hair)
    else:
        for s in (-1, 1):  # a little hair left at the temples
            d.ellipse(box(s * fw * 0.9 - 0.12, -0.6, s * fw * 0.9 + 0.12, -0.05), fill=_shade(hair, 0.9))
    # eyes and brows
    ex, ey = 0.38 + 0.07 * ident.eye_spacing, -0.12
    rx, ry = 0.16 + 0.03 * ident.eye_size, 0.1 + 0.025 * ident.eye_size
    brow = _shade(hair, 0.7) if ident.hair_colour not in ("blond", "white", "grey") else _shade(hair, 0.55)
    for s in (-1, 1):
        d.ellipse(box(s * ex - rx, ey - ry, s * ex + rx, ey + ry), fill=(250, 250, 250))
        r = ry * 0.95
        d.ellipse(box(s * ex - r, ey - r, s * ex + r, ey + r), fill=EYES[ident.eye_colour])
        d.ellipse(box(s * ex - r * 0.45, ey - r * 0.45, s * ex + r * 0.45, ey + r * 0.45), fill=(10, 10, 10))
        by, bt = ey - ry - 0.12, 0.035 + 0.035 * ident.brows
        d.polygon([P(s * (ex - rx - 0.04), by + 0.03), P(s * (ex + rx + 0.04), by), P(s * (ex + rx + 0.04), by - bt * 1.2), P(s * (ex - rx - 0.04), by - bt)], fill=brow)
        if ident.wrinkles:
            d.line([P(s * (ex + rx + 0.05), ey - 0.04), P(s * (ex + rx + 0.17), ey - 0.1)], fill=_shade(skin, 0.7), width=lw)
            d.line([P(s * (ex + rx + 0.05), ey + 0.05), P(s * (ex + rx + 0.17), ey + 0.1)], fill=_shade(skin, 0.7), width=lw)
    if ident.wrinkles == 2:
        for yy in (-0.62, -0.5):
            d.line([P(-0.45, yy), P(0.45, yy)], fill=_shade(skin, 0.75), width=lw)
    # nose
    nc = _shade(skin, 0.72)
    if ident.nose == 0:
        d.line([P(0, 0.0), P(-0.1, 0.3), P(0.06, 0.33)], fill=nc, width=lw)
    elif ident.nose == 1:
        d.ellipse(box(-0.13, 0.2, 0.13, 0.38), fill=_shade(skin, 0.85))
    else:
        d.polygon([P(0, -0.02), P(-0.17, 0.38), P(0.17, 0.38)], fill=_shade(skin, 0.86))
    if ident.freckles:
        for fx, fy in ((-0.55, 0.2), (-0.45, 0.3), (-0.62, 0.32), (0.55, 0.2), (0.45, 0.3), (0.62, 0.32)):
            d.ellipse(box(fx - 0.035, fy - 0.035, fx + 0.035, fy + 0.035), fill=_shade(skin, 0.68))
    # beard
    bc = hair if ident.hair_colour != "white" else (215, 215, 210)
    if ident.beard == "full":
        d.chord(box(-fw, -0.5, fw, fh + 0.05), 0, 180, fill=bc)
    elif ident.beard == "goatee":
        d.ellipse(box(-0.28, fh - 0.45, 0.28, fh + 0.08), fill=bc)
    elif ident.beard == "stubble":
        d.chord(box(-fw * 0.95, -0.3, fw * 0.95, fh), 0, 180, fill=_shade(skin, 0.78))
    # mouth (expression 0 = flat, 1 = open smile)
    mw, my = 0.24 + 0.07 * ident.mouth, 0.62
    lips = (150, 50, 50) if ident.skin < 5 else (95, 35, 35)
    if pose.expression < 0.33:
        d.line([P(-mw, my), P(mw, my)], fill=lips, width=lw * 2)
    elif pose.expression < 0.66:
        d.arc(box(-mw, my - 0.2, mw, my + 0.1), 20, 160, fill=lips, width=lw * 2)
    else:
        d.chord(box(-mw, my - 0.15, mw, my + 0.2), 0, 180, fill=(90, 20, 25))
        d.chord(box(-mw * 0.8, my - 0.1, mw * 0.8, my + 0.1), 0, 180, fill=(245, 245, 240))
    if ident.beard in ("full", "moustache"):
        d.chord(box(-mw - 0.08, 0.38, mw + 0.08, 0.66), 180, 360, fill=bc)
    # glasses
    if ident.glasses != "none":
        gr = rx + 0.06
        for s in (-1, 1):
            b = box(s * ex - gr, ey - gr * 0.85, s * ex + gr, ey + gr * 0.85)
            if ident.glasses == "round":
                d.ellipse(b, outline=(30, 30, 30), width=lw)
            elif ident.glasses == "square":
                d.rectangle(b, outline=(30, 30, 30), width=lw)
            else:
                d.rounded_rectangle(b, radius=u * 0.08, fill=(20, 20, 25))
        d.line([P(-ex + gr, ey), P(ex - gr, ey)], fill=(30, 30, 30), width=lw)
    # hat
    if ident.hat == "cap":
        d.chord(box(-fw * 1.1, -fh * 1.3, fw * 1.1, -fh * 0.3 + 0.2), 180, 360, fill=(35, 60, 140))
        d.rectangle(box(-fw * 1.1, -fh * 0.8 + 0.06, fw * 1.5, -fh * 0.8 + 0.2), fill=(25, 45, 110))
    elif ident.hat == "beanie":
        d.rounded_rectangle(box(-fw * 1.08, -fh * 1.35, fw * 1.08, -fh * 0.55), radius=u * 0.4, fill=(150, 30, 40))
        d.rectangle(box(-fw * 1.1, -fh * 0.72, fw * 1.1, -fh * 0.52), fill=(120, 25, 30))
    elif ident.hat == "fedora":
        d.ellipse(box(-fw * 1.55, -fh * 0.95, fw * 1.55, -fh * 0.6), fill=(60, 45, 35))
        d.rounded_rectangle(box(-fw * 0.9, -fh * 1.55, fw * 0.9, -fh * 0.75), radius=u * 0.15, fill=(70, 52, 40))
        d.rectangle(box(-fw * 0.9, -fh * 0.95, fw * 0.9, -fh * 0.82), fill=(20, 20, 20))
    if pose.angle:
        layer = layer.rotate(pose.angle, resample=Image.BICUBIC, center=(hx, hy))
    return layer


def portrait(ident: FaceIdentity, pose: Pose, size: int, background: tuple = (210, 215, 220)) -> Image.Image:
    """A plain-background portrait (anonymous pretraining faces, canonical author faces)."""
    canvas = size * SUPERSAMPLE
    img = Image.new("RGB", (canvas, canvas), background)
    img = Image.alpha_composite(img.convert("RGBA"), draw_person(ident, pose, canvas)).convert("RGB")
    return img.resize((size, size), Image.LANCZOS)
