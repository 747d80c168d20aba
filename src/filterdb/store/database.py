"""The :class:`Database`: a directory with ``catalog.sqlite`` and ``filters/seg-*.f32``."""
from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import warnings
import zlib
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DiskFullError, FilterDBError, is_disk_full
from . import catalog, query
from .ingest import add_model, remove_model
from .records import now
from .segments import RowReaderSource, SegmentReader, aligned_empty, read_rows
from .verify import verify

DEFAULT_SEGMENT_ROWS = 1 << 24  # 604 MB per segment file
LOCK = "lock"


def is_database(path) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), catalog.CATALOG))


def init_database(path, segment_rows: int = DEFAULT_SEGMENT_ROWS) -> Database:
    """Create an empty database directory (the directory may exist but must be empty)."""
    p = Path(path)
    if is_database(p):
        raise FilterDBError(f"{p}: already a filterdb database")
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise FilterDBError(f"{p}: exists and is not an empty directory")
    if int(segment_rows) < 1:
        raise FilterDBError(f"segment_rows must be >= 1, got {segment_rows}")
    (p / "filters").mkdir(parents=True, exist_ok=True)
    con = catalog.connect(p / catalog.CATALOG)
    try:
        catalog.create(con, int(segment_rows), __version__)
    finally:
        con.close()
    return Database(p, mode="w")


def open_database(path, mode: str = "r", create: bool = False) -> Database:
    """Open a database: ``mode='r'`` reads a consistent snapshot, ``'w'`` is the one writer.

    With ``create`` (and ``mode='w'``) a missing database is initialised."""
    if mode not in ("r", "w"):
        raise FilterDBError(f"mode must be 'r' or 'w', got {mode!r}")
    if not is_database(path):
        if create and mode == "w" and not (Path(path).exists() and any(Path(path).iterdir())):
            return init_database(path)
        raise FilterDBError(f"{path}: not a filterdb database (create one with 'filterdb init')")
    return Database(path, mode=mode)


CACHE_MAGIC = b"FDBc1"  # then b"b" (bytes) or b"j" (JSON), crc32 (4 bytes LE), the value


def pack_cache(value) -> bytes:
    """A cache value (bytes, or anything JSON-able) as stored: tagged, with its crc32."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        kind, data = b"b", bytes(value)
    else:
        kind, data = b"j", json.dumps(value).encode()
    return CACHE_MAGIC + kind + zlib.crc32(data).to_bytes(4, "little") + data


def unpack_cache(v):
    """The value of a stored cache entry; ValueError if it is damaged. Entries written
    before values carried a crc32 are checked as far as their format allows (JSON text,
    ``.npz`` archives and PNG images, each read whole)."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise ValueError("not valid JSON") from None
    if not isinstance(v, (bytes, memoryview)):
        raise ValueError(f"unexpected {type(v).__name__} value")
    v = bytes(v)
    n = len(CACHE_MAGIC)
    if v.startswith(CACHE_MAGIC) and len(v) >= n + 5:
        kind, crc, data = v[n:n + 1], int.from_bytes(v[n + 1:n + 5], "little"), v[n + 5:]
        if zlib.crc32(data) != crc or kind not in (b"b", b"j"):
            raise ValueError("checksum mismatch")
        return data if kind == b"b" else json.loads(data)
    _check_legacy_blob(v)
    return v


