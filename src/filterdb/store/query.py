"""Selections: SQL WHERE expressions over ``layer_view`` / ``models``, and the chunked
stream of the selected layers' filters."""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import FilterDBError
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


def columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def model_table(con: sqlite3.Connection) -> str:
    """``model_view`` (typed free columns), or ``models`` in a database no writer has
    upgraded yet."""
    row = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'model_view'")
    return "model_view" if row.fetchone() else "models"


def where_clause(con: sqlite3.Connection, table: str, where: str | None) -> str:
    """``(where)`` checked to be one valid expression over ``table``'s columns."""
    if where is None or not str(where).strip():
        return "1"
    w = str(where)
    cols = ", ".join(columns(con, table))
    if ";" in w:
        raise FilterDBError(f"bad where {w!r}: ';' is not allowed (one SQL expression); "
                            f"columns: {cols}")
    try:
        con.execute(f"SELECT * FROM {table} WHERE ({w}) LIMIT 0").fetchall()
    except (sqlite3.Error, sqlite3.Warning) as e:
        raise FilterDBError(f"bad where {w!r} ({e}); columns: {cols}") from None
    return f"({w})"


def select_frame(con, table: str, where: str | None, order: str, columns=None):
    """Rows of ``table`` matching ``where`` (all columns, or ``columns``) as a DataFrame."""
    import pandas as pd

    w = where_clause(con, table, where)
    cols = "*" if columns is None else ", ".join(columns)
    df = pd.read_sql_query(f"SELECT {cols} FROM {table} WHERE {w} ORDER BY {order}", con)
    # integer columns holding NULLs come back as float: make them nullable integers
    for name, decl in con.execute(f"SELECT name, type FROM pragma_table_info('{table}')"):
        if "INT" in (decl or "").upper() and name in df and df[name].dtype.kind == "f":
            df[name] = df[name].astype("Int64")
    return df


def selection_ranges(con, where: str | None = None):
    """``(starts, counts, layer_ids)`` int64 arrays of the selected layers that own filters,
    in filter-id order."""
    w = where_clause(con, "layer_view", where)
    rows = con.execute(
        f"SELECT filter_start, filter_count, layer_id FROM layer_view "
        f"WHERE filter_count > 0 AND {w} ORDER BY filter_start").fetchall()
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
           copy: bool = False, prefetch: bool = True) -> Iterator[FilterChunk]:
    """Read the ranges in chunks into reused aligned buffers; with ``prefetch`` a reader
    thread fills the next buffer while the caller works on the current one."""
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    layer_ids = np.asarray(layer_ids, np.int64)
    total = int(counts.sum())
    if total == 0:
        return
    chunk_rows = max(1, int(chunk_rows))
    rows = min(chunk_rows, total)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    plans = chunk_plan(starts, counts, chunk_rows)
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
