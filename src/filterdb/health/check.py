"""Layer health of one model file: metrics, the assessment and a summary (method.md, 5).

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

import numpy as np
import pandas as pd

from ..kernels import health as K
from ..kernels import metrics as M
from ..kernels.assessment import weight_metrics
from ..readers.base import kernel_key
from .assess import (ASSESS_COLUMNS, FLAGS, MIN_FILTERS, HealthThresholds, assess,
                     flag_names, low_diversity_limit, paper_threshold, summarise)

_IDENT = ("name", "op", "kernel", "conv_depth", "conv_depth_norm", "n")
METRIC_COLUMNS = _IDENT + M.names(source="weight")  # the registry (filterdb.kernels.metrics)
COLUMNS = _IDENT + M.names() + tuple(c for c in ASSESS_COLUMNS if c not in M.names())


def randomness_threshold_for(n, d: int = 9) -> float:
    """``TH(n)`` for filters of dimension ``d`` (:func:`~filterdb.health.assess.paper_threshold`)."""
    return paper_threshold(n, d)


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


def assess_frame(df: pd.DataFrame, thresholds: HealthThresholds | None = None,
                 missing=None) -> pd.DataFrame:
    """``df`` (needs ``n``, ``kernel`` "KHxKW", ``sparsity``, ``variance_entropy``) with the
    assessment columns of :func:`~filterdb.health.assess.assess` set."""
    kk = [str(k).split("x") for k in df["kernel"].tolist()]
    kh = np.array([int(a) for a, _ in kk], np.int64)
    kw = np.array([int(b) for _, b in kk], np.int64)
    a = assess(df["n"].to_numpy(np.int64), kh, kw, df["sparsity"].to_numpy(np.float64),
               df["variance_entropy"].to_numpy(np.float64), thresholds, missing)
    out = df.copy()
    for c in ASSESS_COLUMNS:
        out[c] = a[c].to_numpy()
    return out


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
    the dict of :func:`~filterdb.health.assess.summarise`.
    """
    t = thresholds or HealthThresholds()
    rows = [raw_metrics(l, t, orthogonality) for l in model.layers]
    df = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    df = assess_frame(df, t)[list(COLUMNS)] if len(df) else pd.DataFrame(columns=list(COLUMNS))
    return df, summarise(df, t)


def flags(H, S, TH, n, d: int = 9, thresholds: HealthThresholds | None = None) -> dict:
    """The paper-rule flags of one layer from ``H``, ``S`` and its ``TH`` (kept for the
    API; the assessment itself is :func:`~filterdb.health.assess.assess`)."""
    t = thresholds or HealthThresholds()
    ok = d > 1 and n >= MIN_FILTERS and np.isfinite(H) and np.isfinite(S)
    random = bool(ok and np.isfinite(TH) and H >= TH - t.random_margin)
    low = bool(ok and H < low_diversity_limit(d, t))
    sparse = bool(ok and S >= t.sparse_S)
    return {"random": random, "low_diversity": low, "sparse": sparse,
            "degenerated": random or (low and sparse)}


def health_from_moments(n, s, sxx, n_sparse, d: int = 9, thresholds=None,
                        sparse_s=None, sparse_sxx=None) -> pd.DataFrame:
    """Vectorised metrics and the assessment of many layers of dimension ``d`` from
    streamed moments (see :func:`filterdb.kernels.health.metrics_from_moments`)."""
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    m = K.metrics_from_moments(n, np.reshape(s, (n.size, d)), np.reshape(sxx, (n.size, d, d)),
                               np.atleast_1d(n_sparse),
                               None if sparse_s is None else np.reshape(sparse_s, (n.size, d)),
                               None if sparse_sxx is None else np.reshape(sparse_sxx, (n.size, d, d)))
    H = np.atleast_1d(m["variance_entropy"])
    S = np.atleast_1d(m["sparsity"])
    side = int(round(d ** 0.5))
    kh, kw = (side, side) if side * side == d else (1, d)
    a = assess(n, kh, kw, S, H, thresholds)
    df = pd.DataFrame({"n": n, "sparsity": S, "variance_entropy": H,
                       "variance_entropy_clean": np.atleast_1d(m["variance_entropy_clean"])})
    for c in ASSESS_COLUMNS:
        df[c] = a[c].to_numpy()
    return df


__all__ = ["HealthThresholds", "layer_metrics", "raw_metrics", "assess_frame", "model_health",
           "summarise", "flags", "flag_names", "randomness_threshold_for",
           "low_diversity_limit", "health_from_moments", "COLUMNS", "METRIC_COLUMNS", "FLAGS"]
