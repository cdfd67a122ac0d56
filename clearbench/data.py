"""Loaders: clearbench worlds (``open_world``), local copies of the public CLEAR dataset (``open_clear``), either
one told apart by its files (``open_data``: what ``--world`` accepts).

Both return ``clearbench.types.Record`` objects through the same API::

    world = open_world("world")            # validates manifest.json, every file's sha256, columns, fingerprint
    world.records("forget10_perturbed", modalities=["image"], tasks=["naming"])
    world.texts()                           # every string (tokenizer training)

Images are decoded lazily by PIL; pixel noise is a load-time augmentation (``augment=sigma``).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clearbench.provenance import sha256_file
from clearbench.types import Modality, Record, Task, parse_modality, parse_task, unknown_name_message
from data_gen.schema import AUTHOR_COLUMNS, RECORD_COLUMNS, SCHEMA_VERSION, world_fingerprint

SUPPORTED_SCHEMA = SCHEMA_VERSION  # the schema this reader understands (data_gen/schema.py)
# why an older world is refused (its files still load, but what they mean has changed)
OLD_SCHEMAS = {1: "schema 1 worlds build perturbed answers from the answer's wording, so the truth ratio's default "
                  "reference (the paraphrase) is degenerate on them",
               2: "schema 2 worlds draw wrong answers from values the models trained on, have no paraphrased_question "
                  "column, and their fingerprint covers neither the configs nor the splits"}
MANIFEST_KEYS = {"schema_version": int, "fingerprint": str, "params": dict, "configs": dict, "files": dict, "splits": dict}
_DIGESTS: dict[tuple, str] = {}  # stat key -> sha256: opening a world twice hashes it once


def _decode(cell, base: Path | None = None):
    if cell is None:
        return None
    if cell.get("bytes") is not None:
        return Image.open(io.BytesIO(cell["bytes"]))
    if cell.get("path"):
        return Image.open(Path(base or ".") / cell["path"])
    return None


def _noisy(img: Image.Image, sigma: float, key: str) -> Image.Image:
    import numpy as np
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip(arr + rng.normal(0.0, sigma, arr.shape), 0, 255).astype(np.uint8))


def _filter(records: list[Record], modalities, tasks, image_roles) -> list[Record]:
    mods = None if modalities is None else {parse_modality(m) for m in modalities}
    tks = None if tasks is None else {parse_task(t) for t in tasks}
    roles = None if image_roles is None else set(image_roles)
    return [r for r in records if (mods is None or r.modality in mods) and (tks is None or r.task in tks)
            and (roles is None or r.image_role in roles)]


def _image(d: dict, base: Path | None):
    """A row's image, decoded; bytes that are not an image name the record and the fix."""
    try:
        return _decode(d["image"], base) if isinstance(d["image"], dict) else d["image"]
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"record {d.get('id')!r} ({d.get('split')}): its image cannot be read ({exc}); the world's "
                         f"files are damaged: regenerate the world with clearbench generate") from None


def _make_records(dicts: Iterable[dict], augment: float, base: Path | None = None) -> list[Record]:
    out = []
    for d in dicts:
        img = _image(d, base)
        if img is not None and augment:
            img = _noisy(img, augment, d["id"])
        out.append(Record(id=d["id"], author_id=d["author_id"], split=d["split"], modality=Modality(d["modality"]),
                          task=Task(d["task"]), question=d["question"], answer=d["answer"],
                          paraphrased_answer=d.get("paraphrased_answer") or "", perturbed_answers=tuple(d.get("perturbed_answers") or ()),
                          image=img, name=d.get("name") or "", group=d.get("group") or "", image_role=d.get("image_role") or "",
                          paraphrased_question=d.get("paraphrased_question") or ""))
    return out


