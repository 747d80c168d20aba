"""The metric registry (issue 14, item 4): one list of specs read by every consumer, and the
metric added through it alone, ``variance_entropy_clean_norm`` (torchconvquality's
``H_clean / TH(n_clean)``), checked against torchconvquality, against numpy by hand, in
the database pass and its stored rows, in ``check --json`` and its table, in ``health``'s
JSON and CSV, in the API and in the report's tables."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from filterdb.cli import main
from filterdb.health import database as HD
from filterdb.health import database_health, model_health
from filterdb.health import population as HP
from filterdb.health import table as HT
from filterdb.health.check import COLUMNS
from filterdb.kernels import metrics as M
from filterdb.readers import read_model
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database

NEW = "variance_entropy_clean_norm"


def clean_norm_by_hand(weight, eps=0.01):
    """The definition written out with numpy: rows with every |w| < eps * max|W| are
    sparse; H of the others from the SVD of their centred rows (variances s^2 / (n - 1),
    p = share, H = -sum p log10 p); TH(n) the published curve; H / TH."""
    W = np.asarray(weight, np.float64).reshape(-1, 9)
    t = eps * np.abs(W).max()
    keep = ~(np.abs(W) < t).all(axis=1)
    X = W[keep]
    n = len(X)
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    var = s ** 2 / (n - 1)
    p = var / var.sum()
    p = p[p > 0]
    H = float(-(p * np.log10(p)).sum())
    TH = 1.2618047 / (1 + math.exp(-0.88767525 * (math.log2(n) - 2.30436435))) - 0.31050834
    return H / TH


def weights(seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((4, 9))
    a = (rng.standard_normal((32 * 16, 4)) * [3.0, 1.0, 0.5, 0.2]) @ basis
    a[rng.random(len(a)) < 0.2] *= 1e-4  # a fifth of the filters sparse
    b = rng.standard_normal((24, 8, 3, 3))
    b[:5] *= 1e-5
    return [a.reshape(32, 16, 3, 3).astype(np.float32), b.astype(np.float32),
            rng.standard_normal((16, 24, 3, 3)).astype(np.float32)]


def test_registry_is_one_list_read_by_the_column_lists():
    names = M.names()
    assert len(set(names)) == len(names) and NEW in names
    assert M.spec(NEW).stored and M.spec(NEW).source == "weight"
    assert HT.STORED == M.STORED and HP.PERCENTILE_METRICS == M.PERCENTILE
    for cols in (COLUMNS, HT.LAYER_COLUMNS):
        assert set(names) <= set(cols)
    from filterdb.kernels.layer_stats import VALUES
    from filterdb.zoo import reference

    assert VALUES == ("n", "n_sparse") + M.STORED
    assert reference.METRICS == M.PERCENTILE
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        M.spec("nope")
    assert M.spec("sparsity").format(0.123456) == "0.123" and M.spec(NEW).format(None) == "nan"


@pytest.mark.parametrize("seed", [0, 1])
def test_clean_norm_matches_torchconvquality_and_numpy(seed):
    torch = pytest.importorskip("torch")
    tcq = pytest.importorskip("torchconvquality")
    fn = M.spec(NEW).function
    for w in weights(seed):
        ours = fn(w, 0.01)
        theirs = tcq.measure_conv_weight_quality(torch.from_numpy(w))[NEW]
        assert ours == pytest.approx(clean_norm_by_hand(w), rel=1e-10)
        assert ours == pytest.approx(theirs, rel=2e-5)  # torch: float32 SVD
        # the other torchconvquality figures it is made of agree too
        ref = tcq.measure_conv_weight_quality(torch.from_numpy(w))
        m = M.layer_values(w)
        assert m["variance_entropy_clean"] == pytest.approx(ref["variance_entropy_clean"],
                                                            rel=2e-5)
        assert m["sparsity"] == pytest.approx(ref["sparsity"], rel=1e-7)  # float32 share


def test_clean_norm_conventions():
    rng = np.random.default_rng(5)
    fn = M.spec(NEW).function
    assert math.isnan(fn(rng.standard_normal((8, 4, 5, 5)), 0.01))  # TH(n) is the 3x3 curve
    assert math.isnan(fn(np.zeros((4, 4, 3, 3)), 0.01))  # every filter sparse
    w = rng.standard_normal((4, 4, 3, 3))
    w[0, 0, 0, 0] = np.inf
    assert math.isnan(fn(w, 0.01))
    two = np.zeros((1, 4, 3, 3))
    two[0, :2] = rng.standard_normal((2, 3, 3))  # 2 non-sparse filters: TH(2) < 0
    assert math.isnan(fn(two, 0.01))


def _model(path="/synthetic/m.npz"):
    layers = [ConvLayer(f"conv{i}", "Conv", w) for i, w in enumerate(weights())]
    layers.append(ConvLayer("conv5x5", "Conv",
                            np.random.default_rng(2).standard_normal((8, 4, 5, 5))
                            .astype(np.float32)))
    assign_order_depths(layers)
    return Model(path=path, format="npz", sha256="ab" * 32, layers=layers)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("registry") / "db"
    db = init_database(p)
    try:
        db.add_model(_model(), {"task": "Classification"})
    finally:
        db.close()
    return p


def test_database_pass_computes_and_stores_it(db_path):
    m = _model()
    expect = {l.name: M.spec(NEW).function(l.weight, 0.01) for l in m.layers}
    df = database_health(db_path, recompute=True)
    got = dict(zip(df["name"], df[NEW]))
    for name in ("conv0", "conv1", "conv2"):  # 3x3: from the pass's moments
        assert got[name] == pytest.approx(expect[name], rel=1e-9)
        assert got[name] == pytest.approx(clean_norm_by_hand(m.layers[int(name[-1])].weight),
                                          rel=1e-9)
    assert math.isnan(got["conv5x5"])  # from ingest: a 5x5 layer, NaN by convention
    from filterdb.store import open_database

    with open_database(db_path) as db:
        stored = db.layer_metrics(HD.metrics_params(0.01))
    lid = dict(zip(df["name"], df["layer_id"]))
    for name in ("conv0", "conv1", "conv2"):
        assert stored[int(lid[name])][NEW] == pytest.approx(got[name], rel=1e-12)
    again = database_health(db_path)  # read back from the catalog
    assert np.allclose(again[NEW], df[NEW], equal_nan=True, rtol=1e-12)


def test_check_json_table_and_api_have_it(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    tcq = pytest.importorskip("torchconvquality")
    ws = weights()
    p = tmp_path / "model.npz"
    np.savez(p, **{f"conv{i}.weight": w for i, w in enumerate(ws)})
    assert main(["check", "--json", "--no-reference", str(p)]) == 0
    d = json.loads(capsys.readouterr().out)
    for layer, w in zip(d["layers"], ws):
        ref = tcq.measure_conv_weight_quality(torch.from_numpy(w))[NEW]
        assert layer[NEW] == pytest.approx(ref, rel=2e-5)
    df, _ = model_health(read_model(p))
    assert [l[NEW] for l in d["layers"]] == pytest.approx(df[NEW].tolist(), rel=1e-12)
    assert main(["check", "--no-reference", str(p)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    assert M.spec(NEW).label in header.split()
    import filterdb

    r = filterdb.check(str(p), reference=False)
    assert r.layers[NEW].tolist() == pytest.approx(df[NEW].tolist(), rel=1e-12)


def test_health_json_and_csv_have_it(db_path, capsys):
    assert main(["health", str(db_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    by = {l["name"]: l for l in d["layers"]}
    expect = M.spec(NEW).function(weights()[0], 0.01)
    assert by["conv0"][NEW] == pytest.approx(expect, rel=1e-9)
    assert main(["health", str(db_path), "--csv", "--table", "layers"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float({r["name"]: r for r in rows}["conv0"][NEW]) == pytest.approx(expect, rel=1e-6)


def test_report_tables_have_it():
    from filterdb.report.model_report import COMPACT_COLUMNS, TABLE_COLUMNS

    assert NEW in TABLE_COLUMNS and NEW in COMPACT_COLUMNS


def test_row_sum_accumulator_is_summed_per_layer(monkeypatch):
    """A spec may ask the pass for a per-filter reduction summed per layer: here the mean
    filter L2 norm, against numpy."""
    extra = M.MetricSpec("mean_filter_norm", "|w|", "mean filter L2 norm",
                         row_sum=lambda rows: np.sqrt(np.einsum("ij,ij->i",
                                                                rows.astype(np.float64),
                                                                rows.astype(np.float64))),
                         from_pass=lambda v: v["mean_filter_norm_sum"] / v["n"])
    monkeypatch.setattr(M, "METRICS", M.METRICS + (extra,))
    ws = [w.reshape(-1, 9) for w in weights()]
    x = np.concatenate(ws)
    ends = np.cumsum([len(w) for w in ws])
    starts = ends - [len(w) for w in ws]
    n = ends - starts
    base = {k: np.zeros(len(ws)) for k in ("sparsity", "variance_entropy",
                                             "variance_entropy_clean", "orthogonality")}
    got = M.pass_values({"n": n, "n_sparse": np.zeros(len(ws)), **base}, x, starts, ends)
    by_hand = [np.linalg.norm(w.astype(np.float64), axis=1).mean() for w in ws]
    assert got["mean_filter_norm"] == pytest.approx(by_hand, rel=1e-12)
