"""The filter database store: round trips, queries, replace/rm, verify, locking, snapshots, CLI.

Expected filters are computed here from the raw weight arrays (reshape of each 3x3 weight,
in layer order), never from the store's own code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import filterdb
from _models import write_npz
from filterdb.cli import main
from filterdb.errors import FilterDBError
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database, open_database, read_rows

PY = sys.executable


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def make_model(rng, shapes, name="m", groups=None):
    """A Model with random float32 weights of the given (c_out, c_in/g, kh, kw) shapes."""
    groups = groups or [1] * len(shapes)
    layers = [ConvLayer(f"{name}.conv{i}", "Conv", rng.standard_normal(s).astype(np.float32),
                        groups=g) for i, (s, g) in enumerate(zip(shapes, groups))]
    assign_order_depths(layers)
    sha = "".join(rng.choice(list("0123456789abcdef"), 64))
    return Model(path=f"/nowhere/{name}.npz", format="npz", sha256=sha, layers=layers)


def expected_3x3(shapes_weights):
    """Rows of every 3x3 weight, in order, straight from the arrays."""
    parts = [w.reshape(-1, 9) for w in shapes_weights if w.shape[2:] == (3, 3)]
    return np.concatenate(parts) if parts else np.empty((0, 9), np.float32)


MIXED = [(40, 3, 3, 3), (64, 40, 1, 1), (30, 20, 3, 3), (8, 4, 5, 5), (33, 1, 3, 3), (7, 5, 1, 3)]


@pytest.fixture
def db(empty_db):
    return empty_db


# -- round trip ----------------------------------------------------------------------------
def test_roundtrip_bit_for_bit_across_segments(db, tmp_path):
    rng = np.random.default_rng(1)
    models = [make_model(rng, MIXED, f"m{i}", groups=[1, 1, 1, 1, 33, 1]) for i in range(3)]
    for m in models:
        r = db.add_model(m, {"task": "Classification"})
        assert r.status == "added"
        assert r.n_layers == len(MIXED)
        assert r.n_filters == 40 * 3 + 30 * 20 + 33  # 3x3 layers only
    want = np.concatenate([expected_3x3([l.weight for l in m.layers]) for m in models])
    assert db.n_filters == len(want) == 3 * 753
    assert db.n_models == 3 and db.n_layers == 18

    # streamed, small chunks (several per segment, crossing boundaries)
    chunks = list(db.filters(chunk_rows=333, copy=True))
    got = np.concatenate([c.filters for c in chunks])
    assert np.array_equal(bits(got), bits(want))
    assert [c.start for c in chunks] == list(range(0, len(want), 333))
    # layer ids: each 3x3 layer's id repeated n times, in layer order
    lay = db.layers()
    owners = lay[lay.kh.eq(3) & lay.kw.eq(3)].sort_values("filter_start")
    want_ids = np.repeat(owners.layer_id.to_numpy(), owners.c_out * owners.c_in // owners.groups)
    assert np.array_equal(np.concatenate([c.layer_ids for c in chunks]), want_ids)

    # random access across segment boundaries, and the path-only reader
    for start, count in [(0, 1), (990, 20), (999, 1002), (1500, 759), (2258, 1)]:
        assert np.array_equal(bits(db.read_filters(start, count)), bits(want[start:start + count]))
        assert np.array_equal(bits(read_rows(db.path, start, count)),
                              bits(want[start:start + count]))
    with pytest.raises(FilterDBError, match="committed"):
        db.read_filters(2250, 10)
    with pytest.raises(FilterDBError, match="committed"):
        read_rows(db.path, 0, len(want) + 1)

    # the files themselves: plain little-endian float32 rows of 9, 1000 rows per segment
    segs = sorted(os.listdir(db.path / "filters"))
    assert segs == ["seg-000000.f32", "seg-000001.f32", "seg-000002.f32"]
    raw = np.concatenate([np.fromfile(db.path / "filters" / s, dtype="<f4") for s in segs])
    assert np.array_equal(bits(raw.reshape(-1, 9)), bits(want))
    assert os.path.getsize(db.path / "filters" / segs[0]) == 1000 * 36

    # per-layer metadata and checksums against the arrays
    m0 = models[0]
    l0 = lay[lay.model == "m0"].sort_values("layer_index")
    assert list(l0.name) == [l.name for l in m0.layers]
    assert list(l0.kh) == [s[2] for s in MIXED] and list(l0.kw) == [s[3] for s in MIXED]
    assert list(l0.c_in) == [3, 40, 20, 4, 33, 5]  # c_in/groups * groups
    assert list(l0.filter_count) == [120, 0, 600, 0, 33, 0]
    assert l0.filter_start.isna().tolist() == [False, True, False, True, False, True]
    w2 = m0.layers[2].weight
    assert int(l0.checksum.iloc[2]) == zlib.crc32(w2.astype("<f4").tobytes())
    mrow = db.models("model = 'm0'").iloc[0]
    assert json.loads(mrow.kernel_counts) == {"3x3": 753, "1x1": 2560, "5x5": 32, "1x3": 35}
    assert mrow.total_filters == 753 + 32 + 35  # all but 1x1
    assert mrow.filter_share_3x3 == pytest.approx(753 / 820)
    assert mrow.depth == 6
    assert db.verify() == []


def test_mapped_reads_equal_buffered_reads(db, monkeypatch):
    """The engine's source maps windows (one MADV_POPULATE_READ, no copy); the rows equal the
    buffered read and the raw arrays, writes to them never reach the file, and a kernel
    that cannot populate falls back to buffered reads."""
    from filterdb.store import segments

    rng = np.random.default_rng(7)
    models = [make_model(rng, [(50, 9, 3, 3), (20, 30, 3, 3)], f"m{i}") for i in range(2)]
    for m in models:
        db.add_model(m)
    want = np.concatenate([expected_3x3([l.weight for l in m.layers]) for m in models])
    assert len(want) == 2 * 1050
    out = segments.aligned_empty(1000)  # under MAP_MIN_BYTES: read into out, not mapped
    monkeypatch.setattr(segments, "MAP_MIN_BYTES", 1001 * 36)
    assert np.shares_memory(read_rows(db.path, 0, 1000, out), out)
    assert np.array_equal(bits(out), bits(want[:1000]))
    monkeypatch.setattr(segments, "MAP_MIN_BYTES", 0)  # map the small test windows
    windows = [(0, 1), (3, 997), (999, 1), (999, 2), (1000, 1000), (1234, 866), (2099, 1)]
    for start, count in windows:
        out = segments.aligned_empty(count)
        x = read_rows(db.path, start, count, out)
        assert np.array_equal(bits(x), bits(want[start:start + count]))
        assert np.array_equal(bits(read_rows(db.path, start, count, mapped=False)),
                              bits(want[start:start + count]))
        one_segment = start // 1000 == (start + count - 1) // 1000
        if sys.platform.startswith("linux"):  # mapped within a segment, else read into out
            assert np.shares_memory(x, out) != one_segment
    x = read_rows(db.path, 1000, 10)
    x[:] = 123.0  # a private mapping: the file keeps its rows
    assert np.array_equal(bits(read_rows(db.path, 1000, 10)), bits(want[1000:1010]))

    # a kernel without MADV_POPULATE_READ (before Linux 5.14): buffered from then on
    def refuse(addr, length, advice):
        import ctypes
        ctypes.set_errno(22)  # EINVAL
        return -1
    if segments._madvise is not None:
        monkeypatch.setattr(segments, "_madvise", refuse)
        monkeypatch.setitem(segments._mapping, "ok", True)
        out = segments.aligned_empty(500)
        x = read_rows(db.path, 1100, 500, out)
        assert np.shares_memory(x, out) and not segments._mapping["ok"]
        assert np.array_equal(bits(x), bits(want[1100:1600]))


def test_direct_reads_equal_buffered_reads(db, monkeypatch):
    """Reads past the page cache (O_DIRECT, 4096-byte aligned) land in the caller's buffer a
    little in from its start and equal the buffered read for every window, also at a file's
    unaligned end and across two or three segments (read piece by piece, moved together);
    a short buffer or a file system without O_DIRECT read the buffered way into ``out``."""
    from filterdb.store import segments

    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system")
    rng = np.random.default_rng(17)
    models = [make_model(rng, [(50, 9, 3, 3), (20, 30, 3, 3)], f"m{i}") for i in range(2)]
    for m in models:
        db.add_model(m)
    want = np.concatenate([expected_3x3([l.weight for l in m.layers]) for m in models])
    assert os.path.getsize(db.path / "filters" / "seg-000002.f32") == 100 * 36  # not 4096-aligned
    monkeypatch.setattr(segments, "STREAM_READ", "direct")
    slack = segments.DIRECT_SLACK_ROWS
    assert slack * 36 >= 6 * 4096 - 35  # two segments: 3 blocks of room each
    windows = [(0, 1), (3, 997), (113, 114), (999, 1), (1000, 1000), (1234, 766), (2000, 100),
               (2099, 1), (2050, 50), (990, 20), (999, 2), (500, 1600), (1, 2099)]
    for start, count in windows:
        for lead in (0, 1, 7):  # the buffer's start 0, 36 or 252 bytes past a 64-byte line
            raw = segments.aligned_empty(lead + count + slack)
            out = raw[lead:]
            x = read_rows(db.path, start, count, out)
            assert np.array_equal(bits(x), bits(want[start:start + count]))
            assert np.shares_memory(x, out) and x.ctypes.data >= out.ctypes.data
            assert x.ctypes.data + x.nbytes <= out.ctypes.data + out.nbytes
    reader = segments.SegmentReader(db.path / "filters", 1000)
    try:
        x = reader.read_direct(10, 500, segments.aligned_empty(500 + slack))
        assert np.array_equal(bits(x), bits(want[10:510]))
        assert reader.read_direct(10, 500, segments.aligned_empty(500)) is None  # no room
        assert reader.read_direct(990, 20, segments.aligned_empty(20 + 200)) is None
    finally:
        reader.close()
    # no room in out for a read past the cache: the buffered read, into out
    out = segments.aligned_empty(20 + 200)
    x = read_rows(db.path, 990, 20, out)
    assert np.array_equal(bits(x), bits(want[990:1010])) and x.ctypes.data == out.ctypes.data

    # a file system that refuses O_DIRECT (EINVAL on open): mapped or buffered from then on
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *a)
    monkeypatch.setattr(segments.os, "open", no_direct)
    monkeypatch.setitem(segments._direct, "ok", True)
    out = segments.aligned_empty(300 + slack)
    x = read_rows(db.path, 1100, 300, out)
    assert np.array_equal(bits(x), bits(want[1100:1400])) and not segments._direct["ok"]


def test_engine_passes_equal_over_every_read_mode(db, monkeypatch):
    """A pass over the store (tasks of one window and of several, gaps, windows across
    segment ends) gives bit-identical sums whether the store maps, copies or reads past the
    page cache into the engine's buffers, and equals the pass over the raw array."""
    from filterdb.engine import ArraySource, make_plan, map_reduce
    from filterdb.kernels.pca import moments_task
    from filterdb.store import segments

    rng = np.random.default_rng(23)
    for i in range(5):
        db.add_model(make_model(rng, [(int(rng.integers(5, 60)), 9, 3, 3),
                                      (int(rng.integers(5, 40)), 30, 3, 3), (7, 3, 3, 3)],
                                f"m{i}"))
    lay = db.layers().dropna(subset=["filter_start"]).sort_values("filter_start")
    starts = lay.filter_start.to_numpy(np.int64)
    counts = lay.filter_count.to_numpy(np.int64)
    keep = np.arange(len(lay)) % 4 != 1
    plan = make_plan(starts[keep], counts[keep], np.flatnonzero(keep), target_rows=400,
                     gap_rows=0)
    assert any(len(t.reads) > 1 for t in plan.tasks) and len(plan) > 3
    X = db.read_filters(0, db.n_filters)
    ref = map_reduce(ArraySource(X), plan, moments_task, workers=1)
    monkeypatch.setattr(segments, "MAP_MIN_BYTES", 0)
    served = []
    real = segments.SegmentReader.read_direct

    def counted(self, start, count, out):
        x = real(self, start, count, out)
        served.append(x is not None)
        return x
    monkeypatch.setattr(segments.SegmentReader, "read_direct", counted)
    for mode in ("map", "copy", "direct"):
        monkeypatch.setattr(segments, "STREAM_READ", mode)
        got = map_reduce(db.row_source(), plan, moments_task, workers=2)
        for k in ref:
            assert np.array_equal(got[k], ref[k]), (mode, k)
    assert all(served) and len(served) >= len(plan)  # every read past the page cache

