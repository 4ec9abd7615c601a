"""The comparison harness, at its historical import path: see :mod:`ppl_vae.analysis.compare` (running,
the table, plots), :mod:`ppl_vae.analysis.paired` (paired differences) and :mod:`ppl_vae.analysis.methods`
(a method: model, guide, objective)."""

from .analysis.compare import (
    TABLE_COLUMNS,
    Comparison,
    compare,
    compare_runs,
    plot_comparison,
    run_comparison,
)
from .analysis.methods import Method, method_of
from .analysis.paired import PAIRED_METRICS, DataMismatch, data_fingerprint, paired_differences

__all__ = [
    "PAIRED_METRICS",
    "TABLE_COLUMNS",
    "Comparison",
    "DataMismatch",
    "Method",
    "compare",
    "compare_runs",
    "data_fingerprint",
    "method_of",
    "paired_differences",
    "plot_comparison",
    "run_comparison",
]
