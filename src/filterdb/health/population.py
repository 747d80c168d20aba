"""A model's layers against the population of a database (docs/method.md, section 5).

- :func:`compare_to_population`: each metric's percentile among the database's layers of
  the same kernel, depth bin and ``floor(log10 n)`` (kernel and depth bin alone when fewer
  than :data:`MIN_COMPARABLE` layers qualify). The percentile is the share of comparable
  layers with a strictly smaller value, in percent (ties do not count; the share with a
  strictly larger value is given too, so "more sparse than p %" and "less sparse than
  q %" are both literal).
- :func:`population_bands`: p10 / p25 / p50 / p75 / p90 of each metric per depth bin.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..kernels import metrics as M
from .assess import HealthThresholds
from .database import database_health
from .table import depth_bins

MIN_COMPARABLE = 10
PERCENTILE_METRICS = M.PERCENTILE  # the registry (filterdb.kernels.metrics)


def size_class(n) -> np.ndarray:
    """``floor(log10 n)`` (-1 for n < 1)."""
    n = np.asarray(n, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 1, np.floor(np.log10(np.maximum(n, 1))), -1).astype(np.int64)


def percentile_of(values, x) -> float:
    """Share (%) of the finite ``values`` strictly below ``x`` (NaN if none or x is NaN)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v) or not np.isfinite(x):
        return float("nan")
    return float(100.0 * np.count_nonzero(v < x) / len(v))


def compare_to_population(model_df: pd.DataFrame, population: pd.DataFrame,
                          metrics=PERCENTILE_METRICS,
                          min_comparable: int = MIN_COMPARABLE) -> list[dict]:
    """Per row of ``model_df`` (needs ``conv_depth_norm``, ``n``, ``kernel`` and the
    metrics): ``{metric: percentile, "above": {metric: share above}, "n_comparable": k,
    "comparable": "depth and size" | "depth"}`` among the population's assessed layers
    of the same kernel, depth bin and size class (kernel and depth bin alone when fewer
    than ``min_comparable``); None when the population holds no assessed layer of that
    kernel and depth bin."""
    pop = population[population["assessed"].to_numpy(bool)]
    pb = pop["depth_bin"].to_numpy(np.int64)
    ps = size_class(pop["n"].to_numpy())
    pk = pop["kernel"].astype(str).to_numpy()
    out = []
    mb = depth_bins(model_df["conv_depth_norm"].to_numpy(np.float64))
    ms = size_class(model_df["n"].to_numpy())
    mk = (model_df["kernel"].astype(str).to_numpy() if "kernel" in model_df
          else np.full(len(model_df), "3x3"))
    for i, (_, r) in enumerate(model_df.iterrows()):
        same = (pk == mk[i]) & (pb == mb[i])
        if mb[i] < 0 or not same.any():
            out.append(None)
            continue
        sel = same & (ps == ms[i])
        how = "depth and size"
        if np.count_nonzero(sel) < min_comparable:
            sel = same
            how = "depth"
        comp = pop[sel]
        res = {m: percentile_of(comp[m].to_numpy(np.float64), float(r[m])) for m in metrics}
        res["above"] = {m: percentile_of(-comp[m].to_numpy(np.float64), -float(r[m]))
                        for m in metrics}
        res["n_comparable"] = int(np.count_nonzero(sel))
        res["comparable"] = how
        out.append(res)
    return out


def population_bands(db, metrics=PERCENTILE_METRICS, where: str | None = None,
                     thresholds: HealthThresholds | None = None, **options) -> pd.DataFrame:
    """Percentile bands of the assessed layers per depth bin: columns ``depth_bin`` (0-9),
    ``metric``, ``p10``, ``p25``, ``p50``, ``p75``, ``p90`` and ``n_layers``. ``db`` is a
    database (path or object) or a :func:`database_health` table."""
    df = db if isinstance(db, pd.DataFrame) else database_health(db, where, thresholds, **options)
    df = df[df["assessed"].to_numpy(bool) & (df["depth_bin"] >= 0)]
    rows = []
    for m in metrics:
        if m not in df:
            raise FilterDBError(f"unknown metric {m!r}; use {', '.join(PERCENTILE_METRICS)}")
        for b in range(10):
            v = df.loc[df["depth_bin"] == b, m].to_numpy(np.float64)
            v = v[np.isfinite(v)]
            q = np.percentile(v, [10, 25, 50, 75, 90]) if len(v) else [np.nan] * 5
            rows.append({"depth_bin": b, "metric": m, "p10": q[0], "p25": q[1], "p50": q[2],
                         "p75": q[3], "p90": q[4], "n_layers": int(len(v))})
    return pd.DataFrame(rows, columns=["depth_bin", "metric", "p10", "p25", "p50", "p75", "p90",
                                       "n_layers"])


__all__ = ["compare_to_population", "population_bands", "percentile_of", "size_class",
           "PERCENTILE_METRICS", "MIN_COMPARABLE"]