def test_direct_read_of_truncated_segment_is_refused(db, monkeypatch):
    from filterdb.store import segments

    db.add_model(make_model(np.random.default_rng(8), [(60, 20, 3, 3)]))
    os.truncate(db.path / "filters" / "seg-000000.f32", 500 * 36)
    reader = segments.SegmentReader(db.path / "filters", 1000)
    try:
        with pytest.raises(FilterDBError, match=r"seg-000000.f32: segment file is truncated"):
            reader.read_direct(400, 200, segments.aligned_empty(200 + segments.DIRECT_SLACK_ROWS))
    finally:
        reader.close()


def test_stream_mode_reads_past_the_cache_only_for_databases_larger_than_half_the_memory(
        monkeypatch):
    from filterdb.store import segments

    monkeypatch.setattr(segments, "STREAM_READ", "auto")
    monkeypatch.setattr(segments, "_memory_bytes", lambda: 24 << 30)
    assert segments.stream_mode(12 << 30) == "map"
    assert segments.stream_mode((12 << 30) + 1) == "direct"
    monkeypatch.setattr(segments, "STREAM_READ", "copy")
    assert segments.stream_mode(1 << 40) == "copy"


def test_mapped_read_of_truncated_segment_is_refused(db, monkeypatch):
    from filterdb.store import segments

    monkeypatch.setattr(segments, "MAP_MIN_BYTES", 0)
    db.add_model(make_model(np.random.default_rng(8), [(60, 20, 3, 3)]))
    os.truncate(db.path / "filters" / "seg-000000.f32", 500 * 36)
    for mapped in (True, False):
        with pytest.raises(FilterDBError, match=r"seg-000000.f32: segment file is truncated"):
            segments.read_rows(db.path, 400, 200, mapped=mapped)


