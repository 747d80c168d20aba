"""Streaming ingest: models whose 3x3 filters arrive as chunks, never whole in memory.

:class:`BulkWriter` is the one write path of the store (``Database.add_model`` uses it
too). It follows the protocol of :mod:`filterdb.store.ingest`: the writer lock is held by
the database, the segment files are truncated to ``committed_filters``, the filters are
appended (per-layer crc32 computed incrementally, chunk by chunk), fsynced, and one SQLite
transaction inserts the catalog rows and moves ``committed_filters`` forward.

Atomicity: a *commit* is all-or-nothing. By default (``commit_rows=0``) every model is
committed on its own, so a killed import leaves the models committed so far, the partial
model's bytes past ``committed_filters`` are dropped by the next writer, and a re-run
skips the models already present (same ``sha256``) and completes. With ``commit_rows=n``
models are committed in batches of at least ``n`` filters (fewer fsyncs and transactions;
a kill loses at most the current batch).
"""
from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import FilterDBError
from ..readers.base import kernel_key
from .catalog import catalog_error, refresh_views, rollback
from .digest import digest_hex, piece_sums
from .records import AddResult, _bump, _derived_id, _free_model, _log, now
from .segments import DTYPE, ROW_FLOATS, SegmentWriter
from .vocab import DERIVED_COLUMNS, EXTRA_PREFIX, TEXT_COLUMNS, normalize_meta

# Layers whose filters are not stored (kernels other than 3x3, larger than 1x1) get their
# metrics computed at ingest (filterdb.kernels.assessment.weight_metrics with this sparsity
# epsilon) and stored in layer_metrics under this params key, so the database can assess
# them exactly as ``filterdb check`` does.
INGEST_EPS = 0.01
INGEST_METRICS_PARAMS = json.dumps({"eps": INGEST_EPS, "orthogonality": True,
                                    "source": "ingest", "version": 1}, sort_keys=True)


@dataclass
class LayerSpec:
    """One conv layer of a streamed model.

    ``n_filters`` counts every ``(kh, kw)`` slice (``c_out * c_in / groups``). For a 3x3
    layer ``chunks`` yields its filters as ``(m, 9)`` float32 arrays, ``n_filters`` rows in
    all, in order; a chunk may be a reused buffer (it is written before the next is asked).
    """

    n_filters: int
    kh: int | None = 3
    kw: int | None = 3
    name: str | None = None
    op: str | None = "Conv"
    c_out: int | None = None
    c_in: int | None = None  # full input channels (c_in / groups * groups)
    groups: int | None = None
    graph_depth: int | None = None
    conv_depth: int = 0
    conv_depth_norm: float = 0.0
    chunks: Iterable[np.ndarray] | None = None
    extra: dict | None = None
    metrics: dict | None = None  # ingest metrics of a layer whose filters are not stored

    @property
    def is_3x3(self) -> bool:
        return (self.kh, self.kw) == (3, 3)


@dataclass
class ModelSpec:
    """The per-model facts a streamed model brings (besides user metadata)."""

    sha256: str
    format: str | None = None
    path: str | None = None
    name: str = ""  # the model id used when the metadata gives none
    depth_source: str | None = None
    producer: str | None = None
    producer_version: str | None = None
    opset: int | None = None
    op_counts: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # from the file; user metadata overrides it


def model_spec(model) -> ModelSpec:
    """The :class:`ModelSpec` of a :class:`~filterdb.readers.Model`."""
    return ModelSpec(sha256=model.sha256, format=model.format, path=model.path,
                     name=_derived_id(model), depth_source=model.depth_source,
                     producer=model.producer, producer_version=model.producer_version,
                     opset=model.opset, op_counts=dict(model.op_counts),
                     warnings=list(model.warnings),
                     metadata=dict(getattr(model, "metadata", None) or {}))


