"""The SQLite catalog (``catalog.sqlite``, WAL mode): models, layers, meta, cache."""
from __future__ import annotations

import json
import os
import re
import sqlite3

from ..errors import DiskFullError, FilterDBError

FORMAT_VERSION = 1
CATALOG = "catalog.sqlite"

MODEL_COLUMNS = (
    # (name, SQL type)
    ("model_id", "INTEGER PRIMARY KEY"),
    ("model", "TEXT NOT NULL UNIQUE"),
    ("sha256", "TEXT NOT NULL UNIQUE"),
    ("format", "TEXT"),
    ("path", "TEXT"),
    ("name", "TEXT"),
    ("task", "TEXT"),
    ("visual_category", "TEXT"),
    ("training_dataset", "TEXT"),
    ("pretraining_dataset", "TEXT"),
    ("architecture", "TEXT"),
    ("paper", "TEXT"),
    ("url", "TEXT"),
    ("dataset_url", "TEXT"),
    ("accessible", "TEXT"),
    ("source", "TEXT"),
    ("producer", "TEXT"),
    ("producer_version", "TEXT"),
    ("op_set", "INTEGER"),
    ("depth", "INTEGER"),
    ("depth_source", "TEXT"),
    ("n_layers", "INTEGER"),
    ("total_filters", "INTEGER"),
    ("filters_3x3", "INTEGER"),
    ("filter_share_3x3", "REAL"),
    ("kernel_counts", "TEXT"),
    ("op_counts", "TEXT"),
    ("extra", "TEXT"),
    ("warnings", "TEXT"),
    ("added_at", "TEXT"),
)

LAYER_COLUMNS = (
    ("layer_id", "INTEGER PRIMARY KEY"),
    ("model_id", "INTEGER NOT NULL REFERENCES models(model_id)"),
    ("layer_index", "INTEGER NOT NULL"),
    ("name", "TEXT"),
    ("op", "TEXT"),
    ("c_out", "INTEGER"),
    ("c_in", "INTEGER"),
    ("kh", "INTEGER"),
    ("kw", "INTEGER"),
    ("groups", "INTEGER"),
    ("n_filters", "INTEGER"),
    ("graph_depth", "INTEGER"),
    ("conv_depth", "INTEGER"),
    ("conv_depth_norm", "REAL"),
    ("filter_start", "INTEGER"),
    ("filter_count", "INTEGER NOT NULL"),
    ("checksum", "INTEGER"),
    ("extra", "TEXT"),  # per-layer free columns (JSON), e.g. carried through from dataset.h5
    ("digest", "TEXT"),  # position-weighted word sums (store/digest.py), checked by every pass
)

# layer_view: every layer column, then every model column except model_id; the model's
# display name is renamed model_name (name is the layer's name). model_view: the models
# table. Both add one typed column x_KEY per free metadata key (json_extract of the model's
# extra keeps numbers, booleans (1/0) and strings as such), and compare the controlled
# columns without regard to case, as their values are stored normalised.
_VIEW_MODEL_COLS = [c for c, _ in MODEL_COLUMNS if c != "model_id"]
CONTROLLED = ("task", "visual_category")
_FREE_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _model_col(c: str, alias: str = "m") -> str:
    if c in CONTROLLED:
        return f"{alias}.{c} COLLATE NOCASE AS {c}"
    return f"{alias}.{c}"


def _free_cols(keys, alias: str = "m") -> str:
    return "".join(f", json_extract({alias}.extra, '$.\"{k}\"') AS x_{k}" for k in keys)


def _view_sql(keys=()) -> str:
    mcols = ", ".join(f"m.{c} AS model_name" if c == "name" else _model_col(c)
                      for c in _VIEW_MODEL_COLS)
    # the layer's extra is layer_extra (extra is the model's)
    lcols = ", ".join(f"l.{c} AS layer_extra" if c == "extra" else f"l.{c}"
                      for c, _ in LAYER_COLUMNS)
    return (f"CREATE VIEW IF NOT EXISTS layer_view AS SELECT {lcols}, {mcols}{_free_cols(keys)} "
            "FROM layers l JOIN models m ON l.model_id = m.model_id")


def _model_view_sql(keys=()) -> str:
    cols = ", ".join(_model_col(c) for c, _ in MODEL_COLUMNS)
    return f"CREATE VIEW IF NOT EXISTS model_view AS SELECT {cols}{_free_cols(keys)} FROM models m"


def declared_type(column: str) -> str:
    """The SQL type a ``models`` or ``layers`` column is declared with ('' if none)."""
    for c, t in MODEL_COLUMNS + LAYER_COLUMNS:
        if c == column:
            return t.split()[0]
    return ""


def free_keys(con: sqlite3.Connection) -> list[str]:
    """The free metadata keys of the stored models that can be columns (``x_KEY``)."""
    rows = con.execute("SELECT DISTINCT j.key FROM models m, json_each(m.extra) j "
                       "WHERE m.extra IS NOT NULL ORDER BY j.key").fetchall()
    return [k for (k,) in rows if isinstance(k, str) and _FREE_KEY.match(k)]


