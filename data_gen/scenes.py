"""Scene images (a large face in front of a recognisable background) with captions, and the
procedural general-VQA items of the real-world control.

The face must dominate the frame (the tiny model learns face -> name at 64 px); the scene shows
around it: shelves, spotlight, trees, café table, desk lamp, sea, chalkboard, buildings, ...
Stored images carry no pixel noise (noise is a load-time augmentation, clearbench.data).
"""
from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageEnhance

from data_gen.faces import SUPERSAMPLE, FaceIdentity, Pose, draw_person

# scene -> [(caption, paraphrase)]; {n} is the full name.
SCENE_CAPTIONS: dict[str, list[tuple[str, str]]] = {
    "library": [("{n} reading in a quiet library.", "In a quiet library, {n} is reading."),
                ("{n} browsing the shelves of a library.", "{n} is looking through the bookshelves of a library.")],
    "stage": [("{n} giving a talk on a brightly lit stage.", "On a stage under a spotlight, {n} speaks to an audience."),
              ("{n} speaking under a spotlight on stage.", "A spotlight shines on {n}, who is speaking on a stage.")],
    "park": [("{n} relaxing in a green park.", "{n} is spending time among the trees of a park."),
             ("{n} taking a walk in the park.", "Among green trees, {n} is out walking in a park.")],
    "cafe": [("{n} sitting at a café table with a cup of coffee.", "With a coffee cup on the table, {n} sits in a café."),
             ("{n} enjoying tea in a cosy café.", "In a cosy café, {n} is having a cup of tea.")],
    "study": [("{n} writing at a desk beside a lamp.", "{n} is working at a desk lit by a lamp."),
              ("{n} working late in a study.", "Late at night, {n} is busy in a study.")],
    "beach": [("{n} standing on a sunny beach.", "{n} enjoys the sunshine on a sandy beach by the sea."),
              ("{n} by the sea on a bright day.", "On a bright day, {n} stands beside the sea.")],
    "classroom": [("{n} teaching in front of a chalkboard.", "In a classroom, {n} stands before a chalkboard."),
                  ("{n} giving a lesson in a classroom.", "{n} is teaching a class next to a chalkboard.")],
    "street": [("{n} walking down a busy city street.", "{n} is out on a city street lined with buildings."),
               ("{n} standing on a street in the city.", "In the middle of the city, {n} stands on a street.")],
    "bookshop": [("{n} signing books at a bookshop table.", "At a table stacked with books, {n} is signing copies."),
                 ("{n} presenting a new book in a bookshop.", "In a bookshop, {n} presents a new book.")],
    "night": [("{n} standing outside under a starry night sky.", "Under a night sky full of stars, {n} stands outside."),
              ("{n} stargazing on a clear night.", "On a clear night, {n} looks up at the stars.")],
}
SCENES = tuple(SCENE_CAPTIONS)


