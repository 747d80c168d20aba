"""Layer health over a whole database, and a model against the population (method.md, 5).

- :func:`database_health`: every selected layer's metrics and flags. The metrics of 3x3
  layers come from one streaming pass (:func:`filterdb.kernels.layer_stats.health_task`
  through :func:`filterdb.engine.map_reduce`, tasks cut on layer boundaries) and are stored
  in the catalog's ``layer_metrics`` table, keyed by layer id and the parameters that
  change them (the sparsity epsilon); later calls read them. Flags and ``H / TH`` are
  derived on reading (:func:`filterdb.health.assess.assess`, the assessment ``check``
  uses), so other flag thresholds need no new pass. Layers with other kernels (larger
  than 1x1) have no stored filters: their metrics are computed at ingest
  (:data:`filterdb.store.bulk.INGEST_METRICS_PARAMS`, sparsity epsilon 0.01) and read
  from there; with another epsilon, or for models added before ingest stored them, they
  are not assessed ("no stored metrics").
- :func:`summarise_groups`: share degenerated and verdict by model, task, visual category
  and depth bin (10 bins of ``conv_depth_norm``, ``[0, 0.1], (0.1, 0.2], ...``).
- :func:`compare_to_population`: each metric's percentile among the database's layers of
  the same depth bin and the same ``floor(log10 n)`` (the depth bin alone when fewer than
  :data:`MIN_COMPARABLE` layers qualify). The percentile is the share of comparable layers
  with a strictly smaller value, in percent (ties do not count; the share with a strictly
  larger value is given too, so "more sparse than p %" and "less sparse than q %" are both
  literal).
- :func:`population_bands`: p10 / p25 / p50 / p75 / p90 of each metric per depth bin.

Cached metrics stay valid while the layer's row does (filter range and checksum are
stored with them); removed models' rows are deleted by the store.
"""
from __future__ import annotations

import json
import math
import sqlite3
import warnings

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..kernels import metrics as M
from ..kernels.drift import depth_bin, depth_bin_labels
from .assess import ASSESS_COLUMNS, HealthThresholds, assess, summarise, verdict_class

METRICS_VERSION = 2  # 2: orthogonality normalises rows as torch.nn.functional.normalize
DEFAULT_CHUNK_ROWS = 1 << 20
MIN_COMPARABLE = 10
PERCENTILE_METRICS = M.PERCENTILE  # the registry (filterdb.kernels.metrics)
STORED = M.STORED
GROUP_METRICS = M.names(headline=True)  # means per group in summarise_groups
LAYER_COLUMNS = (("layer_id", "model", "model_name", "task", "visual_category", "name", "op",
                  "kernel", "c_out", "conv_depth", "conv_depth_norm", "depth_bin", "n")
                 + M.names() + tuple(c for c in ASSESS_COLUMNS if c not in M.names()))


# ---- the pass ---------------------------------------------------------------------------

def layer_groups(counts, target_rows: int) -> np.ndarray:
    """Group boundaries ``b`` (group ``g`` = layers ``b[g]:b[g+1]``): consecutive layers
    while their rows stay within ``target_rows``; a bigger layer is a group alone."""
    counts = np.asarray(counts, np.int64)
    bounds = [0]
    fill = 0
    for i, c in enumerate(counts.tolist()):
        if fill and fill + c > target_rows:
            bounds.append(i)
            fill = 0
        fill += c
    bounds.append(len(counts))
    return np.asarray(bounds if len(counts) else [0], np.int64)


def plan_layers(starts, counts, layer_ids, target_rows: int = DEFAULT_CHUNK_ROWS):
    """An engine :class:`~filterdb.engine.Plan` whose tasks each hold whole layers."""
    from ..engine import Plan, make_plan

    starts = np.asarray(starts, np.int64)
    counts = np.asarray(counts, np.int64)
    layer_ids = np.asarray(layer_ids, np.int64)
    keep = counts > 0
    starts, counts, layer_ids = starts[keep], counts[keep], layer_ids[keep]
    if len(starts) == 0:
        raise FilterDBError("empty selection: no filters to analyse")
    b = layer_groups(counts, max(int(target_rows), 1))
    tasks = []
    for g0, g1 in zip(b[:-1].tolist(), b[1:].tolist()):
        p = make_plan(starts[g0:g1], counts[g0:g1], layer_ids[g0:g1], target_rows=1 << 62)
        tasks.extend(p.tasks)  # one task: the target is never reached
    return Plan(tuple(tasks), int(counts.sum()), max(t.span for t in tasks))


