"""The drift analysis over a filter database (docs/method.md, sections 3-4).

Public API, results as DataFrames / arrays:

- :func:`pca`: PCA of the scaled 3x3 filters of a selection (one pass).
- :func:`distributions`: per-group coefficient histograms, probabilities, KDE curves and
  the 2-D c0-c1 density.
- :func:`drift`: the drift matrix between the groups of one column (or depth bins).
- :func:`drift_summary`: the upper-triangle drifts of several columns (the box plot),
  from ONE PCA pass, ONE range pass and ONE histogram pass for all columns.
- :func:`drift_to_model`: a model file against the selection (and its groups).

``db`` is a :class:`~filterdb.store.Database` or a path; ``where`` a SQL expression over
the layer view. ``by`` is any column of the layer view or ``"depth"`` (10 bins of
``conv_depth_norm``). Layers whose ``by`` value is NULL are left out of the groups (they
still count in the PCA and the range).

Passes are cached in the database (``cache_put``) under a hash of (analysis, where,
parameters) and the database's ``data_version``: repeated calls, the report and the CLI
do not repeat a pass, and any change of the data invalidates them.
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ._repr import dataclass_repr
from .errors import FilterDBError
from .kernels import hist as _hist
from .kernels import pca as _pca
from .kernels.drift import (depth_bin, depth_bin_labels, drift_matrix, drift_to_reference,
                            resolve_weights)

__all__ = ["pca", "pca_frame", "distributions", "drift", "drift_summary", "drift_to_model",
           "Distributions", "DriftResult", "DriftSummary", "ModelDrift", "group_columns",
           "provenance", "provenance_text"]

DEPTH = "depth"
ALL = "*"  # pseudo-column: every selected filter in one group
ALL_LABEL = "all"
CACHE_VERSION = 2  # 2: the notebook's depth bins (pd.cut edges) and float16 precision
MAX_CELL_BYTES = 32 << 20  # per-task histogram size above which columns get their own pass
SUMMARY_COLUMNS = ("task", "visual_category", "training_dataset", "architecture", DEPTH)


# ---- database, engine, progress, cache plumbing ----------------------------------------

@contextmanager
def _opened(db):
    from .store import Database, open_database

    if isinstance(db, Database):
        yield db
    else:
        d = open_database(db, "r")
        try:
            yield d
        finally:
            d.close()


def _norm_where(where):
    if where is None or not str(where).strip():
        return None
    return " ".join(str(where).split())


class _Ctx:
    """One analysis call: the database, its selection, a lazily started engine, the cache."""

    def __init__(self, db, where, engine, scheduler, workers, progress, cache,
                 precision="float32"):
        self.db = db
        self.precision = _pca.check_precision(precision)
        self.where = _norm_where(where)
        self._engine_spec = engine
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.cache = cache
        self._engine = None
        self._plan = None
        self._layers = None

    # -- selection
    _BASE = ("layer_id", "filter_start", "filter_count", "conv_depth_norm")

    @property
    def columns(self) -> list[str]:
        from .store.query import columns

        return columns(self.db._con, "layer_view")

    def _select(self, cols) -> pd.DataFrame:
        from .store.query import user_frame, where_clause

        lim = self.db.sql_time_limit
        w = where_clause(self.db._con, "layer_view", self.where, lim)
        sql = (f"SELECT {', '.join(cols)} FROM layer_view WHERE filter_count > 0 AND {w} "
               "ORDER BY layer_id")
        return user_frame(self.db._con, sql, self.where, lim)

    @property
    def layers(self) -> pd.DataFrame:
        """Selected layers that own 3x3 filters (a few layer-view columns, see ``column``)."""
        if self._layers is None:
            df = self._select(self._BASE)
            if df.empty:
                w = f" where {self.where!r}" if self.where else ""
                raise FilterDBError(f"{self.db.path}: empty selection{w}: no 3x3 filters to "
                                    "analyse")
            self._layers = df
        return self._layers

    def column(self, name) -> pd.Series:
        """A layer-view column of the selected layers, aligned with ``layers``."""
        df = self.layers
        if name not in df:
            df[name] = self._select(["layer_id", name])[name].to_numpy()
        return df[name]

    @property
    def plan(self):
        if self._plan is None:
            from .engine import make_plan

            df = self.layers.sort_values("filter_start")
            self._plan = make_plan(df["filter_start"].to_numpy(np.int64),
                                   df["filter_count"].to_numpy(np.int64),
                                   df["layer_id"].to_numpy(np.int64))
        return self._plan

    @property
    def source(self):
        return self.db.row_source()

    # -- engine
    def run(self, desc, kernel, params):
        from .engine import get_engine, map_reduce

        if self._engine is None:
            self._engine = get_engine(self._engine_spec, self.scheduler, self.workers)
        cb, done = _progress(self.progress, desc, self.plan.n_rows)
        try:
            return map_reduce(self.source, self.plan, kernel, params, engine=self._engine,
                              progress=cb)
        finally:
            done()

    def close(self):
        if self._engine is not None and self._engine is not self._engine_spec:
            self._engine.close()
        self._engine = None

    # -- cache
    def key(self, name, **params) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "analysis": name, "where": self.where,
                           "precision": self.precision, **params}, sort_keys=True,
                          default=_json_default)
        return "analysis:" + name + ":" + hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key):
        if not self.cache:
            return None
        try:
            return self.db.cache_get(key)
        except (sqlite3.Error, FilterDBError):
            return None

    def put(self, key, value):
        if not self.cache:
            return
        try:
            self.db.cache_put(key, value)
        except (sqlite3.Error, OSError):
            pass  # a read-only database: no cache, same results


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(type(o).__name__)


def _progress(progress, desc, total):
    """``(callback(n_rows), close())`` from ``progress``: None, True (tqdm bars on stderr)
    or a callable taking the number of rows done."""
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        from .utils import progress as bar

        b = bar(total=total, desc=desc, unit="filter")
        b.unit_scale = True
        return b.update, b.close
    return progress, lambda: None


@contextmanager
def _context(db, where, engine="local", scheduler=None, workers=2, progress=None, cache=True,
             precision="float32"):
    _pca.check_precision(precision)  # before opening anything
    with _opened(db) as d:
        ctx = _Ctx(d, where, engine, scheduler, workers, progress, cache, precision)
        try:
            yield ctx
        finally:
            ctx.close()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_load(b: bytes) -> dict:
    with np.load(io.BytesIO(b), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- the passes (each cached) --------------------------------------------------------------

def _fit_pca(ctx) -> _pca.PCA:
    key = ctx.key("pca")
    hit = ctx.get(key)
    if isinstance(hit, dict):
        return _pca.PCA.from_dict(hit)
    r = ctx.run("PCA", _pca.moments_task, {"precision": ctx.precision})
    p = _pca.pca_from_moments(int(r["n"]), r["s"], r["sxx"])
    ctx.put(key, p.to_dict())
    return p


def _pca_params(p, precision="float32"):
    mean, comps = _pca._pca_arrays(p)
    return {"mean": mean, "components": comps, "precision": precision}


def _range(ctx, p, range_) -> tuple[float, float]:  # noqa: A002
    if range_ is not None:
        lo, hi = (float(v) for v in range_)
        _hist.bin_edges(lo, hi, 1)  # validates
        if lo == hi:
            raise FilterDBError(f"empty histogram range ({lo}, {hi})")
        return lo, hi
    key = ctx.key("range")
    hit = ctx.get(key)
    if isinstance(hit, list) and len(hit) == 2:
        return float(hit[0]), float(hit[1])
    r = ctx.run("range", _pca.range_task, _pca_params(p, ctx.precision))
    lo, hi = _pca.shared_range(r["cmin"], r["cmax"])
    ctx.put(key, [lo, hi])
    return lo, hi


def group_columns(db) -> list[str]:
    """The names ``by`` accepts: every column of the layer view, and ``"depth"``."""
    from .store.query import columns

    with _opened(db) as d:
        cols = columns(d._con, "layer_view")
    return cols + ([DEPTH] if DEPTH not in cols else [])


def _check_by(ctx, by):
    ctx.layers  # noqa: B018 - raises on an empty selection
    cols = ctx.columns
    if by == DEPTH or by == ALL or by in cols:
        return
    raise FilterDBError(f"unknown column {by!r} for --by; columns: {DEPTH} (10 bins of "
                        f"conv_depth_norm), {', '.join(cols)}")


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, bool) else (1, 0.0, str(v))


def _labels_codes(ctx, by):
    """``(labels, codes)``: group labels and each layer's group code (-1: left out)."""
    if by == ALL:
        return [ALL_LABEL], np.zeros(len(ctx.layers), np.int64)
    if by == DEPTH:
        b = depth_bin(ctx.layers["conv_depth_norm"].to_numpy(np.float64))
        present = np.unique(b)
        labels = [depth_bin_labels()[i] for i in present]
        return labels, np.searchsorted(present, b).astype(np.int64)
    col = ctx.column(by)
    valid = col.notna().to_numpy()
    values = col[valid].tolist()
    uniq = sorted(set(values), key=_sort_key)
    index = {v: i for i, v in enumerate(uniq)}
    codes = np.full(len(col), -1, np.int64)
    codes[valid] = [index[v] for v in values]
    # an integer column with NULLs comes back as float: label 8.0 as "8"
    return [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
            for v in uniq], codes


