"""The published dataset.h5 layout: import, query, export, re-import; bulk ingest atomicity.

Every file is built here with h5py/pandas in the published layout; expected filters are
the file's rows sliced by hand with the inclusive ``filter_ids`` ranges, expected metadata
is normalised by hand from the vocabulary rules (docs/method.md section 6).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from filterdb.cli import main
from filterdb.errors import FilterDBError
from filterdb.store import init_database, open_database
from filterdb.store.bulk import BulkWriter, LayerSpec, ModelSpec

PY = sys.executable


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# (model, Task, visual category, layer sizes, extra License, Add count)
MODELS = [
    ("resnet-a", "Classification", "natural", [27, 64, 100, 5], "MIT", 3),
    ("unet-b", "Semantic Segmentation", "medical ct", [9, 40], "BSD", None),
    ("mask-c", "Instance Segmentation ", "natural", [12, 30, 30], "MIT", 2),
    ("frac-d", "classification", "formula", [50], "CC", 0),
]


def published_frame(datatype: bool = False, gap: int = 4, shuffle: bool = True, seed: int = 0):
    """``(meta DataFrame, n_rows, expected)``: ``expected`` lists per layer (model index,
    start, end inclusive, conv_depth, conv_depth_norm, layer_name)."""
    rng = np.random.default_rng(seed)
    rows, expected, pos = [], [], 0
    for mi, (model, task, vc, sizes, lic, add) in enumerate(MODELS):
        depths = np.arange(len(sizes))
        norm = depths / max(len(sizes) - 1, 1)
        for li, n in enumerate(sizes):
            start, end = pos, pos + n - 1
            pos += n
            expected.append((mi, start, end, int(depths[li]), float(norm[li]), f"{model}.conv{li}"))
            rows.append({
                "model_id": mi, "conv_depth": int(depths[li]), "conv_depth_norm": float(norm[li]),
                "model": model, "Name": model.upper(), "Paper": f"https://paper/{mi}",
                "Pretraining-Dataset": "ImageNet ,COCO" if mi == 0 else np.nan,
                "Training-Dataset": "ImageNet", ("Datatype" if datatype else "Visual Category"): vc,
                "Task": task, "Accessible": "https://x" if mi % 2 else "yes",
                "Dataset URL": "https://data", "producer": "pytorch", "op_set": 11 + mi,
                "depth": len(sizes), "total_filters": sum(sizes) + 10,
                "3x3_filter_share": sum(sizes) / (sum(sizes) + 10),
                "(1, 1) filters": 100 * (mi + 1), "(3, 3) filters": sum(sizes),
                "(7, 7) filters": 10,
                "Conv": len(sizes) + 1, "Relu": 2 * mi, "Add": np.nan if add is None else add,
                "License": lic, "n_params": 1000 + mi, "layer_name": f"{model}.conv{li}",
                "filter_ids": f"{start}:{end}",
            })
        pos += gap  # rows no layer owns
    df = pd.DataFrame(rows)
    if shuffle:
        df = df.iloc[rng.permutation(len(df))]
    df = df.set_index(["model_id", "conv_depth", "conv_depth_norm"])
    return df, pos, expected


def write_h5(path, df, n_rows, shape="flat", dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n_rows, 9)).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("filters", data=data.reshape((n_rows, 9) if shape == "flat"
                                                      else (n_rows, 3, 3)))
    df.to_hdf(path, key="meta", mode="a")
    return data


def norm_task(t):
    return "Segmentation" if "segmentation" in t.lower() else t.strip().capitalize() \
        if t.strip().lower() == "classification" else t


def expected_meta(expected, datatype=False):
    """The meta table an export of the whole import must hold, built from MODELS by hand."""
    rows = []
    pos = 0
    for mi, start, end, cd, cdn, lname in expected:
        model, task, vc, sizes, lic, add = MODELS[mi]
        n = end - start + 1
        rows.append({
            "model_id": mi, "conv_depth": cd, "conv_depth_norm": cdn,
            "model": model, "Name": model.upper(), "Paper": f"https://paper/{mi}",
            "Pretraining-Dataset": "ImageNet, COCO" if mi == 0 else np.nan,
            "Training-Dataset": "ImageNet", "Visual Category": "fractals" if vc == "formula" else vc,
            "Task": {"Semantic Segmentation": "Segmentation",
                     "Instance Segmentation ": "Segmentation",
                     "classification": "Classification"}.get(task, task),
            "Accessible": "https://x" if mi % 2 else "yes", "Dataset URL": "https://data",
            "producer": "pytorch", "op_set": 11 + mi, "depth": len(sizes),
            "total_filters": sum(sizes) + 10, "3x3_filter_share": sum(sizes) / (sum(sizes) + 10),
            "(1, 1) filters": 100 * (mi + 1), "(3, 3) filters": sum(sizes), "(7, 7) filters": 10,
            "Add": np.nan if add is None else float(add), "Conv": len(sizes) + 1,
            "Relu": 2 * mi, "License": lic, "n_params": 1000 + mi, "layer_name": lname,
            "filter_ids": f"{pos}:{pos + n - 1}",
        })
        pos += n
    return pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm"])


def read_published(path):
    with h5py.File(path, "r") as f:
        filters = f["filters"][...]
    return filters, pd.read_hdf(path, "meta")


def assert_meta_equal(got, want):
    got = got[list(want.columns)] if set(got.columns) == set(want.columns) else got
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


# -- import, query, export, re-import ---------------------------------------------------------
@pytest.mark.parametrize("shape,dtype,datatype", [("flat", np.float32, False),
                                                  ("3x3", np.float64, True)])
def test_import_query_export_roundtrip(tmp_path, shape, dtype, datatype, capsys):
    df, n_rows, expected = published_frame(datatype=datatype)
    h5 = tmp_path / "dataset.h5"
    data = write_h5(h5, df, n_rows, shape, dtype)
    want_rows = data.astype(np.float32)  # float64 files are converted to float32
    db_path = tmp_path / "db"
    assert main(["import-h5", str(db_path), str(h5), "--chunk-rows", "7"]) == 0
    assert "4 models added" in capsys.readouterr().out

    with open_database(db_path) as db:
        assert db.verify() == []
        assert db.n_models == 4 and db.n_layers == len(expected)
        lay = db.layers()
        # every layer's filters are the file's rows start..end (inclusive)
        by_range = {(r.model, int(r.conv_depth)): r for r in lay.itertuples()}
        for mi, start, end, cd, cdn, lname in expected:
            r = by_range[(MODELS[mi][0], cd)]
            assert r.filter_count == end - start + 1
            assert r.conv_depth_norm == pytest.approx(cdn)
            assert json.loads(r.layer_extra) == {"layer_name": lname}
            assert np.array_equal(bits(db.layer_filters(r.layer_id)),
                                  bits(want_rows[start:end + 1]))
        # queries: the vocabulary normalised the labels
        seg = db.layers("task = 'Segmentation'")
        assert sorted(set(seg.model)) == ["mask-c", "unet-b"]
        frac = db.models("visual_category = 'fractals'")
        assert list(frac.model) == ["frac-d"]
        sel = [e for e in expected if "Segmentation" in MODELS[e[0]][1] and e[4] > 0]
        got = np.concatenate([c.filters for c in db.filters(
            "task = 'Segmentation' AND conv_depth_norm > 0", chunk_rows=5, copy=True)])
        want = np.concatenate([want_rows[s:e + 1] for _, s, e, *_ in sel])
        assert np.array_equal(bits(got), bits(want))
        m = db.models("model = 'resnet-a'").iloc[0]
        assert json.loads(m.kernel_counts) == {"1x1": 100, "3x3": 196, "7x7": 10}
        assert json.loads(m.op_counts) == {"Add": 3, "Conv": 5, "Relu": 0}
        assert json.loads(m.extra) == {"License": "MIT", "n_params": 1000}
        assert m.training_dataset == "ImageNet" and m.pretraining_dataset == "ImageNet, COCO"
        assert (m.op_set, m.depth, m.total_filters) == (11, 4, 206)
        assert json.loads(db.models("model = 'unet-b'").iloc[0].op_counts) == {"Conv": 3, "Relu": 2}

    # a re-run finds everything present
    assert main(["import-h5", str(db_path), str(h5), "--json"]) == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)} == {"exists"}

    # export: the published layout, ranges renumbered from 0 (the gaps dropped)
    out = tmp_path / "out.h5"
    args = ["export-h5", str(db_path), str(out)] + (["--shape", "3x3", "--dtype", "float64"]
                                                    if shape == "3x3" else [])
    assert main(args) == 0
    filters, meta = read_published(out)
    assert filters.shape[1:] == ((9,) if shape == "flat" else (3, 3))
    assert filters.dtype == (np.float32 if shape == "flat" else np.float64)
    want_all = np.concatenate([want_rows[s:e + 1] for _, s, e, *_ in expected])
    assert np.array_equal(bits(filters.reshape(-1, 9).astype(np.float32)), bits(want_all))
    assert_meta_equal(meta, expected_meta(expected, datatype))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    # re-import of the export, exported again: the same file content
    db2 = tmp_path / "db2"
    assert main(["import-h5", str(db2), str(out), "--chunk-rows", "1000"]) == 0
    out2 = tmp_path / "out2.h5"
    assert main(args[:1] + [str(db2), str(out2)] + args[3:]) == 0
    filters2, meta2 = read_published(out2)
    assert np.array_equal(filters2.view(np.uint8), filters.view(np.uint8))
    pd.testing.assert_frame_equal(meta2, meta)
    with open_database(db_path) as a, open_database(db2) as b:
        cols = ["model", "name", "task", "visual_category", "training_dataset", "op_set",
                "depth", "total_filters", "filter_share_3x3", "kernel_counts", "op_counts",
                "extra", "n_layers", "filters_3x3"]
        pd.testing.assert_frame_equal(a.models()[cols], b.models()[cols])
        la, lb = a.layers(), b.layers()
        assert list(la.checksum) == list(lb.checksum)
        assert list(la.layer_extra) == list(lb.layer_extra)


def test_export_where_and_default_layout(tmp_path):
    df, n_rows, expected = published_frame(shuffle=False)
    h5 = tmp_path / "dataset.h5"
    data = write_h5(h5, df, n_rows)
    with open_database(tmp_path / "db", mode="w", create=True) as db:
        from filterdb.store.published import import_h5

        import_h5(db, h5, show_progress=False)
    out = tmp_path / "seg.h5"
    assert main(["export-h5", str(tmp_path / "db"), str(out), "--where",
                 "task = 'Segmentation' AND conv_depth >= 1"]) == 0
    filters, meta = read_published(out)
    sel = [e for e in expected if "Segmentation" in MODELS[e[0]][1] and e[3] >= 1]
    want = np.concatenate([data[s:e + 1] for _, s, e, *_ in sel])
    assert filters.shape == want.shape and np.array_equal(bits(filters), bits(want))
    # models renumbered 0..K-1, ranges contiguous from 0
    assert list(meta.index.get_level_values("model_id")) == [0, 1, 1]
    assert list(meta.filter_ids) == ["0:39", "40:69", "70:99"]
    assert list(meta.model) == ["unet-b", "mask-c", "mask-c"]
    assert meta.index.names == ["model_id", "conv_depth", "conv_depth_norm"]


def test_chunk_rows_do_not_change_the_data(tmp_path):
    df, n_rows, expected = published_frame()
    h5 = tmp_path / "d.h5"
    write_h5(h5, df, n_rows, "3x3", np.float64)
    got = {}
    for cr in (1, 3, 64, 1 << 20):
        p = tmp_path / f"db{cr}"
        assert main(["import-h5", str(p), str(h5), "--chunk-rows", str(cr)]) == 0
        with open_database(p) as db:
            f = np.concatenate([c.filters for c in db.filters(copy=True)])
            got[cr] = (f, list(db.layers().checksum))
    for cr in (3, 64, 1 << 20):
        assert np.array_equal(bits(got[cr][0]), bits(got[1][0]))
        assert got[cr][1] == got[1][1]


# -- bad files: one line, nothing written ---------------------------------------------------
def _assert_untouched(db_path):
    with open_database(db_path) as db:
        assert db.n_models == 0 and db.n_filters == 0 and db.data_version == 0
    assert all(os.path.getsize(db_path / "filters" / s) == 0
               for s in os.listdir(db_path / "filters"))


def _overlapping(df):
    df = df.copy()
    ids = df["filter_ids"].tolist()
    ids[1] = "20:40"  # layer 0 owns 0:26
    df["filter_ids"] = ids
    return df


def _not_contiguous(df):
    df = df.copy()
    ids = df["filter_ids"].tolist()
    ids[2] = "0:3,5:8"
    df["filter_ids"] = ids
    return df


def _past_end(df):
    df = df.copy()
    ids = df["filter_ids"].tolist()
    ids[0] = "0:100000"
    df["filter_ids"] = ids
    return df


@pytest.mark.parametrize("mutate,reason", [(_overlapping, "overlap"),
                                           (_not_contiguous, "not one contiguous range"),
                                           (_past_end, "past the")])
def test_bad_ranges_refused_before_writing(tmp_path, capsys, mutate, reason):
    df, n_rows, _ = published_frame(shuffle=False)
    h5 = tmp_path / "bad.h5"
    write_h5(h5, mutate(df), n_rows)
    init_database(tmp_path / "db").close()
    assert main(["import-h5", str(tmp_path / "db"), str(h5)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(h5) in err and reason in err
    _assert_untouched(tmp_path / "db")


def test_overlap_check_by_hand(tmp_path):
    """The overlapping pair named is the one found by sorting the ranges here."""
    df, n_rows, expected = published_frame(shuffle=False)
    df = df.copy()
    ids = df["filter_ids"].tolist()
    s0, e0 = expected[0][1], expected[0][2]
    ids[3] = f"{e0}:{e0 + 2}"  # touches the last row of layer 0
    df["filter_ids"] = ids
    h5 = tmp_path / "bad.h5"
    write_h5(h5, df, n_rows)
    with open_database(tmp_path / "db", mode="w", create=True) as db:
        from filterdb.store.published import import_h5

        with pytest.raises(FilterDBError, match=rf"row 0 \({s0}:{e0}.*row 3 \({e0}:{e0 + 2}"):
            import_h5(db, h5, show_progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_meta", "bad_shape"])
def test_corrupt_file_one_line_nothing_written(tmp_path, capsys, damage):
    df, n_rows, _ = published_frame()
    h5 = tmp_path / "d.h5"
    if damage == "bad_shape":
        with h5py.File(h5, "w") as f:
            f.create_dataset("filters", data=np.zeros((n_rows, 4), np.float32))
        df.to_hdf(h5, key="meta", mode="a")
    elif damage == "no_meta":
        with h5py.File(h5, "w") as f:
            f.create_dataset("filters", data=np.zeros((n_rows, 9), np.float32))
    else:
        write_h5(h5, df, n_rows)
        size = os.path.getsize(h5)
        if damage == "truncate":
            os.truncate(h5, size // 2)
        else:
            with open(h5, "r+b") as f:
                f.write(np.random.default_rng(0).bytes(4096))
    init_database(tmp_path / "db").close()
    assert main(["import-h5", str(tmp_path / "db"), str(h5)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("filterdb: error: ") and "\n" not in err and str(h5) in err
    _assert_untouched(tmp_path / "db")


# -- the bulk path: streamed chunks, atomicity ------------------------------------------------
def _chunks(a, size, fail_after=None):
    for i, p in enumerate(range(0, len(a), size)):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("reader died")
        yield a[p:p + size]


def test_bulk_streamed_layers_and_abort(tmp_path):
    import zlib

    rng = np.random.default_rng(3)
    a = rng.standard_normal((1000, 9)).astype(np.float32)
    b = rng.standard_normal((500, 9)).astype(np.float32)
    db = init_database(tmp_path / "db", segment_rows=300)
    try:
        with BulkWriter(db) as bw:
            r = bw.add(ModelSpec(sha256="a" * 64, name="A"),
                       [LayerSpec(n_filters=1000, chunks=_chunks(a, 77), c_out=100, c_in=10),
                        LayerSpec(n_filters=64, kh=1, kw=1, chunks=None)], {"task": "GAN"})
        assert (r.status, r.n_layers, r.n_filters) == ("added", 2, 1000)
        assert r.model_id == 1
        lay = db.layers()
        assert int(lay.checksum.iloc[0]) == zlib.crc32(a.tobytes())
        m = db.models().iloc[0]
        assert json.loads(m.kernel_counts) == {"3x3": 1000, "1x1": 64}
        assert (m.total_filters, m.filter_share_3x3, m.depth) == (1000, 1.0, 1)
        # a failing chunk source: the model is dropped, its bytes truncated
        with pytest.raises(RuntimeError), BulkWriter(db) as bw:
            bw.add(ModelSpec(sha256="b" * 64, name="B"),
                   [LayerSpec(n_filters=500, chunks=_chunks(b, 100, fail_after=3))])
        # a wrong row count: refused
        with pytest.raises(FilterDBError, match="400 filter rows given, 500 expected"), \
                BulkWriter(db) as bw:
            bw.add(ModelSpec(sha256="b" * 64, name="B"),
                   [LayerSpec(n_filters=500, chunks=_chunks(b[:400], 100))])
        # a batch (commit_rows): all or nothing
        with pytest.raises(RuntimeError), BulkWriter(db, commit_rows=10 ** 9) as bw:
            bw.add(ModelSpec(sha256="c" * 64, name="C"),
                   [LayerSpec(n_filters=500, chunks=_chunks(b, 100))])
            bw.add(ModelSpec(sha256="d" * 64, name="D"),
                   [LayerSpec(n_filters=500, chunks=_chunks(b, 100, fail_after=2))])
        assert db.n_models == 1 and db.n_filters == 1000 and db.verify() == []
        sizes = sum(os.path.getsize(tmp_path / "db" / "filters" / s)
                    for s in os.listdir(tmp_path / "db" / "filters"))
        assert sizes == 1000 * 36
        with BulkWriter(db, commit_rows=10 ** 9) as bw:
            rc = bw.add(ModelSpec(sha256="c" * 64, name="C"), [LayerSpec(500, chunks=[b])])
            rd = bw.add(ModelSpec(sha256="d" * 64, name="C"), [LayerSpec(500, chunks=[b[::-1]])])
            assert rc.model_id == -1  # pending until the commit
        assert (rc.model_id, rd.model_id, rd.model) == (2, 3, "C-dddddddd")
        got = np.concatenate([c.filters for c in db.filters(copy=True)])
        assert np.array_equal(bits(got), bits(np.concatenate([a, b, b[::-1]])))
        assert db.verify() == []
    finally:
        db.close()


def test_sigkill_during_import_then_rerun(tmp_path):
    """Kill ``import-h5`` at random moments: the database stays consistent (each model
    whole or absent) and a re-run completes with the same filters."""
    rng = np.random.default_rng(7)
    sizes = [[20000, 30000], [40000], [25000, 25000], [30000]]
    rows, pos = [], 0
    for mi, sz in enumerate(sizes):
        for li, n in enumerate(sz):
            rows.append({"model_id": mi, "conv_depth": li, "conv_depth_norm": float(li),
                         "model": f"m{mi}", "Task": "Classification",
                         "filter_ids": f"{pos}:{pos + n - 1}"})
            pos += n
    df = pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm"])
    h5 = tmp_path / "d.h5"
    data = rng.standard_normal((pos, 9)).astype(np.float32)
    with h5py.File(h5, "w") as f:
        f.create_dataset("filters", data=data)
    df.to_hdf(h5, key="meta", mode="a")
    db_path = tmp_path / "db"
    init_database(db_path, segment_rows=50000).close()
    env = dict(os.environ)
    slow = os.path.join(os.path.dirname(__file__), "_slow_write.py")  # 46 chunks: about 4 s
    cmd = [PY, slow, "0.08", "import-h5", str(db_path), str(h5), "--chunk-rows", "5000"]
    kill_rng = np.random.default_rng(1)
    kills = 0
    for _ in range(4):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(kill_rng.uniform(0.5, 2.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        with open_database(db_path) as db:
            assert db.verify() == []
            for r in db.models().itertuples():
                mi = int(r.model[1:])
                s0 = sum(sum(s) for s in sizes[:mi])
                want = data[s0:s0 + sum(sizes[mi])]
                got = np.concatenate([c.filters for c in db.filters(
                    f"model = '{r.model}'", copy=True)])
                assert np.array_equal(bits(got), bits(want))
    assert kills >= 2
    r = subprocess.run([PY, "-m", "filterdb.cli", *cmd[3:]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open_database(db_path) as db:
        assert db.n_models == 4 and db.verify() == []
        got = np.concatenate([c.filters for c in db.filters(copy=True)])
        assert np.array_equal(bits(got), bits(data))