def _background(scene: str, C: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (C, C))
    d = ImageDraw.Draw(img)
    if scene == "library":
        d.rectangle([0, 0, C, C], fill=(120, 80, 45))
        for row in range(4):
            y0 = row * C // 4
            x = 0
            while x < C:
                w = rng.randint(C // 40, C // 20)
                h = rng.randint(C // 6, C // 4 - C // 40)
                d.rectangle([x, y0 + C // 4 - h - C // 40, x + w, y0 + C // 4 - C // 40], fill=(rng.randint(40, 220), rng.randint(30, 160), rng.randint(30, 160)))
                x += w + 1
            d.rectangle([0, y0 + C // 4 - C // 40, C, y0 + C // 4], fill=(80, 50, 25))
    elif scene == "stage":
        d.rectangle([0, 0, C, C], fill=(20, 15, 30))
        d.polygon([(C * 0.35, 0), (C * 0.65, 0), (C * 0.95, C), (C * 0.05, C)], fill=(120, 110, 70))
        d.rectangle([0, 0, C * 0.14, C], fill=(150, 20, 30))
        d.rectangle([C * 0.86, 0, C, C], fill=(150, 20, 30))
        d.rectangle([0, C * 0.9, C, C], fill=(90, 55, 30))
    elif scene == "park":
        d.rectangle([0, 0, C, C * 0.6], fill=(140, 195, 240))
        d.rectangle([0, C * 0.6, C, C], fill=(80, 160, 60))
        for tx in (0.1, 0.9, rng.uniform(0.2, 0.8)):
            d.rectangle([C * (tx - 0.025), C * 0.35, C * (tx + 0.025), C * 0.7], fill=(100, 65, 35))
            d.ellipse([C * (tx - 0.13), C * 0.08, C * (tx + 0.13), C * 0.45], fill=(40, 120 + rng.randint(0, 40), 40))
    elif scene == "cafe":
        d.rectangle([0, 0, C, C], fill=(225, 190, 150))
        for x in range(0, C, C // 8):
            d.line([(x, 0), (x, C * 0.7)], fill=(205, 170, 130), width=max(1, C // 60))
        d.rectangle([C * 0.05, C * 0.08, C * 0.3, C * 0.3], fill=(170, 210, 235))  # window
    elif scene == "study":
        d.rectangle([0, 0, C, C], fill=(60, 70, 95))
        d.rectangle([C * 0.72, C * 0.1, C * 0.95, C * 0.3], fill=(230, 220, 190))  # picture frame
        d.polygon([(C * 0.03, C * 0.4), (C * 0.22, C * 0.4), (C * 0.17, C * 0.25), (C * 0.08, C * 0.25)], fill=(250, 220, 110))
        d.rectangle([C * 0.115, C * 0.4, C * 0.135, C * 0.8], fill=(40, 40, 40))
        d.ellipse([C * 0.0, C * 0.4, C * 0.25, C * 0.6], fill=(120, 110, 80))  # lamp glow on the wall
    elif scene == "beach":
        d.rectangle([0, 0, C, C * 0.45], fill=(120, 200, 250))
        d.rectangle([0, C * 0.45, C, C * 0.65], fill=(30, 110, 190))
        d.rectangle([0, C * 0.65, C, C], fill=(235, 210, 150))
        d.ellipse([C * 0.78, C * 0.05, C * 0.95, C * 0.22], fill=(255, 230, 80))
    elif scene == "classroom":
        d.rectangle([0, 0, C, C], fill=(200, 190, 160))
        d.rectangle([C * 0.02, C * 0.05, C * 0.98, C * 0.6], fill=(30, 80, 50))
        for i in range(4):
            y = C * (0.12 + 0.1 * i)
            d.line([(C * 0.06, y), (C * rng.uniform(0.2, 0.35), y)], fill=(235, 235, 235), width=max(1, C // 80))
            d.line([(C * rng.uniform(0.72, 0.8), y), (C * 0.94, y)], fill=(235, 235, 235), width=max(1, C // 80))
    elif scene == "street":
        d.rectangle([0, 0, C, C], fill=(170, 200, 230))
        x = 0
        while x < C:
            w, h = rng.randint(C // 6, C // 4), rng.randint(C // 3, int(C * 0.8))
            col = rng.choice([(120, 120, 130), (150, 110, 90), (90, 100, 120), (180, 170, 150)])
            d.rectangle([x, C - h, x + w, C], fill=col)
            for wy in range(C - h + C // 20, C - C // 10, C // 10):
                for wx in range(x + C // 40, x + w - C // 30, C // 18):
                    d.rectangle([wx, wy, wx + C // 40, wy + C // 30], fill=(250, 240, 170))
            x += w + C // 60
        d.rectangle([0, C * 0.88, C, C], fill=(70, 70, 75))
    elif scene == "bookshop":
        d.rectangle([0, 0, C, C], fill=(160, 40, 40))
        d.rectangle([0, C * 0.02, C, C * 0.12], fill=(240, 230, 200))  # shop sign band
    elif scene == "night":
        d.rectangle([0, 0, C, C], fill=(12, 18, 50))
        for _ in range(40):
            x, y, r = rng.uniform(0, C), rng.uniform(0, C * 0.75), C / 160
            d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 220))
        d.ellipse([C * 0.05, C * 0.05, C * 0.2, C * 0.2], fill=(245, 245, 210))
        d.rectangle([0, C * 0.85, C, C], fill=(20, 40, 25))
    return img


def _foreground(scene: str, img: Image.Image, rng: random.Random) -> None:
    """Props in front of the person (kept low so the face stays visible)."""
    C = img.size[0]
    d = ImageDraw.Draw(img)
    if scene == "cafe":
        d.rectangle([0, C * 0.86, C, C], fill=(110, 70, 40))
        d.rectangle([C * 0.74, C * 0.74, C * 0.88, C * 0.87], fill=(250, 250, 250))
        d.ellipse([C * 0.86, C * 0.77, C * 0.93, C * 0.84], outline=(250, 250, 250), width=max(1, C // 60))
    elif scene == "study":
        d.rectangle([0, C * 0.85, C, C], fill=(95, 60, 30))
        d.rectangle([C * 0.7, C * 0.8, C * 0.92, C * 0.86], fill=(245, 245, 240))
    elif scene == "bookshop":
        d.rectangle([0, C * 0.86, C, C], fill=(90, 60, 40))
        for x0 in (0.04, 0.78):
            for i in range(4):
                d.rectangle([C * x0, C * (0.84 - 0.045 * i), C * (x0 + 0.18), C * (0.88 - 0.045 * i)],
                            fill=(rng.randint(40, 240), rng.randint(40, 240), rng.randint(40, 240)))


def render_scene(ident: FaceIdentity, scene: str, rng: random.Random, size: int) -> Image.Image:
    """One training/held-out photo: background, the person (posed), props, lighting, crop."""
    C = size * SUPERSAMPLE
    pose = Pose.sample(rng)
    img = _background(scene, C, rng).convert("RGBA")
    img = Image.alpha_composite(img, draw_person(ident, pose, C)).convert("RGB")
    _foreground(scene, img, rng)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.82, 1.15))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.85, 1.15))
    frac = rng.uniform(0.88, 1.0)  # crop
    w = int(C * frac)
    x0, y0 = rng.randint(0, C - w), rng.randint(0, C - w)
    return img.resize((size, size), Image.LANCZOS, box=(x0, y0, x0 + w, y0 + w))


def captions(name: str, scene: str, variant: int, wrong_names: list[str], wrong_scenes: list[str], rng: random.Random,
             k: int = 5) -> dict:
    """caption, paraphrase and k perturbed captions in the paraphrase's wording (TOFU perturbs the
    paraphrase): the paraphrase with a wrong name, a wrong scene's paraphrase (``wrong_scenes``:
    templates of scenes no image shows, data_gen.pools), or both."""
    cap, para = SCENE_CAPTIONS[scene][variant % len(SCENE_CAPTIONS[scene])]
    wrong = []
    for i in range(k):
        kind = i % 3  # 0 wrong name, 1 wrong scene, 2 both
        n = name if kind == 1 else wrong_names[i % len(wrong_names)]
        wrong.append((para if kind == 0 else rng.choice(wrong_scenes)).format(n=n))
    truth = (cap.format(n=name), para.format(n=name))
    wrong = list(dict.fromkeys(w for w in wrong if w not in truth))
    for _ in range(100 * k):  # top up with fresh wrong-scene paraphrases (always distinct from the truth)
        if len(wrong) >= k:
            break
        cand = rng.choice(wrong_scenes).format(n=rng.choice(wrong_names))
        if cand not in wrong:
            wrong.append(cand)
    if len(wrong) < k:
        raise ValueError(f"only {len(wrong)} distinct wrong captions for {name!r}; give more wrong names or scenes")
    return {"answer": truth[0], "paraphrased_answer": truth[1], "perturbed_answers": wrong}


# ---------------------------------------------------------------- real-world control: general VQA
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "purple": (140, 60, 180), "orange": (245, 140, 30), "black": (20, 20, 20), "white": (250, 250, 250)}
SHAPES = ("circle", "square", "triangle", "star", "cross")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = {"white": (235, 235, 225), "blue": (190, 210, 240), "green": (200, 235, 190), "grey": (120, 120, 125)}
VQA_QUESTION_PARAPHRASES = {
    "What shape is in the image?": "Which shape is drawn in this picture?",
    "What colour is the shape?": "Which colour does the shape have?",
    "Where is the shape?": "In which part of the image is the shape?",
    "What colour is the background?": "What is the colour behind the shape?",
    "How many shapes are in the image?": "How many shapes does this picture contain?",
}
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "purple", "black")


def _draw_shape(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    import math
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        d.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif kind == "cross":
        d.rectangle([cx - r, cy - r * 0.3, cx + r, cy + r * 0.3], fill=fill)
        d.rectangle([cx - r * 0.3, cy - r, cx + r * 0.3, cy + r], fill=fill)
    else:
        n, rad = {"triangle": (3, [r]), "diamond": (4, [r]), "hexagon": (6, [r]), "star": (10, [r, r * 0.45])}[kind]
        pts = [(cx + rad[i % len(rad)] * math.sin(2 * math.pi * i / n), cy - rad[i % len(rad)] * math.cos(2 * math.pi * i / n)) for i in range(n)]
        d.polygon(pts, fill=fill)


def vqa_item(rng: random.Random, size: int) -> dict:
    """A drawn scene and one question about what any viewer sees at once: the shape, its colour, its
    quadrant, the background colour (one large shape), or how many shapes (1-4, one per quadrant).

    Perception, not multi-step reasoning: the real-world split is the control the base model must
    already master, so questions that bind a referent to an attribute ("the colour of the star among
    five shapes") are left out; a 1 M-parameter model stayed at chance on those (clearbench#4 notes).
    Quadrants align with the 2x2 blocks of 16 px patches at 64 px. Options are wrong values of the
    same kind."""
    C = size * SUPERSAMPLE
    bg = rng.choice(sorted(BACKGROUNDS))
    img = Image.new("RGB", (C, C), BACKGROUNDS[bg])
    d = ImageDraw.Draw(img)
    qtype = rng.randrange(5)
    if qtype == 4:
        n = rng.randint(1, 4)
        for cell in rng.sample(range(4), n):
            cx, cy = C * (cell % 2 * 2 + 1) / 4, C * (cell // 2 * 2 + 1) / 4
            _draw_shape(d, rng.choice(SHAPES), cx, cy, C / 4 * rng.uniform(0.55, 0.75), COLOURS[rng.choice(SHAPE_COLOURS)])
        q, a, pool = "How many shapes are in the image?", COUNT_WORDS[n], list(COUNT_WORDS[1:8])
    else:
        kind, colour, cell = rng.choice(SHAPES), rng.choice(SHAPE_COLOURS), rng.randrange(4)
        cx, cy = C * (cell % 2 * 2 + 1) / 4, C * (cell // 2 * 2 + 1) / 4
        _draw_shape(d, kind, cx + rng.uniform(-C / 30, C / 30), cy + rng.uniform(-C / 30, C / 30),
                    C / 4 * rng.uniform(0.6, 0.85), COLOURS[colour])
        q, a, pool = [("What shape is in the image?", kind, list(SHAPES) + ["diamond", "hexagon"]),
                      ("What colour is the shape?", colour, list(COLOURS)),
                      ("Where is the shape?", POSITIONS[cell], list(POSITIONS) + ["centre", "top centre"]),
                      ("What colour is the background?", bg, list(BACKGROUNDS) + ["black", "yellow"])][qtype]
    options = rng.sample([p for p in pool if p != a], 5)
    return {"image": img.resize((size, size), Image.LANCZOS), "question": q, "paraphrased_question": VQA_QUESTION_PARAPHRASES[q],
            "answer": a, "paraphrased_answer": a, "perturbed_answers": options}
