"""Adding and removing models: the write protocol.

1. The writer holds ``DB/lock`` (``fcntl.flock``; one writer at a time).
2. It reads ``committed_filters`` from the catalog and truncates the segment files to it
   (dropping whatever a crashed writer left past it).
3. It appends the model's 3x3 filters (float32 rows, layer order) and fsyncs the files.
4. One SQLite transaction inserts the model and its layers and moves ``committed_filters``
   and ``data_version`` forward.

A crash before step 4 leaves only bytes past ``committed_filters``: readers never look
there, the next writer truncates them. After step 4 everything is there.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import FilterDBError
from ..readers.base import Model
from .segments import DTYPE, SegmentWriter
from .vocab import DERIVED_COLUMNS, EXTRA_PREFIX, TEXT_COLUMNS, normalize_meta


@dataclass
class AddResult:
    status: str  # 'added' | 'exists' | 'replaced'
    model_id: int
    n_layers: int
    n_filters: int
    model: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status, "model_id": self.model_id, "model": self.model,
                "n_layers": self.n_layers, "n_filters": self.n_filters}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def layer_checksum(rows: np.ndarray) -> int:
    """crc32 (zlib) of a layer's filters as little-endian float32 bytes."""
    a = np.ascontiguousarray(rows, dtype=DTYPE)
    return zlib.crc32(memoryview(a.view(np.uint8).reshape(-1)))


def _derived_id(model: Model) -> str:
    stem = Path(model.path).stem if model.path else ""
    return stem or model.sha256[:12]


def _model_row(model: Model, meta: dict, model_name: str, n_filters: int) -> dict:
    """The ``models`` row: metadata first, computed facts where no metadata overrides."""
    row = {c: meta.get(c) for c in TEXT_COLUMNS}
    row["model"] = model_name
    computed = {
        "producer": model.producer,
        "producer_version": model.producer_version,
        "op_set": model.opset,
        "depth": model.n_conv_depths,
        "total_filters": model.total_filters,
        "filter_share_3x3": model.share_3x3,
        "kernel_counts": model.kernel_counts,
        "op_counts": dict(sorted(model.op_counts.items())),
    }
    for c in DERIVED_COLUMNS:
        row[c] = meta[c] if c in meta else computed[c]
    row["kernel_counts"] = json.dumps(row["kernel_counts"])
    row["op_counts"] = json.dumps(row["op_counts"])
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in meta.items() if k.startswith(EXTRA_PREFIX)}
    row.update(
        sha256=model.sha256,
        format=model.format,
        path=os.path.abspath(model.path) if model.path else None,
        depth_source=model.depth_source,
        n_layers=len(model.layers),
        filters_3x3=n_filters,
        extra=json.dumps(extra) if extra else None,
        warnings=json.dumps(list(model.warnings)) if model.warnings else None,
        added_at=now(),
    )
    return row


def _free_model(con, model_id: int, model_name: str) -> int:
    """Delete a model's catalog rows inside the caller's transaction; its filter ids are
    recorded in ``free_ranges``. Returns the number of freed filters."""
    rows = con.execute("SELECT filter_start, filter_count FROM layers WHERE model_id = ? "
                       "AND filter_count > 0 ORDER BY filter_start", (model_id,)).fetchall()
    from .query import coalesce

    freed = 0
    if rows:
        a = np.array(rows, dtype=np.int64)
        s, c = coalesce(a[:, 0], a[:, 1])
        t = now()
        con.executemany("INSERT INTO free_ranges(start, count, model, removed_at) "
                        "VALUES (?, ?, ?, ?)",
                        [(int(x), int(n), model_name, t) for x, n in zip(s, c)])
        freed = int(c.sum())
    con.execute("DELETE FROM layer_metrics WHERE layer_id IN "
                "(SELECT layer_id FROM layers WHERE model_id = ?)", (model_id,))
    con.execute("DELETE FROM layers WHERE model_id = ?", (model_id,))
    con.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
    return freed


def _bump(con, committed: int | None = None) -> int:
    dv = int(con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()[0]) + 1
    con.execute("UPDATE meta SET value = ? WHERE key = 'data_version'", (str(dv),))
    if committed is not None:
        con.execute("UPDATE meta SET value = ? WHERE key = 'committed_filters'", (str(committed),))
    return dv


def _log(con, action, model_name, sha, path, n_layers, n_filters, start, dv):
    from .. import __version__

    con.execute("INSERT INTO ingest_log(at, action, model, sha256, path, n_layers, n_filters, "
                "filter_start, data_version, filterdb_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (now(), action, model_name, sha, path, n_layers, n_filters, start, dv,
                 __version__))


