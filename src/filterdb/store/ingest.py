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

import sqlite3
import zlib

import numpy as np

from ..errors import FilterDBError
from ..readers.base import Model
from .catalog import catalog_error, refresh_views, rollback
from .records import AddResult, _bump, _free_model, _log
from .segments import DTYPE


def layer_checksum(rows: np.ndarray) -> int:
    """crc32 (zlib) of a layer's filters as little-endian float32 bytes."""
    a = np.ascontiguousarray(rows, dtype=DTYPE)
    return zlib.crc32(memoryview(a.view(np.uint8).reshape(-1)))


def add_model(db, model: Model, meta: dict | None = None, replace: bool = False) -> AddResult:
    """Add a model's layers and 3x3 filters (see the module docstring for the protocol);
    the write goes through :class:`~filterdb.store.bulk.BulkWriter`, one commit."""
    from .bulk import (  # lazy: start-up time (digest loads numba)
        BulkWriter,
        layer_specs,
        model_spec,
    )

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
        refresh_views(con)
        dv = _bump(con)
        _log(con, "removed", name, sha, None, None, freed, None, dv)
        con.execute("COMMIT")
    except sqlite3.Error as e:
        rollback(con)
        raise catalog_error(db.path, e, "committing to the catalog; the removal is undone") \
            from None
    except BaseException:
        rollback(con)
        raise
    return freed