def _group_counts(ctx, p, rng, columns: Sequence[str], bins: int) -> dict:
    """``{column: (labels, counts (G, 9, bins))}``; all uncached columns binned in one pass
    over the data (histograms per distinct combination of the columns' group codes, then
    summed per column)."""
    bins = int(bins)
    edges = _hist.bin_edges(rng[0], rng[1], bins)
    out, todo = {}, []
    for c in dict.fromkeys(columns):
        key = ctx.key("hist", by=c, bins=bins, range=list(rng))
        hit = ctx.get(key)
        if isinstance(hit, (bytes, bytearray)):
            z = _npz_load(hit)
            out[c] = (json.loads(str(z["labels"])), z["counts"])
        else:
            todo.append((c, key))
    if not todo:
        return out
    layers = ctx.layers
    lids = layers["layer_id"].to_numpy(np.int64)
    coded = [(c, key, *_labels_codes(ctx, c)) for c, key in todo]
    # split into passes whose per-task histogram stays small (usually one pass)
    passes, cur = [], []
    for item in coded:
        cand = cur + [item]
        if cur and _n_cells(cand) * 9 * bins * 8 > MAX_CELL_BYTES:
            passes.append(cur)
            cand = [item]
        cur = cand
    passes.append(cur)
    for group in passes:
        codes = np.stack([it[3] for it in group], axis=1)  # (layers, columns)
        keep = (codes >= 0).any(axis=1)
        cells, cell_of = np.unique(codes[keep], axis=0, return_inverse=True)
        lookup = np.full(int(lids.max()) + 1, -1, np.int64)
        lookup[lids[keep]] = cell_of.ravel()
        params = dict(_pca_params(p, ctx.precision), lookup=lookup, n_groups=len(cells),
                      edges=edges)
        desc = "histograms" if len(group) > 1 else f"histograms by {group[0][0]}"
        cell_counts = ctx.run(desc, _hist.hist_task, params)["counts"]
        for j, (c, key, labels, _) in enumerate(group):
            counts = np.zeros((len(labels), 9, bins), np.int64)
            sel = cells[:, j] >= 0
            np.add.at(counts, cells[sel, j], cell_counts[sel])
            out[c] = (labels, counts)
            ctx.put(key, _npz_bytes(counts=counts, labels=np.array(json.dumps(labels))))
    return out


