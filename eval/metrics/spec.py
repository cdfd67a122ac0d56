"""Metric specs: each metric module exports ``SPECS``; aggregation, validation and the report iterate them.

Three kinds cover every number in a result file:
  ExampleMetric  a value per scored example (a pure function of its ExampleOutput) and a statistic
                 per cell (split x modality): rouge_l, probability, truth_ratio, naming_acc, ...;
                 ``cell=None`` for per-example scores that only feed a comparison (the MIA scores).
  Comparison     one ExampleMetric's values on two sets: this model's forget examples vs the gold
                 model's (forget quality) or forget vs holdout (MIA AUC), optionally relative to the
                 gold model's own comparison (PrivLeak).
  Composite      a function of other aggregates (model utility, CLEAR's columns, the modality gap).
Every spec declares its ``Output``s: the metric part of its result keys, with bounds and direction.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

# The ExampleOutput fields the model produces; an ExampleMetric names those it reads in ``needs``.
OUTPUT_FIELDS: tuple[str, ...] = ("generation", "lp_answer", "lp_paraphrased", "lp_perturbed", "minkpp_mu",
                                  "minkpp_sigma")
POOLED = "all"
# which value is better; "closer_to_gold": the gold (retain-only) model's value is the ideal
DIRECTIONS = {"higher": "↑", "lower": "↓", "closer_to_0": "→0", "closer_to_gold": "≈gold", "none": ""}


def key(scope: str, modality: str, metric: str) -> str:
    """A result key, ``{scope}/{modality}/{metric}``."""
    return f"{scope}/{modality}/{metric}"


@dataclasses.dataclass(frozen=True)
class Output:
    """One metric name in result keys (their last part): its bounds, direction and report format.

    ``better`` holds on every split except the forget split when ``forget_better`` is set (there less
    knowledge of the forgotten people is better). ``header`` makes an ExampleMetric's pooled cells
    report columns ("forget ROUGE-L ↓"); comparisons and composites list their columns explicitly.
    """

    name: str
    low: float = 0.0
    high: float = 1.0
    better: str = "higher"
    forget_better: str | None = None
    integer: bool = False
    tolerance: float = 0.0  # bounds slack for values that reach a bound only up to rounding
    header: str = ""
    fmt: str = ".4f"
    doc: str = ""

    def __post_init__(self) -> None:
        for d in (self.better, self.forget_better or "none"):
            if d not in DIRECTIONS:
                raise ValueError(f"output {self.name!r}: unknown direction {d!r}; known: {', '.join(DIRECTIONS)}")

    def direction(self, split: str = "") -> str:
        return self.forget_better if split == "forget" and self.forget_better else self.better

    def arrow(self, split: str = "") -> str:
        return DIRECTIONS[self.direction(split)]

    def problem(self, k: str, v: Any) -> str | None:
        """Why ``v`` cannot be the value of result key ``k`` (None when it can)."""
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return f"aggregate {k} = {v!r} is not a finite number"
        ok = self.low - self.tolerance <= v <= self.high + self.tolerance
        if ok and self.integer:
            ok = float(v).is_integer()
        return None if ok else f"aggregate {k} = {v} is out of bounds"


def mean_cell(values: np.ndarray, split: str) -> float:
    """The default cell statistic: the mean of the per-example values."""
    return float(np.mean(values))


def row_means(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """``[np.mean(row) for row in rows]`` as an array, one numpy call per row length: the same numbers bit for
    bit (each row is reduced on its own, as np.mean reduces one; tests/test_report_reuse.py), far faster."""
    out = np.empty(len(rows), dtype=np.float64)
    of_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        of_length.setdefault(len(row), []).append(i)
    for length, idx in of_length.items():
        block = np.array([rows[i] for i in idx], dtype=np.float64).reshape(len(idx), length)
        out[idx] = np.mean(block, axis=1)
    return out


@dataclasses.dataclass(frozen=True)
class ExampleMetric:
    """``value(example, batch)``: the metric of one example (None where it does not apply, e.g.
    naming accuracy of a caption); ``cell(values, split)``: the statistic of a cell."""

    output: Output
    version: int
    value: Callable[[Any, "Batch"], float | None]
    needs: tuple[str, ...]
    cell: Callable[[np.ndarray, str], float] | None = mean_cell
    columns: tuple[tuple[str, str], ...] = ()  # extra report columns; pooled cells come from output.header

    @property
    def name(self) -> str:
        return self.output.name

    @property
    def outputs(self) -> tuple[Output, ...]:
        return (self.output,) if self.cell is not None else ()


@dataclasses.dataclass(frozen=True)
class Cell:
    """Which examples a comparison reads: a split, a modality (``all`` pools; ``image@heldout`` one image
    role) and optionally a task; how many units it keeps (``n``, 0: all; a seeded subsample otherwise);
    and where its results go: ``{scope}/{label}/{comparison name}{variant}{part}`` (scope: default the
    split; label: default the modality)."""

    split: str
    modality: str = POOLED
    task: str | None = None
    scope: str = ""
    label: str = ""
    variant: str = ""
    n: int = 0

    @property
    def key_scope(self) -> str:
        return self.scope or self.split

    @property
    def key_modality(self) -> str:
        return self.label or self.modality


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``compare(a, b) -> {part: value}`` on the values of ExampleMetric ``value`` in each of ``cells(ctx)``;
    each part is stored as the output ``name + cell.variant + part``. ``against="gold"`` compares this
    model's examples with the gold model's (the same ids, aligned; ``units(ctx, cell, ids)`` may group
    and subsample them, a unit's value is the mean of its examples' values); ``against="holdout"``
    compares the cell's forget examples with its holdout examples. ``relative(mine, gold's) -> {part:
    value}`` (holdout comparisons) relates the result to the gold model's own comparison; it raises
    ValueError("<output> not computed: <why>") where undefined."""

    name: str
    outputs: tuple[Output, ...]
    version: int
    value: str
    against: str
    compare: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    cells: Callable[[Any], Iterable[Cell]]
    units: Callable[[Any, Cell, list[str]], list[list[str]]] | None = None
    relative: Callable[[dict[str, float], dict[str, float]], dict[str, float]] | None = None
    columns: tuple[tuple[str, str], ...] = ()  # (report header, result key)

    def __post_init__(self) -> None:
        if self.against not in ("gold", "holdout"):
            raise ValueError(f"comparison against {self.against!r}: known: gold, holdout")


