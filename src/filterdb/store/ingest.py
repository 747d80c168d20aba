"""Adding and removing models: the write protocol.

1. The writer holds ``DB/lock`` (``fcntl.flock``; one writer at a time).
2. It reads ``committed_filters`` from the catalog and truncates the segment files to it
   (dropping whatever a crashed writer left past it).
3. It appends the model's 3x3 filters (float32 rows, layer order) and fsyncs the files.
4. One SQLite transaction inserts the model and its layers and moves ``committed_filters``
   and ``data_version`` forward.

A crash before step 4 leaves only bytes past ``committed_filters``: readers never look
there, the next writer truncates them. After step 4 everything is there.

The steps are implemented once, in :class:`filterdb.store.bulk.BulkWriter` (streamed
layers, batched commits).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ..errors import FilterDBError
from ..readers.base import Model
from .segments import DTYPE


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
    """The model id when the metadata gives none: the file's stem, or the folder's name for
    generic file names (``model.json``, ``saved_model.pb``, ...) and folder models."""
    from ..readers.folders import model_id

    stem = model_id(model.path) if model.path else ""
    return stem or model.sha256[:12]


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
    """Add a model's layers and 3x3 filters (see the module docstring for the protocol);
    the write goes through :class:`~filterdb.store.bulk.BulkWriter`, one commit."""
    from .bulk import BulkWriter, layer_specs, model_spec

    with BulkWriter(db) as bw:
        return bw.add(model_spec(model), layer_specs(model), meta, replace=replace)


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
