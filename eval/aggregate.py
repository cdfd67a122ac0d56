"""Aggregation: per-example values -> every result key, in one vocabulary, by iterating the metric specs.

Keys are ``"{scope}/{modality}/{metric}"``: scope is a split (forget, retain, holdout,
real_faces, real_world) or ``all`` (across the utility splits), ``mia`` or ``clear``;
modality is text / image / joint or ``all`` (pooled). Examples: ``forget/joint/rouge_l``,
``retain/image/naming_acc``, ``forget/all/forget_quality``, ``all/all/model_utility``,
``clear/all/real``, ``mia/text/min_k_pp_auc``. docs/metrics.md lists every key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import numpy as np

from eval.example import SPLITS, ExampleOutput, split_of
from clearbench.types import unknown_name_message
from eval.metrics import COUNT, comparisons, composites, example_metrics, forget_quality, truth_ratio
from eval.metrics.spec import POOLED, Batch, Cell, Comparison, key


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    """Switches between the published definitions (stored in every result file).

    tr_mode: "tofu" (per-item mean over perturbed answers) or "clear" (global mean).
    tr_reference: the true answer the perturbed ones are compared with: "tofu" (default: as TOFU, the
      answer on real_faces and real_world, the paraphrase on forget, retain and holdout, whose perturbed
      answers are the paraphrase with the fact changed), "paraphrase" or "answer" on every split.
    clear_include_rouge: CLEAR columns with ROUGE (paper text) or without (CLEAR's code).
    mink_k: fraction of lowest tokens for Min-K% / Min-K%++ (open-unlearning default 0.4).
    fq_aggregation: forget quality's units: "item" (one truth ratio per record, TOFU) or "author_fact"
      (the mean truth ratio of the records asking one fact of one author; docs/metrics.md).
    require_gold: forget quality and PrivLeak need the gold model's examples; False only
      for runs that deliberately skip them (they are then absent, never None).
    """

    tr_mode: str = "tofu"
    tr_reference: str = "tofu"
    clear_include_rouge: bool = False
    mink_k: float = 0.4
    fq_aggregation: str = "item"
    require_gold: bool = True

    def __post_init__(self) -> None:
        for name, known in (("tr_mode", truth_ratio.TR_MODES), ("tr_reference", truth_ratio.TR_REFERENCES),
                            ("fq_aggregation", forget_quality.AGGREGATIONS)):
            if getattr(self, name) not in known:
                raise ValueError(unknown_name_message(name, getattr(self, name), known))
        if not 0.0 < self.mink_k <= 1.0:
            raise ValueError(f"mink_k must be in (0, 1], got {self.mink_k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricOptions":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown metric options {sorted(unknown)}")
        return cls(**d)


class MissingGoldError(FileNotFoundError):
    """Forget quality / PrivLeak were asked for without the gold (retain-only) model's result."""


def gold_command(forget_config: str) -> str:
    pct = "".join(c for c in forget_config if c.isdigit()) or "XX"
    return f"clearbench evaluate --model runs/gold-{pct} ..."


# --------------------------------------------------------------------------- per-example values
def check_examples(examples: Sequence[ExampleOutput], what: str = "examples") -> None:
    """Loud error on inconsistent examples, duplicated ids or mixed forget/holdout configs."""
    problems = [p for ex in examples for p in ex.problems()]
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            problems.append(f"duplicated example id {ex.id!r}")
        seen.add(ex.id)
    for split in ("forget", "holdout"):
        configs = sorted({ex.split for ex in examples if split_of(ex.split) == split})
        if len(configs) > 1:
            problems.append(f"one result holds one {split} split, got {configs}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"cannot score {what}: " + "; ".join(problems[:10]) + more)


class GoldExamples(list):
    """The gold model's examples, parsed once for many aggregations (a report recomputes every file against one
    gold result, ``source``): their check (``check_examples``) and their per-example values (per metric options
    and names) are computed on first use and kept. Read-only once made: it never sees a change to its examples."""

    def __init__(self, examples: Iterable[ExampleOutput], source: Any = None) -> None:
        super().__init__(examples)
        self.source = source
        self._problem: str | None = None  # check_examples' error ("": none), once checked
        self._values: dict[tuple[MetricOptions, frozenset[str]], dict[str, dict[str, float]]] = {}

    def check(self) -> None:
        """``check_examples(self, "gold examples")``, run once (its error is raised again on every call)."""
        if self._problem is None:
            try:
                check_examples(self, "gold examples")
                self._problem = ""
            except ValueError as e:
                self._problem = str(e)
        if self._problem:
            raise ValueError(self._problem)

    def values(self, options: MetricOptions, names: Iterable[str]) -> dict[str, dict[str, float]]:
        """``per_example_values(self, options, names)``, computed once per (options, names)."""
        memo_key = (options, frozenset(names))
        if memo_key not in self._values:
            self._values[memo_key] = per_example_values(self, options, memo_key[1])
        return self._values[memo_key]


def gold_values(gold: Sequence[ExampleOutput], options: MetricOptions,
                names: Iterable[str]) -> dict[str, dict[str, float]]:
    """The gold examples' per-example values of ``names`` (kept by a ``GoldExamples``)."""
    if isinstance(gold, GoldExamples):
        return gold.values(options, names)
    return per_example_values(gold, options, names)


def per_example_values(examples: Sequence[ExampleOutput], options: MetricOptions,
                       names: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """{id: {metric: value}} for every ExampleMetric (or those in ``names``) that applies to the example."""
    wanted = None if names is None else set(names)
    metrics = [m for m in example_metrics() if wanted is None or m.name in wanted]
    batch = Batch(examples, options)
    out: dict[str, dict[str, float]] = {}
    for ex in examples:
        values = ((m.name, m.value(ex, batch)) for m in metrics)
        out[ex.id] = {name: float(v) for name, v in values if v is not None}
    return out


def subset(examples: Iterable[ExampleOutput], split: str, modality: str = POOLED, task: str | None = None):
    """The examples of one split, one modality (``all``: every one; ``image@heldout``: one image role of
    it) and optionally one task."""
    modality, _, role = modality.partition("@")
    return [
        ex for ex in examples
        if ex.eval_split == split and modality in (POOLED, ex.modality) and task in (None, ex.task)
        and role in ("", ex.image_role)
    ]


def cells_of(examples: Iterable[ExampleOutput]) -> list[tuple[str, str]]:
    """(split, modality) of every cell present, and (split, "modality@role") where a cell holds examples of
    more than one image role (the forget authors' training photos vs held-out photos)."""
    roles: dict[tuple[str, str], set[str]] = {}
    for ex in examples:
        roles.setdefault((ex.eval_split, str(ex.modality)), set()).add(ex.image_role)
    cells = set(roles) | {(s, f"{m}@{r}") for (s, m), rs in roles.items() if len(rs - {""}) > 1 for r in rs - {""}}
    return sorted(cells, key=lambda c: (SPLITS.index(c[0]), c[1]))


# --------------------------------------------------------------------------- aggregation
class Context:
    """What the specs read and write while one model's examples are aggregated (see eval.metrics.spec)."""

    def __init__(self, examples: Sequence[ExampleOutput], gold: Sequence[ExampleOutput] | None,
                 options: MetricOptions) -> None:
        self.examples, self.gold, self.options = list(examples), gold, options
        self.values = per_example_values(self.examples, options)
        self.metrics: dict[str, float] = {}
        self.components: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self.cells = cells_of(self.examples)
        self._by_id = {ex.id: ex for ex in self.examples}
        self._gold_values: dict[str, dict[str, float]] | None = None
        self._subsets: dict[tuple[bool, str, str, str | None], list[ExampleOutput]] = {}
        self._splits: dict[tuple[bool, str], list[ExampleOutput]] = {}

    def modalities(self, split: str) -> list[str]:
        """The modalities of ``split``'s cells, sorted (image-role cells aside)."""
        return [m for s, m in self.cells if s == split and "@" not in m]

    def example(self, example_id: str) -> ExampleOutput:
        return self._by_id[example_id]

    def subset(self, split: str, modality: str = POOLED, task: str | None = None,
               gold: bool = False) -> list[ExampleOutput]:
        """``subset`` of the examples (``gold``: of the gold examples), selected once per context (read-only)."""
        memo_key = (gold, split, modality, task)
        if memo_key not in self._subsets:
            if (gold, split) not in self._splits:
                self._splits[(gold, split)] = subset(self.gold if gold else self.examples, split)
            self._subsets[memo_key] = subset(self._splits[(gold, split)], split, modality, task)
        return self._subsets[memo_key]

    def cell_stats(self, split: str, exs: Sequence[ExampleOutput]) -> dict[str, float]:
        """{metric: statistic} of one set of examples: ``n`` and every ExampleMetric with a cell statistic."""
        out = {COUNT.name: float(len(exs))}
        for m in example_metrics():
            values = [self.values[ex.id][m.name] for ex in exs if m.name in self.values[ex.id]]
            if m.cell is not None and values:
                out[m.name] = m.cell(np.array(values), split)
        return out

    def put(self, k: str, value: float, components: list[str] | None = None) -> None:
        self.metrics[k] = value
        if components is not None:
            self.components[k] = components

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def gold_values(self) -> dict[str, dict[str, float]]:
        """The gold model's per-example values of the compared metrics (computed once)."""
        if self._gold_values is None:
            self._gold_values = gold_values(self.gold, self.options, {c.value for c in comparisons()})
        return self._gold_values

    def aligned(self, split: str, modality: str = POOLED, task: str | None = None) -> list[str]:
        """Sorted ids of one subset, checked to be identical in the gold result (loud error otherwise)."""
        mine = sorted(ex.id for ex in self.subset(split, modality, task))
        theirs = sorted(ex.id for ex in self.subset(split, modality, task, gold=True))
        if mine != theirs:
            only_mine, only_gold = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            raise ValueError(
                f"gold and evaluated {split}/{modality} examples differ: {len(only_mine)} ids only in the "
                f"evaluated result (e.g. {only_mine[:3]}), {len(only_gold)} only in gold (e.g. {only_gold[:3]}); "
                "evaluate both models on the same world and forget split"
            )
        return mine


def aggregate(
    examples: Sequence[ExampleOutput],
    gold: Sequence[ExampleOutput] | None = None,
    options: MetricOptions | None = None,
) -> dict[str, Any]:
    """Every cell's statistics, then every comparison and composite of the registry.

    Returns {"metrics": {key: float}, "cells": [[split, modality], ...], "components":
    {key: [inputs]}, "warnings": [...], "options": {...}}. Gold-dependent keys need ``gold``.
    """
    options = options or MetricOptions()
    check_examples(examples)
    ctx = Context(examples, _checked_gold(examples, gold, options), options)
    for split in [s for s in SPLITS if ctx.modalities(s)]:
        for modality in [m for s, m in ctx.cells if s == split] + [POOLED]:
            for name, value in ctx.cell_stats(split, ctx.subset(split, modality)).items():
                ctx.put(key(split, modality, name), value)
    for spec in comparisons():
        if spec.against == "holdout" or (ctx.gold is not None and ctx.subset("forget")):
            for cell in spec.cells(ctx):
                _compare(ctx, spec, cell)
    for spec in composites():
        spec.compute(ctx)
    return {
        "metrics": ctx.metrics,
        "cells": [list(c) for c in ctx.cells],
        "components": ctx.components,
        "warnings": ctx.warnings,
        "options": options.to_dict(),
    }


def _checked_gold(examples, gold, options: MetricOptions) -> Sequence[ExampleOutput] | None:
    """The gold examples, checked; a loud error when forget quality needs them and they are missing."""
    forget_examples = subset(examples, "forget")
    if forget_examples and gold is None and options.require_gold:
        raise MissingGoldError(
            f"forget quality and PrivLeak need the gold (retain-only) model's result for "
            f"{forget_examples[0].split}; produce it with `{gold_command(forget_examples[0].split)}` "
            "and pass its result file as the gold result"
        )
    if gold is None or not forget_examples:
        return gold
    if isinstance(gold, GoldExamples):
        gold.check()
    else:
        check_examples(gold, "gold examples")
    forget_configs = {ex.split for ex in forget_examples}
    gold_configs = {ex.split for ex in subset(gold, "forget")}
    if forget_configs != gold_configs:
        raise ValueError(f"gold result scores {sorted(gold_configs)}, this result {sorted(forget_configs)}")
    return gold


def _compare(ctx: Context, spec: Comparison, cell: Cell) -> None:
    """One comparison on one cell, stored as ``{cell scope}/{cell label}/{spec name}{cell variant}{part}``."""
    where = f"{cell.key_scope}/{cell.key_modality}/{spec.name}{cell.variant}"
    mine = ctx.subset(cell.split, cell.modality, cell.task)
    if not mine:
        ctx.warn(f"{where} not computed: no {cell.split}/{cell.modality}/{cell.task or POOLED} examples")
        return
    if spec.against == "gold":
        ids = ctx.aligned(cell.split, cell.modality, cell.task)
        units = spec.units(ctx, cell, ids) if spec.units else [[i] for i in ids]
        result = spec.compare(_unit_values(ctx.values, units, spec.value), _unit_values(ctx.gold_values, units, spec.value))
    else:
        holdout = Cell("holdout", cell.modality, cell.task)
        result = _holdout_compare(spec, ctx.values, mine, ctx.subset(holdout.split, holdout.modality, holdout.task))
        if spec.relative is not None and ctx.gold is not None:
            ctx.aligned(holdout.split, holdout.modality, holdout.task)
            gold = [ctx.subset(c.split, c.modality, c.task, gold=True) for c in (cell, holdout)]
            try:
                result |= spec.relative(result, _holdout_compare(spec, ctx.gold_values, *gold))
            except ValueError as e:
                ctx.warn(f"{cell.key_scope}/{cell.key_modality}/{e}")
    for part, value in result.items():
        ctx.put(where + part, value)


def _unit_values(values: dict[str, dict[str, float]], units: list[list[str]], name: str) -> np.ndarray:
    """One value per unit: an example's own value, or the mean over the unit's examples."""
    return np.array([values[u[0]][name] if len(u) == 1 else float(np.mean([values[i][name] for i in u]))
                     for u in units])


def _holdout_compare(spec: Comparison, values, forget, holdout) -> dict[str, float]:
    return spec.compare(np.array([values[e.id][spec.value] for e in forget]),
                        np.array([values[e.id][spec.value] for e in holdout]))