@dataclasses.dataclass(frozen=True)
class Composite:
    """``compute(ctx)`` reads other aggregates (``ctx.metrics``, ``ctx.cell_stats``) and writes its own
    with ``ctx.put(key, value, components)`` or explains a missing one with ``ctx.warn``."""

    outputs: tuple[Output, ...]
    version: int
    compute: Callable[[Any], None]
    columns: tuple[tuple[str, str], ...] = ()


Spec = ExampleMetric | Comparison | Composite


class Batch:
    """The examples of one model scored together, with the metric options: what a per-example
    function may read beyond its own example (CLEAR's truth ratio averages over the example's group)."""

    def __init__(self, examples, options) -> None:
        self.examples, self.options = list(examples), options
        self._groups: dict[tuple[str, str, str], list] | None = None
        self._memo: dict[tuple[str, tuple[str, str, str]], dict[str, float]] = {}

    @staticmethod
    def group_key(ex) -> tuple[str, str, str]:
        return (ex.split, str(ex.modality), str(ex.task))

    def group(self, ex) -> list:
        """The examples of ``ex``'s (eval config, modality, task) group, the counterpart of a CLEAR task file."""
        if self._groups is None:
            self._groups = {}
            for other in self.examples:
                self._groups.setdefault(self.group_key(other), []).append(other)
        return self._groups[self.group_key(ex)]

    def per_group(self, name: str, ex, fn: Callable[[list, Any], Iterable[float]]) -> float:
        """``fn(group, options)`` -> one value per group member, computed once per group; ``ex``'s value."""
        memo_key = (name, self.group_key(ex))
        if memo_key not in self._memo:
            group = self.group(ex)
            self._memo[memo_key] = {g.id: float(v) for g, v in zip(group, fn(group, self.options))}
        return self._memo[memo_key][ex.id]
