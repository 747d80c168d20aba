"""The selection and cache context of one analysis call (docs/method.md, sections 3-4).

:class:`Context` holds the database, the selected layers (through :class:`Database`
methods), a lazily started engine and the cache; its cached passes (:meth:`Context.pca`,
:meth:`Context.coefficient_range`, :meth:`Context.group_counts`, :meth:`Context.hist2d`)
run :mod:`filterdb.analysis.passes` and are stored with ``cache_put`` under a hash of
(analysis, where, precision, parameters) and the database's ``data_version``: repeated
calls, the report and the CLI do not repeat a pass, and any change of the data
invalidates them.

Grouping: ``by`` is any column of the layer view, :data:`DEPTH_BIN` (10 bins of
``conv_depth_norm``, method.md section 4) or :data:`ALL` (one group). Layers whose ``by``
value is NULL are left out of the groups (they still count in the PCA and the range).
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .. import engine as E  # looked up per call (tests spy on get_engine / map_reduce)
from ..errors import FilterDBError
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from ..kernels.drift import depth_bin, depth_bin_labels
from ..store import Database, open_database
from ..utils import json_default
from ..utils import progress as progress_bar
from . import passes

__all__ = ["DEPTH_BIN", "ALL", "ALL_LABEL", "CACHE_VERSION", "MAX_CELL_BYTES", "Context",
           "analysis_context", "opened", "norm_where", "progress_callback", "npz_bytes",
           "npz_load", "sort_key"]

DEPTH_BIN = "depth_bin"  # pseudo-column: the notebook's 10 bins of conv_depth_norm
ALL = "*"  # pseudo-column: every selected filter in one group
ALL_LABEL = "all"
# 2: the notebook's depth bins (pd.cut edges) and float16 precision; 3: "depth" -> "depth_bin"
CACHE_VERSION = 3
MAX_CELL_BYTES = 32 << 20  # per-task histogram size above which columns get their own pass


@contextmanager
def opened(db):
    """``db`` as a :class:`Database`: itself, or opened read-only from a path (and closed)."""
    if isinstance(db, Database):
        yield db
    else:
        d = open_database(db, "r")
        try:
            yield d
        finally:
            d.close()


def norm_where(where) -> str | None:
    """``where`` with its white space collapsed (None when empty): the cache keys' form."""
    if where is None or not str(where).strip():
        return None
    return " ".join(str(where).split())


def progress_callback(progress, desc, total):
    """``(callback(n_rows), close())`` from ``progress``: None, True (tqdm bars on stderr)
    or a callable taking the number of rows done."""
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        b = progress_bar(total=total, desc=desc, unit="filter")
        b.unit_scale = True
        return b.update, b.close
    return progress, lambda: None