class World:
    """A generated world on disk (see docs/world_format.md)."""

    def __init__(self, path: Path, manifest: dict, augment: float = 0.0) -> None:
        self.path, self.manifest, self.augment = path, manifest, augment
        self.fingerprint: str = manifest["fingerprint"]
        self.configs: tuple[str, ...] = tuple(c for c in manifest["configs"] if c != "authors")
        self.splits: dict[str, list[str]] = manifest.get("splits", {})
        self._cache: dict[str, list[Record]] = {}

    def _file(self, config: str) -> Path:
        if config not in self.configs and config != "authors":
            raise ValueError(unknown_name_message("config", config, self.configs))
        return self.path / self.manifest["configs"][config]["file"]

    def records(self, config: str, modalities=None, tasks=None, image_roles=None) -> list[Record]:
        if config not in self._cache:
            rows = pq.read_table(self._file(config)).to_pylist()
            for r in rows:
                r["split"] = config
            self._cache[config] = _make_records(rows, self.augment)
        return _filter(self._cache[config], modalities, tasks, image_roles)

    def texts(self) -> list[str]:
        """Every string a model may have to read or write (questions and all answer variants, names)."""
        out: list[str] = []
        for config in self.configs:
            table = pq.read_table(self._file(config), columns=["question", "answer", "paraphrased_answer", "perturbed_answers", "name"])
            for row in table.to_pylist():
                out += [row["question"], row["answer"], row["paraphrased_answer"], *row["perturbed_answers"]]
        out += [a["name"] for a in self.authors()]
        return [t for t in dict.fromkeys(out) if t]

    def authors(self) -> list[dict]:
        """One dict per author / holdout author / public figure: author_id, name, role, splits, profile, face."""
        rows = pq.read_table(self._file("authors"), columns=["author_id", "name", "role", "splits", "profile", "face"]).to_pylist()
        for r in rows:
            r["profile"], r["face"] = json.loads(r["profile"]), json.loads(r["face"])
        return rows

    def __repr__(self) -> str:
        return f"World({str(self.path)!r}, fingerprint={self.fingerprint[:12]}, configs={len(self.configs)})"


def _digest(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime, ctime, inode): an unchanged file is hashed once."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _inside(root: Path, rel, what: str, fix: str) -> Path:
    """root / rel, refused unless rel is a relative path that stays in root (no '..', no absolute
    path, no symlink that leads out)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise ValueError(f"world at {root} is corrupt: {what} {rel!r} is not a relative path inside the world "
                         f"directory (no '..', no absolute path); {fix}")
    full = root / rel
    if not full.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"world at {root} is corrupt: {what} {rel!r} leads outside the world directory (to "
                         f"{full.resolve()}); {fix}")
    return full


def _read_manifest(path: Path, fix: str) -> dict:
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"world at {path} is corrupt/partial: manifest.json is missing; {fix}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"world at {path} is corrupt/partial: manifest.json is not valid JSON ({exc}); {fix}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"world at {path} is corrupt: manifest.json is not a JSON object; {fix}")
    if manifest.get("schema_version") != SUPPORTED_SCHEMA:
        why = OLD_SCHEMAS.get(manifest.get("schema_version"))
        raise ValueError(f"world at {path} has schema_version {manifest.get('schema_version')!r}, this clearbench reads "
                         f"{SUPPORTED_SCHEMA}{f' ({why})' if why else ''}; {fix}")
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"world at {path} is corrupt: manifest.json has no {key!r} {kind.__name__}; {fix}")
    return manifest


def _check_columns(path: Path, config: str, rel: str, info: dict, fix: str) -> None:
    """The config's parquet holds every column of the schema, of the schema's kind, and the manifest's row count."""
    expected = AUTHOR_COLUMNS if config == "authors" else RECORD_COLUMNS
    meta = pq.read_metadata(path / rel)
    schema = meta.schema.to_arrow_schema()
    for name, kind in expected.items():
        if name not in schema.names:
            raise ValueError(f"world at {path} is corrupt: {rel} (config {config!r}) lacks the column {name!r} the world "
                             f"schema requires; {fix}")
        t = schema.field(name).type
        ok = {"string": pa.types.is_string(t), "list": pa.types.is_list(t) and pa.types.is_string(t.value_type),
              "image": pa.types.is_struct(t) and t.get_field_index("bytes") >= 0}[kind]
        if not ok:
            raise ValueError(f"world at {path} is corrupt: {rel} column {name!r} is {t}, the world schema requires {kind}; {fix}")
    if meta.num_rows != info.get("rows"):
        raise ValueError(f"world at {path} is corrupt: {rel} holds {meta.num_rows} rows, manifest.json says "
                         f"{info.get('rows')!r}; {fix}")