def _n_cells(items) -> int:
    codes = np.stack([it[3] for it in items], axis=1)
    return len(np.unique(codes, axis=0))


def _group_sizes(ctx, by, labels) -> pd.Series:
    """Filters per group from the catalog (exact, whatever the histogram range)."""
    layers = ctx.layers
    lab, codes = _labels_codes(ctx, by)
    n = np.bincount(codes[codes >= 0], weights=layers["filter_count"].to_numpy(np.float64)
                    [codes >= 0], minlength=len(lab)).astype(np.int64)
    s = pd.Series(n, index=pd.Index(lab, name=by), name="filters")
    return s.loc[list(labels)]


def _hist2d(ctx, p, rng, bins):
    key = ctx.key("hist2d", bins=int(bins), range=list(rng))
    hit = ctx.get(key)
    if isinstance(hit, (bytes, bytearray)):
        return _npz_load(hit)["counts"]
    e = _hist.bin_edges(rng[0], rng[1], bins)
    params = dict(_pca_params(p, ctx.precision), a=0, b=1, edges_a=e, edges_b=e)
    counts = ctx.run("c0-c1 density", _hist.hist2d_task, params)["counts"]
    ctx.put(key, _npz_bytes(counts=counts))
    return counts


# ---- PCA ---------------------------------------------------------------------------------

