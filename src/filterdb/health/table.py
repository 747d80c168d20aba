"""The per-layer health table of a database: catalog rows, the layers' metrics and the
assessment (:func:`filterdb.health.assess.assess`, docs/method.md section 5) in one frame."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..kernels import metrics as M
from ..kernels.drift import depth_bin
from .assess import ASSESS_COLUMNS, HealthThresholds, assess

STORED = M.STORED  # the registry (filterdb.kernels.metrics)
LAYER_COLUMNS = (("layer_id", "model", "model_name", "task", "visual_category", "name", "op",
                  "kernel", "c_out", "conv_depth", "conv_depth_norm", "depth_bin", "n")
                 + M.names() + tuple(c for c in ASSESS_COLUMNS if c not in M.names()))


def health_table(layers: pd.DataFrame, values: pd.DataFrame,
                 thresholds: HealthThresholds) -> pd.DataFrame:
    """The per-layer table from catalog rows and the layers' metrics (a frame indexed by
    layer id with the :data:`STORED` columns; layers missing from it get NaN)."""
    t = thresholds
    lid = layers["layer_id"].to_numpy(np.int64)
    kh = layers["kh"].fillna(0).to_numpy(np.int64)
    kw = layers["kw"].fillna(0).to_numpy(np.int64)
    n = layers["n_filters"].fillna(0).to_numpy(np.int64)
    missing = ~np.isin(lid, values.index.to_numpy(np.int64))
    values = values.reindex(lid)
    cols = {k: values[k].to_numpy(np.float64) for k in STORED}
    H = cols["variance_entropy"]
    S = cols["sparsity"]
    a = assess(n, kh, kw, S, H, t, missing)
    df = pd.DataFrame({
        "layer_id": lid,
        "model": layers["model"].to_numpy(object),
        "model_name": layers["model_name"].to_numpy(object),
        "task": layers["task"].to_numpy(object),
        "visual_category": layers["visual_category"].to_numpy(object),
        "name": layers["name"].to_numpy(object),
        "op": layers["op"].to_numpy(object),
        "kernel": [f"{a_}x{b}" for a_, b in zip(kh.tolist(), kw.tolist())],
        "c_out": layers["c_out"].fillna(0).to_numpy(np.int64),
        "conv_depth": layers["conv_depth"].fillna(0).to_numpy(np.int64),
        "conv_depth_norm": layers["conv_depth_norm"].to_numpy(np.float64),
        "depth_bin": depth_bins(layers["conv_depth_norm"].to_numpy(np.float64)),
        "n": n, **cols,
    })
    for c in ASSESS_COLUMNS:
        df[c] = a[c].to_numpy()
    return df[list(LAYER_COLUMNS)]


def depth_bins(x) -> np.ndarray:
    """The depth bin (0-9) of each ``conv_depth_norm``; -1 where it is unknown."""
    x = np.asarray(x, np.float64)
    out = np.full(len(x), -1, np.int64)
    ok = np.isfinite(x)
    if ok.any():
        out[ok] = depth_bin(np.clip(x[ok], 0.0, 1.0))
    return out


__all__ = ["health_table", "depth_bins", "LAYER_COLUMNS", "STORED"]