def open_world(path, augment: float = 0.0) -> World:
    """Open a world written by ``clearbench generate``. Every file a config reads must be listed with
    its sha256 and lie inside the world directory; every file's sha256, every config's columns and
    the fingerprint are recomputed (sha256 cached by stat, so a second open is cheap)."""
    path = Path(path)
    fix = f"regenerate with: clearbench generate --out {path} --overwrite"
    if not path.is_dir():
        raise FileNotFoundError(f"no world at {path}: the directory does not exist; create one with: clearbench generate --out {path}")
    manifest = _read_manifest(path, fix)
    for rel, digest in sorted(manifest["files"].items()):
        f = _inside(path, rel, "listed file", fix)
        if not f.is_file():
            raise FileNotFoundError(f"world at {path} is corrupt/partial: {rel} is missing; {fix}")
        if _digest(f) != digest:
            raise ValueError(f"world at {path} is corrupt/partial: {rel} does not match its sha256 in manifest.json; {fix}")
    if "authors" not in manifest["configs"]:
        raise ValueError(f"world at {path} is corrupt: manifest.json lists no 'authors' config; {fix}")
    for config, info in manifest["configs"].items():
        rel = info.get("file") if isinstance(info, dict) else None
        _inside(path, rel, f"config {config!r} reads", fix)
        if rel not in manifest["files"]:
            raise ValueError(f"world at {path} is corrupt: config {config!r} reads {rel}, which manifest.json does not "
                             f"list with a sha256; {fix}")
        _check_columns(path, config, rel, info, fix)
    if world_fingerprint(manifest) != manifest["fingerprint"]:
        raise ValueError(f"world at {path} is corrupt: manifest.json does not match its fingerprint (it was edited after "
                         f"generation); {fix}")
    if augment < 0:
        raise ValueError(f"augment={augment} must be >= 0 (the std of Gaussian pixel noise, 0-255 scale)")
    return World(path, manifest, augment)


class ClearCopy:
    """A local copy of the public CLEAR dataset (``therem/CLEAR``) behind the World record API.

    Layout: ``DIR/<config>/**/*.parquet`` (the hub's ``forget10/train-00000-of-00001.parquet`` or its parquet
    branch's ``forget10/train/0000.parquet``) or ``DIR/<config>.parquet``; config names are CLEAR's (full,
    forget01, retain99, forget01+tofu, ...). A config X with an ``X+tofu`` companion reads as clearbench's X: its
    images (caption and naming records) plus the companion's text QA (CLEAR keeps TOFU's text in ``X+tofu``).
    The fingerprint hashes every file's content (sha256) with its config, not file names or sizes.
    """

    layout = "clear"

    def __init__(self, path: Path, files: dict[str, list[Path]], augment: float = 0.0, seed: int = 0) -> None:
        self.path, self._files, self.augment, self.seed = path, files, augment, seed
        self.configs: tuple[str, ...] = tuple(sorted(files))
        h = hashlib.sha256(b"clearbench-clear-copy/2\n")
        for c in self.configs:
            for f in files[c]:
                h.update(f"{c}\n{_digest(f)}\n".encode())  # content by config: the same under either file-name style
        self.fingerprint = h.hexdigest()
        self.manifest: dict = {"layout": "clear", "configs": {c: [str(f) for f in files[c]] for c in self.configs}}
        self._cache: dict[str, list[Record]] = {}
        self._splits: dict[str, list[str]] | None = None

    def _rows(self, config: str, columns=None) -> list[dict]:
        from data_gen.clear_layout import COLUMNS, config_kind
        if config not in self._files:
            raise ValueError(unknown_name_message("config", config, self.configs))
        required, optional = COLUMNS[config_kind(config)]
        rows = []
        for f in self._files[config]:
            names = pq.read_schema(f).names
            missing = [c for c in required if c not in names]
            if missing:
                raise ValueError(f"CLEAR copy at {self.path}: config {config!r} ({f.name}) lacks column(s) {', '.join(missing)}; "
                                 f"expected columns {', '.join(required + optional)} (optional: {', '.join(optional) or 'none'}); "
                                 f"re-download that config of therem/CLEAR")
            wanted = [c for c in required + optional if c in names and (columns is None or c in columns)]
            rows += pq.read_table(f, columns=wanted).to_pylist()
        return rows

    def _config_records(self, config: str) -> list[Record]:
        from data_gen.clear_layout import rows_to_records
        if config not in self._cache:
            dicts = rows_to_records(config, self._rows(config), self.seed)
            self._cache[config] = _make_records(dicts, self.augment, self.path / config)
        return self._cache[config]

    def records(self, config: str, modalities=None, tasks=None, image_roles=None) -> list[Record]:
        recs = self._config_records(config)
        if f"{config}+tofu" in self._files:  # clearbench's X = CLEAR's X (images) + the text QA of X+tofu
            recs = recs + [r for r in self._config_records(f"{config}+tofu") if r.modality is Modality.TEXT]
        return _filter(recs, modalities, tasks, image_roles)

    @property
    def splits(self) -> dict[str, list[str]]:
        """forgetNN / retainNN -> the ids of the people their naming records name (as the world manifest's splits)."""
        if self._splits is None:
            from clearbench.types import is_forget_split
            self._splits = {c: sorted({r.author_id for r in self.records(c, tasks=["naming"]) if r.author_id})
                            for c in self.configs if is_forget_split(c) or (c.startswith("retain") and c[6:].isdigit())}
        return self._splits

    def texts(self) -> list[str]:
        out: list[str] = []
        for config in self.configs:
            for r in self._config_records(config):
                out += [r.question, r.answer, r.paraphrased_answer, *r.perturbed_answers]
        return [t for t in dict.fromkeys(out) if t]

    def authors(self) -> list[dict]:
        names = sorted({r.name for c in self.configs for r in self.records(c, tasks=["naming"]) if c != "real_faces"})
        from data_gen.clear_layout import slug
        return [{"author_id": slug(n), "name": n} for n in names]

    def __repr__(self) -> str:
        return f"ClearCopy({str(self.path)!r}, fingerprint={self.fingerprint[:12]}, configs={len(self.configs)})"