def _passes(ctx, columns, range_, bins):  # noqa: A002
    """The passes every drift shares: check the grouping columns, fit the PCA, fix the
    shared range, count the histograms of every column (each pass cached)."""
    for c in columns:
        _check_by(ctx, c)
    p = _fit_pca(ctx)
    rng = _range(ctx, p, range_)
    return p, rng, _group_counts(ctx, p, rng, list(columns), bins)


def pca(db, where=None, engine="local", scheduler=None, *, workers: int = 2, progress=None,
        cache: bool = True, precision: str = "float32") -> _pca.PCA:
    """PCA (9 components) of the scaled 3x3 filters of the selection: one pass.

    Returns :class:`filterdb.kernels.PCA` (``n``, ``mean``, ``components`` as rows,
    ``explained_variance``, ``explained_variance_ratio``); :func:`pca_frame` tabulates it.
    ``precision="float16"`` rounds the filters to float16 and scales them in float16 first,
    as the published notebook does (:func:`filterdb.kernels.pca.notebook_float16`).
    """
    with _context(db, where, engine, scheduler, workers, progress, cache, precision) as ctx:
        ctx.layers  # noqa: B018 - raises on an empty selection
        return _fit_pca(ctx)


def pca_frame(p: _pca.PCA) -> pd.DataFrame:
    """One row per component: ``explained_variance``, ``evr``, ``cumulative`` and the
    eigen-image ``w0 .. w8`` (row-major 3x3); the same as ``p.frame()``."""
    return p.frame()


# ---- distributions -----------------------------------------------------------------------