def compute_layer_metrics(db, layers: pd.DataFrame, eps: float = 0.01, engine="local",
                          scheduler=None, workers: int = 2,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None,
                          orthogonality: bool = True) -> pd.DataFrame:
    """One pass over the filters of ``layers`` (rows of ``db.layers()`` with filters).

    Returns a frame indexed by layer id with the columns of
    :data:`filterdb.kernels.layer_stats.VALUES`.
    """
    from ..engine import map_reduce
    from ..kernels.layer_stats import VALUES, health_task

    layers = layers[layers["filter_count"].fillna(0).astype(np.int64) > 0]
    layers = layers.sort_values("filter_start")
    lids = layers["layer_id"].to_numpy(np.int64)
    if len(lids) == 0:
        return pd.DataFrame(columns=list(VALUES), index=pd.Index([], name="layer_id"))
    index = np.full(int(lids.max()) + 1, -1, np.int64)
    index[lids] = np.arange(len(lids))
    c_out = layers["c_out"].fillna(0).to_numpy(np.int64)
    plan = plan_layers(layers["filter_start"].to_numpy(np.int64),
                       layers["filter_count"].to_numpy(np.int64), lids, chunk_rows)
    source = db.row_source()
    params = {"index": index, "c_out": c_out, "eps": float(eps),
              "orthogonality": bool(orthogonality)}
    r = _with_single_blas(lambda: map_reduce(source, plan, health_task, params, engine=engine,
                                             scheduler=scheduler, workers=workers,
                                             progress=progress))
    if not (r["count"] == 1).all():
        bad = lids[r["count"] != 1][:5].tolist()
        raise FilterDBError(f"internal error: layers {bad} were not seen exactly once")
    return pd.DataFrame(r["values"], columns=list(VALUES), index=pd.Index(lids, name="layer_id"))