def npz_bytes(**arrays) -> bytes:
    """Arrays as the bytes of an ``.npz`` (a cache value)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_load(b: bytes) -> dict:
    """The arrays of :func:`npz_bytes`."""
    with np.load(io.BytesIO(b), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sort_key(v):
    """Group order: numbers by value first, then text."""
    return (0, float(v), "") if isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, bool) else (1, 0.0, str(v))


def _n_cells(items) -> int:
    codes = np.stack([it[2] for it in items], axis=1)
    return len(np.unique(codes, axis=0))


class Context:
    """One analysis call: the database, its selection, a lazily started engine, the cache."""

    BASE = ("layer_id", "filter_start", "filter_count", "conv_depth_norm")

    def __init__(self, db: Database, where, engine="local", scheduler=None, workers=2,
                 progress=None, cache=True, precision="float32", recompute=False):
        self.db = db
        self.precision = _pca.check_precision(precision)
        self.where = norm_where(where)
        self.engine_spec = engine
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.cache = cache  # False: neither read nor store cached results
        self.recompute = recompute  # True: do not read them, store the new ones
        self._engine = None
        self._plan = None
        self._layers = None
        self._passes = 0  # passes run: every other order-free pass runs backwards
        self._range = None  # the range found by the PCA pass (also without a cache)

    # -- selection
    @property
    def columns(self) -> list[str]:
        return self.db.layer_view_columns()

    @property
    def layers(self) -> pd.DataFrame:
        """Selected layers that own 3x3 filters (a few layer-view columns, see ``column``)."""
        if self._layers is None:
            df = self.db.filter_layers(self.BASE, self.where)
            if df.empty:
                w = f" where {self.where!r}" if self.where else ""
                raise FilterDBError(f"{self.db.path}: empty selection{w}: no 3x3 filters to "
                                    "analyse")
            self._layers = df
        return self._layers

    def column(self, name) -> pd.Series:
        """A layer-view column of the selected layers, aligned with ``layers``."""
        self.load_columns([name])
        return self.layers[name]

    def load_columns(self, names) -> None:
        """Add the layer-view columns ``names`` (those not yet loaded, and not the depth
        bin) to ``layers``, in one query."""
        df = self.layers
        todo = [n for n in dict.fromkeys(names) if n not in df and n not in (DEPTH_BIN, ALL)]
        if todo:
            got = self.db.filter_layers(["layer_id", *todo], self.where)
            for n in todo:
                df[n] = got[n].to_numpy()

    def ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The selection's ``(filter starts, filter counts, layer ids)`` in store order."""
        df = self.layers.sort_values("filter_start")
        return (df["filter_start"].to_numpy(np.int64), df["filter_count"].to_numpy(np.int64),
                df["layer_id"].to_numpy(np.int64))

    @property
    def plan(self):
        if self._plan is None:
            self._plan = E.make_plan(*self.ranges())
        return self._plan

    @property
    def source(self):
        return self.db.row_source()

    # -- engine
    @property
    def engine(self):
        """The engine of this call, started on first use (closed by :meth:`close`)."""
        if self._engine is None:
            self._engine = E.get_engine(self.engine_spec, self.scheduler, self.workers)
        return self._engine

    @property
    def sample(self):
        """A sample plan of the selection (:func:`filterdb.engine.sample_plan`)."""
        return E.sample_plan(*self.ranges())

    def run(self, desc, pass_, *args, plan=None, any_order=False, **kw):
        """``pass_(source, plan, *args, **kw)`` (a function of :mod:`.passes`) on this
        call's engine, with a progress bar named ``desc``. ``any_order``: the result does
        not depend on the order of the tasks, so after a pass in one direction this one
        runs in the other (its first reads hit the page cache)."""
        whole = plan is None  # a pass over the selection (not a sample)
        plan = self.plan if whole else plan
        if whole and any_order and self._passes % 2:
            plan = E.reversed_plan(plan)
        cb, done = progress_callback(self.progress, desc, plan.n_rows)
        try:
            return pass_(self.source, plan, *args, engine=self.engine, progress=cb, **kw)
        finally:
            self._passes += whole
            done()

    def map_reduce(self, desc, plan, kernel, params, **kw) -> dict:
        """One map-reduce of ``kernel`` over ``plan`` on this call's engine and progress."""
        cb, done = progress_callback(self.progress, desc, plan.n_rows)
        try:
            return E.map_reduce(self.source, plan, kernel, params, engine=self.engine,
                              progress=cb, **kw)
        finally:
            done()

    def close(self):
        if self._engine is not None and self._engine is not self.engine_spec:
            self._engine.close()
        self._engine = None

    # -- cache
    def key(self, name, **params) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "analysis": name, "where": self.where,
                           "precision": self.precision, **params}, sort_keys=True,
                          default=json_default)
        return "analysis:" + name + ":" + hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key):
        if not self.cache or self.recompute:
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

    # -- groups
    def check_by(self, by):
        """Raise unless ``by`` is a layer-view column, :data:`DEPTH_BIN` or :data:`ALL`."""
        self.layers  # noqa: B018 - raises on an empty selection
        cols = self.columns
        if by in (DEPTH_BIN, ALL) or by in cols:
            return
        raise FilterDBError(f"unknown column {by!r} for --by; columns: {DEPTH_BIN} (10 bins "
                            f"of conv_depth_norm), {', '.join(cols)}")

    def labels_codes(self, by) -> tuple[list, np.ndarray]:
        """``(labels, codes)``: group labels and each layer's group code (-1: left out)."""
        if by == ALL:
            return [ALL_LABEL], np.zeros(len(self.layers), np.int64)
        if by == DEPTH_BIN:
            b = depth_bin(self.layers["conv_depth_norm"].to_numpy(np.float64))
            present = np.unique(b)
            labels = [depth_bin_labels()[i] for i in present]
            return labels, np.searchsorted(present, b).astype(np.int64)
        col = self.column(by)
        valid = col.notna().to_numpy()
        values = col[valid].tolist()
        uniq = sorted(set(values), key=sort_key)
        index = {v: i for i, v in enumerate(uniq)}
        codes = np.full(len(col), -1, np.int64)
        codes[valid] = [index[v] for v in values]
        # an integer column with NULLs comes back as float: label 8.0 as "8"
        return [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                for v in uniq], codes

    def group_sizes(self, by, labels) -> pd.Series:
        """Filters per group from the catalog (exact, whatever the histogram range)."""
        layers = self.layers
        lab, codes = self.labels_codes(by)
        n = np.bincount(codes[codes >= 0], weights=layers["filter_count"].to_numpy(np.float64)
                        [codes >= 0], minlength=len(lab)).astype(np.int64)
        s = pd.Series(n, index=pd.Index(lab, name=by), name="filters")
        return s.loc[list(labels)]

    # -- the cached passes
    def pca(self, with_range: bool = False) -> _pca.PCA:
        """The PCA of the selection (method.md section 3), cached. ``with_range``: find
        the shared range in the same pass if it is not cached
        (:func:`.passes.fit_pca_range`: a sample pass first, 151 MB)."""
        key = self.key("pca")
        hit = self.get(key)
        if isinstance(hit, dict):
            return _pca.PCA.from_dict(hit)
        if with_range and not isinstance(self.get(self.key("range")), list):
            prov = self.run("PCA sample", passes.provisional_pca, self.precision,
                            plan=self.sample)
            p, rng = self.run("PCA", passes.fit_pca_range, prov, self.precision)
            if rng is not None:
                self.found_range(rng)
        else:
            p = self.run("PCA", passes.fit_pca, self.precision)
        self.put(key, p.to_dict())
        return p

    def found_range(self, rng):
        """Keep (and cache) a shared range found without its own pass."""
        self._range = (float(rng[0]), float(rng[1]))
        self.put(self.key("range"), list(self._range))

    def coefficient_range(self, p, range_=None) -> tuple[float, float]:
        """``range_`` checked, or the shared range of the selection (cached)."""
        if range_ is not None:
            lo, hi = (float(v) for v in range_)
            _hist.bin_edges(lo, hi, 1)  # validates
            if lo == hi:
                raise FilterDBError(f"empty histogram range ({lo}, {hi})")
            return lo, hi
        if self._range is not None:
            return self._range
        key = self.key("range")
        hit = self.get(key)
        if isinstance(hit, list) and len(hit) == 2:
            return float(hit[0]), float(hit[1])
        lo, hi = self.run("range", passes.coefficient_range, p, self.precision,
                          any_order=True)
        self.put(key, [lo, hi])
        return lo, hi

    def hist_key(self, by, bins, rng) -> str:
        return self.key("hist", by=by, bins=int(bins), range=list(rng))

    def hist2d_key(self, bins, rng) -> str:
        return self.key("hist2d", bins=int(bins), range=list(rng))

    def cached_counts(self, by, bins, rng):
        """``(labels, counts)`` of ``by`` from the cache, or None."""
        hit = self.get(self.hist_key(by, bins, rng))
        if isinstance(hit, (bytes, bytearray)):
            z = npz_load(hit)
            return json.loads(str(z["labels"])), z["counts"]
        return None

    def put_counts(self, by, bins, rng, labels, counts):
        self.put(self.hist_key(by, bins, rng),
                 npz_bytes(counts=counts, labels=np.array(json.dumps(labels))))

    def cells(self, coded) -> tuple[np.ndarray, np.ndarray, int]:
        """Cells (distinct combinations of the columns' group codes) of one histogram pass:
        ``(cells, lookup layer id -> cell, n_cells)``; ``coded`` holds
        ``(column, labels, codes)`` (:meth:`labels_codes`)."""
        lids = self.layers["layer_id"].to_numpy(np.int64)
        codes = np.stack([it[2] for it in coded], axis=1)  # (layers, columns)
        keep = (codes >= 0).any(axis=1)
        cells, cell_of = np.unique(codes[keep], axis=0, return_inverse=True)
        lookup = np.full(int(lids.max()) + 1, -1, np.int64)
        lookup[lids[keep]] = cell_of.ravel()
        return cells, lookup, len(cells)

    @staticmethod
    def split_cells(coded, cells, cell_counts, bins) -> dict:
        """``{column: (labels, counts (G, 9, bins))}`` summed from the cells' counts."""
        out = {}
        for j, (c, labels, _) in enumerate(coded):
            counts = np.zeros((len(labels), 9, int(bins)), np.int64)
            sel = np.flatnonzero(cells[:, j] >= 0)
            if len(sel):  # the cells sorted by group: one sum per group's run of cells
                order = sel[np.argsort(cells[sel, j], kind="stable")]
                g = cells[order, j]
                first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
                counts[g[first]] = np.add.reduceat(cell_counts[order], first, axis=0)
            out[c] = (labels, counts)
        return out

    def group_counts(self, p, rng, columns: Sequence[str], bins: int) -> dict:
        """``{column: (labels, counts (G, 9, bins))}``; all uncached columns binned in one
        pass over the data (histograms per distinct combination of the columns' group
        codes, then summed per column)."""
        bins = int(bins)
        out, todo = {}, []
        for c in dict.fromkeys(columns):
            hit = self.cached_counts(c, bins, rng)
            if hit is not None:
                out[c] = hit
            else:
                todo.append(c)
        if not todo:
            return out
        # split into passes whose per-task histogram stays small (usually one pass)
        coded = [(c, *self.labels_codes(c)) for c in todo]
        groups, cur = [], []
        for item in coded:
            cand = cur + [item]
            if cur and _n_cells(cand) * 9 * bins * 8 > MAX_CELL_BYTES:
                groups.append(cur)
                cand = [item]
            cur = cand
        groups.append(cur)
        for group in groups:
            cols = [it[0] for it in group]
            cells, lookup, n_cells = self.cells(group)
            desc = "histograms" if len(cols) > 1 else f"histograms by {cols[0]}"
            if n_cells:
                cell_counts = self.run(desc, passes.group_histograms, p, lookup, n_cells, bins,
                                       rng, self.precision, any_order=True)
            else:  # every layer's group is NULL: no groups, nothing to bin
                cell_counts = np.zeros((0, 9, bins), np.int64)
            got = self.split_cells(group, cells, cell_counts, bins)
            for c in cols:
                out[c] = got[c]
                self.put_counts(c, bins, rng, *got[c])
        return out

    def hist2d(self, p, rng, bins) -> np.ndarray:
        """The c0-c1 counts ``(bins, bins)`` of the selection over ``rng``, cached."""
        key = self.hist2d_key(bins, rng)
        hit = self.get(key)
        if isinstance(hit, (bytes, bytearray)):
            return npz_load(hit)["counts"]
        counts = self.run("c0-c1 density", passes.histogram2d, p, rng, bins,
                          precision=self.precision, any_order=True)
        self.put(key, npz_bytes(counts=counts))
        return counts

    def shared_passes(self, columns, range_, bins):
        """The passes every drift shares: check the grouping columns, fit the PCA, fix the
        shared range, count the histograms of every column (each pass cached):
        ``(pca, range, {column: (labels, counts)})``."""
        for c in columns:
            self.check_by(c)
        p = self.pca(with_range=range_ is None)
        rng = self.coefficient_range(p, range_)
        return p, rng, self.group_counts(p, rng, list(columns), bins)


@contextmanager
def analysis_context(db, where, engine="local", scheduler=None, workers=2, progress=None,
                     cache=True, precision="float32", recompute=False):
    """A :class:`Context` over ``db`` (a :class:`Database` or a path), closed on exit.

    ``recompute``: cached results are not read, and the new ones replace them (the
    CLI's ``--recompute``); ``cache=False``: they are neither read nor stored."""
    _pca.check_precision(precision)  # before opening anything
    with opened(db) as d:
        ctx = Context(d, where, engine, scheduler, workers, progress, cache, precision,
                      recompute)
        try:
            yield ctx
        finally:
            ctx.close()