def layer_specs(model) -> Iterator[LayerSpec]:
    """The :class:`LayerSpec` of each layer of a :class:`~filterdb.readers.Model`; layers
    with kernels other than 3x3 and 1x1 carry their metrics (see :data:`INGEST_EPS`)."""
    from ..kernels.assessment import weight_metrics  # lazy: start-up time (numba, scipy)

    for layer in model.layers:
        c_out, c_in_g, kh, kw = layer.shape
        metrics = None
        if (kh, kw) != (3, 3) and kh * kw > 1 and layer.n_filters > 0:
            metrics = weight_metrics(layer.weight, INGEST_EPS)
        yield LayerSpec(
            n_filters=layer.n_filters, kh=kh, kw=kw, name=layer.name, op=layer.op,
            c_out=c_out, c_in=c_in_g * layer.groups, groups=layer.groups,
            graph_depth=layer.graph_depth, conv_depth=layer.conv_depth,
            conv_depth_norm=float(layer.conv_depth_norm),
            chunks=[layer.filters()] if (kh, kw) == (3, 3) else None, metrics=metrics)


def computed_facts(spec: ModelSpec, kernels: Counter, depths: set) -> dict:
    """The derived model columns, from the layers seen (same rules as ``Model``)."""
    total = sum(n for k, n in kernels.items() if k != (1, 1))
    n3 = kernels.get((3, 3), 0)
    counts = Counter({kernel_key(k): n for k, n in kernels.items()})
    return {
        "producer": spec.producer,
        "producer_version": spec.producer_version,
        "op_set": spec.opset,
        "depth": len(depths),
        "total_filters": total,
        "filter_share_3x3": n3 / total if total else 0.0,
        "kernel_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "op_counts": dict(sorted(spec.op_counts.items())),
    }


def model_row(spec: ModelSpec, meta: dict, name: str, computed: dict, n_layers: int,
              n_filters: int) -> dict:
    """The ``models`` row: metadata first, computed facts where no metadata overrides."""
    row = {c: meta.get(c) for c in TEXT_COLUMNS}
    row["model"] = name
    for c in DERIVED_COLUMNS:
        row[c] = meta[c] if c in meta else computed[c]
    # one canonical order, given or computed: kernels by count, operators by name
    row["kernel_counts"] = json.dumps(dict(sorted(row["kernel_counts"].items(),
                                                  key=lambda kv: (-kv[1], kv[0]))))
    row["op_counts"] = json.dumps(dict(sorted(row["op_counts"].items())))
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in meta.items() if k.startswith(EXTRA_PREFIX)}
    row.update(
        sha256=spec.sha256,
        format=spec.format,
        path=os.path.abspath(spec.path) if spec.path else None,
        depth_source=spec.depth_source,
        n_layers=n_layers,
        filters_3x3=n_filters,
        extra=json.dumps(extra) if extra else None,
        warnings=json.dumps(list(spec.warnings)) if spec.warnings else None,
        added_at=now(),
    )
    return row


_LAYER_COLS = ("layer_index", "name", "op", "c_out", "c_in", "kh", "kw", "groups", "n_filters",
               "graph_depth", "conv_depth", "conv_depth_norm", "filter_start", "filter_count",
               "checksum", "extra", "digest")


@dataclass
class _Pending:
    result: object  # AddResult, model_id filled at commit
    row: dict
    layer_rows: list
    old_ids: set
    start: int
    metrics_rows: list = field(default_factory=list)  # (layer_index, metrics JSON)


