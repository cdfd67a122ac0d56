"""Metric registry: one module per metric family, each with a ``VERSION`` and its ``SPECS``.

Explicit imports and a literal dict (DESIGN.md style 2); the key is the module name. Aggregation,
validation (bounds) and the report's columns iterate over the specs (``eval/metrics/spec.py``), so a
new metric is one module plus one line here. Metrics never run the model: they read ``ExampleOutput``.
The order is the report's column order (CLEAR's columns first) and the order composites are computed in.
"""
from __future__ import annotations

import difflib

from eval.metrics import (
    clear_columns,
    forget_quality,
    mia,
    model_utility,
    naming,
    probability,
    rouge_l,
    truth_ratio,
)
from eval.metrics.spec import Comparison, Composite, ExampleMetric, Output, Spec

METRICS = {
    "clear_columns": clear_columns,
    "forget_quality": forget_quality,
    "model_utility": model_utility,
    "rouge_l": rouge_l,
    "probability": probability,
    "truth_ratio": truth_ratio,
    "naming": naming,
    "mia": mia,
}
# the one result-key metric every cell has besides the registered ones: its number of examples
COUNT = Output("n", high=float("inf"), better="none", integer=True, doc="number of examples")


def metric_versions() -> dict[str, int]:
    """{family: VERSION}; stored in every result file's provenance."""
    return {name: module.VERSION for name, module in METRICS.items()}


def specs() -> list[Spec]:
    """Every registered spec, in registry order (read at call time, so a test can register one)."""
    return [spec for module in METRICS.values() for spec in module.SPECS]


def example_metrics() -> list[ExampleMetric]:
    return [s for s in specs() if isinstance(s, ExampleMetric)]


def comparisons() -> list[Comparison]:
    return [s for s in specs() if isinstance(s, Comparison)]


def composites() -> list[Composite]:
    return [s for s in specs() if isinstance(s, Composite)]


def outputs() -> dict[str, Output]:
    """{metric name: Output} of every result-key metric; a name declared twice is an error."""
    out = {COUNT.name: COUNT}
    for spec in specs():
        for o in spec.outputs:
            if o.name in out:
                raise ValueError(f"metric output {o.name!r} is declared twice in eval.metrics")
            out[o.name] = o
    return out


def output(name: str) -> Output:
    """The Output of one metric name; an unknown name fails with a suggestion."""
    known = outputs()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown metric {name!r}.{hint}")
    return known[name]