def test_chunk_buffer_reuse_and_no_prefetch(db):
    rng = np.random.default_rng(2)
    m = make_model(rng, [(50, 20, 3, 3)])
    db.add_model(m)
    want = m.layers[0].weight.reshape(-1, 9)
    views = [(c.filters, c.filters.copy()) for c in db.filters(chunk_rows=300)]
    got = np.concatenate([c for _, c in views])
    assert np.array_equal(bits(got), bits(want))
    # without copy the arrays are views of (at most two) reused, 64-byte aligned buffers
    assert all(v.ctypes.data % 64 == 0 for v, _ in views)
    assert len({v.ctypes.data for v, _ in views}) <= 2
    got2 = np.concatenate([c.filters.copy() for c in db.filters(chunk_rows=128, prefetch=False)])
    assert np.array_equal(bits(got2), bits(want))
    with pytest.raises(FilterDBError, match="only 3x3"):
        db.filters(only_3x3=False)


# -- queries -------------------------------------------------------------------------------
def _three_models(db, rng):
    specs = [("a", "Classification", "natural"), ("b", "semantic segmentation", "medical ct"),
             ("c", "classification", "Formula")]
    models = {}
    for name, task, vc in specs:
        m = make_model(rng, [(12, 3, 3, 3), (16, 12, 3, 3), (20, 16, 1, 1), (24, 16, 3, 3)], name)
        db.add_model(m, {"Task": task, "Visual Category": vc, "x_seed": 7})
        models[name] = m
    return models


