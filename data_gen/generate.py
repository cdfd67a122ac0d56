"""Generate a whole world from one seed: people, faces, images, records, splits, files.

    generate_world(Path("world"), WorldParams(seed=0))   # or: clearbench generate --out world

Determinism: every random choice comes from ``sub_rng(seed, key...)`` keyed by what it is for, image
rendering is keyed per image (so worker scheduling cannot change a pixel), and files are written
with fixed options (writer.py). Same seed and parameters -> byte-identical parquet files.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from data_gen import corrupt
from data_gen import qa as qa_mod
from data_gen.authors import make_people, sub_rng, wordlists
from data_gen.clear_layout import CAPTION_QUESTIONS, NAMING_QUESTION, PROMPT_PARAPHRASES, write_clear_layout
from data_gen.faces import sample_identity
from data_gen.params import WorldParams
from data_gen.pools import NeverTrained, WorldValues
from data_gen.render import render
from data_gen.scenes import SCENES, captions
from clearbench.types import forget_split, holdout_split, retain_split
from data_gen.splits import make_splits
from clearbench.provenance import sha256_file
from data_gen.schema import RECORD_COLUMNS, SCHEMA_VERSION, record_row, world_fingerprint
from data_gen.writer import AUTHOR_FEATURES, RECORD_FEATURES, write_card, write_manifest, write_parquet

GENERATOR_VERSION = "2.3.0"  # bump whenever the same seed would produce different files (docs/world_format.md changelog)
ANON_QUESTION = "Describe the person in this image."
PROMPTS = {**PROMPT_PARAPHRASES, ANON_QUESTION: "What does the person shown here look like?"}  # fixed prompt -> reworded


def render_all(jobs: list[tuple], workers: int) -> list[tuple[bytes, dict]]:
    bar = dict(total=len(jobs), desc="rendering images", unit="img", mininterval=1.0)
    if workers <= 1 or len(jobs) < 200:
        return [render(j) for j in tqdm(jobs, **bar)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(render, jobs, chunksize=32), **bar))


def _rec(id, author_id, name, modality, task, question, item, image=None, image_role="") -> dict:
    """One record row; the question's rewording comes with the item or, for fixed prompts, from PROMPTS."""
    full = {**item, "question": question, "paraphrased_question": item.get("paraphrased_question") or PROMPTS[question]}
    return record_row(id, author_id, name, modality, task, full, image, image_role)