@dataclass
class Distributions:
    """Per-group coefficient distributions over one shared range."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    by: str
    groups: list[str]
    sizes: pd.Series  # filters per group
    pca: _pca.PCA
    range: tuple[float, float]
    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (G, 9, bins) int64
    probabilities: np.ndarray  # (G, 9, bins): the notebook's (density, eps floor, renormalised)
    grid: np.ndarray  # KDE evaluation points
    kde: np.ndarray  # (G, 9, len(grid)) densities (Silverman bandwidth, from binned data)
    hist2d: np.ndarray | None  # (b, b) counts of c0 (rows) vs c1 (columns) over ``range``
    where: str | None = None
    precision: str = "float32"
    range_fixed: bool = False

    @property
    def provenance(self) -> dict:
        """Floor, precision, bins and range of the probabilities (no weights here)."""
        d = provenance(len(self.edges) - 1, self.range, self.range_fixed, None, [],
                       self.precision, self.by)
        del d["weights"], d["weight_values"]
        return d

    def frame(self) -> pd.DataFrame:
        """Long table: group, component, bin_lo, bin_hi, count, probability."""
        G, K, B = self.counts.shape
        return pd.DataFrame({
            "group": np.repeat(self.groups, K * B),
            "component": np.tile(np.repeat(np.arange(K), B), G),
            "bin_lo": np.tile(self.edges[:-1], G * K),
            "bin_hi": np.tile(self.edges[1:], G * K),
            "count": self.counts.ravel(),
            "probability": self.probabilities.ravel(),
        })


def distributions(db, by=None, where=None, bins: int = 70, range=None,  # noqa: A002
                  grid=None, hist2d_bins: int = 512, engine="local", scheduler=None, *,
                  workers: int = 2, progress=None, cache: bool = True,
                  precision: str = "float32") -> Distributions:
    """Histograms, probabilities and KDE curves of each group's coefficients, and the 2-D
    c0-c1 density of the whole selection (``hist2d_bins=0`` skips it).

    ``by=None`` gives one group, ``"all"``. ``grid`` defaults to 256 points over the range.
    """
    by = ALL if by is None else by
    with _context(db, where, engine, scheduler, workers, progress, cache, precision) as ctx:
        p, rng, got = _passes(ctx, [by], range, bins)
        labels, counts = got[by]
        h2 = _hist2d(ctx, p, rng, hist2d_bins) if hist2d_bins else None
        sizes = _group_sizes(ctx, by, labels)
    edges = _hist.bin_edges(*rng, bins)
    g = np.linspace(rng[0], rng[1], 256) if grid is None else np.asarray(grid, float)
    kde = np.array([[_hist.kde_from_hist(counts[i, k], edges, g) for k in np.arange(9)]
                    for i in np.arange(len(labels))]).reshape(len(labels), 9, len(g))
    return Distributions(by, labels, sizes, p, rng, edges, counts,
                         _hist.probabilities(counts, edges), g, kde, h2, _norm_where(where),
                         precision, range is not None)


# ---- drift ---------------------------------------------------------------------------------

@dataclass
class DriftResult:
    """The drift matrix of the groups of one column, in display order (ascending mean
    drift; depth bins in bin order)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    by: str
    matrix: pd.DataFrame  # (G, G), index and columns the group labels
    sizes: pd.Series  # filters per group
    counts: np.ndarray  # (G, 9, bins), same group order
    probabilities: np.ndarray  # (G, 9, bins)
    edges: np.ndarray
    bins: int
    range: tuple[float, float]
    weights: np.ndarray  # (9,)
    weights_name: str  # "evr" | "equal" | "custom"
    pca: _pca.PCA
    where: str | None = None
    precision: str = "float32"
    range_fixed: bool = False  # False: the global min and max of the selection

    @property
    def provenance(self) -> dict:
        """What the result was computed with (floor, precision, bins, range, weights)."""
        return provenance(self.bins, self.range, self.range_fixed, self.weights_name,
                          self.weights, self.precision, self.by)

    @property
    def groups(self) -> list[str]:
        return list(self.matrix.index)

    @property
    def mean_drift(self) -> pd.Series:
        """Mean drift of each group to the others."""
        return _mean_drift(self.matrix)

    def frame(self) -> pd.DataFrame:
        """The drift matrix (groups x groups)."""
        return self.matrix

    def upper_triangle(self) -> np.ndarray:
        """The pairwise drifts ``D[i, j]``, ``i < j`` (the box plot's values)."""
        m = self.matrix.to_numpy()
        return m[np.triu_indices(len(m), 1)]

    def to_dict(self) -> dict:
        return {
            "by": self.by, "where": self.where, "groups": self.groups,
            "sizes": [int(v) for v in self.sizes], "matrix": self.matrix.to_numpy().tolist(),
            "mean_drift": self.mean_drift.tolist(), "bins": self.bins,
            "range": list(self.range), "weights": self.weights_name,
            "weight_values": self.weights.tolist(), "precision": self.precision,
            "floor": _hist.FLOOR, "provenance": self.provenance, "pca": self.pca.to_dict(),
        }