def _clear_files(path: Path) -> dict[str, list[Path]]:
    """config -> its parquet files: ``<config>.parquet`` and ``<config>/**/*.parquet`` (hidden entries skipped)."""
    files: dict[str, list[Path]] = {}
    for f in sorted(path.glob("*.parquet")):
        files.setdefault(f.stem, []).append(f)
    for d in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(f for f in d.rglob("*.parquet") if not any(s.startswith(".") for s in f.relative_to(d).parts))
        if found:
            files.setdefault(d.name, []).extend(found)
    return files


def open_clear(path, augment: float = 0.0, seed: int = 0) -> ClearCopy:
    """Open a local copy of therem/CLEAR (``DIR/<config>/**/*.parquet`` or ``DIR/<config>.parquet``)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no CLEAR copy at {path}: the directory does not exist; download therem/CLEAR "
                                f"(e.g. huggingface-cli download therem/CLEAR --repo-type dataset --local-dir {path})")
    files = _clear_files(path)
    if not files:
        raise FileNotFoundError(f"no CLEAR copy at {path}: no parquet files found (expected {path}/<config>/*.parquet "
                                f"or {path}/<config>.parquet, e.g. {path}/forget10/train-00000-of-00001.parquet)")
    return ClearCopy(path, files, augment, seed)


_CLEAR_CONFIG = re.compile(r"(full|(forget|retain)\d{2})(\+tofu|_perturbed)?|retain_perturbed|real_faces|real_world")
LAYOUTS = ("a clearbench world (manifest.json and data/<config>.parquet, written by `clearbench generate`) or a copy "
           "of the public CLEAR dataset (therem/CLEAR: <config>/train-00000-of-00001.parquet, <config>/train/0000.parquet "
           "or <config>.parquet, with configs such as forget10, retain90, forget10_perturbed, retain_perturbed, real_faces)")


def open_data(path, augment: float = 0.0) -> World | ClearCopy:
    """A world directory or a CLEAR copy, told apart by their files: ``manifest.json`` (``open_world``, which
    checks everything), else parquet files named by CLEAR's configs (``open_clear``). A directory that is neither
    names both layouts; a world that lost its manifest gets the world's own error (regenerate it)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no world at {path}: the directory does not exist; create one with: clearbench "
                                f"generate --out {path}, or download therem/CLEAR there (huggingface-cli download "
                                f"therem/CLEAR --repo-type dataset --local-dir {path})")
    if (path / "manifest.json").exists():
        return open_world(path, augment)
    if any(_CLEAR_CONFIG.fullmatch(c) for c in _clear_files(path)):
        return open_clear(path, augment)
    if (path / "data").is_dir() or (path / "README.md").is_file():
        return open_world(path, augment)  # a generated world without its manifest: "regenerate with ..."
    raise ValueError(f"{path} is neither {LAYOUTS}; pass one of those as --world")
