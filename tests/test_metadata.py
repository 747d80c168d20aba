"""Metadata you can trust: typed free columns usable everywhere, label hygiene (issue 19)."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import filterdb
from _models import write_npz
from filterdb import analysis
from filterdb.cli import main
from filterdb.store.vocab import parse_value, similar_label


def run(capsys, argv, code=0):
    capsys.readouterr()
    assert main(argv) == code
    return capsys.readouterr()


def ls(capsys, db, where):
    return [m["model"] for m in json.loads(run(capsys, ["ls", db, "--where", where, "--json"]).out)]


@pytest.fixture
def typed_db(tmp_path, capsys):
    db = str(tmp_path / "db")
    narrow = write_npz(tmp_path / "narrow.npz", 1, [(8, 3, 3, 3), (8, 8, 3, 3)])
    wide = write_npz(tmp_path / "wide.npz", 2, [(16, 3, 3, 3), (16, 16, 3, 3)])
    other = write_npz(tmp_path / "other.npz", 3, [(12, 3, 3, 3)])
    run(capsys, ["add", db, narrow, "--meta", "task=Classification", "--meta", "x_seed=3",
                 "--meta", "x_width=8", "--meta", "x_pretrained=true", "--meta", "x_arch=resnet"])
    run(capsys, ["add", db, wide, "--meta", "task=Segmentation", "--meta", "x_seed=4",
                 "--meta", "x_width=200", "--meta", "x_pretrained=false",
                 "--meta", "x_arch='200'"])
    run(capsys, ["add", db, other, "--meta", "task=Classification"])
    return db


def test_parse_value_types():
    assert [parse_value(v) for v in ("3", " -4 ", "2.5", "1e-3", "TRUE", "false", "'3'",
                                     '"x y"', "resnet", "3a")] == \
        [3, -4, 2.5, 0.001, True, False, "3", "x y", "resnet", "3a"]
    assert all(type(parse_value(v)) is t for v, t in (("3", int), ("3.0", float),
                                                       ("true", bool), ("v3", str)))


def test_free_columns_are_typed_and_queryable(typed_db, capsys):
    db = typed_db
    # numbers compare as numbers: 200 > 100 > 8 (as strings, '8' > '100')
    assert ls(capsys, db, "x_width > 100") == ["wide"]
    assert ls(capsys, db, "x_width < 100") == ["narrow"]
    assert ls(capsys, db, "json_extract(extra, '$.seed') = 3") == ["narrow"]  # the README's
    assert ls(capsys, db, "x_seed = 3") == ["narrow"]
    assert ls(capsys, db, "x_pretrained = true") == ["narrow"]
    assert ls(capsys, db, "NOT x_pretrained") == ["wide"]
    assert ls(capsys, db, "x_arch = 'resnet'") == ["narrow"]
    assert ls(capsys, db, "x_arch = '200'") == ["wide"]  # quoted: kept a string
    assert ls(capsys, db, "x_arch = 200") == []
    assert ls(capsys, db, "x_seed IS NULL") == ["other"]
    # the same over the layers, and through the API
    with filterdb.open(db) as d:
        lay = d.layers("x_width > 100")
        assert set(lay.model) == {"wide"} and len(lay) == 2
        m = d.models()
        assert m.set_index("model").x_width.to_dict()["wide"] == 200
    # the stored JSON is typed, checked with sqlite3 directly
    con = sqlite3.connect(f"{db}/catalog.sqlite")
    extra = dict(con.execute("SELECT model, extra FROM models WHERE extra IS NOT NULL"))
    con.close()
    assert json.loads(extra["narrow"]) == {"seed": 3, "width": 8, "pretrained": True,
                                           "arch": "resnet"}
    assert json.loads(extra["wide"])["arch"] == "200"
    # ls shows them; --columns lists every queryable column with its type
    out = run(capsys, ["ls", db]).out
    assert "x_width" in out.splitlines()[0] and "200" in out
    cols = {c["name"]: c["type"] for c in
            json.loads(run(capsys, ["ls", db, "--columns", "--json"]).out)}
    assert cols["x_width"] == "INTEGER" and cols["x_arch"] == "TEXT"
    assert cols["x_pretrained"] == "INTEGER" and cols["task"] == "TEXT"
    lcols = {c["name"] for c in json.loads(run(capsys, ["ls", db, "--layers", "--columns",
                                                        "--json"]).out)}
    assert {"x_width", "conv_depth_norm", "task"} <= lcols


def test_free_columns_group_drift(typed_db):
    d = analysis.drift(typed_db, by="x_width", cache=False)
    assert sorted(d.groups) == ["200", "8"]  # the model without x_width is left out
    m = d.matrix.to_numpy()
    assert m.shape == (2, 2) and m[0, 1] > 0 and np.allclose(m, m.T)


def test_controlled_columns_match_their_normalised_form(typed_db, capsys):
    db = typed_db
    assert ls(capsys, db, "task = 'classification'") == ["narrow", "other"]
    assert ls(capsys, db, "task = 'SEGMENTATION'") == ["wide"]
    assert ls(capsys, db, "task IN ('segmentation')") == ["wide"]


def test_label_typos_warn_and_strict_refuses(typed_db, tmp_path, capsys):
    db = typed_db
    f = write_npz(tmp_path / "typo.npz", 5, [(4, 3, 3, 3)])
    r = run(capsys, ["add", db, f, "--meta", "task=classifcation", "--strict"], code=2)
    assert "'classifcation'" in r.err and "'Classification'" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert ls(capsys, db, "1") == ["narrow", "wide", "other"]  # nothing added
    r = run(capsys, ["add", db, f, "--meta", "task=classifcation", "--meta",
                     "visual_category=natral"])
    assert "warning: task 'classifcation' is new, but close to the known 'Classification'" \
        in r.err
    assert "visual_category 'natral' is new, but close to the known 'natural'" in r.err
    assert ls(capsys, db, "task = 'classifcation'") == ["typo"]
    # a genuinely new label, or a known one in another case, gives no warning
    g = write_npz(tmp_path / "pose.npz", 6, [(4, 3, 3, 3)])
    r = run(capsys, ["add", db, g, "--meta", "task=Pose Estimation", "--meta",
                     "visual_category=FACES", "--strict"])
    assert "warning" not in r.err


def test_similar_label():
    tasks = ["Classification", "Segmentation", "Object Detection", "Face Detection"]
    assert similar_label("Clasification", tasks) == "Classification"
    assert similar_label("object-detection", tasks) == "Object Detection"
    assert similar_label("Segmentaton", tasks) == "Segmentation"
    assert similar_label("Pose Estimation", tasks) is None
    assert similar_label("Classification", tasks) is None