def _mean_drift(matrix: pd.DataFrame) -> pd.Series:
    m = matrix.to_numpy().astype(float)
    G = len(m)
    s = (m.sum(axis=1) - np.diag(m)) / (G - 1) if G > 1 else np.zeros(G)
    return pd.Series(s, index=matrix.index, name="mean_drift")


def _weights_name(weights):
    return weights if isinstance(weights, str) else "custom"


FLOOR_RULE = ("np.histogram(c, bins, range, density=True); empty bins of the density = "
              "float32 eps; then h / h.sum() (the published notebook)")
DEPTH_RULE = "pd.cut(conv_depth_norm, np.arange(0, 1.1, 0.1), include_lowest=True)"


def provenance(bins, range_, range_fixed, weights_name, weights, precision, by=None) -> dict:
    """What a drift result was computed with (method.md section 4): the floor convention,
    the precision of the filters, the bins, the range (and whether it was fixed or the
    selection's global min and max), the component weights, and the depth bins."""
    d = {"floor": _hist.FLOOR, "floor_eps": _hist.EPS, "floor_rule": FLOOR_RULE,
         "precision": precision, "bins": int(bins), "range": [float(v) for v in range_],
         "range_source": "fixed" if range_fixed else "global min and max of the selection",
         "weights": weights_name, "weight_values": [float(v) for v in weights]}
    if by == DEPTH:
        d["depth_bins"] = DEPTH_RULE
    return d


def provenance_text(prov: dict) -> str:
    """One line for people: ``70 bins over [lo, hi] (global), weights evr, float32, ..."""
    lo, hi = prov["range"]
    src = "fixed" if prov["range_source"] == "fixed" else "global"
    return (f"{prov['bins']} bins over [{lo:.4g}, {hi:.4g}] ({src} range), weights "
            f"{prov['weights']}, precision {prov['precision']}, empty bins: float32 eps on "
            f"the density ({prov['floor']} floor, as the notebook)")


def _drift_result(by, labels, counts, sizes, p, rng, bins, weights, where,
                  precision="float32", range_fixed=False) -> DriftResult:
    w = resolve_weights(weights, p.explained_variance_ratio)
    edges = _hist.bin_edges(*rng, bins)
    probs = _hist.probabilities(counts, edges)
    D = drift_matrix(probs, w) if len(labels) else np.zeros((0, 0))
    if by == DEPTH or len(labels) < 2:
        order = np.arange(len(labels))
    else:
        G = len(labels)
        order = np.argsort((D.sum(axis=1) - np.diag(D)) / (G - 1), kind="stable")
    lab = [labels[i] for i in order]
    idx = pd.Index(lab, name=by)
    M = pd.DataFrame(D[np.ix_(order, order)], index=idx, columns=idx.copy())
    return DriftResult(by, M, sizes.loc[lab], counts[order], probs[order],
                       edges, int(bins), rng, w, _weights_name(weights),
                       p, where, precision, bool(range_fixed))


def drift(db, by, where=None, bins: int = 70, range=None, weights="evr",  # noqa: A002
          engine="local", scheduler=None, *, workers: int = 2, progress=None,
          cache: bool = True, precision: str = "float32") -> DriftResult:
    """Drift matrix between the groups of ``by`` (a layer-view column or ``"depth"``).

    PCA, shared range (the global min and max of the coefficients unless ``range`` is
    given) and per-group histograms with ``bins`` bins; ``weights`` ``"evr"`` (default),
    ``"equal"`` or 9 numbers. ``precision``: ``"float32"`` or the notebook's ``"float16"``
    (see :func:`pca`). Up to 3 passes over the selection, each cached.
    """
    resolve_weights(weights, np.ones(9) / 9)  # fail early on bad weights
    with _context(db, where, engine, scheduler, workers, progress, cache, precision) as ctx:
        p, rng, got = _passes(ctx, [by], range, bins)
        labels, counts = got[by]
        sizes = _group_sizes(ctx, by, labels)
    if not labels:
        raise FilterDBError(f"no groups: every selected layer has a NULL {by!r}")
    return _drift_result(by, labels, counts, sizes, p, rng, bins, weights, _norm_where(where),
                         precision, range is not None)