class BulkWriter:
    """Adds streamed models to a database opened with ``mode='w'``.

    Use as a context manager: leaving it normally commits what is pending; leaving it by an
    exception drops the uncommitted models (their bytes are truncated).
    """

    def __init__(self, db, commit_rows: int = 0):
        db._require_writer()
        self.db = db
        self.commit_rows = max(0, int(commit_rows))
        self._committed = int(db._read_meta()["committed_filters"])
        self._writer: SegmentWriter | None = None
        self._pending: list[_Pending] = []
        self._pending_sha: dict[str, _Pending] = {}
        self._pending_names: set[str] = set()
        self._pending_rows = 0

    # -- writing ----------------------------------------------------------------------------
    @property
    def writer(self) -> SegmentWriter:
        if self._writer is None:
            self._writer = SegmentWriter(self.db._filters_dir, self.db.segment_rows,
                                         self._committed)
        return self._writer

    def _resolve(self, spec: ModelSpec, meta: dict, replace: bool):
        """``(existing AddResult or None, model id, ids of models to replace)``."""
        con = self.db._con
        p = self._pending_sha.get(spec.sha256)
        if p is not None:
            r = p.result
            return AddResult("exists", r.model_id, r.n_layers, r.n_filters, r.model), None, None
        same = con.execute("SELECT model_id, model, n_layers, filters_3x3 FROM models "
                           "WHERE sha256 = ?", (spec.sha256,)).fetchone()
        if same and not replace:
            return AddResult("exists", same[0], same[2], same[3], same[1]), None, None
        explicit = meta.get("model")
        name = explicit or (same[1] if same else spec.name or spec.sha256[:12])
        pending_names = self._pending_names
        clash = con.execute("SELECT model_id, sha256 FROM models WHERE model = ?",
                            (name,)).fetchone()
        if name in pending_names or (clash and not (same and clash[0] == same[0])
                                     and not replace):
            if explicit:
                other = clash[1][:12] if clash and name not in pending_names else "pending"
                raise FilterDBError(
                    f"model id {name!r} is already in the database (a different file, sha256 "
                    f"{other}...); use replace or choose another model id")
            name = f"{name}-{spec.sha256[:8]}"
        old_ids = {r[0] for r in (same, clash if replace else None) if r}
        return None, name, old_ids

    def add(self, spec: ModelSpec, layers: Iterable[LayerSpec], meta: dict | None = None,
            replace: bool = False):
        """Add one model; returns its :class:`~filterdb.store.ingest.AddResult` (status
        ``exists`` without consuming ``layers`` when the sha256 is already present)."""
        meta = normalize_meta(meta)
        if spec.metadata:  # what the file says, where the user says nothing
            meta = {**normalize_meta(spec.metadata), **meta}
        existing, name, old_ids = self._resolve(spec, meta, replace)
        if existing is not None:
            return existing
        writer = self.writer
        start = writer.position
        layer_rows, kernels, depths, metrics_rows = [], Counter(), set(), []
        try:
            for i, layer in enumerate(layers):
                lstart, count, crc, dig = None, 0, None, None
                if layer.is_3x3 and layer.n_filters > 0:
                    lstart, count, crc, dig = self._write_layer(layer, writer, name, i)
                if layer.kh is not None and layer.kw is not None:
                    kernels[(int(layer.kh), int(layer.kw))] += int(layer.n_filters)
                depths.add(layer.conv_depth)
                if layer.metrics is not None:
                    metrics_rows.append((i, json.dumps(
                        {k: (float(v) if v == v else None) for k, v in layer.metrics.items()})))
                layer_rows.append((i, layer.name, layer.op, layer.c_out, layer.c_in, layer.kh,
                                   layer.kw, layer.groups, int(layer.n_filters),
                                   layer.graph_depth, int(layer.conv_depth),
                                   float(layer.conv_depth_norm), lstart, count, crc,
                                   json.dumps(layer.extra) if layer.extra else None, dig))
        except BaseException:
            writer.rewind(start)
            raise
        n_filters = writer.position - start
        row = model_row(spec, meta, name, computed_facts(spec, kernels, depths),
                        len(layer_rows), n_filters)
        result = AddResult("replaced" if old_ids else "added", -1, len(layer_rows), n_filters,
                           name)
        self._pending.append(_Pending(result, row, layer_rows, old_ids, start, metrics_rows))
        self._pending_sha[spec.sha256] = self._pending[-1]
        self._pending_names.add(name)
        self._pending_rows += n_filters
        if self._pending_rows >= self.commit_rows:
            self.commit()
        return result

    @staticmethod
    def _write_layer(layer: LayerSpec, writer: SegmentWriter, model: str, index: int):
        first, crc, got = writer.position, 0, 0
        da = dbs = 0
        want = int(layer.n_filters)
        for chunk in layer.chunks or ():
            a = np.asarray(chunk)
            if a.dtype != DTYPE or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dtype=DTYPE)
            a = a.reshape(-1, ROW_FLOATS)
            got += a.shape[0]
            if got > want:
                break
            crc = zlib.crc32(memoryview(a.view(np.uint8).reshape(-1)), crc)
            pa, pb = piece_sums(a, got - a.shape[0])
            da, dbs = da + pa, dbs + pb
            writer.append(a)
        if got != want:
            raise FilterDBError(f"model {model!r}, layer {index} ({layer.name}): "
                                f"{got if got <= want else 'more than ' + str(want)} filter "
                                f"rows given, {want} expected")
        return first, want, crc, digest_hex(da, dbs)

    def commit(self) -> None:
        """fsync the pending models' filters, then one transaction inserts them all."""
        if not self._pending:
            return

        writer = self.writer
        writer.sync()
        con = self.db._con
        con.execute("BEGIN IMMEDIATE")
        try:
            now_committed = int(con.execute(
                "SELECT value FROM meta WHERE key = 'committed_filters'").fetchone()[0])
            if now_committed != self._committed:  # cannot happen while we hold the lock
                raise FilterDBError(f"{self.db.path}: the database changed during the write")
            ids = []
            for p in self._pending:
                for mid in sorted(p.old_ids):
                    old = con.execute("SELECT model FROM models WHERE model_id = ?",
                                      (mid,)).fetchone()
                    if old:
                        _free_model(con, mid, old[0])
                cols = list(p.row)
                cur = con.execute(f"INSERT INTO models({', '.join(cols)}) VALUES "
                                  f"({', '.join('?' * len(cols))})", [p.row[c] for c in cols])
                model_id = cur.lastrowid
                ids.append(model_id)
                con.executemany(
                    f"INSERT INTO layers(model_id, {', '.join(_LAYER_COLS)}) VALUES "
                    f"({', '.join('?' * (len(_LAYER_COLS) + 1))})",
                    [(model_id, *r) for r in p.layer_rows])
            refresh_views(con)
            dv = _bump(con, writer.position)
            for p, model_id in zip(self._pending, ids):
                con.executemany(
                    "INSERT OR REPLACE INTO layer_metrics(layer_id, params, metrics, "
                    "data_version) SELECT layer_id, ?, ?, ? FROM layers WHERE model_id = ? "
                    "AND layer_index = ?",
                    [(INGEST_METRICS_PARAMS, m, dv, model_id, i) for i, m in p.metrics_rows])
            for p in self._pending:
                r = p.result
                _log(con, r.status, r.model, p.row["sha256"], p.row["path"], r.n_layers,
                     r.n_filters, p.start if r.n_filters else None, dv)
            con.execute("COMMIT")
        except sqlite3.Error as e:
            rollback(con)
            raise catalog_error(self.db.path, e, "committing to the catalog; the write is undone") \
                from None
        except BaseException:
            rollback(con)
            raise
        for p, mid in zip(self._pending, ids):
            p.result.model_id = mid
        self._committed = writer.position
        self._pending, self._pending_rows = [], 0
        self._pending_sha, self._pending_names = {}, set()

    def abort(self) -> None:
        """Drop the uncommitted models (their bytes are truncated)."""
        self._pending, self._pending_rows = [], 0
        self._pending_sha, self._pending_names = {}, set()
        if self._writer is not None:
            self._writer.rewind(self._committed)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        finally:
            self.close()