def _with_single_blas(fn):
    """Run ``fn`` with one BLAS thread (the engine already runs one task per core)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return fn()
    with threadpool_limits(1, user_api="blas"):
        return fn()


# ---- the cache in the catalog ---------------------------------------------------------------

def metrics_params(eps: float, orthogonality: bool = True) -> str:
    """The ``params`` key of ``layer_metrics`` rows: what changes the stored values."""
    return json.dumps({"eps": float(eps), "orthogonality": bool(orthogonality),
                       "version": METRICS_VERSION, "stored": list(STORED)}, sort_keys=True)


def _catalog_connection(db) -> sqlite3.Connection:
    from ..store import catalog

    return catalog.connect(db.path / catalog.CATALOG)


def read_stored_metrics(db, params: str) -> dict:
    """``{layer_id: metrics dict}`` stored for ``params`` (a fresh read, not the snapshot)."""
    con = _catalog_connection(db)
    try:
        rows = con.execute("SELECT layer_id, metrics FROM layer_metrics WHERE params = ?",
                           (params,)).fetchall()
    finally:
        con.close()
    return {int(lid): json.loads(m) for lid, m in rows}


def write_stored_metrics(db, params: str, layers: pd.DataFrame, values: pd.DataFrame) -> bool:
    """Store computed metrics (with each layer's filter range and checksum). False (and a
    warning) when the catalog cannot be written, e.g. a read-only file system."""
    lay = layers.set_index("layer_id").reindex(values.index)
    dv = int(db.data_version)
    cols = [values[k].tolist() for k in STORED]
    n_sparse = values["n_sparse"].tolist()
    ranges = [lay[k].tolist() for k in ("filter_start", "filter_count", "checksum")]
    rows = []
    for i, lid in enumerate(values.index.tolist()):
        m = {k: _num(c[i]) for k, c in zip(STORED, cols)}
        m.update(n_sparse=int(n_sparse[i]), filter_start=_int(ranges[0][i]),
                 filter_count=_int(ranges[1][i]), checksum=_int(ranges[2][i]))
        rows.append((int(lid), params, json.dumps(m), dv))
    try:
        con = _catalog_connection(db)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT OR REPLACE INTO layer_metrics(layer_id, params, metrics, "
                            "data_version) VALUES (?, ?, ?, ?)", rows)
            con.execute("COMMIT")
        finally:
            con.close()
    except sqlite3.Error as e:
        warnings.warn(f"{db.path}: layer metrics not stored ({e})", stacklevel=2)
        return False
    return True


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def _valid(m: dict, l) -> bool:
    return (m.get("filter_start") == _int(l.filter_start)
            and m.get("filter_count") == _int(l.filter_count)
            and m.get("checksum") == _int(l.checksum))


# ---- the API ------------------------------------------------------------------------------

def _open(db):
    from ..store import Database, open_database

    if isinstance(db, Database):
        return db, False
    return open_database(db), True


def database_health(db, where: str | None = None, thresholds: HealthThresholds | None = None,
                    engine="local", scheduler=None, workers: int = 2, recompute: bool = False,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None,
                    store: bool = True, orthogonality: bool = True) -> pd.DataFrame:
    """Health metrics and flags of every selected layer of a database (path or
    :class:`~filterdb.store.Database`), one row per layer (columns :data:`LAYER_COLUMNS`).

    3x3 layers without stored metrics (all, with ``recompute``) are computed in one pass
    and stored; the rest are read from the catalog. ``progress(n_rows)`` is called per task.
    ``orthogonality=False`` skips the one costly metric (``c_out`` multiply-adds per
    filter coefficient; NaN in the table), which the degeneration flags do not use.
    """
    t = thresholds or HealthThresholds()
    db, owned = _open(db)
    try:
        layers = db.layers(where, columns=_LAYER_COLUMNS)
        params = metrics_params(t.sparsity_eps, orthogonality)
        has = layers["filter_count"].fillna(0).astype(np.int64).to_numpy() > 0
        stored = {} if recompute else read_stored_metrics(db, params)
        vals = {}
        todo = layers["layer_id"].to_numpy(np.int64)[has].tolist()
        if stored:  # reuse what is stored for the same filters (range and checksum)
            todo = []
            for l in layers[has].itertuples(index=False):
                m = stored.get(int(l.layer_id))
                if m is not None and _valid(m, l):
                    vals[int(l.layer_id)] = m
                else:
                    todo.append(int(l.layer_id))
        frames = [_values_frame(vals)] if vals else []
        if todo:
            sel = layers[layers["layer_id"].isin(todo)]
            new = compute_layer_metrics(db, sel, t.sparsity_eps, engine=engine,
                                        scheduler=scheduler, workers=workers,
                                        chunk_rows=chunk_rows, progress=progress,
                                        orthogonality=orthogonality)
            if store:
                write_stored_metrics(db, params, sel, new)
            frames.append(new[list(STORED)])
        ing = ingest_metrics(db, layers[~has], t.sparsity_eps)
        if len(ing):
            if not orthogonality:
                ing["orthogonality"] = np.nan
            frames.append(ing)
        return health_table(layers, pd.concat(frames) if frames else _values_frame({}), t)
    finally:
        if owned:
            db.close()


def ingest_metrics(db, layers: pd.DataFrame, eps: float) -> pd.DataFrame:
    """The metrics stored at ingest for ``layers`` (those without stored filters), as a
    :func:`_values_frame`; empty unless ``eps`` is the ingest epsilon."""
    from ..store.bulk import INGEST_EPS, INGEST_METRICS_PARAMS

    if not len(layers) or float(eps) != INGEST_EPS:
        return _values_frame({})
    stored = read_stored_metrics(db, INGEST_METRICS_PARAMS)
    want = set(layers["layer_id"].astype(np.int64).tolist())
    return _values_frame({k: v for k, v in stored.items() if k in want})


# the catalog columns the pass and the table use (a narrow query: a third of the time)
_LAYER_COLUMNS = ("layer_id", "model", "model_name", "task", "visual_category", "name", "op",
                  "kh", "kw", "c_out", "n_filters", "conv_depth", "conv_depth_norm",
                  "filter_start", "filter_count", "checksum")


def _values_frame(values: dict) -> pd.DataFrame:
    """``{layer_id: metrics dict}`` (stored metrics: None for NaN) as a float frame indexed
    by layer id with the :data:`STORED` columns."""
    rows = [[np.nan if m.get(k) is None else m[k] for k in STORED] for m in values.values()]
    return pd.DataFrame(np.array(rows, np.float64).reshape(len(rows), len(STORED)),
                        index=pd.Index(list(values), dtype=np.int64, name="layer_id"),
                        columns=list(STORED))


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
        "depth_bin": _depth_bins(layers["conv_depth_norm"].to_numpy(np.float64)),
        "n": n, **cols,
    })
    for c in ASSESS_COLUMNS:
        df[c] = a[c].to_numpy()
    return df[list(LAYER_COLUMNS)]


def _depth_bins(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    out = np.full(len(x), -1, np.int64)
    ok = np.isfinite(x)
    if ok.any():
        out[ok] = depth_bin(np.clip(x[ok], 0.0, 1.0))
    return out


# ---- summaries --------------------------------------------------------------------------------

def verdict(n_assessed: int, n_degenerated: int, thresholds: HealthThresholds) -> str:
    """The verdict class (:func:`filterdb.health.assess.verdict_class`)."""
    return verdict_class(n_assessed, n_degenerated, thresholds)


def model_summaries(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """``{model: summary}`` of a :func:`database_health` table, each the
    :func:`~filterdb.health.assess.summarise` dict ``check`` gives for the model file."""
    return {m: summarise(g.reset_index(drop=True), thresholds)
            for m, g in df.groupby("model", sort=False)}


def summarise_groups(df: pd.DataFrame, by: str,
                     thresholds: HealthThresholds | None = None) -> pd.DataFrame:
    """Per group of column ``by``: layers, assessed, degenerated (random-like, sparse and
    low-diversity), random-like by the paper's rule, share degenerated, mean S / H/TH / orthogonality over assessed layers,
    and (``by='model'``) the verdict."""
    t = thresholds or HealthThresholds()
    key = df[by].fillna("").astype(str) if by != "depth_bin" else df[by]
    a = df["assessed"].to_numpy(bool)
    tmp = pd.DataFrame({
        "key": key.to_numpy(),
        "n_layers": 1,
        "n_assessed": a.astype(int),
        "n_degenerated": (df["degenerated"].to_numpy(bool) & a).astype(int),
        "n_random": (df["random"].to_numpy(bool) & a).astype(int),
        "n_random_paper": (df["random_paper"].to_numpy(bool) & a).astype(int),
        "n_low_diversity_sparse": (df["low_diversity"].to_numpy(bool)
                                   & df["sparse"].to_numpy(bool) & a).astype(int),
        **{m: np.where(a, df[m], np.nan) for m in GROUP_METRICS},
    })
    g = tmp.groupby("key", sort=True)
    out = g[["n_layers", "n_assessed", "n_degenerated", "n_random", "n_random_paper",
             "n_low_diversity_sparse"]].sum()
    for m in GROUP_METRICS:
        out[m] = g[m].mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share_degenerated"] = np.where(out["n_assessed"] > 0,
                                            out["n_degenerated"] / out["n_assessed"].clip(1),
                                            np.nan)
    out = out.reset_index().rename(columns={"key": by})
    if by == "depth_bin":
        labels = depth_bin_labels(10)
        out["depth_bin"] = [labels[b] if 0 <= b < 10 else "unknown" for b in out["depth_bin"]]
    if by == "model":
        out["verdict"] = [verdict(a_, d_, t) for a_, d_ in
                          zip(out["n_assessed"].tolist(), out["n_degenerated"].tolist())]
    return out


def health_summary(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """``{"by_model", "by_task", "by_visual_category", "by_depth_bin"}`` frames."""
    return {f"by_{c}": summarise_groups(df, c, thresholds)
            for c in ("model", "task", "visual_category", "depth_bin")}


# ---- the population -----------------------------------------------------------------------

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
    mb = _depth_bins(model_df["conv_depth_norm"].to_numpy(np.float64))
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


__all__ = ["database_health", "health_table", "compute_layer_metrics", "plan_layers",
           "layer_groups", "metrics_params", "read_stored_metrics", "write_stored_metrics",
           "summarise_groups", "health_summary", "verdict", "model_summaries",
           "compare_to_population", "ingest_metrics",
           "percentile_of", "size_class", "population_bands", "LAYER_COLUMNS",
           "PERCENTILE_METRICS", "MIN_COMPARABLE"]