def refresh_views(con: sqlite3.Connection) -> None:
    """Rebuild the views when the set of free keys changed (inside the writer's transaction)."""
    keys = free_keys(con)
    have = con.execute("SELECT value FROM meta WHERE key = 'view_keys'").fetchone()
    exists = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'view' AND "
                         "name = 'model_view'").fetchone()[0]
    if exists and have is not None and have[0] == json.dumps(keys):
        return
    con.execute("DROP VIEW IF EXISTS layer_view")
    con.execute("DROP VIEW IF EXISTS model_view")
    con.execute(_view_sql(keys))
    con.execute(_model_view_sql(keys))
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('view_keys', ?)",
                (json.dumps(keys),))


def _table_sql(name, cols) -> str:
    return f"CREATE TABLE IF NOT EXISTS {name} (" + ", ".join(f"{c} {t}" for c, t in cols) + ")"


SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    _table_sql("models", MODEL_COLUMNS),
    _table_sql("layers", LAYER_COLUMNS),
    "CREATE INDEX IF NOT EXISTS layers_model ON layers(model_id)",
    "CREATE INDEX IF NOT EXISTS layers_start ON layers(filter_start)",
    _view_sql(),
    _model_view_sql(),
    # filter-id ranges no longer referenced (a removed or replaced model's filters)
    "CREATE TABLE IF NOT EXISTS free_ranges (start INTEGER NOT NULL, count INTEGER NOT NULL, "
    "model TEXT, removed_at TEXT)",
    "CREATE TABLE IF NOT EXISTS ingest_log (id INTEGER PRIMARY KEY, at TEXT, action TEXT, "
    "model TEXT, sha256 TEXT, path TEXT, n_layers INTEGER, n_filters INTEGER, "
    "filter_start INTEGER, data_version INTEGER, filterdb_version TEXT)",
    "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, data_version INTEGER NOT NULL, "
    "value BLOB, created_at TEXT)",
    # per-layer metrics (filled by filterdb.health): one row per layer and parameter set
    "CREATE TABLE IF NOT EXISTS layer_metrics (layer_id INTEGER NOT NULL, params TEXT NOT NULL "
    "DEFAULT '', metrics TEXT, data_version INTEGER, PRIMARY KEY (layer_id, params))",
]


def catalog_error(path, e: BaseException, doing: str = "writing the catalog") -> FilterDBError:
    """One line for an error of SQLite on the catalog: damaged, disk full, or other."""
    name = getattr(e, "sqlite_errorname", "") or ""
    text = str(e)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
            or "not a database" in text:
        return FilterDBError(f"{path}: the catalog is damaged ({text}); run 'filterdb verify'")
    p = os.fspath(path)
    db = os.path.dirname(p) if os.path.basename(p).startswith(CATALOG) else p
    if name == "SQLITE_FULL" or "disk is full" in text \
            or (name.startswith("SQLITE_IOERR") and _no_space(db)):
        return DiskFullError(db, f"{doing}; nothing committed is lost")
    return FilterDBError(f"{path}: catalog error ({text})")


def _no_space(path) -> bool:
    """The file system holding ``path`` has (almost) no free blocks: SQLite reports a full
    disk as an I/O error where it creates its shared-memory or WAL file."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (64 << 10)


def integrity_problems(con: sqlite3.Connection) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` as problem lines ([] when it says ok)."""
    try:
        rows = [r[0] for r in con.execute("PRAGMA integrity_check(50)").fetchall()]
    except sqlite3.DatabaseError as e:
        return [f"catalog: {e}"]
    return [] if rows == ["ok"] else [f"catalog: {r}" for r in rows]


def connect(path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit BEGIN / COMMIT).

    ``readonly`` only says the caller will not write (the file is opened read-write so
    that WAL readers work on any file system state)."""
    p = os.fspath(path)
    try:
        con = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            con.execute("PRAGMA synchronous = FULL")
        con.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as e:
        raise catalog_error(p, e, "opening the catalog") from None
    return con


def create(con: sqlite3.Connection, segment_rows: int, version: str) -> None:
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA:
        con.execute(stmt)
    con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [
        ("format_version", str(FORMAT_VERSION)),
        ("segment_rows", str(int(segment_rows))),
        ("committed_filters", "0"),
        ("data_version", "0"),
        ("created_by", f"filterdb {version}"),
    ])
    con.execute("COMMIT")


def upgrade(con: sqlite3.Connection) -> None:
    """Bring a database created by an earlier filterdb up to date (writer only): columns
    introduced since (``layers.extra``; ``layers.digest``, NULL for the layers already there:
    passes check their crc32), and the views with their typed free columns."""
    con.execute("BEGIN IMMEDIATE")
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(layers)")}
        missing = [(c, t) for c, t in LAYER_COLUMNS if c not in have]
        for c, t in missing:
            con.execute(f"ALTER TABLE layers ADD COLUMN {c} {t}")
        if missing:
            con.execute("DELETE FROM meta WHERE key = 'view_keys'")
        refresh_views(con)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


def rollback(con: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already (a failed COMMIT, e.g.
    on a full disk, has; ROLLBACK would only mask its error)."""
    if con.in_transaction:
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def read_meta(con: sqlite3.Connection) -> dict:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def read_meta_readonly(db_path) -> dict:
    """The ``meta`` table of a database, read through a short-lived read-only connection."""
    cat = os.path.join(os.fspath(db_path), CATALOG)
    if not os.path.isfile(cat):
        raise FilterDBError(f"{db_path}: not a filterdb database (no {CATALOG})")
    con = connect(cat, readonly=True)
    try:
        return read_meta(con)
    finally:
        con.close()
