"""Metric registry: every metric family is one module of pure functions with a ``VERSION``.

Explicit imports and a literal dict (DESIGN.md style 2); the key is the module name and the
metric name in result keys (style 12). Metrics never run the model: they read ``ExampleOutput``.
"""
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

METRICS = {
    "rouge_l": rouge_l,
    "probability": probability,
    "truth_ratio": truth_ratio,
    "naming": naming,
    "forget_quality": forget_quality,
    "model_utility": model_utility,
    "clear_columns": clear_columns,
    "mia": mia,
}


def metric_versions() -> dict[str, int]:
    """{family: VERSION}; stored in every result file's provenance."""
    return {name: module.VERSION for name, module in METRICS.items()}