def add_model(db, model: Model, meta: dict | None = None, replace: bool = False) -> AddResult:
    """Add a model's layers and 3x3 filters (see the module docstring for the protocol)."""
    db._require_writer()
    con = db._con
    meta = normalize_meta(meta)
    same = con.execute("SELECT model_id, model, n_layers, filters_3x3 FROM models "
                       "WHERE sha256 = ?", (model.sha256,)).fetchone()
    if same and not replace:
        return AddResult("exists", same[0], same[2], same[3], same[1])
    explicit = meta.get("model")
    name = explicit or (same[1] if same else _derived_id(model))
    clash = con.execute("SELECT model_id, sha256 FROM models WHERE model = ?", (name,)).fetchone()
    if clash and not (same and clash[0] == same[0]) and not replace:
        if explicit:
            raise FilterDBError(
                f"model id {name!r} is already in the database (a different file, sha256 "
                f"{clash[1][:12]}...); use replace or choose another model id")
        name = f"{name}-{model.sha256[:8]}"
    old_ids = {r[0] for r in (same, clash if replace else None) if r}

    meta_db = db._read_meta()
    committed = int(meta_db["committed_filters"])
    writer = SegmentWriter(db._filters_dir, db.segment_rows, committed)
    layer_rows = []
    try:
        for i, layer in enumerate(model.layers):
            c_out, c_in_g, kh, kw = layer.shape
            start, count, crc = None, 0, None
            if (kh, kw) == (3, 3) and layer.n_filters > 0:
                rows = layer.filters()
                crc = layer_checksum(rows)
                start = writer.append(rows)
                count = rows.shape[0]
            layer_rows.append((i, layer.name, layer.op, c_out, c_in_g * layer.groups, kh, kw,
                               layer.groups, layer.n_filters, layer.graph_depth,
                               layer.conv_depth, float(layer.conv_depth_norm), start, count, crc))
        writer.sync()
    finally:
        writer.close()
    n_filters = writer.position - committed
    row = _model_row(model, meta, name, n_filters)

    con.execute("BEGIN IMMEDIATE")
    try:
        now_committed = int(con.execute(
            "SELECT value FROM meta WHERE key = 'committed_filters'").fetchone()[0])
        if now_committed != committed:  # cannot happen while we hold the writer lock
            raise FilterDBError(f"{db.path}: the database changed during the write")
        for mid in sorted(old_ids):
            old = con.execute("SELECT model FROM models WHERE model_id = ?", (mid,)).fetchone()
            _free_model(con, mid, old[0])
        cols = list(row)
        cur = con.execute(f"INSERT INTO models({', '.join(cols)}) VALUES "
                          f"({', '.join('?' * len(cols))})", [row[c] for c in cols])
        model_id = cur.lastrowid
        con.executemany(
            "INSERT INTO layers(model_id, layer_index, name, op, c_out, c_in, kh, kw, groups, "
            "n_filters, graph_depth, conv_depth, conv_depth_norm, filter_start, filter_count, "
            "checksum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(model_id, *r) for r in layer_rows])
        dv = _bump(con, writer.position)
        status = "replaced" if old_ids else "added"
        _log(con, status, name, model.sha256, row["path"], len(layer_rows), n_filters,
             committed if n_filters else None, dv)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return AddResult(status, model_id, len(layer_rows), n_filters, name)


def find_model(con, model) -> tuple[int, str]:
    """``(model_id, model)`` of a model given by its id string, numeric id or sha256."""
    if isinstance(model, (int, np.integer)) or (isinstance(model, str) and model.isdigit()):
        r = con.execute("SELECT model_id, model FROM models WHERE model_id = ?",
                        (int(model),)).fetchone()
        if r:
            return r
    r = con.execute("SELECT model_id, model FROM models WHERE model = ? OR sha256 = ?",
                    (str(model), str(model))).fetchone()
    if not r:
        raise FilterDBError(f"no model {model!r} in the database; see 'filterdb ls'")
    return r


def remove_model(db, model) -> int:
    """Remove a model's catalog rows; its filter ids become free (unreferenced) ranges.
    Returns the number of freed filters."""
    db._require_writer()
    con = db._con
    mid, name = find_model(con, model)
    con.execute("BEGIN IMMEDIATE")
    try:
        sha = con.execute("SELECT sha256 FROM models WHERE model_id = ?", (mid,)).fetchone()[0]
        freed = _free_model(con, mid, name)
        dv = _bump(con)
        _log(con, "removed", name, sha, None, None, freed, None, dv)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return freed
