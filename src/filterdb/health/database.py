"""Layer health over a whole database: the metrics of every selected layer, stored or
computed in one pass (docs/method.md, section 5).

The metrics of 3x3 layers come from one streaming pass
(:func:`filterdb.kernels.layer_stats.health_task` through :func:`filterdb.engine.map_reduce`
on a whole-layer plan) and are stored with
:meth:`filterdb.store.Database.put_layer_metrics`, keyed by layer id and the parameters
that change them (:func:`metrics_params`); later calls read them. Flags and ``H / TH`` are
derived on reading (:func:`filterdb.health.table.health_table`), so other flag thresholds
need no new pass. Layers with other kernels (larger than 1x1) have no stored filters: their
metrics are computed at ingest (:data:`filterdb.store.bulk.INGEST_METRICS_PARAMS`, sparsity
epsilon 0.01) and read from there; with another epsilon, or for models added before ingest
stored them, they are not assessed ("no stored metrics").

Stored metrics stay valid while the layer's row does (filter range and checksum are
stored with them); removed models' rows are deleted by the store.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..store import Database, open_database
from .assess import HealthThresholds
from .table import STORED, health_table

METRICS_VERSION = 2  # 2: orthogonality normalises rows as torch.nn.functional.normalize
DEFAULT_CHUNK_ROWS = 1 << 20

# the catalog columns the pass and the table use (a narrow query: a third of the time)
LAYER_QUERY_COLUMNS = ("layer_id", "model", "model_name", "task", "visual_category", "name",
                       "op", "kh", "kw", "c_out", "n_filters", "conv_depth",
                       "conv_depth_norm", "filter_start", "filter_count", "checksum")


def metrics_params(eps: float, orthogonality: bool = True) -> str:
    """The ``params`` key of stored layer metrics: what changes the stored values."""
    return json.dumps({"eps": float(eps), "orthogonality": bool(orthogonality),
                       "version": METRICS_VERSION, "stored": list(STORED)}, sort_keys=True)


ORTHO_PRECISIONS = ("float32", "float64")


def check_orthogonality_precision(p: str) -> str:
    """``p`` if it is one of :data:`ORTHO_PRECISIONS`, else a one-line error."""
    if p not in ORTHO_PRECISIONS:
        raise FilterDBError(f"orthogonality precision {p!r}: use float32 or float64")
    return p


def compute_layer_metrics(db, layers: pd.DataFrame, eps: float = 0.01, engine="local",
                          scheduler=None, workers: int = 2,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None,
                          orthogonality: bool = True,
                          orthogonality_precision: str = "float32") -> pd.DataFrame:
    """One pass over the filters of ``layers`` (rows of ``db.layers()`` with filters).
    ``orthogonality_precision``: see :func:`database_health`.

    Returns a frame indexed by layer id with the columns of
    :data:`filterdb.kernels.layer_stats.VALUES`.
    """
    # start-up time: the engine and the kernel load numba, needed only for a database pass
    from ..engine import make_plan, map_reduce, single_blas  # lazy: start-up time (numba)
    from ..kernels.layer_stats import VALUES, health_task  # lazy: start-up time (numba)

    layers = layers[layers["filter_count"].fillna(0).astype(np.int64) > 0]
    layers = layers.sort_values("filter_start")
    lids = layers["layer_id"].to_numpy(np.int64)
    if len(lids) == 0:
        return pd.DataFrame(columns=list(VALUES), index=pd.Index([], name="layer_id"))
    index = np.full(int(lids.max()) + 1, -1, np.int64)
    index[lids] = np.arange(len(lids))
    c_out = layers["c_out"].fillna(0).to_numpy(np.int64)
    plan = make_plan(layers["filter_start"].to_numpy(np.int64),
                     layers["filter_count"].to_numpy(np.int64), lids, chunk_rows,
                     whole_layers=True)
    source = db.row_source()
    params = {"index": index, "c_out": c_out, "eps": float(eps),
              "orthogonality": bool(orthogonality),
              "float32_products": check_orthogonality_precision(orthogonality_precision)
              == "float32"}
    r = single_blas(lambda: map_reduce(source, plan, health_task, params, engine=engine,
                                       scheduler=scheduler, workers=workers,
                                       progress=progress))
    if not (r["count"] == 1).all():
        bad = lids[r["count"] != 1][:5].tolist()
        raise FilterDBError(f"internal error: layers {bad} were not seen exactly once")
    return pd.DataFrame(r["values"], columns=list(VALUES), index=pd.Index(lids, name="layer_id"))


def stored_or_todo(db, layers: pd.DataFrame, params: str, recompute: bool = False):
    """``(stored, todo)``: ``{layer_id: metrics}`` stored under ``params`` for the same
    filters (range and checksum) of the ``layers`` that own filters, and the ids of the
    others (all of them with ``recompute``)."""
    has = layers["filter_count"].fillna(0).astype(np.int64).to_numpy() > 0
    stored = {} if recompute else db.layer_metrics(params)
    vals, todo = {}, []
    for l in layers[has].itertuples(index=False):
        m = stored.get(int(l.layer_id))
        if m is not None and _valid(m, l):
            vals[int(l.layer_id)] = m
        else:
            todo.append(int(l.layer_id))
    return vals, todo


def store_metrics(db, params: str, values: pd.DataFrame) -> bool:
    """Store computed metrics (a :func:`compute_layer_metrics` frame) under ``params``;
    False (and a warning) when the catalog cannot be written."""
    cols = [values[k].tolist() for k in STORED]
    n_sparse = values["n_sparse"].tolist()
    rows = {}
    for i, lid in enumerate(values.index.tolist()):
        m = {k: float(c[i]) for k, c in zip(STORED, cols)}
        m["n_sparse"] = int(n_sparse[i])
        rows[int(lid)] = m
    return db.put_layer_metrics(params, rows)


def ingest_metrics(db, layers: pd.DataFrame, eps: float) -> pd.DataFrame:
    """The metrics stored at ingest for ``layers`` (those without stored filters), as a
    :func:`values_frame`; empty unless ``eps`` is the ingest epsilon."""
    # start-up time: the ingest module loads numba
    from ..store.bulk import INGEST_EPS, INGEST_METRICS_PARAMS  # lazy: start-up time (numba)

    if not len(layers) or float(eps) != INGEST_EPS:
        return values_frame({})
    stored = db.layer_metrics(INGEST_METRICS_PARAMS)
    want = set(layers["layer_id"].astype(np.int64).tolist())
    return values_frame({k: v for k, v in stored.items() if k in want})


def values_frame(values: dict) -> pd.DataFrame:
    """``{layer_id: metrics dict}`` (stored metrics: None for NaN) as a float frame indexed
    by layer id with the :data:`~filterdb.health.table.STORED` columns."""
    rows = [[np.nan if m.get(k) is None else m[k] for k in STORED] for m in values.values()]
    return pd.DataFrame(np.array(rows, np.float64).reshape(len(rows), len(STORED)),
                        index=pd.Index(list(values), dtype=np.int64, name="layer_id"),
                        columns=list(STORED))


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def _valid(m: dict, l) -> bool:
    return (m.get("filter_start") == _int(l.filter_start)
            and m.get("filter_count") == _int(l.filter_count)
            and m.get("checksum") == _int(l.checksum))


def database_health(db, where: str | None = None, thresholds: HealthThresholds | None = None,
                    engine="local", scheduler=None, workers: int = 2, recompute: bool = False,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None,
                    store: bool = True, orthogonality: bool = True,
                    orthogonality_precision: str = "float32") -> pd.DataFrame:
    """Health metrics and flags of every selected layer of a database (path or
    :class:`~filterdb.store.Database`), one row per layer (columns
    :data:`~filterdb.health.table.LAYER_COLUMNS`).

    3x3 layers without stored metrics (all, with ``recompute``) are computed in one pass
    and stored; the rest are read from the catalog. ``progress(n_rows)`` is called per task.
    ``orthogonality=False`` skips the one costly metric (``c_out`` multiply-adds per
    filter coefficient; NaN in the table), which the degeneration flags do not use.
    ``orthogonality_precision="float32"`` (default) computes the Gram of wide layers as
    float32 products (BLAS, blocks of 4,096 columns) accumulated in float64 (the tests bound
    the error by 1e-6; measured at most 1.7e-8 on the zoo's layers and 1.2e-8 on a 100 M
    synthetic database, against the float64 definition), stored under the same key as the
    exact ``"float64"`` path.
    """
    t = thresholds or HealthThresholds()
    check_orthogonality_precision(orthogonality_precision)
    owned = not isinstance(db, Database)
    if owned:
        db = open_database(db)
    try:
        layers = db.layers(where, columns=LAYER_QUERY_COLUMNS)
        params = metrics_params(t.sparsity_eps, orthogonality)
        has = layers["filter_count"].fillna(0).astype(np.int64).to_numpy() > 0
        vals, todo = stored_or_todo(db, layers, params, recompute)
        frames = [values_frame(vals)] if vals else []
        if todo:
            sel = layers[layers["layer_id"].isin(todo)]
            new = compute_layer_metrics(db, sel, t.sparsity_eps, engine=engine,
                                        scheduler=scheduler, workers=workers,
                                        chunk_rows=chunk_rows, progress=progress,
                                        orthogonality=orthogonality,
                                        orthogonality_precision=orthogonality_precision)
            if store:
                store_metrics(db, params, new)
            frames.append(new[list(STORED)])
        ing = ingest_metrics(db, layers[~has], t.sparsity_eps)
        if len(ing):
            if not orthogonality:
                ing["orthogonality"] = np.nan
            frames.append(ing)
        return health_table(layers, pd.concat(frames) if frames else values_frame({}), t)
    finally:
        if owned:
            db.close()


__all__ = ["database_health", "compute_layer_metrics", "stored_or_todo", "store_metrics",
           "ingest_metrics", "values_frame", "metrics_params", "ORTHO_PRECISIONS",
           "check_orthogonality_precision", "LAYER_QUERY_COLUMNS",
           "METRICS_VERSION", "DEFAULT_CHUNK_ROWS"]