@dataclass
class DriftSummary:
    """Pairwise drifts of several grouping columns (one PCA, one range, one histogram
    pass for all of them)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    results: dict  # column -> DriftResult
    pca: _pca.PCA
    range: tuple[float, float]
    provenance: dict = field(default_factory=dict)  # floor, precision, bins, range, weights

    @property
    def values(self) -> dict:
        """``{column: upper-triangle drifts}`` (the box plot)."""
        return {c: r.upper_triangle() for c, r in self.results.items()}

    @property
    def medians(self) -> pd.Series:
        return pd.Series({c: float(np.median(v)) if len(v) else np.nan
                          for c, v in self.values.items()}, name="median_drift")

    def frame(self) -> pd.DataFrame:
        """Long table: column, group_a, group_b, drift (upper triangle)."""
        rows = []
        for c, r in self.results.items():
            g = r.groups
            iu = np.triu_indices(len(g), 1)
            m = r.matrix.to_numpy()
            rows += [(c, g[i], g[j], m[i, j]) for i, j in zip(*iu)]
        return pd.DataFrame(rows, columns=["column", "group_a", "group_b", "drift"])

    def to_dict(self) -> dict:
        return {"columns": list(self.results), "medians": self.medians.to_dict(),
                "values": {c: v.tolist() for c, v in self.values.items()},
                "range": list(self.range), "provenance": self.provenance,
                "pca": self.pca.to_dict(),
                "results": {c: r.to_dict() for c, r in self.results.items()}}


def drift_summary(db, columns=SUMMARY_COLUMNS, where=None, bins: int = 70,
                  range=None, weights="evr", engine="local", scheduler=None,  # noqa: A002
                  *, workers: int = 2, progress=None, cache: bool = True,
                  precision: str = "float32") -> DriftSummary:
    """:func:`drift` for several columns at once, sharing every pass."""
    resolve_weights(weights, np.ones(9) / 9)
    columns = list(columns)
    with _context(db, where, engine, scheduler, workers, progress, cache, precision) as ctx:
        p, rng, got = _passes(ctx, columns, range, bins)
        sizes = {c: _group_sizes(ctx, c, got[c][0]) for c in columns}
    w = _norm_where(where)
    res = {c: _drift_result(c, *got[c], sizes[c], p, rng, bins, weights, w, precision,
                            range is not None)
           for c in columns if got[c][0]}
    prov = provenance(bins, rng, range is not None, _weights_name(weights),
                      resolve_weights(weights, p.explained_variance_ratio), precision)
    if DEPTH in columns:
        prov["depth_bins"] = DEPTH_RULE
    return DriftSummary(res, p, rng, prov)


# ---- a model file against the database ------------------------------------------------------

@dataclass
class ModelDrift:
    """A model's 3x3 filters, projected on the selection's PCA and range, against the
    selection (and each group of ``by``)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    model: str
    n_filters: int
    n_outside: int  # filters with a coefficient outside the shared range (not binned)
    drift: float  # against the whole selection
    by: str | None
    groups: pd.Series  # drift against each group, ascending (empty without ``by``)
    sizes: pd.Series  # filters per group
    counts: np.ndarray  # (9, bins) the model's counts
    bins: int
    range: tuple[float, float]
    weights: np.ndarray
    weights_name: str
    pca: _pca.PCA
    where: str | None = None
    extra: dict = field(default_factory=dict)
    precision: str = "float32"
    range_fixed: bool = False

    @property
    def provenance(self) -> dict:
        """What the result was computed with (floor, precision, bins, range, weights)."""
        return provenance(self.bins, self.range, self.range_fixed, self.weights_name,
                          self.weights, self.precision, self.by)

    def frame(self) -> pd.DataFrame:
        """One row per group of ``by``: its drift to the model and its filters."""
        return pd.DataFrame({"group": list(self.groups.index), "drift": self.groups.to_numpy(),
                             "filters": [int(self.sizes[g]) for g in self.groups.index]})

    def to_dict(self) -> dict:
        return {"model": self.model, "n_filters": self.n_filters, "n_outside": self.n_outside,
                "drift": self.drift, "by": self.by, "groups": list(self.groups.index),
                "group_drift": self.groups.tolist(),
                "sizes": [int(self.sizes[g]) for g in self.groups.index],
                "bins": self.bins, "range": list(self.range), "weights": self.weights_name,
                "weight_values": self.weights.tolist(), "precision": self.precision,
                "floor": _hist.FLOOR, "provenance": self.provenance, "where": self.where}


