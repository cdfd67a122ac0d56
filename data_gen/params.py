"""``WorldParams``: every knob of a world, validated before any drawing or rendering starts.

Kept apart from the generator (no image or parquet libraries imported) so that ``clearbench generate``
rejects impossible sizes at once: the word lists keep at most so many people unique
(``authors.capacity``), faces at most so many identities, and all images are held in memory.
"""
from __future__ import annotations

import dataclasses
import math

from data_gen.authors import capacity, name_capacity, wordlists
from data_gen.faces import identity_capacity
from data_gen.qa import TEXT_TEMPLATES
from data_gen.splits import check_percents

MAX_IMAGE_SIZE = 1024
MAX_IMAGES = 1_000_000  # every PNG is held in memory until the files are written (~4 KB each at 64 px)


@dataclasses.dataclass
class WorldParams:
    """Every knob of a world (defaults follow CLEAR: 200 authors, ~18.8 images each, 20 QA each)."""

    seed: int = 0
    authors: int = 200
    holdout_authors: int | None = None  # None: the size of the largest forget split
    qa_per_author: int = 20
    images_per_author: int = 18
    heldout_images: int = 3
    public_figures: int = 50
    public_train_images: int = 20  # 10 left held-out naming of the tiny base at 0.57 (issue #4 note)
    public_heldout_images: int = 3
    world_vqa: int = 500
    world_vqa_train: int = 3000
    anonymous_faces: int = 2000  # scene photos; the base's vision tower learns face attributes from them
    retain_eval_authors: int = 20
    image_size: int = 64
    forget_percents: tuple[int, ...] = (1, 5, 10)
    corruption_victims: int | None = None  # victims of the corruption sets (data_gen.corrupt); None: 5 % of the authors
    corruption_context: tuple[int, ...] = (0, 1, 2, 3)  # k unrelated true facts per corrupting record, one config per k
    layout: str = "clearbench"  # "clear" also writes DIR/clear/<config>/train-00000-of-00001.parquet
    image_backend: str = "procedural"  # or "diffusers" (data_gen.diffusion)
    diffusers_model: str = ""  # local diffusers pipeline directory for the diffusers backend
    diffusion_steps: int = 20
    identity_threshold: float = 0.7  # open_clip cosine to the author's portrait below this -> retry
    identity_max_tries: int = 3
    workers: int = 2

    def validate(self) -> "WorldParams":
        self._check_counts()
        if self.image_size < 16 or self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"--image-size {self.image_size} is outside 16..{MAX_IMAGE_SIZE} (a face needs 16 px; default 64)")
        most, given_holdout = min(capacity().values()), self.holdout_authors
        if self.authors > most:  # before the percentages: their advice would name an impossible size
            raise ValueError(self._too_many_authors(most, given_holdout))
        self.forget_percents = check_percents(tuple(self.forget_percents), self.authors)
        largest = max(self.forget_percents) * self.authors // 100
        if self.holdout_authors is None:
            self.holdout_authors = largest
        if isinstance(self.holdout_authors, bool) or not isinstance(self.holdout_authors, int) or self.holdout_authors < largest:
            raise ValueError(f"holdout_authors={self.holdout_authors!r} is smaller than the largest forget split ({largest}); use at least {largest}")
        if self.authors + self.holdout_authors > most:
            raise ValueError(self._too_many_authors(most, given_holdout))
        self._check_pools()
        self._check_choices()
        self._check_corruption(largest)
        return self

    def _check_corruption(self, largest: int) -> None:
        """K victims and K decoys among the retain authors outside retain_perturbed and every forget split,
        and at least 3 true facts of other such authors to mix in."""
        outside = self.authors - largest
        free = outside - min(self.retain_eval_authors, outside)
        k = self.corruption_victims
        if k is None:
            k = self.corruption_victims = min(self.authors // 20, max(0, (free - 1) // 2))
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"--corruption-victims must be an integer >= 0, got {k!r}")
        contexts = self.corruption_context = tuple(self.corruption_context)
        if not contexts or len(set(contexts)) != len(contexts) or any(isinstance(c, bool) or c not in (0, 1, 2, 3) for c in contexts):
            raise ValueError(f"corruption_context {contexts!r} must list distinct values of 0, 1, 2, 3 (unrelated true facts per record)")
        if k and 2 * k + 1 > free:
            raise ValueError(f"--corruption-victims {k}: {free} retain authors lie outside retain_perturbed and every forget "
                             f"split, and each victim needs a decoy partner plus one author for unrelated facts; use at most "
                             f"--corruption-victims {max(0, (free - 1) // 2)}")
        if k and max(contexts) and (free - 2 * k) * self.qa_per_author < 3:
            raise ValueError(f"corruption_context {contexts!r} needs at least 3 true facts of other authors; raise --qa-per-author "
                             f"or use corruption_context (0,)")

    def _check_counts(self) -> None:
        positive = ("authors", "qa_per_author", "images_per_author", "image_size", "workers")
        non_negative = ("heldout_images", "public_figures", "public_train_images", "public_heldout_images", "world_vqa",
                        "world_vqa_train", "anonymous_faces", "retain_eval_authors")
        for name in positive + non_negative:
            v = getattr(self, name)
            low = 1 if name in positive else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {v!r}")
        if self.qa_per_author > len(TEXT_TEMPLATES):
            raise ValueError(f"--qa-per-author {self.qa_per_author} exceeds the {len(TEXT_TEMPLATES)} question templates; use at most {len(TEXT_TEMPLATES)}")
        if self.public_figures and self.public_figures < 6:
            raise ValueError(f"--public-figures {self.public_figures}: need 0 or at least 6 (5 wrong names are the options of each)")

    def _too_many_authors(self, most: int, holdout: int | None) -> str:
        pool = min(capacity(), key=capacity().get)
        if holdout is None:  # holdout authors = the largest forget split
            top = max([p for p in self.forget_percents if isinstance(p, int) and 1 <= p <= 99] or [0])
            step = math.lcm(*[100 // math.gcd(p, 100) for p in self.forget_percents if isinstance(p, int) and 1 <= p <= 99] or [1])
            fit = most * 100 // (100 + top) // step * step
        else:
            fit = most - holdout
        return (f"--authors {self.authors} is more than the word lists keep unique: their {pool} allow at most {most} "
                f"authors + holdout authors; use at most --authors {fit}")

    def _check_pools(self) -> None:
        people = self.authors + self.holdout_authors
        if people + self.public_figures > name_capacity():
            raise ValueError(f"--public-figures {self.public_figures}: the word lists' full names hold at most {name_capacity()} "
                             f"people; use at most --public-figures {max(0, name_capacity() - people)}")
        faces = identity_capacity(wordlists()["regions"])
        if people + self.public_figures + self.anonymous_faces > faces:
            raise ValueError(f"--anonymous-faces {self.anonymous_faces}: a world holds at most {faces} distinct face identities "
                             f"(people and anonymous faces); use at most --anonymous-faces {max(0, faces - people - self.public_figures)}")
        images = self.image_count()
        if images > MAX_IMAGES:
            raise ValueError(f"this world would have {images} images; at most {MAX_IMAGES} fit (all are held in memory until "
                             f"written): lower --images-per-author, --world-vqa, --anonymous-faces or --public-train-images")

    def _check_choices(self) -> None:
        if self.layout not in ("clearbench", "clear"):
            raise ValueError(f"--layout {self.layout!r} is unknown; use 'clearbench' or 'clear'")
        if self.image_backend not in ("procedural", "diffusers"):
            raise ValueError(f"--image-backend {self.image_backend!r} is unknown; use 'procedural' or 'diffusers'")
        if self.diffusion_steps < 1 or self.identity_max_tries < 1 or not -1.0 <= self.identity_threshold <= 1.0:
            raise ValueError("diffusion_steps and identity_max_tries must be >= 1 and identity_threshold within [-1, 1]")
        if self.image_backend == "diffusers" and not self.diffusers_model:
            raise ValueError("--image-backend diffusers needs --diffusers-model DIR (a local diffusers pipeline directory)")

    def image_count(self) -> int:
        """Images the world holds: scenes and a portrait per author, holdout author and public figure,
        anonymous faces and world VQA (holdout authors: the largest forget split when unset)."""
        holdout = self.holdout_authors if self.holdout_authors is not None else max(self.forget_percents) * self.authors // 100
        return ((self.authors + holdout) * (self.images_per_author + self.heldout_images + 1)
                + self.public_figures * (self.public_train_images + self.public_heldout_images + 1)
                + self.anonymous_faces + self.world_vqa + self.world_vqa_train)
