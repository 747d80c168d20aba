"""export-h5 then import-h5 is lossless, and a failed import leaves nothing (issue 19).

The databases are built through the CLI from npz files and a published-layout file written
here with h5py/pandas; what comes back is compared with sqlite3 and numpy directly."""
from __future__ import annotations

import json
import os
import sqlite3

import h5py
import numpy as np
import pandas as pd
import pytest

import _models
from filterdb.cli import main

MODEL_SKIP = {"model_id", "added_at"}
LAYER_SKIP = {"layer_id", "model_id", "filter_start"}


def write_npz(path, seed, shapes):
    return _models.write_npz(path, seed, shapes, name="block{i}.conv.weight")


def write_published(path, seed=0):
    """Two models, 2 and 1 layers, a per-layer extra column (layer_name) and a per-model
    one (License)."""
    rng = np.random.default_rng(seed)
    sizes = [(0, "pub-a", 18), (0, "pub-a", 27), (1, "pub-b", 40)]
    rows, pos = [], 0
    for i, (mid, model, n) in enumerate(sizes):
        rows.append({"model_id": mid, "conv_depth": i % 2, "conv_depth_norm": float(i % 2),
                     "model": model, "Task": "Classification", "Visual Category": "natural",
                     "License": "MIT" if mid == 0 else "BSD", "layer_name": f"l{i}",
                     "filter_ids": f"{pos}:{pos + n - 1}"})
        pos += n
    with h5py.File(path, "w") as f:
        f.create_dataset("filters", data=rng.standard_normal((pos, 9)).astype(np.float32))
    pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm"]).to_hdf(
        path, key="meta", mode="a")
    return str(path)


def catalog(db):
    """``{model: (model row, [layer rows], [filters per layer])}`` read with sqlite3/numpy."""
    con = sqlite3.connect(os.path.join(db, "catalog.sqlite"))
    con.row_factory = sqlite3.Row
    seg_rows = int(con.execute("SELECT value FROM meta WHERE key='segment_rows'").fetchone()[0])
    out = {}
    for m in con.execute("SELECT * FROM models ORDER BY model"):
        lays, filt = [], []
        for r in con.execute("SELECT * FROM layers WHERE model_id = ? ORDER BY layer_index",
                             (m["model_id"],)):
            # sqlite3.Row: `in` tests the values, keys() the column names
            lays.append({k: r[k] for k in r.keys() if k not in LAYER_SKIP})  # noqa: SIM118
            f = np.zeros((0, 9), np.float32)
            if r["filter_count"]:
                g = r["filter_start"]
                with open(os.path.join(db, "filters", f"seg-{g // seg_rows:06d}.f32"), "rb") as fh:
                    fh.seek((g % seg_rows) * 36)
                    f = np.frombuffer(fh.read(r["filter_count"] * 36), "<f4").reshape(-1, 9)
            filt.append(f)
        meta = {k: m[k] for k in m.keys() if k not in MODEL_SKIP}  # noqa: SIM118 - sqlite3.Row
        out[m["model"]] = (meta, lays, filt)
    con.close()
    return out


@pytest.fixture
def source_db(tmp_path):
    db = str(tmp_path / "src")
    pub = write_published(tmp_path / "pub.h5")
    assert main(["import-h5", db, pub]) == 0
    # free columns that shadow published and catalog names, typed values, a 1x1 and a 5x5
    # layer (not stored as filters) and a grouped conv
    a = write_npz(tmp_path / "a.npz", 1, [(8, 3, 3, 3), (16, 8, 1, 1), (4, 2, 3, 3)])
    b = write_npz(tmp_path / "b.npz", 2, [(6, 3, 5, 5), (12, 6, 3, 3)])
    assert main(["add", db, a, "--meta", "task=Segmentation", "--meta", "x_task=Detection",
                 "--meta", "x_Task=Other", "--meta", "x_Conv=7", "--meta", "x_seed=3",
                 "--meta", "x_ok=true", "--meta", "x_filter_ids=0:1",
                 "--meta", "x_License='Apache'", "--meta", "architecture=resnet"]) == 0
    assert main(["add", db, b, "--meta", "task=Classification", "--meta", "x_seed=4.5",
                 "--meta", "x_model=shadow"]) == 0
    return db


def test_export_import_is_lossless(source_db, tmp_path, capsys):
    out = str(tmp_path / "out.h5")
    assert main(["export-h5", source_db, out]) == 0
    back = str(tmp_path / "back")
    assert main(["import-h5", back, out]) == 0
    want, got = catalog(source_db), catalog(back)
    assert sorted(got) == sorted(want) == ["a", "b", "pub-a", "pub-b"]
    for name, (m, lays, filt) in want.items():
        gm, glays, gfilt = got[name]
        assert gm == m, name  # every model column: sha256, format, path, metadata, extra
        assert glays == lays, name  # names, shapes, groups, depths, checksums, extras
        for a, b in zip(filt, gfilt):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    # the free columns came back typed, under their own names
    assert json.loads(want["a"][0]["extra"]) == {
        "task": "Detection", "Task": "Other", "Conv": 7, "seed": 3, "ok": True,
        "filter_ids": "0:1", "License": "Apache"}
    assert json.loads(got["b"][0]["extra"]) == {"seed": 4.5, "model": "shadow"}
    # the non-3x3 layers are there too
    assert [l["kh"] for l in got["a"][1]] == [3, 1, 3] and got["b"][1][0]["kh"] == 5
    # importing the same file again is a no-op (same sha256)
    capsys.readouterr()
    assert main(["import-h5", back, out, "--json"]) == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)} == {"exists"}