def _model_hist(X, p, rng, bins, precision="float32"):
    """Counts (9, bins) of a model's coefficients, and the number of filters with any
    coefficient outside the range."""
    X = _pca.at_precision(X, precision)  # the kernels leave these scaled values unchanged
    c = _pca.coefficients(X, p)
    lo, hi = rng
    outside = int(((c < lo) | (c > hi)).any(axis=1).sum())
    counts = _hist.hist_chunk(X, np.zeros(len(X), np.int64), 1, p, bins, lo, hi)[0]
    return counts, outside


def drift_to_model(db, model, where=None, by=None, bins: int = 70, range=None,  # noqa: A002
                   weights="evr", engine="local", scheduler=None, *, workers: int = 2,
                   progress=None, cache: bool = True, precision: str = "float32") -> ModelDrift:
    """Drift of a model (a file path or a :class:`~filterdb.readers.Model`) against the
    selection: its filters are scaled and projected onto the selection's PCA and binned
    over the selection's shared range, at the same ``precision``. With ``by``, also against
    each group."""
    from .readers import read_model
    from .readers.base import Model

    m = model if isinstance(model, Model) else read_model(model)
    name = str(m.path) if m.path else m.sha256[:12]
    X = m.filters_3x3()
    if len(X) == 0:
        raise FilterDBError(f"{name}: the model has no 3x3 convolution filters")
    resolve_weights(weights, np.ones(9) / 9)
    cols = [ALL] + ([by] if by is not None else [])
    with _context(db, where, engine, scheduler, workers, progress, cache, precision) as ctx:
        p, rng, got = _passes(ctx, cols, range, bins)
        sizes = _group_sizes(ctx, by, got[by][0]) if by is not None else \
            pd.Series(dtype=np.int64)
    w = resolve_weights(weights, p.explained_variance_ratio)
    counts, outside = _model_hist(X, p, rng, bins, precision)
    if counts.sum() == 0:
        raise FilterDBError(f"{name}: every filter's coefficients fall outside the range "
                            f"{rng}: no distribution to compare")
    edges = _hist.bin_edges(*rng, bins)
    pm = _hist.probabilities(counts, edges)
    d_all = float(drift_to_reference(_hist.probabilities(got[ALL][1], edges), pm, w)[0])
    groups = pd.Series(dtype=float, name="drift")
    if by is not None and got[by][0]:
        labels, gc = got[by]
        d = drift_to_reference(_hist.probabilities(gc, edges), pm, w)
        order = np.argsort(d, kind="stable") if by != DEPTH else np.arange(len(d))
        groups = pd.Series(d[order], index=pd.Index([labels[i] for i in order], name=by),
                           name="drift")
    return ModelDrift(name, len(X), outside, d_all, by, groups, sizes, counts, int(bins), rng,
                      w, _weights_name(weights), p, _norm_where(where), {}, precision,
                      range is not None)

