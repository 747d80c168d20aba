"""The catalog records both writers share (:mod:`.ingest`, one model; :mod:`.bulk`, streamed):
the add result, timestamps, the model-removal and version-bump steps of the write protocol
(see :mod:`filterdb.store.ingest`) and the ingest log."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .. import __version__
from ..readers.base import Model
from ..readers.folders import model_id as folder_model_id
from .query import coalesce


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


def _derived_id(model: Model) -> str:
    """The model id when the metadata gives none: the file's stem, or the folder's name for
    generic file names (``model.json``, ``saved_model.pb``, ...) and folder models."""
    stem = folder_model_id(model.path) if model.path else ""
    return stem or model.sha256[:12]


def _free_model(con, model_id: int, model_name: str) -> int:
    """Delete a model's catalog rows inside the caller's transaction; its filter ids are
    recorded in ``free_ranges``. Returns the number of freed filters."""
    rows = con.execute("SELECT filter_start, filter_count FROM layers WHERE model_id = ? "
                       "AND filter_count > 0 ORDER BY filter_start", (model_id,)).fetchall()
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
    con.execute("INSERT INTO ingest_log(at, action, model, sha256, path, n_layers, n_filters, "
                "filter_start, data_version, filterdb_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (now(), action, model_name, sha, path, n_layers, n_filters, start, dv,
                 __version__))