def test_export_meta_keeps_published_names_and_namespaces_clashes(source_db, tmp_path):
    out = str(tmp_path / "out.h5")
    assert main(["export-h5", source_db, out]) == 0
    meta = pd.read_hdf(out, "meta").reset_index()
    with h5py.File(out, "r") as f:
        n = f["filters"].shape[0]
    # published columns under their published names, holding the catalog's values
    a = meta[meta.model == "a"]
    assert set(a["Task"]) == {"Segmentation"} and set(a["architecture"]) == {"resnet"}
    # free columns that would read back as something else are x_-prefixed
    assert set(a["x_task"]) == {"Detection"} and set(a["x_Task"]) == {"Other"}
    assert set(a["x_Conv"]) == {7} and set(a["x_filter_ids"]) == {"0:1"}
    assert set(a["x_model"].dropna()) == set() and "x_License" not in meta
    assert set(meta.loc[meta.model == "b", "x_model"]) == {"shadow"}
    # a free column that cannot clash keeps its name (License: published-file style)
    assert set(a["License"]) == {"Apache"}
    assert set(meta.loc[meta.model == "pub-a", "License"]) == {"MIT"}
    assert list(meta.loc[meta.model == "pub-a", "layer_name"]) == ["l0", "l1"]
    # the 3x3 layers, in filter order, own every row exactly once
    ids = meta.filter_ids.str.split(":", expand=True).astype(int)
    assert ids[0].iloc[0] == 0 and (ids[0].iloc[1:].to_numpy() == ids[1].iloc[:-1].to_numpy()
                                    + 1).all() and ids[1].iloc[-1] == n - 1


def test_meta_only_reimport_keeps_free_columns(source_db, tmp_path):
    """A file without the catalog document (as another tool would write it) still brings
    the shadowing free columns back as free columns, not as the columns they shadow."""
    out = str(tmp_path / "out.h5")
    assert main(["export-h5", source_db, out]) == 0
    with h5py.File(out, "a") as f:
        del f["filterdb_catalog"]
    back = str(tmp_path / "back")
    assert main(["import-h5", back, out]) == 0
    got = catalog(back)
    m = got["a"][0]
    assert m["task"] == "Segmentation"
    x = json.loads(m["extra"])
    assert x["task"] == "Detection" and x["Task"] == "Other" and x["Conv"] == 7
    assert x["License"] == "Apache" and x["seed"] == 3
    assert json.loads(got["pub-a"][1][0]["extra"]) == {"layer_name": "l0"}


def test_failed_import_leaves_nothing(source_db, tmp_path, capsys):
    out = str(tmp_path / "out.h5")
    assert main(["export-h5", source_db, out]) == 0
    # a truncated file: no new database is left behind
    trunc = str(tmp_path / "trunc.h5")
    with open(out, "rb") as f, open(trunc, "wb") as g:
        g.write(f.read()[: os.path.getsize(out) // 2])
    new = str(tmp_path / "new")
    capsys.readouterr()
    assert main(["import-h5", new, trunc]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trunc.h5" in err
    assert not os.path.exists(new)
    # an existing database is unchanged
    before = catalog(source_db)
    assert main(["import-h5", source_db, trunc]) == 2
    assert _same(catalog(source_db), before)


def test_failure_mid_import_removes_what_it_added(tmp_path, capsys):
    """A chunk that fails to decode after the first model was committed: the import fails
    with one line and the models it added are gone again."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "bad.h5")
    n = 4096
    with h5py.File(path, "w") as f:
        f.create_dataset("filters", data=rng.standard_normal((n, 9)).astype(np.float32),
                         chunks=(512, 9), compression="gzip")
    rows = [{"model_id": i, "conv_depth": 0, "conv_depth_norm": 0.0, "model": f"m{i}",
             "Task": "Classification", "filter_ids": f"{512 * i}:{512 * i + 511}"}
            for i in range(8)]
    pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm"]).to_hdf(
        path, key="meta", mode="a")
    with h5py.File(path, "r") as f:
        info = f["filters"].id.get_chunk_info(6)
    with open(path, "r+b") as g:  # garble the 7th chunk's compressed bytes
        g.seek(info.byte_offset + 8)
        g.write(b"\xff" * 64)
    db = str(tmp_path / "db")
    keep = write_npz(tmp_path / "keep.npz", 9, [(4, 3, 3, 3)])
    assert main(["add", db, keep]) == 0
    before = catalog(db)
    capsys.readouterr()
    assert main(["import-h5", db, path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.h5" in err
    assert sorted(catalog(db)) == ["keep"]
    assert _same(catalog(db), before)
    assert main(["verify", db]) == 0


def _same(a, b) -> bool:
    if sorted(a) != sorted(b):
        return False
    for k in a:
        if a[k][0] != b[k][0] or a[k][1] != b[k][1]:
            return False
        if any(not np.array_equal(x, y) for x, y in zip(a[k][2], b[k][2])):
            return False
    return True