def _check_legacy_blob(v: bytes) -> None:
    import io

    if v.startswith(b"PK"):  # an .npz archive: every member read (zip crc32 checked)
        try:
            with np.load(io.BytesIO(v), allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        except Exception as e:
            raise ValueError(f"damaged .npz ({type(e).__name__})") from None
    elif v.startswith(b"\x89PNG\r\n\x1a\n"):  # a PNG: every chunk's crc32
        p = 8
        while p < len(v):
            if p + 12 > len(v):
                raise ValueError("damaged PNG (truncated)")
            ln = int.from_bytes(v[p:p + 4], "big")
            end = p + 12 + ln
            if end > len(v) or zlib.crc32(v[p + 4:p + 8 + ln]) != \
                    int.from_bytes(v[p + 8 + ln:end], "big"):
                raise ValueError("damaged PNG (chunk checksum)")
            if v[p + 4:p + 8] == b"IEND":
                return
            p = end
        raise ValueError("damaged PNG (no end)")


def _drop_cache(con, keys) -> None:
    try:
        con.executemany("DELETE FROM cache WHERE key = ?", [(k,) for k in keys])
    except sqlite3.Error:
        pass  # read-only file system: the entry stays a miss


def _finite(v):
    """A stored metric: ints as they are, floats with NaN / Inf as None (JSON has neither)."""
    if v is None or isinstance(v, (bool, int, np.integer)):
        return None if v is None else int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def _check_layer(db, layer_id: int, x: np.ndarray) -> None:
    """Raise the one-line damage error when a whole layer read does not match its digest."""
    from .digest import layer_damaged, layer_digest  # lazy: start-up time (digest loads numba)

    have = {r[1] for r in db._con.execute("PRAGMA table_info(layers)")}
    if "digest" not in have:
        return
    r = db._con.execute("SELECT digest FROM layers WHERE layer_id = ?", (layer_id,)).fetchone()
    if r and r[0] and len(x) and layer_digest(x) != r[0]:
        raise layer_damaged(db.path, layer_id)


class Database:
    """A filter database.

    ``mode='r'`` holds one SQLite read transaction: everything it returns (catalog and
    filters) is the snapshot taken at open; :meth:`refresh` moves to the newest state. A
    writer never changes committed rows, so readers run during writes. ``mode='w'`` takes
    the writer lock (``fcntl.flock`` on ``DB/lock``) until :meth:`close`.

    A user's SQL (``where``) runs read only over ``layer_view`` / ``models``, for at most
    ``sql_time_limit`` seconds (:class:`~filterdb.store.query.UserSQL`).
    """

    sql_time_limit: float | None = None  # None: query.SQL_TIME_LIMIT

    def __init__(self, path, mode: str = "r"):
        self.path = Path(path)
        self.mode = mode
        self._filters_dir = str(self.path / "filters")
        self._lock_fd = None
        if mode == "w":
            self._take_lock()
        try:
            self._con = catalog.connect(self.path / catalog.CATALOG, readonly=(mode == "r"))
            if mode == "r":
                self._begin_snapshot()
            else:
                catalog.upgrade(self._con)
                self._meta = catalog.read_meta(self._con)
        except Exception:
            self._release_lock()
            raise
        fv = int(self._meta.get("format_version", 0))
        if fv != catalog.FORMAT_VERSION:
            self.close()
            raise FilterDBError(f"{self.path}: database format {fv}, this filterdb reads "
                                f"format {catalog.FORMAT_VERSION}")
        self.segment_rows = int(self._meta["segment_rows"])
        self._reader = SegmentReader(self._filters_dir, self.segment_rows)

    # -- lock and snapshot ------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self.path / LOCK
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if is_disk_full(e):
                raise DiskFullError(self.path, "creating the lock file") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode().strip() or "?"
            finally:
                os.close(fd)
            raise FilterDBError(f"{self.path}: database is locked by another writer "
                                f"(pid {pid})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            if is_disk_full(e):
                raise DiskFullError(self.path, "writing the lock file; nothing was changed") \
                    from None
            raise
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _begin_snapshot(self) -> None:
        self._con.execute("BEGIN")
        self._meta = catalog.read_meta(self._con)  # the first read fixes the snapshot

    def refresh(self) -> None:
        """A reader moves to the newest committed state."""
        if self.mode == "r":
            self._con.execute("COMMIT")
            self._begin_snapshot()

    def _read_meta(self) -> dict:
        if self.mode == "w":
            self._meta = catalog.read_meta(self._con)
        return self._meta

    def _require_writer(self) -> None:
        if self.mode != "w":
            raise FilterDBError(f"{self.path}: opened read-only; open with mode='w' to write")
        if self._con is None:
            raise FilterDBError(f"{self.path}: the database is closed")

    # -- facts ----------------------------------------------------------------------------
    @property
    def n_filters(self) -> int:
        """Committed filter rows (including the free ranges of removed models)."""
        return int(self._read_meta()["committed_filters"])

    @property
    def data_version(self) -> int:
        return int(self._read_meta()["data_version"])

    @property
    def n_models(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM models").fetchone()[0])

    @property
    def n_layers(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM layers").fetchone()[0])

    def info(self) -> dict:
        """Counts, sizes and the breakdowns by task, visual category and format."""
        con = self._con

        def by(col):
            return dict(con.execute(
                f"SELECT COALESCE({col}, ''), COUNT(*) FROM models GROUP BY 1 "
                "ORDER BY 2 DESC, 1").fetchall())

        referenced = con.execute("SELECT COALESCE(SUM(filter_count), 0) FROM layers").fetchone()[0]
        free = con.execute("SELECT COALESCE(SUM(count), 0) FROM free_ranges").fetchone()[0]
        seg_bytes = n_seg = 0
        for name in os.listdir(self._filters_dir):
            if name.startswith("seg-"):
                n_seg += 1
                seg_bytes += os.path.getsize(os.path.join(self._filters_dir, name))
        cat_bytes = sum(os.path.getsize(p) for p in self.path.glob(catalog.CATALOG + "*"))
        return {
            "path": str(self.path),
            "format_version": int(self._meta["format_version"]),
            "segment_rows": self.segment_rows,
            "data_version": self.data_version,
            "models": self.n_models,
            "layers": self.n_layers,
            "filters": int(referenced),
            "committed_filters": self.n_filters,
            "free_filters": int(free),
            "segments": n_seg,
            "size_bytes": int(seg_bytes + cat_bytes),
            "catalog_bytes": int(cat_bytes),
            "filters_bytes": int(seg_bytes),
            "by_task": by("task"),
            "by_visual_category": by("visual_category"),
            "by_format": by("format"),
        }

    # -- queries ----------------------------------------------------------------------------
    def models(self, where: str | None = None):
        """The models (``model_view``: the ``models`` table with a typed ``x_KEY`` column per
        free metadata key), optionally filtered by a SQL expression, as a DataFrame."""
        return query.select_frame(self._con, query.model_table(self._con), where, "model_id",
                                  limit=self.sql_time_limit)

    def columns(self, of: str = "layers") -> list[dict]:
        """The columns a ``where`` can use over the layers (``layer_view``) or the models:
        ``[{"name", "type", "about"}]``; a free column's type is that of its stored values."""
        table = "layer_view" if of == "layers" else query.model_table(self._con)
        out = []
        for _, name, decl, *_ in self._con.execute(f"PRAGMA table_info({table})").fetchall():
            about = ""
            if name.startswith("x_"):
                types = sorted({t for (t,) in self._con.execute(
                    f"SELECT DISTINCT typeof({name}) FROM {table} WHERE {name} IS NOT NULL")})
                decl = "/".join({"integer": "INTEGER", "real": "REAL", "text": "TEXT"}.get(t, t)
                                for t in types) or "NULL"
                about = "free column (typed: booleans are 1/0)"
            elif name in catalog.CONTROLLED:
                about = "controlled vocabulary; compared without regard to case"
            if not decl:  # a view column computed with a collation has no declared type
                decl = catalog.declared_type(name)
            out.append({"name": name, "type": decl or "", "about": about})
        return out

    def known_labels(self) -> dict:
        """``{column: [values in use]}`` of the controlled columns (task, visual category)."""
        return {c: [v for (v,) in self._con.execute(
            f"SELECT DISTINCT {c} FROM models WHERE {c} IS NOT NULL ORDER BY {c}")]
            for c in ("task", "visual_category")}

    def layers(self, where: str | None = None, columns=None):
        """``layer_view`` (every layer with its model's columns; the model's display name is
        ``model_name``), optionally filtered by a SQL expression, as a DataFrame; only
        ``columns`` if given (the filter may still use any column)."""
        return query.select_frame(self._con, "layer_view", where, "layer_id", columns,
                                  limit=self.sql_time_limit)

    def selection_ranges(self, where: str | None = None):
        """``(starts, counts, layer_ids)`` of the selected layers owning filters."""
        return query.selection_ranges(self._con, where, limit=self.sql_time_limit)

    def filters(self, where: str | None = None, chunk_rows: int = 1 << 20,
                only_3x3: bool = True, copy: bool = False, prefetch: bool = True,
                verify: bool = True):
        """Stream the selected layers' filters as :class:`~.query.FilterChunk` in filter-id
        order, never materialising the selection. A chunk's ``filters`` is a view of a
        reused buffer, valid until the next iteration, unless ``copy=True``. With
        ``verify`` each layer is checked against its digest as it streams by."""
        if not only_3x3:
            raise FilterDBError("only 3x3 filters are stored; other kernel shapes are counted "
                                "in the catalog (kernel_counts), not kept")
        starts, counts, lids = self.selection_ranges(where)
        return query.stream(self._reader, starts, counts, lids, chunk_rows=chunk_rows,
                            copy=copy, prefetch=prefetch,
                            checks=self.layer_checks() if verify else None)

    def read_filters(self, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Filters ``start .. start+count-1`` (committed rows only) as ``(count, 9)`` float32."""
        start, count = int(start), int(count)
        if start < 0 or count < 0 or start + count > self.n_filters:
            raise FilterDBError(f"filters {start}..{start + count - 1} are outside the "
                                f"{self.n_filters} committed filters")
        if out is None:
            out = aligned_empty(count)
        return self._reader.read_into(start, count, out)

    def row_source(self, verify: bool = True):
        """The filters as an engine source: pickles as a path (Dask workers read the files
        themselves). With ``verify`` every pass checks each layer it reads against the
        catalog's digest (:mod:`filterdb.store.digest`) and stops with one line naming the
        model and layer on a mismatch."""
        return RowReaderSource(read_rows, os.path.abspath(self.path), self.n_filters,
                               self.layer_checks() if verify else None)

    def layer_checks(self):
        """The expected digests of every layer (:class:`~.digest.LayerChecks`), read once
        per ``data_version``."""
        from .digest import LayerChecks  # lazy: start-up time (digest loads numba)

        key = (self.data_version, self.n_filters)
        if getattr(self, "_checks", None) is None or self._checks[0] != key:
            self._checks = (key, LayerChecks.from_catalog(self._con, self.path))
        return self._checks[1]

    def layer_filters(self, layer_id: int) -> np.ndarray:
        """One layer's 3x3 filters (a fresh array)."""
        r = self._con.execute("SELECT filter_start, filter_count FROM layers WHERE layer_id = ?",
                              (int(layer_id),)).fetchone()
        if r is None:
            raise FilterDBError(f"no layer {layer_id}")
        x = self.read_filters(r[0] or 0, r[1])
        _check_layer(self, int(layer_id), x)
        return x

    # -- writes ---------------------------------------------------------------------------
    def add_model(self, model, meta: dict | None = None, replace: bool = False):
        """Add a :class:`~filterdb.readers.Model`; see :mod:`filterdb.store.ingest`."""
        return add_model(self, model, meta, replace=replace)

    def add(self, obj, meta: dict | None = None, replace: bool = False, name: str | None = None):
        """Add a model file, a :class:`~filterdb.readers.Model` or a live model (torch
        ``nn.Module``, state dict, Keras model, ``onnx.ModelProto``; ``name`` becomes its
        path, and its model id unless ``meta`` gives ``model``). Returns the ``AddResult``."""
        from ..readers import to_model  # lazy: start-up time (readers load on first use)

        return self.add_model(to_model(obj, name), meta, replace=replace)

    def remove_model(self, model) -> int:
        return remove_model(self, model)

    def has_sha256(self, sha256: str) -> str | None:
        r = self._con.execute("SELECT model FROM models WHERE sha256 = ?", (sha256,)).fetchone()
        return r[0] if r else None

    def verify(self, checksums: bool = True) -> list[str]:
        """Catalog vs segment files: counts, ranges, overlaps, checksums. [] when consistent."""
        return verify(self, checksums=checksums)

    # -- the analysis's selection (filterdb.analysis.context) -------------------------------
    def layer_view_columns(self) -> list[str]:
        """The names of the layer view's columns (what ``where`` and ``by`` may use)."""
        return query.columns(self._con, "layer_view")

    def filter_layers(self, columns, where: str | None = None):
        """``columns`` of the selected layers that own filters (``filter_count > 0``), in
        ``layer_id`` order, as SQLite returns them (an integer column holding NULLs comes
        back as float)."""
        lim = self.sql_time_limit
        w = query.where_clause(self._con, "layer_view", where, lim)
        sql = (f"SELECT {', '.join(columns)} FROM layer_view WHERE filter_count > 0 AND {w} "
               "ORDER BY layer_id")
        return query.user_frame(self._con, sql, where, lim)

    # -- analysis cache ---------------------------------------------------------------------
    def _cache_con(self) -> sqlite3.Connection:
        return catalog.connect(self.path / catalog.CATALOG)

    def cache_get(self, key: str):
        """The value cached under ``key`` for this ``data_version``, or None (missing, stale
        or damaged: a damaged entry is dropped, see :func:`unpack_cache`)."""
        con = self._cache_con()
        try:
            r = con.execute("SELECT data_version, value FROM cache WHERE key = ?",
                            (key,)).fetchone()
            if r is None or int(r[0]) != self.data_version:
                return None
            try:
                return unpack_cache(r[1])
            except ValueError:
                _drop_cache(con, [key])
                return None
        finally:
            con.close()

    def cache_put(self, key: str, value) -> None:
        """Cache ``value`` (bytes, or anything JSON-able) for this ``data_version``, with a
        crc32 of the value (:func:`pack_cache`).

        Works on readers too (a short separate write transaction)."""
        con = self._cache_con()
        try:
            con.execute("INSERT OR REPLACE INTO cache(key, data_version, value, created_at) "
                        "VALUES (?, ?, ?, ?)", (key, self.data_version, pack_cache(value), now()))
        finally:
            con.close()

    def check_cache(self, drop: bool = True) -> list[str]:
        """The damaged analysis-cache entries (dropped with ``drop``), one line each."""
        con = self._cache_con()
        try:
            bad = []
            for key, v in con.execute("SELECT key, value FROM cache").fetchall():
                try:
                    unpack_cache(v)
                except ValueError as e:
                    bad.append((key, str(e)))
            if drop and bad:
                _drop_cache(con, [k for k, _ in bad])
        finally:
            con.close()
        verb = "dropped" if drop else "found"
        return [f"{verb} the damaged analysis cache entry {k} ({why}); it is recomputed "
                "when needed" for k, why in bad]

    # stored layer metrics (the ``layer_metrics`` table; health, docs/method.md section 5):
    # like the cache, a fresh connection, so readers store and see what they computed
    def layer_metrics(self, params: str) -> dict:
        """``{layer_id: metrics dict}`` stored under ``params`` (a fresh read, not the
        snapshot; NaN was stored as None). Each entry holds the ``filter_start``,
        ``filter_count`` and ``checksum`` of its layer when it was stored."""
        con = self._cache_con()
        try:
            rows = con.execute("SELECT layer_id, metrics FROM layer_metrics WHERE params = ?",
                               (params,)).fetchall()
        finally:
            con.close()
        return {int(lid): json.loads(m) for lid, m in rows}

    def put_layer_metrics(self, params: str, metrics: dict) -> bool:
        """Store ``{layer_id: {name: number}}`` under ``params`` in one transaction (all or
        nothing), each with its layer's filter range and checksum (of this snapshot), so an
        entry is only reused for the same filters; non-finite numbers are stored as None.
        Works on readers too. False (and a warning) when the catalog cannot be written,
        e.g. a read-only file system."""
        lids = [int(k) for k in metrics]
        rng = {}
        for i in range(0, len(lids), 500):
            part = lids[i:i + 500]
            rng.update((r[0], r[1:]) for r in self._con.execute(
                "SELECT layer_id, filter_start, filter_count, checksum FROM layers WHERE "
                f"layer_id IN ({', '.join('?' * len(part))})", part))
        dv = int(self.data_version)
        rows = []
        for lid, m in zip(lids, metrics.values()):
            fs, fc, ck = rng.get(lid, (None, None, None))
            m = {k: _finite(v) for k, v in m.items()}
            m.update(filter_start=fs, filter_count=fc, checksum=ck)
            rows.append((lid, params, json.dumps(m), dv))
        try:
            con = self._cache_con()
            try:
                con.execute("BEGIN IMMEDIATE")
                con.executemany("INSERT OR REPLACE INTO layer_metrics(layer_id, params, "
                                "metrics, data_version) VALUES (?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            finally:
                con.close()
        except sqlite3.Error as e:
            warnings.warn(f"{self.path}: layer metrics not stored ({e})", stacklevel=2)
            return False
        return True

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_reader", None) is not None:
            self._reader.close()
            self._reader = None
        if getattr(self, "_con", None) is not None:
            try:
                if self._con.in_transaction:
                    self._con.execute("COMMIT")
            finally:
                self._con.close()
                self._con = None
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_con", None) is None else \
            f"{self.n_models} models, {self.n_filters:,} filters"
        return f"<filterdb.Database {self.path} mode={self.mode!r}: {state}>"