def test_where_matches_pandas(db):
    rng = np.random.default_rng(3)
    models = _three_models(db, rng)
    allf = db.layers()
    # vocabulary: spellings normalised
    assert sorted(set(allf.task)) == ["Classification", "Segmentation"]
    assert sorted(set(allf.visual_category)) == ["fractals", "medical ct", "natural"]
    cases = {
        "task = 'Classification' AND conv_depth_norm <= 0.5":
            (allf.task == "Classification") & (allf.conv_depth_norm <= 0.5),
        "visual_category = 'fractals'": allf.visual_category == "fractals",
        "kh = 1": allf.kh == 1,
        "model IN ('a', 'b') AND conv_depth >= 2": allf.model.isin(["a", "b"]) & (allf.conv_depth >= 2),
        "json_extract(extra, '$.seed') = 7": np.ones(len(allf), bool),
    }
    weights = {l.name: l.weight for m in models.values() for l in m.layers}
    for where, mask in cases.items():
        got = db.layers(where)
        assert list(got.layer_id) == list(allf[mask].layer_id), where
        # the streamed filters of the selection = the selected 3x3 layers' weights, in order
        sel = allf[mask & allf.filter_count.gt(0)].sort_values("filter_start")
        want = expected_3x3([weights[n] for n in sel.name])
        chunks = list(db.filters(where, chunk_rows=100, copy=True))
        got_f = np.concatenate([c.filters for c in chunks]) if chunks else np.empty((0, 9))
        assert np.array_equal(bits(got_f), bits(want)), where
        starts, counts, lids = db.selection_ranges(where)
        assert list(lids) == list(sel.layer_id) and int(counts.sum()) == len(want)
    ms = db.models("task = 'Segmentation'")
    assert list(ms.model) == ["b"]


