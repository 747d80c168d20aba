"""Faults of the store (issue 13): flipped segment bits, a damaged catalog, hostile
``--where`` SQL and a full disk. Each must give one line and exit 2, never a traceback
and never a silently wrong number."""
from __future__ import annotations

import os
import sqlite3
import zlib

import numpy as np
import pytest

from filterdb.cli import main
from filterdb.engine import make_plan, map_reduce
from filterdb.store import open_database
from filterdb.store.digest import crc32_combine, layer_digest, piece_sums

SHAPES = [(16, 8, 3, 3), (32, 16, 3, 3), (24, 32, 3, 3)]  # 128 + 512 + 768 filters


def _write_models(tmp_path, n=3):
    rng = np.random.default_rng(7)
    files, weights = [], {}
    for k in range(n):
        arrays = {f"conv{i}.weight": rng.standard_normal(s).astype(np.float32)
                  for i, s in enumerate(SHAPES)}
        f = tmp_path / f"m{k}.npz"
        np.savez(f, **arrays)
        files.append(f)
        weights[f"m{k}"] = np.concatenate([a.reshape(-1, 9) for a in arrays.values()])
    return files, weights


def _make_db(tmp_path):
    files, weights = _write_models(tmp_path)
    db = tmp_path / "db"
    for k, f in enumerate(files):
        task = ("Classification", "Segmentation")[k % 2]
        assert main(["add", str(db), str(f), "--meta", f"task={task}"]) == 0
    return db


@pytest.fixture
def dbpath(tmp_path):
    return _make_db(tmp_path)


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """One database for the tests that must not change it."""
    return _make_db(tmp_path_factory.mktemp("shared"))


def _flip(dbpath, model, layer_index, row=5, bit=3):
    """Flip one mantissa bit of one filter of a layer directly in its segment file."""
    with open_database(dbpath) as db:
        lay = db.layers(f"model = '{model}' AND layer_index = {layer_index}").iloc[0]
        g = int(lay["filter_start"]) + row
        sr = db.segment_rows
    seg = os.path.join(dbpath, "filters", f"seg-{g // sr:06d}.f32")
    with open(seg, "r+b") as f:
        f.seek((g % sr) * 36)
        b = bytearray(f.read(4))
        b[0] ^= 1 << bit
        f.seek((g % sr) * 36)
        f.write(b)


def _one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- the digest itself, against independent computations --------------------------------

def test_digest_matches_its_definition_and_pieces_add_up():
    x = np.random.default_rng(0).standard_normal((301, 9)).astype(np.float32)
    w = [int(v) for v in x.view("<u4").ravel()]
    a = sum(w)
    b = sum((i + 1) * v for i, v in enumerate(w)) % (1 << 64)
    assert piece_sums(x) == (a, b)
    assert layer_digest(x) == f"{a:016x}{b:016x}"
    a1, b1 = piece_sums(x[:100], 0)
    a2, b2 = piece_sums(x[100:], 100)
    assert (a1 + a2, (b1 + b2) % (1 << 64)) == (a, b)
    # one flipped bit anywhere, or two rows swapped, changes it
    for r, c in ((0, 0), (150, 4), (300, 8)):
        y = x.copy()
        y.view("<u4")[r, c] ^= 1 << 17
        assert layer_digest(y) != layer_digest(x)
    y = x.copy()
    y[[3, 4]] = y[[4, 3]]
    assert layer_digest(y) != layer_digest(x)


def test_crc32_combine_matches_zlib():
    rng = np.random.default_rng(1)
    for n1, n2 in ((0, 0), (1, 0), (0, 5), (36, 36), (1000, 77), (4096, 12345)):
        p, q = rng.bytes(n1), rng.bytes(n2)
        assert crc32_combine(zlib.crc32(p), zlib.crc32(q), len(q)) == zlib.crc32(p + q)


# ---- flipped segment bits -------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [["drift", "--by", "task", "--no-cache"], ["pca", "--no-cache"],
                                 ["health"]])