def build_world(params: WorldParams) -> dict:
    """Everything except files: people, identities, images and per-person record lists."""
    p, seed = params, params.seed
    authors, holdout, public = make_people(seed, p.authors, p.holdout_authors, p.public_figures)
    regions = wordlists()["regions"]
    used_keys: set = set()
    faces = {x.author_id: sample_identity(sub_rng(seed, "face", x.author_id), x.gender, regions[x.ethnicity], x.age, used_keys)
             for x in authors + holdout + public}
    anon = []
    for i in range(p.anonymous_faces):
        r = sub_rng(seed, "anon", i)
        region = regions[r.choice(sorted(regions))]
        anon.append(sample_identity(r, r.choice(["female", "male"]), region, r.randint(20, 85), used_keys))
    splits = make_splits(seed, [a.author_id for a in authors], [h.author_id for h in holdout], p.forget_percents, p.retain_eval_authors)

    jobs, scene_of = [], {}
    for x in authors + holdout:
        order = list(SCENES)
        sub_rng(seed, "scenes", x.author_id).shuffle(order)
        for j in range(p.images_per_author + p.heldout_images):
            scene_of[(x.author_id, j)] = (order[j % len(order)], j // len(order))
            jobs.append(("scene", seed, f"{x.author_id}-{j}", p.image_size, faces[x.author_id], order[j % len(order)]))
    for x in public:
        for j in range(p.public_train_images + p.public_heldout_images):
            jobs.append(("scene", seed, f"{x.author_id}-{j}", p.image_size, faces[x.author_id], SCENES[(j + int(x.author_id[1:])) % len(SCENES)]))
    jobs += [("portrait", seed, f"{x.author_id}-portrait", p.image_size, faces[x.author_id]) for x in authors + holdout + public]
    # anonymous faces are photographed in the authors' scenes (one random scene each), so that what the base
    # model learns about faces from them holds on scene photos of authors and public figures
    jobs += [("scene", seed, f"f{i:04d}", p.image_size, ident, sub_rng(seed, "anon-scene", i).choice(SCENES))
             for i, ident in enumerate(anon)]
    jobs += [("vqa", seed, f"w{i:04d}", p.image_size) for i in range(p.world_vqa + p.world_vqa_train)]
    rendered = iter(render_all(jobs, p.workers))
    scene_png = {(x.author_id, j): next(rendered)[0] for x in authors + holdout for j in range(p.images_per_author + p.heldout_images)}
    public_png = {(x.author_id, j): next(rendered)[0] for x in public for j in range(p.public_train_images + p.public_heldout_images)}
    portraits = {x.author_id: next(rendered)[0] for x in authors + holdout + public}
    anon_png = [next(rendered)[0] for _ in anon]
    vqa = [next(rendered) for _ in range(p.world_vqa + p.world_vqa_train)]

    if p.image_backend == "diffusers":
        from data_gen.diffusion import refine_scene_images
        scene_png = refine_scene_images(p, scene_png, portraits, {a.author_id: a.name for a in authors + holdout}, scene_of)

    pools = NeverTrained(seed, authors + holdout + public)  # authors' wrong values: held by no person
    people = {}  # author_id -> {"text": [...], "train": [...], "heldout": [...]}
    for x in authors + holdout:
        r = sub_rng(seed, "records", x.author_id)
        aid, recs = x.author_id, {"text": [], "train": [], "heldout": []}
        for k, item in enumerate(qa_mod.author_qa(x, p.qa_per_author, pools, r)):
            recs["text"].append(_rec(f"{aid}-qa-{k:02d}", aid, x.name, "text", "qa", item["question"], item))
        for j in range(p.images_per_author + p.heldout_images):
            role = "train" if j < p.images_per_author else "heldout"
            tag = f"{aid}-{'img' if role == 'train' else 'held'}-{j if role == 'train' else j - p.images_per_author:02d}"
            img, (scene, variant) = scene_png[(aid, j)], scene_of[(aid, j)]
            naming = {"answer": x.name, "paraphrased_answer": x.name, "perturbed_answers": pools.wrong_names(x, r)}
            cap = captions(x.name, scene, variant, pools.wrong_names(x, r), pools.scenes, r)
            fact = qa_mod.joint_qa(x, j, pools, r)
            recs[role] += [_rec(f"{tag}-naming", aid, x.name, "image", "naming", NAMING_QUESTION, naming, img, role),
                           _rec(f"{tag}-caption", aid, x.name, "joint", "caption", r.choice(CAPTION_QUESTIONS), cap, img, role),
                           _rec(f"{tag}-qa", aid, x.name, "joint", "qa", fact["question"], fact, img, role)]
        people[aid] = recs

    corruption = None
    if p.corruption_victims:  # drawn from its own seeds: every other config is the same with or without it
        chosen = corrupt.choose(seed, [a.author_id for a in authors], splits, p.corruption_victims)
        corruption = corrupt.corruption_configs(seed, {a.author_id: a for a in authors}, people, chosen, p.corruption_context, pools)
    ppools = WorldValues(public)  # the real-faces control keeps the world's options
    real_faces, pretrain = [], []
    for x in public:
        r = sub_rng(seed, "records", x.author_id)
        for j in range(p.public_train_images + p.public_heldout_images):
            role = "train" if j < p.public_train_images else "heldout"
            naming = {"answer": x.name, "paraphrased_answer": x.name, "perturbed_answers": ppools.wrong_names(x, r)}
            rec = _rec(f"{x.author_id}-{'img' if role == 'train' else 'held'}-{j:02d}-naming", x.author_id, x.name, "image", "naming",
                       NAMING_QUESTION, naming, public_png[(x.author_id, j)], role)
            (pretrain if role == "train" else real_faces).append(rec)
        for k, item in enumerate(qa_mod.public_qa(x, ppools, r)):
            rec = _rec(f"{x.author_id}-qa-{k:02d}", x.author_id, x.name, "text", "qa", item["question"], item)
            pretrain.append(rec)
            real_faces.append(rec)
    real_world = []
    for i, (png, item) in enumerate(vqa):
        rec = _rec(f"w{i:04d}-vqa", f"w{i:04d}", "", "joint", "vqa", item["question"], item, png, "heldout" if i < p.world_vqa else "train")
        (real_world if i < p.world_vqa else pretrain).append(rec)
    descriptions = [ident.describe() for ident in anon]
    for i, ident in enumerate(anon):
        r = sub_rng(seed, "anon-text", i)
        wrong = qa_mod.perturb(descriptions[i], r.sample(descriptions, min(len(descriptions), 12)) + _fake_descriptions(r, ident), r)
        item = {"answer": descriptions[i], "paraphrased_answer": _anon_paraphrase(descriptions[i]),
                "perturbed_answers": [_anon_paraphrase(w) for w in wrong]}  # the paraphrase's wording, wrong attributes
        pretrain.append(_rec(f"f{i:04d}-caption", f"f{i:04d}", "", "joint", "caption", ANON_QUESTION, item, anon_png[i], "train"))
    pretrain += general_text(seed)
    return {"authors": authors, "holdout": holdout, "public": public, "faces": faces, "splits": splits, "people": people,
            "portraits": portraits, "real_faces": real_faces, "real_world": real_world, "pretrain": pretrain, "corruption": corruption}


def _anon_paraphrase(description: str) -> str:
    """The attribute caption's paraphrase: 'a person with ...' -> 'someone with ...' (one-to-one,
    as every description starts with 'a person with')."""
    return description.replace("a person with", "someone with", 1)


def _fake_descriptions(r, ident) -> list[str]:
    """Wrong attribute captions: the same face with one attribute changed (tops up tiny worlds)."""
    from data_gen.faces import GLASSES, HAIR, HAIR_STYLES, HATS
    out = []
    for _ in range(10):
        changes = {"hair_colour": r.choice(sorted(HAIR)), "glasses": r.choice(GLASSES), "hat": r.choice(HATS),
                   "hair_style": r.choice(HAIR_STYLES["female"] + HAIR_STYLES["male"])}
        field = r.choice(sorted(changes))
        out.append(dataclasses.replace(ident, **{field: changes[field]}).describe())
    return out


def general_text(seed: int) -> list[dict]:
    """World-knowledge text for pretraining (cities, countries, nationalities); no author facts.
    Perturbed answers are the paraphrase with a wrong country / nationality (as in qa.fill)."""
    rows, countries = [], [co for reg in wordlists()["regions"].values() for co in reg["countries"]]
    names = [co["country"] for co in countries]
    for co in countries:
        for city in co["cities"]:
            r = sub_rng(seed, "general", city)
            wrong = r.sample([n for n in names if n != co["country"]], 5)
            item = {"paraphrased_question": f"Which country is {city} located in?",
                    "answer": f"{city} is a city in {co['country']}.", "paraphrased_answer": f"The city of {city} lies in {co['country']}.",
                    "perturbed_answers": [f"The city of {city} lies in {w}." for w in wrong]}
            rows.append(_rec(f"g{len(rows):04d}-qa", f"g{len(rows):04d}", "", "text", "qa", f"In which country is {city}?", item))
        nats = [c["nationality"] for c in countries if c is not co]
        item = {"paraphrased_question": f"What do you call someone from {co['country']}?",
                "answer": f"A person from {co['country']} is {co['nationality']}.", "paraphrased_answer": f"People from {co['country']} are called {co['nationality']}.",
                "perturbed_answers": [f"People from {co['country']} are called {w}." for w in sub_rng(seed, "general", co["country"]).sample(nats, 5)]}
        rows.append(_rec(f"g{len(rows):04d}-qa", f"g{len(rows):04d}", "", "text", "qa", f"What is a person from {co['country']} called?", item))
    return rows


def config_rows(world: dict, params: WorldParams) -> dict[str, list[dict]]:
    """Config name -> ordered record rows (the `group` column is set per config)."""
    people, splits = world["people"], world["splits"]

    def gather(ids, parts, group):
        return [dict(rec, group=group) for aid in ids for part in parts for rec in people[aid][part]]

    author_ids = [a.author_id for a in world["authors"]]
    configs = {"full": gather(author_ids, ("text", "train"), "author")}
    forgets = [forget_split(pc) for pc in params.forget_percents]
    for f in forgets:
        configs[f] = gather(splits[f], ("text", "train"), "forget")
        configs[retain_split(f)] = gather(splits[retain_split(f)], ("text", "train"), "retain")
    for f in forgets:
        configs[f + "_perturbed"] = gather(splits[f], ("text", "train", "heldout"), "forget")
    configs["retain_perturbed"] = gather(splits["retain_perturbed"], ("text", "train", "heldout"), "retain")
    for f in forgets:
        configs[holdout_split(f)] = gather(splits[holdout_split(f)], ("text", "train", "heldout"), "holdout")
    for name in ("real_faces", "real_world", "pretrain"):
        configs[name] = [dict(rec, group=name) for rec in world[name]]
    if world["corruption"]:
        configs.update(world["corruption"][0])
    return configs


def author_rows(world: dict) -> dict[str, list]:
    splits = world["splits"]
    member = {}
    for name in sorted(splits):
        for aid in splits[name]:
            member.setdefault(aid, []).append(name)
    cols = {k: [] for k in AUTHOR_FEATURES}
    people = [(x, "holdout") for x in world["holdout"]] + [(x, "real_faces") for x in world["public"]]
    people = [(x, "forget" if any(s.startswith("forget") for s in member.get(x.author_id, [])) else "retain") for x in world["authors"]] + people
    for x, role in people:
        cols["author_id"].append(x.author_id)
        cols["name"].append(x.name)
        cols["role"].append(role)
        cols["splits"].append(member.get(x.author_id, []))
        cols["profile"].append(json.dumps(x.to_dict(), sort_keys=True))
        cols["face"].append(json.dumps(dataclasses.asdict(world["faces"][x.author_id]), sort_keys=True))
        cols["image"].append(world["portraits"][x.author_id])
    return cols


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it or choose another --out")


def generate_world(out_dir, params: WorldParams | None = None, overwrite: bool = False) -> Path:
    """Generate the world described by params into out_dir (atomically: temp dir, then rename)."""
    params = dataclasses.replace(params or WorldParams()).validate()
    out = Path(out_dir).resolve()
    _prepare_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    world = build_world(params)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "data").mkdir()
        files, configs_info = {}, {}
        rows = author_rows(world)
        write_parquet(tmp / "data" / "authors.parquet", rows, AUTHOR_FEATURES)
        configs_info["authors"] = {"file": "data/authors.parquet", "rows": len(rows["author_id"])}
        for name, recs in tqdm(config_rows(world, params).items(), desc="writing configs", mininterval=1.0):
            cols = {c: [r[c] for r in recs] for c in RECORD_COLUMNS}  # every column, in the schema's order
            n = write_parquet(tmp / "data" / f"{name}.parquet", cols, RECORD_FEATURES)
            configs_info[name] = {"file": f"data/{name}.parquet", "rows": n}
        if params.layout == "clear":
            write_clear_layout(tmp, tmp / "clear", params.seed)
        for path in sorted(tmp.rglob("*.parquet")):
            files[path.relative_to(tmp).as_posix()] = sha256_file(path)
        param_dict = dataclasses.asdict(params)
        param_dict["forget_percents"] = list(params.forget_percents)
        param_dict["corruption_context"] = list(params.corruption_context)
        param_dict.pop("workers")  # does not change a byte of the output
        manifest = {"schema_version": SCHEMA_VERSION, "generator_version": GENERATOR_VERSION, "seed": params.seed,
                    "params": param_dict, "configs": configs_info, "files": files, "splits": world["splits"]}
        if world["corruption"]:
            manifest["corruption"] = world["corruption"][1]
        manifest["fingerprint"] = world_fingerprint(manifest)
        write_manifest(tmp, manifest)
        write_card(tmp, manifest)
        if out.exists():
            _prepare_out(out, overwrite)  # re-check: nothing may have appeared meanwhile
            old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