def test_bad_where_lists_columns(db):
    rng = np.random.default_rng(4)
    _three_models(db, rng)
    for where in ["no_such_column = 1", "task = = 'x'", "1; DROP TABLE models"]:
        with pytest.raises(FilterDBError) as e:
            db.layers(where)
        msg = str(e.value)
        assert "\n" not in msg and "columns:" in msg
        assert "conv_depth_norm" in msg and "visual_category" in msg
    assert db.n_models == 3  # nothing dropped
    with pytest.raises(FilterDBError, match="columns:.*total_filters"):
        db.models("nope > 1")


# -- metadata vocabulary ----------------------------------------------------------------------
def test_metadata_vocabulary(db):
    from filterdb.store.vocab import column_name, normalize_meta

    rng = np.random.default_rng(5)
    meta = {"Name": "Net", "Datatype": "formula", "Training-Dataset": "ImageNet ,  COCO",
            "Pretraining-Dataset": "JFT", "Dataset URL": "http://d", "Paper": "P",
            "3x3_filter_share": "0.5", "op_set": "13", "producer": "pytorch",
            "Task": "Instance Segmentation", "x_license": "MIT"}
    r = db.add_model(make_model(rng, [(4, 2, 3, 3)], "v"), meta)
    row = db.models(f"model_id = {r.model_id}").iloc[0]
    assert row["name"] == "Net" and row.visual_category == "fractals"
    assert row.training_dataset == "ImageNet, COCO" and row.pretraining_dataset == "JFT"
    assert row.dataset_url == "http://d" and row.paper == "P"
    assert row.task == "Segmentation" and row.op_set == 13 and row.producer == "pytorch"
    assert row.filter_share_3x3 == 0.5  # a given value overrides the computed 1.0
    assert json.loads(row.extra) == {"license": "MIT"}
    assert normalize_meta({"task": "gan generator"})["task"] == "GAN-Generator"
    assert normalize_meta({"visual_category": "Medical X-Ray"})["visual_category"] == "medical xray"
    assert column_name("Visual Category") == "visual_category"
    with pytest.raises(FilterDBError, match="unknown metadata column 'colour'.*known columns: model"):
        db.add_model(make_model(rng, [(4, 2, 3, 3)], "w"), {"colour": "red"})
    with pytest.raises(FilterDBError, match="bad value"):
        normalize_meta({"depth": "deep"})
    assert db.n_models == 1


# -- re-add, replace, rm ----------------------------------------------------------------------
def test_readd_replace_rm(db):
    rng = np.random.default_rng(6)
    a = make_model(rng, [(30, 10, 3, 3)], "a")
    b = make_model(rng, [(25, 8, 3, 3), (5, 5, 1, 1)], "b")
    assert db.add_model(a).status == "added"
    assert db.add_model(b).status == "added"
    n0, dv0 = db.n_filters, db.data_version
    again = db.add_model(a, {"task": "Classification"})
    assert again.status == "exists" and again.n_filters == 300
    assert db.n_filters == n0 and db.data_version == dv0

    # a different file under an explicit existing id is refused unless replace
    a2 = make_model(rng, [(11, 3, 3, 3)], "a2")
    with pytest.raises(FilterDBError, match="already in the database"):
        db.add_model(a2, {"model": "a"})
    r = db.add_model(a2, {"model": "a", "task": "Classification"}, replace=True)
    assert r.status == "replaced" and r.n_filters == 33
    assert db.n_models == 2 and db.n_filters == n0 + 33
    assert db.info()["free_filters"] == 300
    assert db.verify() == []  # the freed range is a hole, not an error
    got = np.concatenate([c.filters.copy() for c in db.filters("model = 'a'")])
    assert np.array_equal(bits(got), bits(a2.layers[0].weight.reshape(-1, 9)))
    got_b = np.concatenate([c.filters.copy() for c in db.filters("model = 'b'")])
    assert np.array_equal(bits(got_b), bits(b.layers[0].weight.reshape(-1, 9)))

    # same file with replace: re-ingested
    assert db.add_model(b, {"task": "Segmentation"}, replace=True).status == "replaced"
    assert db.models("model = 'b'").task.tolist() == ["Segmentation"]
    freed = db.remove_model("b")
    assert freed == 200
    assert db.n_models == 1 and db.layers("model = 'b'").empty
    assert db.info()["free_filters"] == 300 + 200 + 200
    assert db.verify() == []
    with pytest.raises(FilterDBError, match="no model"):
        db.remove_model("b")


