"""Layer health of one model file: metrics, the assessment and a summary (docs/method.md,
section 5).

The metrics of each layer come from :func:`filterdb.kernels.assessment.weight_metrics`
(the function ingest uses for layers whose filters the database does not keep) and the
flags and verdict from :mod:`filterdb.health.assess`, so ``check`` and the database
assess the same layers the same way. Conventions where the method is silent:

- Kernels other than 3x3 use the same metrics over ``d = kh * kw`` dimensions; their
  ``TH`` is the mean ``H`` of i.i.d. random layers, and the low-diversity threshold is
  scaled by ``log10(d) / log10(9)`` (the same share of the maximum entropy as for 3x3).
- 1x1 kernels (``d = 1``): sparsity and the entropies are not applicable (NaN) and the
  layer is not assessed; orthogonality (over ``c_in / groups`` dimensions) is reported.
- ``n <= 2`` filters: ``H`` is 0 for any weights, so the layer is not assessed.
- Layers with NaN / Inf weights get NaN metrics and are not assessed.
"""
from __future__ import annotations

import pandas as pd

from ..kernels import metrics as M
from ..kernels.assessment import weight_metrics
from ..readers.base import kernel_key
from .assess import ASSESS_COLUMNS, FLAGS, HealthThresholds, assess_frame
from .summary import summarise

_IDENT = ("name", "op", "kernel", "conv_depth", "conv_depth_norm", "n")
METRIC_COLUMNS = _IDENT + M.names(source="weight")  # the registry (filterdb.kernels.metrics)
COLUMNS = _IDENT + M.names() + tuple(c for c in ASSESS_COLUMNS if c not in M.names())


def raw_metrics(layer, thresholds: HealthThresholds | None = None,
                orthogonality: bool = True) -> dict:
    """The metric columns (:data:`METRIC_COLUMNS`) of one
    :class:`~filterdb.readers.base.ConvLayer`, before the assessment."""
    t = thresholds or HealthThresholds()
    m = weight_metrics(layer.weight, t.sparsity_eps, orthogonality)
    return {"name": layer.name, "op": layer.op, "kernel": kernel_key(layer.kernel),
            "conv_depth": int(layer.conv_depth),
            "conv_depth_norm": float(layer.conv_depth_norm), "n": int(layer.n_filters),
            **{k: m[k] for k in M.names(source="weight")}}


def layer_metrics(layer, thresholds: HealthThresholds | None = None,
                  orthogonality: bool = True) -> dict:
    """All health metrics and flags of one :class:`~filterdb.readers.base.ConvLayer`
    (``orthogonality=False``: that costly metric is skipped, NaN; the flags do not use it)."""
    df = assess_frame(pd.DataFrame([raw_metrics(layer, thresholds, orthogonality)]), thresholds)
    return df[list(COLUMNS)].iloc[0].to_dict()


def model_health(model, thresholds: HealthThresholds | None = None,
                 orthogonality: bool = True):
    """Per-layer health of a :class:`~filterdb.readers.base.Model` and its summary.

    Returns ``(DataFrame, summary)``: one row per conv layer (columns :data:`COLUMNS`) and
    the dict of :func:`~filterdb.health.summary.summarise`.
    """
    t = thresholds or HealthThresholds()
    rows = [raw_metrics(l, t, orthogonality) for l in model.layers]
    df = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    df = assess_frame(df, t)[list(COLUMNS)] if len(df) else pd.DataFrame(columns=list(COLUMNS))
    return df, summarise(df, t)


__all__ = ["HealthThresholds", "layer_metrics", "raw_metrics", "model_health",
           "COLUMNS", "METRIC_COLUMNS", "FLAGS"]
