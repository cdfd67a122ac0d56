"""The per-example output schema: everything the model runner stores for one scored record.

``eval/outputs.py`` (the only code that runs the model) fills one ``ExampleOutput`` per
record in one scoring pass; every metric in ``eval/metrics`` is a pure function of these
fields (DESIGN.md, "One scoring pass"). Log-probabilities are natural-log, one per *answer*
token under teacher forcing (prompt, image and template tokens excluded).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from clearbench.types import MODALITIES, TASKS

# Map from an eval config name to the split vocabulary used in result keys.
SPLITS: tuple[str, ...] = ("forget", "retain", "holdout", "real_faces", "real_world")


def split_of(config: str) -> str:
    """``forget10_perturbed`` -> ``forget``, ``retain_perturbed`` -> ``retain``, ``holdout10`` ->
    ``holdout``, ``real_faces`` / ``real_world`` unchanged; anything else is a loud error."""
    # a pure function of a few distinct names, asked for every example many times: memoised
    return _split_of(config) if isinstance(config, str) else _split_of.__wrapped__(config)


@functools.lru_cache(maxsize=1024)
def _split_of(config: str) -> str:
    if config.startswith("forget") and config.endswith("_perturbed"):
        return "forget"
    if config == "retain_perturbed":
        return "retain"
    if config.startswith("holdout") and config[len("holdout"):].isdigit():
        return "holdout"
    if config in ("real_faces", "real_world"):
        return config
    if config in ("victims_text", "victims_image", "victims_joint"):  # the restorative scenario (eval.scenarios)
        return "victims"
    raise ValueError(
        f"Unknown eval config {config!r} for scoring. Known forms: forgetXX_perturbed, "
        "retain_perturbed, holdoutXX, real_faces, real_world."
    )


@dataclasses.dataclass
class ExampleOutput:
    """One scored record: its identity, its answer variants and the model's stored outputs.

    ``split`` is the eval config name (``forget10_perturbed``, ``retain_perturbed``, ...).
    ``lp_answer[t]`` = log p(answer token t | prompt, image, answer tokens < t).
    ``lp_paraphrased`` is the same for ``paraphrased_answer``; ``lp_perturbed[k]`` for
    ``perturbed_answers[k]``. ``minkpp_mu[t]`` / ``minkpp_sigma[t]`` are the mean and standard
    deviation of log p over the vocabulary under p itself at answer position t (Min-K%++,
    Zhang et al. 2024): mu = sum_v p_v log p_v, sigma = sqrt(sum_v p_v (log p_v)^2 - mu^2).
    ``generation`` is the greedy decode given the prompt *and the image*.
    """

    id: str
    author_id: str
    split: str
    group: str
    modality: str
    task: str
    name: str
    answer: str
    paraphrased_answer: str
    perturbed_answers: list[str]
    image_role: str
    generation: str
    lp_answer: list[float]
    lp_paraphrased: list[float]
    lp_perturbed: list[list[float]]
    minkpp_mu: list[float]
    minkpp_sigma: list[float]

    @property
    def eval_split(self) -> str:
        """The split name used in result keys (``forget``, ``retain``, ``holdout``, ...)."""
        return split_of(self.split)

    def to_dict(self) -> dict[str, Any]:
        # field by field (dataclasses.asdict deep-copies every float: 5 % of an evaluation's time)
        d = {f.name: getattr(self, f.name) for f in _FIELDS}
        for key in ("perturbed_answers", *_FLOAT_LISTS):
            d[key] = list(d[key])
        d["lp_perturbed"] = [list(row) for row in self.lp_perturbed]
        d["modality"] = str(self.modality)
        d["task"] = str(self.task)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExampleOutput":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(d))
        extra = sorted(set(d) - names)
        if missing or extra:
            raise ValueError(
                f"example {d.get('id', '?')!r}: missing fields {missing}, unknown fields {extra}"
            )
        kw = dict(d)
        kw["perturbed_answers"] = [str(a) for a in d["perturbed_answers"]]
        for key in _FLOAT_LISTS:
            kw[key] = list(map(float, d[key]))
        kw["lp_perturbed"] = [list(map(float, row)) for row in d["lp_perturbed"]]
        kw["modality"] = str(d["modality"])
        kw["task"] = str(d["task"])
        return cls(**kw)

    def problems(self) -> list[str]:
        """Internal consistency of one example; empty when it can be scored."""
        out: list[str] = []
        where = f"example {self.id!r}"
        if str(self.modality) not in MODALITIES:
            out.append(f"{where}: unknown modality {self.modality!r} (known: {MODALITIES})")
        if str(self.task) not in TASKS:
            out.append(f"{where}: unknown task {self.task!r} (known: {TASKS})")
        try:
            split_of(self.split)
        except ValueError as e:
            out.append(f"{where}: {e}")
        if str(self.task) == "naming" and not self.name.strip():
            out.append(f"{where}: a naming record needs the person's name")
        if not self.lp_answer:
            out.append(f"{where}: lp_answer is empty (no answer tokens were scored)")
        if not self.lp_paraphrased:
            out.append(f"{where}: lp_paraphrased is empty")
        if len(self.lp_perturbed) != len(self.perturbed_answers):
            out.append(
                f"{where}: {len(self.lp_perturbed)} lp_perturbed rows for "
                f"{len(self.perturbed_answers)} perturbed answers"
            )
        if not self.perturbed_answers:
            out.append(f"{where}: no perturbed answers (truth ratio needs at least one)")
        if any(len(row) == 0 for row in self.lp_perturbed):
            out.append(f"{where}: an lp_perturbed row is empty")
        if not (len(self.minkpp_mu) == len(self.minkpp_sigma) == len(self.lp_answer)):
            out.append(
                f"{where}: minkpp_mu/minkpp_sigma lengths {len(self.minkpp_mu)}/"
                f"{len(self.minkpp_sigma)} differ from lp_answer length {len(self.lp_answer)}"
            )
        lps = [*self.lp_answer, *self.lp_paraphrased, *(x for r in self.lp_perturbed for x in r)]
        if _outside(lps, high=1e-6):
            out.append(f"{where}: log-probabilities must be finite and <= 0")
        if _outside(self.minkpp_mu, high=1e-6):
            out.append(f"{where}: minkpp_mu must be finite and <= 0 (it is -entropy)")
        if _outside(self.minkpp_sigma, low=0.0):
            out.append(f"{where}: minkpp_sigma must be finite and >= 0")
        return out


_FIELDS = dataclasses.fields(ExampleOutput)
_FLOAT_LISTS = ("lp_answer", "lp_paraphrased", "minkpp_mu", "minkpp_sigma")  # one float per answer token


def _outside(values: list, low: float = -math.inf, high: float = math.inf) -> bool:
    """Whether a value is not finite or outside [low, high]; a list of floats is checked at C speed."""
    if set(map(type, values)) <= {float}:
        return not all(map(math.isfinite, values)) or (bool(values) and (max(values) > high or min(values) < low))
    return any(not math.isfinite(x) or x > high or x < low for x in values)