# -- verify -------------------------------------------------------------------------------------
def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_verify_detects_corruption_and_truncation(tmp_path):
    rng = np.random.default_rng(7)
    with init_database(tmp_path / "db", segment_rows=1000) as db:
        db.add_model(make_model(rng, [(40, 20, 3, 3)], "a"))  # 800 filters
        db.add_model(make_model(rng, [(50, 20, 3, 3)], "b"))  # 1000 filters: 800..1799
    seg0, seg1 = tmp_path / "db/filters/seg-000000.f32", tmp_path / "db/filters/seg-000001.f32"
    _flip_byte(seg0, 900 * 36 + 5)  # a filter of layer b in segment 0
    with open_database(tmp_path / "db") as db:
        problems = db.verify()
        assert len(problems) == 1 and "checksum mismatch" in problems[0]
        assert "b.conv0" in problems[0] and "of model b" in problems[0]
        assert db.verify(checksums=False) == []
    _flip_byte(seg0, 900 * 36 + 5)  # restore
    with open_database(tmp_path / "db") as db:
        assert db.verify() == []
    os.truncate(seg1, 100 * 36)
    with open_database(tmp_path / "db") as db:
        problems = db.verify()
        assert any("seg-000001.f32 is truncated: 100 rows on disk, 800 committed" in p
                   for p in problems)
    r = subprocess.run([PY, "-m", "filterdb.cli", "verify", str(tmp_path / "db")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "truncated" in r.stdout


def test_bytes_past_committed_are_ignored_then_truncated(db):
    rng = np.random.default_rng(8)
    a = make_model(rng, [(10, 10, 3, 3)], "a")
    db.add_model(a)
    seg = db.path / "filters/seg-000000.f32"
    with open(seg, "ab") as f:  # what a crashed writer leaves
        f.write(b"\xff" * 36 * 50)
    (db.path / "filters/seg-000005.f32").write_bytes(b"\x01" * 72)
    assert db.verify() == []
    b = make_model(rng, [(5, 5, 3, 3)], "b")
    db.add_model(b)
    assert not (db.path / "filters/seg-000005.f32").exists()
    assert os.path.getsize(seg) == 125 * 36
    got = db.read_filters(0, 125)
    want = np.concatenate([a.layers[0].weight.reshape(-1, 9), b.layers[0].weight.reshape(-1, 9)])
    assert np.array_equal(bits(got), bits(want))


# -- concurrency ----------------------------------------------------------------------------------
def test_second_writer_is_refused(db):
    with pytest.raises(FilterDBError, match=rf"locked by another writer \(pid {os.getpid()}\)"):
        open_database(db.path, mode="w")
    r = subprocess.run([PY, "-m", "filterdb.cli", "rm", str(db.path), "x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "locked by another writer" in r.stderr
    db.close()
    with open_database(db.path, mode="w") as w:  # free again after close
        assert w.n_models == 0
    with pytest.raises(FilterDBError, match="read-only"), open_database(db.path) as r:
        r.add_model(make_model(np.random.default_rng(0), [(2, 2, 3, 3)]))


def test_reader_snapshot_during_and_after_write(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    path = tmp_path / "db"
    a = make_model(rng, [(30, 20, 3, 3)], "a")
    big = make_model(rng, [(300, 256, 3, 3), (100, 30, 3, 3)], "big")  # 79,800 filters
    with init_database(path, segment_rows=5000) as w:
        w.add_model(a)
    want_a = a.layers[0].weight.reshape(-1, 9)
    reader = filterdb.open(path)
    assert reader.n_models == 1 and reader.n_filters == 600
    writer = open_database(path, mode="w")
    from _slow_write import slow_appends
    from filterdb.store.segments import SegmentWriter

    slow_appends(monkeypatch, 0.05)
    monkeypatch.setattr(SegmentWriter, "WRITE_CHUNK_ROWS", 4096)  # 20 chunks: ~1 s of writing
    t = threading.Thread(target=writer.add_model, args=(big,))
    t.start()
    seen_during = 0
    while t.is_alive():
        assert reader.n_models == 1 and reader.n_filters == 600 and len(reader.layers()) == 1
        got = np.concatenate([c.filters.copy() for c in reader.filters(chunk_rows=256)])
        assert np.array_equal(bits(got), bits(want_a))
        seen_during += 1
        time.sleep(0.02)
    t.join()
    writer.close()
    assert seen_during >= 3
    # after the commit: the old snapshot still, and consistent
    assert reader.n_models == 1 and reader.n_filters == 600 and reader.verify() == []
    reader.close()
    with filterdb.open(path) as r2:
        assert r2.n_models == 2 and r2.n_filters == 600 + 79800
        want_big = np.concatenate([l.weight.reshape(-1, 9) for l in big.layers])
        assert np.array_equal(bits(r2.read_filters(600, 79800)), bits(want_big))
        assert r2.verify() == []


def test_cache_is_keyed_by_data_version(db):
    rng = np.random.default_rng(10)
    db.add_model(make_model(rng, [(4, 4, 3, 3)], "a"))
    db.cache_put("pca", {"evr": [0.5, 0.25]})
    db.cache_put("blob", b"\x00\x01")
    assert db.cache_get("pca") == {"evr": [0.5, 0.25]}
    assert db.cache_get("blob") == b"\x00\x01"
    with open_database(db.path) as r:  # a reader sees the entry of its data version
        assert r.cache_get("pca") == {"evr": [0.5, 0.25]}
    db.add_model(make_model(rng, [(4, 4, 3, 3)], "b"))
    assert db.cache_get("pca") is None  # stale
    assert db.cache_get("missing") is None


# -- CLI -------------------------------------------------------------------------------------
def npz_3x3(path):
    """The 3x3 filters of an npz file, read with numpy directly (member order)."""
    with np.load(path) as z:
        return expected_3x3([z[k] for k in z.files if z[k].ndim == 4])


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_add_ls_info_rm_verify(tmp_path, capsys):
    rng = np.random.default_rng(11)
    db = str(tmp_path / "db")
    f1 = write_npz(tmp_path / "one.npz", rng, [(8, 3, 3, 3), (16, 8, 3, 3), (4, 16, 1, 1)])
    f2 = write_npz(tmp_path / "two.npz", rng, [(12, 3, 5, 5), (10, 12, 3, 3)])
    assert main(["init", db, "--segment-rows", "100"]) == 0
    assert main(["add", db, str(f1), str(f2), "--meta", "task=classification",
                 "--meta", "Visual Category=handwriting", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "one" in out and "added" in out
    models = run_json(capsys, ["ls", db, "--json"])
    assert [m["model"] for m in models] == ["one", "two"]
    assert {m["task"] for m in models} == {"Classification"}
    assert [m["filters_3x3"] for m in models] == [24 + 128, 120]
    layers = run_json(capsys, ["ls", db, "--layers", "--json", "--where", "kh = 3 AND model = 'two'"])
    assert [(l["name"], l["filter_count"]) for l in layers] == [("conv1", 120)]
    info = run_json(capsys, ["info", db, "--json"])
    assert info["models"] == 2 and info["filters"] == 272
    assert info["by_task"] == {"Classification": 2} and info["by_format"] == {"npz": 2}
    assert main(["info", db]) == 0 and "272 3x3 filters" in capsys.readouterr().out
    with filterdb.open(db) as d:
        got = np.concatenate([c.filters.copy() for c in d.filters(chunk_rows=50)])
    assert np.array_equal(bits(got), bits(np.concatenate([npz_3x3(f1), npz_3x3(f2)])))
    # re-adding is a reported no-op
    assert main(["add", db, str(f1)]) == 0
    assert "exists" in capsys.readouterr().out
    assert main(["verify", db]) == 0 and capsys.readouterr().out.startswith("OK")
    assert run_json(capsys, ["verify", db, "--json"]) == {"ok": True, "problems": []}
    assert main(["rm", db, "one"]) == 0
    assert [m["model"] for m in run_json(capsys, ["ls", db, "--json"])] == ["two"]
    assert main(["verify", db]) == 0
    assert main(["ls", db, "--where", "bogus = 1"]) == 2
    assert "columns:" in capsys.readouterr().err


def test_cli_manifest(tmp_path, capsys):
    rng = np.random.default_rng(12)
    (tmp_path / "models").mkdir()
    f1 = write_npz(tmp_path / "models/a.npz", rng, [(6, 3, 3, 3)])
    f2 = write_npz(tmp_path / "models/b.npz", rng, [(7, 3, 3, 3)])
    man = tmp_path / "manifest.csv"
    man.write_text("path,Task,Visual Category,model,x_seed\n"
                   "models/a.npz,Classification,natural,net-a,1\n"
                   "models/b.npz,Semantic Segmentation,medical mri,net-b,\n")
    db = str(tmp_path / "db")
    assert main(["add", db, "--manifest", str(man)]) == 0
    ms = run_json(capsys, ["ls", db, "--json"])
    assert [(m["model"], m["task"], m["visual_category"]) for m in ms] == [
        ("net-a", "Classification", "natural"), ("net-b", "Segmentation", "medical mri")]
    # free columns are typed: the manifest's "1" is stored as the number 1
    assert json.loads(ms[0]["extra"]) == {"seed": 1} and ms[1]["extra"] is None
    assert ms[0]["x_seed"] == 1 and ms[1]["x_seed"] is None
    with filterdb.open(db) as d:
        assert np.array_equal(bits(d.read_filters(0, 18 + 21)),
                              bits(np.concatenate([npz_3x3(f1), npz_3x3(f2)])))


@pytest.mark.parametrize("content, reason", [
    ("path,task,colour\nmodels/a.npz,Classification,red\n", "unknown metadata column 'colour'"),
    ("file,task\nmodels/a.npz,Classification\n", "no 'path' column"),
    ("path,task\nmodels/a.npz,Classification,extra\n", "line 2 has 3 fields"),
    ("path,depth\nmodels/a.npz,deep\n", "bad value"),
])
def test_cli_bad_manifest_writes_nothing(tmp_path, content, reason):
    rng = np.random.default_rng(13)
    (tmp_path / "models").mkdir()
    write_npz(tmp_path / "models/a.npz", rng, [(6, 3, 3, 3)])
    man = tmp_path / "manifest.csv"
    man.write_text(content)
    db = tmp_path / "db"
    init_database(db, segment_rows=100).close()
    r = subprocess.run([PY, "-m", "filterdb.cli", "add", str(db), str(tmp_path / "models/a.npz"),
                        "--manifest", str(man)], capture_output=True, text=True)
    assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with open_database(db) as d:
        assert d.n_models == 0 and d.n_filters == 0
    assert os.listdir(db / "filters") == []


def test_cli_batch_with_corrupt_file(tmp_path):
    rng = np.random.default_rng(14)
    good1 = write_npz(tmp_path / "g1.npz", rng, [(5, 3, 3, 3)])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(Path(good1).read_bytes()[:200])  # truncated archive
    good2 = write_npz(tmp_path / "g2.npz", rng, [(9, 3, 3, 3)])
    missing = tmp_path / "missing.onnx"
    db = tmp_path / "db"
    r = subprocess.run([PY, "-m", "filterdb.cli", "add", str(db), str(good1), str(bad),
                        str(missing), str(good2), "--jobs", "2"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "FAILED" in r.stdout and "Traceback" not in r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("filterdb:")]
    assert len(err) == 2 and any("bad.npz" in l for l in err) and any("missing.onnx" in l for l in err)
    with open_database(db) as d:
        assert list(d.models().model) == ["g1", "g2"]
        assert np.array_equal(bits(d.read_filters(0, 15 + 27)),
                              bits(np.concatenate([npz_3x3(good1), npz_3x3(good2)])))
        assert d.verify() == []


def test_cli_meta_refused_before_writing(tmp_path):
    rng = np.random.default_rng(15)
    f = write_npz(tmp_path / "a.npz", rng, [(5, 3, 3, 3)])
    db = tmp_path / "db"
    r = subprocess.run([PY, "-m", "filterdb.cli", "add", str(db), str(f), "--meta", "colour=red"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown metadata column 'colour'" in r.stderr
    assert "known columns:" in r.stderr and "x_" in r.stderr
    assert not db.exists()


# -- the real zoo ---------------------------------------------------------------------------------
ZOO_IDS = ["mtcnn-pnet", "digit-recognizer", "ppocr-mobile-v2-cls", "fer-mini-xception-int8",
           "mp-face-detection-short", "silero-vad-safetensors"]


@pytest.mark.zoo
def test_zoo_ingest_matches_read_model(tmp_path, zoo_paths):
    from filterdb.readers import read_model
    from filterdb.zoo import find
    from filterdb.zoo.ingest import ingest_zoo

    with init_database(tmp_path / "db", segment_rows=4096) as db:
        results = ingest_zoo(db, [find(i) for i in ZOO_IDS])
        failed = [(i, r) for i, r in results if isinstance(r, str)]
        assert not failed, failed
        assert ingest_zoo(db, [find(ZOO_IDS[0])])[0][1].status == "exists"
        assert db.verify() == []
    with filterdb.open(tmp_path / "db") as db:
        for zid in ZOO_IDS:
            model = read_model(zoo_paths[zid])
            zm = find(zid)
            row = db.models(f"model = '{zid}'").iloc[0]
            assert row.sha256 == zm.sha256 and row.task == zm.task
            assert row.n_layers == len(model.layers)
            assert row.filters_3x3 == model.n_filters_3x3
            assert json.loads(row.kernel_counts) == model.kernel_counts
            got = [c.filters.copy() for c in db.filters(f"model = '{zid}'", chunk_rows=1000)]
            got = np.concatenate(got) if got else np.empty((0, 9), np.float32)
            assert np.array_equal(bits(got), bits(model.filters_3x3())), zid