def test_flipped_bits_fail_analyses(dbpath, cmd, capsys):
    assert main([cmd[0], str(dbpath), *cmd[1:]]) == 0  # sound before
    capsys.readouterr()
    if cmd[0] == "health":  # stored metrics would be reused: recompute
        cmd = cmd + ["--recompute"]
    _flip(dbpath, "m1", 1)
    assert main([cmd[0], str(dbpath), *cmd[1:]]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "model m1, layer 1 (conv1" in line and "run 'filterdb verify'" in line, line
    # verify names it too
    assert main(["verify", str(dbpath)]) == 1
    assert "of model m1: checksum mismatch" in capsys.readouterr().out


def test_flipped_bits_in_a_layer_cut_across_windows(dbpath):
    """Small windows cut every layer into pieces (also across tasks): still caught."""
    with open_database(dbpath) as db:
        lay = db.layers().sort_values("filter_start")
        args = [lay[c].to_numpy(np.int64) for c in ("filter_start", "filter_count", "layer_id")]
        from filterdb.kernels import pca as P

        for target in (100, 333, 640, 1 << 20):
            plan = make_plan(*args, target_rows=target)
            map_reduce(db.row_source(), plan, P.moments_task)  # sound: no error
    _flip(dbpath, "m2", 2, row=700)
    with open_database(dbpath) as db:
        for target in (100, 333, 640, 1 << 20):
            plan = make_plan(*args, target_rows=target)
            assert target > 700 or any(
                (t.runs[:, 2] == args[2][-1]).any() for t in plan.tasks[:-1])
            with pytest.raises(Exception, match=r"model m2, layer 2 .*filterdb verify"):
                map_reduce(db.row_source(), plan, P.moments_task, workers=2)
        # without verification the pass runs (the numbers are wrong: that is the point)
        map_reduce(db.row_source(verify=False), make_plan(*args, target_rows=100),
                   P.moments_task)


def test_old_database_without_digests_checks_crc32(dbpath):
    """A database written before digests existed: passes check the crc32, pieces joined."""
    con = sqlite3.connect(dbpath / "catalog.sqlite")
    con.execute("UPDATE layers SET digest = NULL")
    con.commit()
    con.close()
    from filterdb.kernels import pca as P

    with open_database(dbpath) as db:
        lay = db.layers().sort_values("filter_start")
        args = [lay[c].to_numpy(np.int64) for c in ("filter_start", "filter_count", "layer_id")]
        for target in (100, 1 << 20):
            map_reduce(db.row_source(), make_plan(*args, target_rows=target), P.moments_task)
    _flip(dbpath, "m0", 2, row=500)
    with open_database(dbpath) as db:
        for target in (100, 1 << 20):
            with pytest.raises(Exception, match=r"model m0, layer 2 "):
                map_reduce(db.row_source(), make_plan(*args, target_rows=target),
                           P.moments_task)


def test_stored_digests_match_the_weights(dbpath, tmp_path):
    (tmp_path / "w").mkdir()
    _, weights = _write_models(tmp_path / "w")  # the same seed: the fixture's weights
    with open_database(dbpath) as db:
        for model, rows in weights.items():
            lay = db.layers(f"model = '{model}'").sort_values("layer_index")
            off = 0
            for _, l in lay.iterrows():
                n = int(l["filter_count"])
                assert l["digest"] == layer_digest(rows[off:off + n])
                assert int(l["checksum"]) == zlib.crc32(rows[off:off + n].tobytes())
                off += n


# ---- user SQL (--where) -----------------------------------------------------------------------

ATTACKS = [
    ("1) UNION SELECT * FROM cache WHERE (1", "reading table 'cache' is not allowed"),
    ("layer_id IN (SELECT key FROM meta)", "reading table 'meta' is not allowed"),
    ("layer_id IN (SELECT model FROM ingest_log)", "reading table 'ingest_log'"),
    ("layer_id IN (SELECT l.layer_id FROM layers l)", "reading table 'layers'"),
    ("layer_id IN (SELECT name FROM pragma_table_info('cache'))", "pragma_table_info"),
    ("layer_id IN (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
     "SELECT x FROM c)", "recursive queries are not allowed"),
    ("1; DROP TABLE models", "';' is not allowed"),
    ("load_extension('/tmp/nothing.so') IS NULL", "load_extension() is not allowed"),
    ("abs(-9223372036854775807 - 1) > 0", "integer overflow"),  # only fails when run
    ("json_extract(model, '$.a') IS NULL", "malformed json"),  # also at run time
]


@pytest.mark.parametrize("cmd", ["ls-layers", "drift", "health"])
@pytest.mark.parametrize("where,why", ATTACKS)
def test_where_attacks_get_one_line(shared_db, capsys, cmd, where, why):
    argv = {"ls-layers": ["ls", str(shared_db), "--layers"],
            "drift": ["drift", str(shared_db), "--by", "task"],
            "health": ["health", str(shared_db)]}[cmd]
    assert main([*argv, "--where", where]) == 2
    line = _one_line(capsys.readouterr().err)
    assert why.lower() in line.lower(), line
    with open_database(shared_db) as db:
        assert db.n_models == 3 and db.verify() == []


def test_where_in_models_and_legit_subqueries(shared_db, capsys):
    dbpath = shared_db
    assert main(["ls", str(dbpath), "--where", "model IN (SELECT model FROM models "
                 "WHERE task = 'Segmentation')"]) == 0
    assert "m1" in capsys.readouterr().out
    with open_database(dbpath) as db:
        assert len(db.layers("layer_id IN (SELECT value FROM json_each('[1, 2]'))")) == 2
        assert len(db.layers("model IN (SELECT model FROM layer_view WHERE layer_index = 2)")) \
            == 9


@pytest.mark.parametrize("sql", [
    "ATTACH DATABASE '/tmp/x.sqlite' AS x", "PRAGMA writable_schema = 1",
    "DELETE FROM models", "INSERT INTO meta VALUES ('a', 'b')", "CREATE TABLE t (x)",
    "SELECT * FROM cache", "SELECT load_extension('x')"])
def test_user_sql_guard_refuses_statements(shared_db, sql):
    dbpath = shared_db
    from filterdb.errors import FilterDBError
    from filterdb.store.query import UserSQL

    con = sqlite3.connect(dbpath / "catalog.sqlite")
    try:
        with pytest.raises(FilterDBError, match="not allowed"):
            UserSQL(con, "q").run(sql)
        assert con.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 3
    finally:
        con.close()


def test_slow_where_stops_at_the_time_limit(shared_db, capsys, monkeypatch):
    dbpath = shared_db
    import time

    from filterdb.store import query

    monkeypatch.setattr(query, "SQL_TIME_LIMIT", 0.5)
    slow = ("layer_id IN (SELECT a.layer_id FROM layer_view a, layer_view b, layer_view c, "
            "layer_view d, layer_view e, layer_view f, layer_view g, layer_view h, "
            "layer_view i, layer_view j)")  # 9**10 rows
    for argv in (["ls", str(dbpath), "--layers"], ["drift", str(dbpath), "--by", "task"]):
        t = time.monotonic()
        assert main([*argv, "--where", slow]) == 2
        assert time.monotonic() - t < 5
        line = _one_line(capsys.readouterr().err)
        assert "stopped after 0.5 s" in line, line
    with open_database(dbpath) as db:  # the limit is per database too
        db.sql_time_limit = 0.2
        t = time.monotonic()
        with pytest.raises(Exception, match="stopped after 0.2 s"):
            db.layers(slow)
        assert time.monotonic() - t < 3


# ---- a damaged catalog -----------------------------------------------------------------------

def _checkpoint(dbpath):
    con = sqlite3.connect(dbpath / "catalog.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def test_damaged_cache_entries_are_dropped_not_used(dbpath, capsys):
    from filterdb.store.database import CACHE_MAGIC

    argv = ["drift", str(dbpath), "--by", "task", "--json"]
    assert main(argv) == 0
    good = capsys.readouterr().out
    _checkpoint(dbpath)
    cat = dbpath / "catalog.sqlite"
    raw = bytearray(cat.read_bytes())
    hits = [i for i in range(len(raw)) if raw.startswith(CACHE_MAGIC, i)]
    assert len(hits) >= 3  # PCA, range, histograms
    for i in hits:  # one flipped bit inside each stored value
        raw[i + len(CACHE_MAGIC) + 5 + 20] ^= 0x10
    cat.write_bytes(bytes(raw))
    # drift does not use them: it recomputes the same numbers
    assert main(argv) == 0
    assert capsys.readouterr().out == good
    # (the damaged entries were dropped and written anew: damage them again for verify)
    _checkpoint(dbpath)
    raw = bytearray(cat.read_bytes())
    hits = [i for i in range(len(raw)) if raw.startswith(CACHE_MAGIC, i)]
    for i in hits:
        raw[i + len(CACHE_MAGIC) + 5 + 20] ^= 0x10
    cat.write_bytes(bytes(raw))
    assert main(["verify", str(dbpath)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and out.count("dropped the damaged analysis cache entry") \
        == len(hits), out
    con = sqlite3.connect(cat)
    assert con.execute("SELECT COUNT(*) FROM cache").fetchone()[0] == 0
    con.close()
    assert main(argv) == 0
    assert capsys.readouterr().out == good


def test_legacy_cache_entries_are_checked_by_format():
    """Entries written before values carried a crc32: JSON, .npz and PNG are read whole."""
    import io

    from filterdb.store.database import pack_cache, unpack_cache

    buf = io.BytesIO()
    np.savez(buf, counts=np.arange(1000))
    npz = buf.getvalue()
    assert unpack_cache(npz) == npz and unpack_cache('{"a": 1}') == {"a": 1}
    assert unpack_cache(pack_cache({"a": [1, 2]})) == {"a": [1, 2]}
    assert unpack_cache(pack_cache(b"xyz")) == b"xyz"
    bad = bytearray(npz)
    bad[len(bad) // 3] ^= 1  # inside the member's data: zip's crc32 catches it
    for v in (bytes(bad), '{"a": ', pack_cache(b"xyz")[:-1] + b"w"):
        with pytest.raises(ValueError):
            unpack_cache(v)
    png = (b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + bytes(13)
           + zlib.crc32(b"IHDR" + bytes(13)).to_bytes(4, "big")
           + bytes(4) + b"IEND" + zlib.crc32(b"IEND").to_bytes(4, "big"))
    assert unpack_cache(png) == png
    with pytest.raises(ValueError):
        unpack_cache(png[:20] + b"\x01" + png[21:])


COMMANDS = [["ls", "{db}"], ["ls", "{db}", "--layers"], ["info", "{db}"],
            ["drift", "{db}", "--by", "task"], ["pca", "{db}"], ["health", "{db}"],
            ["rm", "{db}", "m0"]]


@pytest.mark.parametrize("page", [0, 1, 3, 6])
def test_damaged_catalog_pages_give_one_line(shared_db, tmp_path, capsys, page):
    """Bytes of a b-tree page overwritten: every command says so in one line (or runs
    when it never reads that page); verify reports the damage (integrity_check)."""
    import shutil

    _checkpoint(shared_db)
    db = tmp_path / "db"
    shutil.copytree(shared_db, db)
    with open(db / "catalog.sqlite", "r+b") as f:
        f.seek(page * 4096 + (100 if page == 0 else 0))
        f.write(np.random.default_rng(page).bytes(16))
    failed = 0
    for argv in COMMANDS:
        r = main([a.format(db=db) for a in argv])
        err = capsys.readouterr().err
        assert r in (0, 2), (argv, r, err)
        if r == 2:
            failed += 1
            line = _one_line(err)
            assert "catalog is damaged" in line and "filterdb verify" in line, line
    assert failed >= 1
    assert main(["verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert "problem" in out and "catalog:" in out and "Traceback" not in out, out


# ---- a full disk ------------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB tmpfs (root only; skipped where it cannot be mounted)."""
    import shutil
    import subprocess

    d = tmp_path / "fs"
    d.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a full disk needs a tmpfs: mount(8) as root is not available here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill(path, leave_pages: int):
    """Fill the file system of ``path`` (a filler file) leaving ``leave_pages`` 4 KB pages."""
    block = b"\0" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    n = 0
    try:
        while True:
            try:
                w = os.write(fd, block)
            except OSError as e:
                assert e.errno == 28
                break
            n += w
            if w < 4096:
                break
        os.ftruncate(fd, max(0, n // 4096 - leave_pages) * 4096)
    finally:
        os.close(fd)


def test_full_disk_at_each_write_point(small_fs, tmp_path, capsys):
    """``add`` with 0, 1, 2, ... free pages: it fails at the lock file, then at the segment
    write, then at the commit, then succeeds. Each failure: one line, exit 2, and the
    database verifies with the model committed before intact."""
    rng = np.random.default_rng(3)
    first = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    second = rng.standard_normal((100, 20, 3, 3)).astype(np.float32)  # 2,000 filters, 72 KB
    np.savez(tmp_path / "first.npz", conv=first)
    np.savez(tmp_path / "second.npz", conv=second)
    db = small_fs / "db"
    assert main(["add", str(db), str(tmp_path / "first.npz")]) == 0
    capsys.readouterr()
    filler = small_fs / "filler"
    points = set()
    for free in range(0, 80):
        _fill(filler, free)
        r = main(["add", str(db), str(tmp_path / "second.npz")])
        out, err = capsys.readouterr()
        if r == 0:
            break
        assert r == 2, (free, out, err)
        line = _one_line(err)
        assert f"{db}: no space left on device" in line, (free, line)
        points.add("lock" if "lock file" in line else "segments" if "segments" in line
                   else "commit" if "committing" in line else "open" if "opening" in line
                   else line)
        os.unlink(filler)
        with open_database(db) as d:
            assert d.verify() == [] and d.n_models == 1
            x = d.layer_filters(int(d.layers().iloc[0]["layer_id"]))
            assert np.array_equal(x.view(np.uint32), first.reshape(-1, 9).view(np.uint32))
    else:
        pytest.fail("the add never succeeded")
    assert {"lock", "segments", "commit"} <= points, points
    os.unlink(filler)
    with open_database(db) as d:
        assert d.verify() == [] and d.n_models == 2


def test_database_from_before_digests_upgrades_and_is_checked(dbpath, tmp_path, capsys):
    """A catalog without the digest column (as written before it existed): read as it is
    (passes check crc32), upgraded by the first writer, new layers get digests."""
    from filterdb.store.catalog import _view_sql

    con = sqlite3.connect(dbpath / "catalog.sqlite")
    con.execute("DROP VIEW layer_view")
    con.execute("ALTER TABLE layers DROP COLUMN digest")
    con.execute(_view_sql().replace(", l.digest", ""))
    con.commit()
    con.close()
    argv = ["drift", str(dbpath), "--by", "task", "--no-cache", "--json"]
    assert main(argv) == 0
    good = capsys.readouterr().out
    assert main(["verify", str(dbpath)]) == 0
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "new.npz", conv=rng.standard_normal((8, 4, 3, 3)).astype(np.float32))
    assert main(["add", str(dbpath), str(tmp_path / "new.npz")]) == 0  # the writer upgrades
    capsys.readouterr()
    with open_database(dbpath) as db:
        lay = db.layers()
        assert lay["digest"].isna().sum() == 9 and lay["digest"].notna().sum() == 1
    import json

    assert main([*argv, "--where", "model != 'new'"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again.pop("where") == "model != 'new'"
    assert again == {k: v for k, v in json.loads(good).items() if k != "where"}
    _flip(dbpath, "m1", 2, row=3)
    assert main(argv) == 2
    assert "model m1, layer 2" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("chunk_rows", [50, 333, 1 << 20])
@pytest.mark.parametrize("digests", [True, False])
def test_streamed_filters_are_checked(dbpath, chunk_rows, digests):
    """``Database.filters`` (export-h5, the API) checks each layer as it streams by."""
    if not digests:
        con = sqlite3.connect(dbpath / "catalog.sqlite")
        con.execute("UPDATE layers SET digest = NULL")
        con.commit()
        con.close()
    with open_database(dbpath) as db:
        n = sum(len(c.filters) for c in db.filters(chunk_rows=chunk_rows))
        assert n == db.n_filters
    _flip(dbpath, "m2", 1, row=300)
    with open_database(dbpath) as db:
        with pytest.raises(Exception, match=r"model m2, layer 1 .*filterdb verify"):
            for _ in db.filters(chunk_rows=chunk_rows):
                pass
        # an untouched selection streams, and without verify everything does
        assert sum(len(c.filters) for c in db.filters("model != 'm2'", chunk_rows=chunk_rows)) \
            == 2 * 1408
        assert sum(len(c.filters) for c in db.filters(chunk_rows=chunk_rows, verify=False)) \
            == 3 * 1408
