"""The metric registry as the health layer sees it: :class:`MetricSpec`, :data:`METRICS`
and the lookups, defined in :mod:`filterdb.kernels.metrics` (ingest, in the store, computes
the metrics of layers whose filters are not stored, so the registry sits below the store)."""
from __future__ import annotations

from ..kernels.metrics import (
    METRICS,
    PERCENTILE,
    STORED,
    MetricSpec,
    labels,
    layer_values,
    names,
    pass_values,
    spec,
    specs,
    split_names,
)

__all__ = ["METRICS", "PERCENTILE", "STORED", "MetricSpec", "labels", "layer_values", "names",
           "pass_values", "spec", "specs", "split_names"]
