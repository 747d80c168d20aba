"""Selections: SQL WHERE expressions over ``layer_view`` / ``models``, and the chunked
stream of the selected layers' filters."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import FilterDBError
from .catalog import catalog_error
from .segments import SegmentReader, aligned_empty


@dataclass
class FilterChunk:
    """A block of selected filters.

    ``filters``: ``(m, 9)`` float32; ``layer_ids``: the layer of each row; ``start``: the
    position of the first row in the selection (rows of one selection are numbered 0..N-1
    in filter-id order). Unless the stream was asked for copies, ``filters`` is a view of a
    reused buffer, valid only until the next chunk is requested.
    """

    filters: np.ndarray
    layer_ids: np.ndarray
    start: int


# ---- user SQL: read only, the query tables only, a time limit --------------------------------

SQL_TIME_LIMIT = 10.0  # seconds a statement holding a user's SQL may run (Database.sql_time_limit)
QUERY_TABLES = ("layer_view", "model_view", "models")  # what a user's SQL may read
_VIEW_TABLES = {"layer_view": ("layers", "models"), "model_view": ("models",)}  # through them
_EPONYMOUS = ("json_each", "json_tree")  # table-valued functions that read only their argument
_DENIED_FUNCTIONS = {"load_extension"}
# SQLite reads (and "updates") these itself when it (re)loads the schema; the schema is
# the open DDL of catalog.py, no data
_SCHEMA = ("sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema")
_ACTIONS = ("CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE",
            "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE",
            "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE",
            "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT",
            "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH",
            "ALTER_TABLE", "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION",
            "SAVEPOINT", "RECURSIVE")
_ACTION_NAMES = {getattr(sqlite3, "SQLITE_" + a): a.lower().replace("_", " ")
                 for a in _ACTIONS if hasattr(sqlite3, "SQLITE_" + a)}


class UserSQL:
    """Runs statements holding a user's SQL under SQLite's authorizer (read only; only
    :data:`QUERY_TABLES`, the tables under ``layer_view`` through it, and the schema; no
    recursive queries, no ``load_extension``) and a progress handler that stops them after
    ``limit`` seconds. Errors become one-line :class:`FilterDBError` s naming ``what``."""

    def __init__(self, con: sqlite3.Connection, what: str, limit: float | None = None):
        self.con, self.what = con, what
        self.limit = SQL_TIME_LIMIT if limit is None else float(limit)
        self.denied: str | None = None
        self._deadline = 0.0
        self.stopped = False

    def _auth(self, action, arg1, arg2, dbname, source):
        if action == sqlite3.SQLITE_SELECT:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            table = (arg1 or "").lower()
            if table in QUERY_TABLES or table in _EPONYMOUS or table in _SCHEMA \
                    or table in _VIEW_TABLES.get((source or "").lower(), ()):
                return sqlite3.SQLITE_OK
            self.denied = self.denied or f"reading table {arg1!r} is not allowed"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() not in _DENIED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            self.denied = self.denied or f"the function {arg2}() is not allowed"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_UPDATE and (arg1 or "").lower() in _SCHEMA:
            return sqlite3.SQLITE_OK  # SQLite (re)loading the schema; a SELECT cannot update
        if action == getattr(sqlite3, "SQLITE_RECURSIVE", 33):
            self.denied = self.denied or "recursive queries are not allowed"
            return sqlite3.SQLITE_DENY
        name = _ACTION_NAMES.get(action, f"action {action}")
        self.denied = self.denied or f"{name} is not allowed (read only)"
        return sqlite3.SQLITE_DENY

    def _tick(self):
        if time.monotonic() > self._deadline:
            self.stopped = True
            return 1
        return 0

    def run(self, sql: str, params=()) -> tuple[list, list[str]]:
        """``(rows, column names)`` of one statement."""
        con = self.con
        self.denied, self.stopped = None, False
        self._deadline = time.monotonic() + self.limit
        con.set_authorizer(self._auth)
        con.set_progress_handler(self._tick, 1000)
        try:
            cur = con.execute(sql, params)
            rows = cur.fetchall()
            return rows, [d[0] for d in cur.description or ()]
        except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as e:
            raise self.error(e) from None
        finally:
            con.set_progress_handler(None, 0)
            con.set_authorizer(_allow_all)

    def error(self, e) -> FilterDBError:
        name = getattr(e, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FULL", "SQLITE_IOERR")):
            db = self.con.execute("PRAGMA database_list").fetchone()
            return catalog_error(db[2] if db else "catalog", e)
        if self.stopped:
            why = (f"stopped after {self.limit:g} s (the time limit for a selection; "
                   "simplify the expression)")
        elif self.denied:
            why = f"{self.denied}; an expression may read only {', '.join(QUERY_TABLES)}"
        else:
            why = str(e)
        return FilterDBError(f"{self.what} ({why})")


def _allow_all(*args):
    return sqlite3.SQLITE_OK


def columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def model_table(con: sqlite3.Connection) -> str:
    """``model_view`` (typed free columns), or ``models`` in a database no writer has
    upgraded yet."""
    row = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'model_view'")
    return "model_view" if row.fetchone() else "models"


def where_clause(con: sqlite3.Connection, table: str, where: str | None,
                 limit: float | None = None) -> str:
    """``(where)`` checked to be one valid, allowed expression over ``table``'s columns
    (see :class:`UserSQL`)."""
    if where is None or not str(where).strip():
        return "1"
    w = str(where)
    cols = ", ".join(columns(con, table))
    if ";" in w:
        raise FilterDBError(f"bad where {w!r}: ';' is not allowed (one SQL expression); "
                            f"columns: {cols}")
    guard = UserSQL(con, f"bad where {w!r}", limit)
    try:
        guard.run(f"SELECT * FROM {table} WHERE ({w}) LIMIT 0")
    except FilterDBError as e:
        raise FilterDBError(f"{e}; columns: {cols}") from None
    return f"({w})"


def user_rows(con, sql: str, where: str | None, limit: float | None = None):
    """``(rows, column names)`` of a statement holding the user's ``where`` (or any user
    SQL), run under :class:`UserSQL`."""
    return UserSQL(con, f"bad where {where!r}" if where else "bad query", limit).run(sql)


def user_frame(con, sql: str, where: str | None, limit: float | None = None):
    """:func:`user_rows` as a DataFrame (as ``pandas.read_sql_query`` builds it)."""
    import pandas as pd  # lazy: start-up time (pandas only for a DataFrame)

    rows, cols = user_rows(con, sql, where, limit)
    return pd.DataFrame.from_records(rows, columns=cols, coerce_float=True)


def select_frame(con, table: str, where: str | None, order: str, columns=None,
                 limit: float | None = None):
    """Rows of ``table`` matching ``where`` (all columns, or ``columns``) as a DataFrame."""
    w = where_clause(con, table, where, limit)
    cols = "*" if columns is None else ", ".join(columns)
    df = user_frame(con, f"SELECT {cols} FROM {table} WHERE {w} ORDER BY {order}", where, limit)
    # integer columns holding NULLs come back as float: make them nullable integers
    for name, decl in con.execute(f"SELECT name, type FROM pragma_table_info('{table}')"):
        if "INT" in (decl or "").upper() and name in df and df[name].dtype.kind == "f":
            df[name] = df[name].astype("Int64")
    return df


def selection_ranges(con, where: str | None = None, limit: float | None = None):
    """``(starts, counts, layer_ids)`` int64 arrays of the selected layers that own filters,
    in filter-id order."""
    w = where_clause(con, "layer_view", where, limit)
    rows, _ = user_rows(con, f"SELECT filter_start, filter_count, layer_id FROM layer_view "
                             f"WHERE filter_count > 0 AND {w} ORDER BY filter_start", where, limit)
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy()


def coalesce(starts: np.ndarray, counts: np.ndarray):
    """Merge ranges that touch (``start[i+1] == start[i] + count[i]``) into single reads."""
    if len(starts) == 0:
        return starts, counts
    ends = starts + counts
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] != ends[:-1]
    idx = np.flatnonzero(new)
    last = np.append(idx[1:], len(starts)) - 1
    return starts[idx], ends[last] - starts[idx]


def chunk_plan(starts, counts, chunk_rows: int):
    """Split ranges into chunks of at most ``chunk_rows`` rows: yields
    ``(selection_position, [(filter_start, n), ...])``, touching ranges merged."""
    s, c = coalesce(np.asarray(starts, np.int64), np.asarray(counts, np.int64))
    pos, pieces, fill = 0, [], 0
    for st, n in zip(s.tolist(), c.tolist()):
        while n > 0:
            take = min(n, chunk_rows - fill)
            pieces.append((st, take))
            st += take
            n -= take
            fill += take
            if fill == chunk_rows:
                yield pos, pieces
                pos += fill
                pieces, fill = [], 0
    if fill:
        yield pos, pieces


def stream(reader: SegmentReader, starts, counts, layer_ids, chunk_rows: int = 1 << 20,
           copy: bool = False, prefetch: bool = True, checks=None) -> Iterator[FilterChunk]:
    """Read the ranges in chunks into reused aligned buffers; with ``prefetch`` a reader
    thread fills the next buffer while the caller works on the current one. With
    ``checks`` (:class:`~.digest.LayerChecks`) each layer is compared with its digest as
    it streams by (a damaged one raises before its last chunk is handed out)."""
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    layer_ids = np.asarray(layer_ids, np.int64)
    total = int(counts.sum())
    if total == 0:
        return
    chunk_rows = max(1, int(chunk_rows))
    rows = min(chunk_rows, total)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    plans = chunk_plan(starts, counts, chunk_rows)
    if checks is not None:
        from .digest import StreamChecks  # lazy: start-up time (digest loads numba)

        checks = StreamChecks(checks, layer_ids, counts)
    bufs = [aligned_empty(rows)] + ([aligned_empty(rows)] if prefetch else [])

    def load(plan, buf):
        pos, pieces = plan
        p = 0
        for st, n in pieces:
            reader.read_into(st, n, buf[p:p + n])
            p += n
        return pos, p

    def labels(pos, m):
        i0 = int(np.searchsorted(bounds, pos, side="right")) - 1
        i1 = int(np.searchsorted(bounds, pos + m, side="left"))
        reps = np.minimum(bounds[i0 + 1:i1 + 1], pos + m) - np.maximum(bounds[i0:i1], pos)
        return np.repeat(layer_ids[i0:i1], reps)

    if not prefetch:
        for plan in plans:
            pos, m = load(plan, bufs[0])
            f = bufs[0][:m]
            if checks is not None:
                checks.check(f, pos)
            yield FilterChunk(f.copy() if copy else f, labels(pos, m), pos)
        return

    ex = ThreadPoolExecutor(1, thread_name_prefix="filterdb-read")
    pending = None
    try:
        first = next(plans, None)
        if first is None:
            return
        pending = ex.submit(load, first, bufs[0])
        i = 0
        while pending is not None:
            pos, m = pending.result()
            cur = bufs[i % 2]
            nxt = next(plans, None)
            pending = ex.submit(load, nxt, bufs[(i + 1) % 2]) if nxt is not None else None
            f = cur[:m]
            if checks is not None:
                checks.check(f, pos)
            yield FilterChunk(f.copy() if copy else f, labels(pos, m), pos)
            i += 1
    finally:
        if pending is not None:
            pending.cancel()
            try:
                pending.result()
            except Exception:
                pass
        ex.shutdown(wait=True)
