"""Cross-modal leakage: does forgetting in one modality reach the others? (issue 16 item 5; CLEAR §5.3)

Pure functions of result files (their per-example values and the gold examples each one embeds):

- the **matrix** per method: the forget settings (the modality unlearned: text, visual, multimodal; rows) x the
  evaluated modality (text, image, image+text; columns) of a forget score (forget probability, naming accuracy,
  forget quality D: ``MATRIX_METRICS``);
- the **leak rate** of one unlearned model: among the facts of the forget people that the model no longer knows
  in a modality it was unlearned on, the share it still knows in another modality. A fact is an author x fact
  (``cross_fact``) scored in both modalities; "knows" is ``knows()``: the fact's mean answer probability above
  the gold (never-trained) model's on the same records by more than ``MARGIN`` (relative). docs/metrics.md;
- the **Spearman correlation** of the method rankings between two settings (CLEAR: 0.7 text vs multimodal,
  0.2 visual vs multimodal).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Sequence

import numpy as np
from scipy.stats import spearmanr

from eval.aggregate import MetricOptions, per_example_values
from eval.example import ExampleOutput, split_of

SETTINGS: tuple[str, ...] = ("text", "visual", "multimodal")
EVALUATED: tuple[str, ...] = ("text", "image", "joint")
# clearbench.types.FORGET_MODALITIES: the record modalities a setting unlearns on
UNLEARNED = {"text": ("text",), "visual": ("image", "joint"), "multimodal": ("text", "image", "joint")}
MATRIX_METRICS: tuple[tuple[str, str], ...] = (
    ("probability", "forget probability ↓"), ("forget_quality_d", "forget quality D ↓"),
    ("naming_acc", "naming accuracy ↓"))
SCORE = "probability"  # the per-example value behind "knows"
MARGIN = 0.1  # knows: mean probability > gold's x (1 + MARGIN)
_PERSON = re.compile(r"\b(yes|no|this person|the person in (this|the) (image|picture|photo))\b")


# --------------------------------------------------------------------------- the matrix
def matrix(rows: Sequence[Any], metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """{method label: {setting: {evaluated modality: forget/{m}/{metric}}}} from leaderboard rows (their
    recomputed metrics); reference rows (no method) are left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r.setting in UNLEARNED:
            cells = {m: r.metrics[f"forget/{m}/{metric}"] for m in EVALUATED if f"forget/{m}/{metric}" in r.metrics}
            out.setdefault(r.label, {})[r.setting] = cells
    return out


# --------------------------------------------------------------------------- facts and leaks
def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def cross_fact(ex: ExampleOutput) -> str:
    """The fact a forget record asks, the same in every modality: naming and caption records ask who the
    person is ("identity"); a QA record asks the fact its answer states, with the person's name and the
    modality's wording of them ("this person", a leading "yes") taken out, so that "Yes, Ann Lee won the Ink
    Prize in 2019." (text) and "This person won the Ink Prize in 2019." (image+text) are one fact."""
    if ex.task in ("naming", "caption"):
        return "identity"
    text = _normalise(ex.answer)
    name = _normalise(ex.name or "")
    if name:
        text = re.sub(rf"\b{re.escape(name)}(?: s)?\b", " ", text)
    return " ".join(_PERSON.sub(" ", text).split())


def _forget_probabilities(examples: Sequence[ExampleOutput]) -> dict[tuple[str, str, str], float]:
    """{(author, fact, modality): mean per-example probability} of the forget records."""
    forget = [ex for ex in examples if split_of(ex.split) == "forget"]
    values = per_example_values(forget, MetricOptions(require_gold=False), {SCORE})
    groups: dict[tuple[str, str, str], list[float]] = {}
    for ex in forget:
        if SCORE in values[ex.id]:
            groups.setdefault((ex.author_id, cross_fact(ex), ex.modality), []).append(values[ex.id][SCORE])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _forget_examples(docs: Sequence[dict[str, Any]]) -> list[ExampleOutput]:
    """The forget examples of a result's stored examples (only those are parsed)."""
    return [ExampleOutput.from_dict(d) for d in docs if split_of(d["split"]) == "forget"]


def knows(result: dict[str, Any], margin: float = MARGIN) -> dict[tuple[str, str, str], bool]:
    """{(author, fact, modality): whether the model still knows it}: its mean answer probability on the fact's
    forget records is above the gold model's (the embedded gold examples, never trained on these people) by
    more than ``margin`` (relative)."""
    if not result.get("gold"):
        raise ValueError("the leak rate compares with the gold model: this result embeds no gold examples")
    mine = _forget_probabilities(_forget_examples(result["examples"]))
    gold = _forget_probabilities(_forget_examples(result["gold"]["examples"]))
    return {k: p > gold[k] * (1.0 + margin) for k, p in mine.items() if k in gold}


def leaks(result: dict[str, Any], setting: str, margin: float = MARGIN) -> dict[tuple[str, str], tuple[int, int]]:
    """{(unlearned modality a, other modality b): (facts forgotten in a and known in b, facts forgotten in a)}
    over the author x facts scored in both a and b; a ranges over the modalities ``setting`` unlearned."""
    known = knows(result, margin)
    out = {}
    for a in UNLEARNED[setting]:
        for b in EVALUATED:
            if b == a:
                continue
            shared = [(au, f) for (au, f, m) in known if m == a and (au, f, b) in known]
            forgotten = [u for u in shared if not known[(*u, a)]]
            out[(a, b)] = (sum(known[(*u, b)] for u in forgotten), len(forgotten))
    return out


def leak_rate(pairs: dict[tuple[str, str], tuple[int, int]], outside: bool = True,
              setting: str = "") -> tuple[float | None, int]:
    """(leaked / forgotten, forgotten) pooled over the pairs; ``outside``: only into modalities the setting
    did not unlearn (the cross-modal leak; the multimodal setting unlearned all three, so there it pools every
    pair). None where no fact was forgotten."""
    keep = [(a, b) for a, b in pairs if not outside or b not in UNLEARNED.get(setting, ()) or setting == "multimodal"]
    leaked, forgotten = sum(pairs[p][0] for p in keep), sum(pairs[p][1] for p in keep)
    return (leaked / forgotten if forgotten else None), forgotten


# --------------------------------------------------------------------------- rankings across settings
def spearman(rows: Sequence[Any], key: str) -> dict[tuple[str, str], tuple[float | None, int]]:
    """{(setting a, setting b): (Spearman rho of the methods' ``key`` values, number of methods)} over the
    methods scored in both settings; rho is None with fewer than 3 methods or a constant ranking."""
    values = {s: {r.label: r.metrics[key] for r in rows if r.setting == s and key in r.metrics} for s in SETTINGS}
    out = {}
    for i, a in enumerate(SETTINGS):
        for b in SETTINGS[i + 1:]:
            common = sorted(set(values[a]) & set(values[b]))
            x, y = [values[a][m] for m in common], [values[b][m] for m in common]
            rho = None
            if len(common) >= 3 and len(set(x)) > 1 and len(set(y)) > 1:
                rho = float(spearmanr(x, y).statistic)
            out[(a, b)] = (rho, len(common))
    return out
