"""Layer health over a whole database: the pass against per-layer layer_metrics, the plan,
the stored metrics, percentiles against the population, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from filterdb.cli import main
from filterdb.engine import make_plan
from filterdb.health import HealthThresholds, database_health, layer_metrics, population_bands
from filterdb.health import database as HD
from filterdb.health.population import PERCENTILE_METRICS, compare_to_population
from filterdb.health.table import STORED
from filterdb.readers import read_model
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database, open_database

ZOO = ("digit-recognizer", "mtcnn-onet", "ppocr-mobile-v2-cls", "mp-face-detection-short")
METRICS = ("sparsity", "variance_entropy", "variance_entropy_clean", "orthogonality",
           "threshold", "variance_entropy_norm", "random_mean", "random_sd", "p_random")
FLAG_COLUMNS = ("random", "random_paper", "low_diversity", "sparse", "degenerated", "assessed")


def _model(name, weights, seed=0):
    layers = [ConvLayer(f"{name}.{i}", "Conv", w, groups=g) for i, (w, g) in enumerate(weights)]
    assign_order_depths(layers)
    return Model(path=f"/synthetic/{name}.npz", format="npz",
                 sha256=f"{name}-{seed}".ljust(64, "0"), layers=layers)


def edge_model():
    """Edge cases: all-zero, identical filters, many sparse filters, a big layer, n = 1 and
    n = 2, depthwise, a non-3x3 layer, a layer with a NaN."""
    rng = np.random.default_rng(1)
    ident = np.broadcast_to(rng.standard_normal((1, 1, 3, 3)), (6, 5, 3, 3)).copy()
    sparse = rng.standard_normal((16, 8, 3, 3))
    sparse[:, :3] *= 1e-4  # 3/8 of the filters below 1 % of the peak
    offset = rng.standard_normal((12, 10, 3, 3)) + 4.0  # large mean: centring matters
    offset[:, :2] = 0.0
    nan = rng.standard_normal((4, 4, 3, 3))
    nan[1, 2, 0, 0] = np.nan
    weights = [
        (np.zeros((4, 3, 3, 3)), 1),
        (ident, 1),
        (sparse, 1),
        (rng.standard_normal((48, 40, 3, 3)), 1),  # 1920 filters: bigger than tiny chunks
        (rng.standard_normal((1, 1, 3, 3)), 1),
        (rng.standard_normal((2, 1, 3, 3)), 1),
        (rng.standard_normal((8, 1, 3, 3)), 8),
        (rng.standard_normal((8, 4, 5, 5)), 1),
        (offset, 1),
        (nan, 1),
        (rng.standard_normal((3, 2, 3, 3)) * 1e-30, 1),  # tiny values
    ]
    return _model("edge", [(w.astype(np.float32), g) for w, g in weights])


def population_model(k, seed):
    """Many small random layers (for >= 10 comparable layers per depth bin and size)."""
    rng = np.random.default_rng(seed)
    ws = []
    for i in range(20):
        c = int(rng.integers(4, 9))
        w = rng.standard_normal((c, c, 3, 3)) * rng.uniform(0.1, 2.0)
        w[:, : int(rng.integers(0, 3))] *= 1e-3 * (i % 3)
        ws.append((w.astype(np.float32), 1))
    return _model(f"pop{k}", ws, seed)


@pytest.fixture(scope="module")
def models(zoo_paths):
    ms = {z: read_model(zoo_paths[z]) for z in ZOO}
    ms["edge"] = edge_model()
    return ms


def build(path, models):
    db = init_database(path, segment_rows=5000)  # several segment files
    try:
        for k, m in models.items():
            db.add_model(m, {"model": k, "task": "Classification" if k != "edge" else
                             "Segmentation", "visual_category": "natural"})
    finally:
        db.close()
    return path


@pytest.fixture
def db_path(tmp_path, models):
    return build(tmp_path / "db", models)


def expected_rows(models, t=None):
    """``{(model, layer name): layer_metrics row}`` of every layer, computed directly."""
    return {(k, l.name): layer_metrics(l, t) for k, m in models.items() for l in m.layers}


def assert_matches(df, models, t=None, orth_tol=1e-7):
    """``df`` (a database pass) against ``layer_metrics`` of each layer (float64, the file
    path): 1e-9, and ``orth_tol`` for orthogonality (the pass's default float32 products:
    measured 4.5e-9 on these layers; pass ``orth_tol=1e-9`` with the float64 path)."""
    exp = expected_rows(models, t)
    assert len(df) == len(exp)
    n3 = 0
    for r in df.itertuples(index=False):
        e = exp[(r.model, r.name)]
        assert r.n == e["n"] and r.kernel == e["kernel"]
        if e["kernel"] == "1x1":  # not assessed alike (orthogonality is not stored for 1x1)
            assert not r.assessed and not e["assessed"] and np.isnan(r.sparsity)
            assert r.not_assessed == e["not_assessed"] == "1x1 kernel" and not r.degenerated
            continue
        if e["kernel"] != "3x3" and t is not None and t.sparsity_eps != 0.01:
            # stored at ingest with eps 0.01 only: the database cannot assess them
            assert not r.assessed and r.not_assessed == "no stored metrics"
            continue
        # every other kernel: the same metrics (non-3x3 ones stored at ingest) and flags
        n3 += e["kernel"] == "3x3"
        for m in METRICS:
            a, b = getattr(r, m), e[m]
            tol = orth_tol if m == "orthogonality" else 1e-9
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol, (r.model, r.name, m, a, b)
        for f in FLAG_COLUMNS:
            assert bool(getattr(r, f)) == bool(e[f]), (r.model, r.name, f)
        assert r.not_assessed == e["not_assessed"] and r.reason == e["reason"], (r.model, r.name)
        assert r.conv_depth_norm == pytest.approx(e["conv_depth_norm"])
    return n3


@pytest.mark.parametrize("chunk_rows", [7, 300, 1 << 20])
def test_pass_equals_layer_metrics(db_path, models, chunk_rows):
    df = database_health(db_path, chunk_rows=chunk_rows, store=False,
                         orthogonality_precision="float64")
    n3 = assert_matches(df, models, orth_tol=1e-9)  # the float64 path: the same values
    assert_matches(database_health(db_path, chunk_rows=chunk_rows, store=False), models)
    assert n3 >= 25
    edge = df[df["model"] == "edge"].set_index("name")
    assert edge.loc["edge.0", "sparsity"] == 1.0  # all-zero layer
    assert edge.loc["edge.1", "variance_entropy"] == 0.0  # identical filters
    assert edge.loc["edge.2", "sparsity"] == pytest.approx(3 / 8)
    assert np.isnan(edge.loc["edge.9", "variance_entropy"]) and not edge.loc["edge.9", "assessed"]


def test_without_orthogonality(db_path, models):
    """--no-orthogonality: orthogonality NaN, every other metric and flag as computed directly;
    stored apart, so a later call with orthogonality computes it."""
    no = database_health(db_path, orthogonality=False)
    assert no["orthogonality"].isna().all()
    exp = expected_rows(models)
    for r in no[no["assessed"]].itertuples(index=False):
        e = exp[(r.model, r.name)]
        for m in ("sparsity", "variance_entropy", "variance_entropy_norm",
                  "variance_entropy_clean"):
            a, b = getattr(r, m), e[m]
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9
        assert bool(r.degenerated) == bool(e["degenerated"])
    assert_matches(database_health(db_path), models)


def test_thresholds_and_where(db_path, models):
    t = HealthThresholds(sparsity_eps=0.05, sparse_S=0.3, low_diversity_H=0.7)
    df = database_health(db_path, thresholds=t, where="model = 'edge' OR model = 'mtcnn-onet'")
    assert set(df["model"]) == {"edge", "mtcnn-onet"}
    assert_matches(df, {k: models[k] for k in ("edge", "mtcnn-onet")}, t)


def test_plan_holds_whole_layers(db_path):
    with open_database(db_path) as db:
        starts, counts, lids = db.selection_ranges()
    for target in (1, 7, 300, 5000):
        plan = make_plan(starts, counts, lids, target, whole_layers=True)
        seen = {}
        for task in plan.tasks:
            rows = sum(int(c) for _, c, l in task.runs.tolist())
            assert rows <= target or len(task.runs) == 1  # a bigger layer is a task alone
            for _, c, l in task.runs.tolist():
                assert l not in seen
                seen[l] = c
        assert seen == dict(zip(lids.tolist(), counts.tolist()))


def test_store_and_reuse(db_path, models, monkeypatch):
    first = database_health(db_path)
    with open_database(db_path) as db:
        stored = db.layer_metrics(HD.metrics_params(0.01))
        dv = db.data_version
    assert len(stored) == int((first["kernel"] == "3x3").sum())
    # the layer_metrics rows themselves, straight from SQLite
    import sqlite3

    con = sqlite3.connect(db_path / "catalog.sqlite")
    rows = con.execute("SELECT layer_id, params, metrics, data_version FROM layer_metrics "
                       "WHERE params = ?", (HD.metrics_params(0.01),)).fetchall()
    con.close()
    assert {r[3] for r in rows} == {dv}
    one = first[first["kernel"] == "3x3"].iloc[3]
    m = json.loads(next(r[2] for r in rows if r[0] == one["layer_id"]))
    assert m["variance_entropy"] == pytest.approx(one["variance_entropy"], abs=0)

    def boom(*a, **k):
        raise AssertionError("no pass expected")

    monkeypatch.setattr(HD, "compute_layer_metrics", boom)
    again = database_health(db_path)
    assert again.equals(first)
    # other flag thresholds: no pass either
    database_health(db_path, thresholds=HealthThresholds(sparse_S=0.01))
    # a new model: only its layers are computed
    monkeypatch.undo()
    computed = []
    real = HD.compute_layer_metrics

    def spy(db, layers, *a, **k):
        computed.append(sorted(layers["layer_id"].tolist()))
        return real(db, layers, *a, **k)

    monkeypatch.setattr(HD, "compute_layer_metrics", spy)
    extra = population_model(0, 10)
    with open_database(db_path, "w") as db:
        res = db.add_model(extra, {"model": "pop0"})
        new_ids = db.layers(f"model_id = {res.model_id}")["layer_id"].tolist()
    df = database_health(db_path)
    assert computed == [sorted(new_ids)]
    assert_matches(df, dict(models, pop0=extra))
    # another epsilon is another parameter set: computed again
    database_health(db_path, thresholds=HealthThresholds(sparsity_eps=0.02))
    assert len(computed) == 2 and len(computed[1]) == len(stored) + len(new_ids)
    database_health(db_path, recompute=True)
    assert len(computed) == 3


def test_layer_metrics_storage(tmp_path):
    """Database.put_layer_metrics / layer_metrics: each entry carries its layer's filter
    range and checksum (from the catalog), NaN is stored as null, a reader stores too, and
    a failed write stores nothing (one transaction) and warns."""
    import sqlite3

    path = build(tmp_path / "db", {"edge": edge_model(), "pop0": population_model(0, 1)})
    with open_database(path) as db:
        lay = db.layers(columns=["layer_id", "filter_start", "filter_count", "checksum"])
        a, b = (int(x) for x in lay["layer_id"].tolist()[:2])
        assert db.put_layer_metrics("p", {a: {"x": 1.5, "n": 3}, b: {"x": float("nan")}})
        got = db.layer_metrics("p")
        assert db.layer_metrics("other") == {}
    r = lay.set_index("layer_id").loc[a]
    assert got[a] == {"x": 1.5, "n": 3, "filter_start": None if np.isnan(r.filter_start)
                      else int(r.filter_start), "filter_count": int(r.filter_count),
                      "checksum": None if r.checksum is None or np.isnan(r.checksum)
                      else int(r.checksum)}
    assert got[b]["x"] is None
    con = sqlite3.connect(path / "catalog.sqlite")
    assert con.execute("SELECT COUNT(*) FROM layer_metrics WHERE params = 'p'").fetchone()[0] == 2
    con.close()
    # a write that fails half-way (a trigger refuses the second row; the same path as a
    # read-only catalog): nothing is stored, a warning says so, and health still answers
    con = sqlite3.connect(path / "catalog.sqlite")
    con.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON layer_metrics WHEN NEW.layer_id = {b} "
                "OR NEW.params <> 'q' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.close()
    first = database_health(path, store=False)
    with open_database(path) as db:
        with pytest.warns(UserWarning, match="layer metrics not stored.*refused"):
            assert not db.put_layer_metrics("q", {a: {"x": 2.0}, b: {"x": 3.0}})
        assert db.layer_metrics("q") == {}
        with pytest.warns(UserWarning, match="layer metrics not stored"):
            df = database_health(db)
        assert df.equals(first) and db.layer_metrics(HD.metrics_params(0.01)) == {}


@pytest.fixture(scope="module")
def pop_db(tmp_path_factory, models):
    ms = dict(models)
    for k in range(4):
        ms[f"pop{k}"] = population_model(k, 100 + k)
    return build(tmp_path_factory.mktemp("pop") / "db", ms), ms


def test_percentiles_by_hand(pop_db):
    path, ms = pop_db
    pop = database_health(path)
    a = pop[pop["assessed"] & (pop["kernel"] == "3x3")]  # the model's layers are all 3x3
    x = a["conv_depth_norm"].to_numpy()
    # depth bins [0, .1], (.1, .2], ... and size classes floor(log10 n), by hand
    b = np.clip(np.ceil(np.round(x * 10, 9)) - 1, 0, 9).astype(int)
    s = np.floor(np.log10(a["n"].to_numpy())).astype(int)
    model = population_model(9, 999)  # not in the database
    from filterdb.health import model_health

    mdf, _ = model_health(model)
    res = compare_to_population(mdf, pop)
    kinds = set()
    for (_, r), p in zip(mdf.iterrows(), res):
        rb = int(np.clip(np.ceil(np.round(r["conv_depth_norm"] * 10, 9)) - 1, 0, 9))
        sel = (b == rb) & (s == int(np.floor(np.log10(r["n"]))))
        how = "depth and size"
        if sel.sum() < 10:
            sel, how = b == rb, "depth"
        kinds.add(how)
        assert p["n_comparable"] == sel.sum() and p["comparable"] == how
        for m in PERCENTILE_METRICS:
            v = a[m].to_numpy()[sel]
            v = v[np.isfinite(v)]
            assert p[m] == pytest.approx(100 * np.mean(v < r[m]))
            assert p["above"][m] == pytest.approx(100 * np.mean(v > r[m]))
    assert kinds == {"depth and size", "depth"}


def test_population_bands_by_hand(pop_db):
    path, _ = pop_db
    pop = database_health(path)
    bands = population_bands(path, ["sparsity", "variance_entropy_norm"])
    assert list(bands.columns[:7]) == ["depth_bin", "metric", "p10", "p25", "p50", "p75", "p90"]
    assert len(bands) == 20
    a = pop[pop["assessed"]]
    x = a["conv_depth_norm"].to_numpy()
    b = np.clip(np.ceil(np.round(x * 10, 9)) - 1, 0, 9).astype(int)
    for r in bands.itertuples(index=False):
        v = a[r.metric].to_numpy()[b == r.depth_bin]
        v = np.sort(v[np.isfinite(v)])
        if not len(v):
            assert np.isnan(r.p50)
            continue
        for q, col in ((10, "p10"), (50, "p50"), (90, "p90")):
            # linear interpolation between order statistics, by hand
            h = (len(v) - 1) * q / 100
            lo = int(np.floor(h))
            want = v[lo] + (h - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])
            assert getattr(r, col) == pytest.approx(want, abs=1e-12)


def test_cli_health_json(pop_db, capsys):
    path, ms = pop_db
    assert main(["health", str(path), "--json", "--where", "task = 'Classification'"]) == 0
    o = json.loads(capsys.readouterr().out)
    assert {"layers", "by_model", "by_task", "by_visual_category", "by_depth_bin"} <= set(o)
    assert {r["model"] for r in o["by_model"]} == set(ms) - {"edge"}
    assert len(o["layers"]) == sum(len(m.layers) for k, m in ms.items() if k != "edge")
    by = {r["model"]: r for r in o["by_model"]}
    d = database_health(path)
    for k in ("mtcnn-onet", "digit-recognizer"):
        sel = d[(d["model"] == k) & d["assessed"]]
        assert by[k]["n_assessed"] == len(sel)
        assert by[k]["n_degenerated"] == int(sel["degenerated"].sum())
    assert main(["health", str(path)]) == 0
    out = capsys.readouterr().out
    assert "by model:" in out and "by depth_bin:" in out and "(0.9, 1.0]" in out


def test_cli_check_db(pop_db, zoo_paths, capsys):
    path, _ = pop_db
    f = zoo_paths["mtcnn-onet"]
    assert main(["check", str(f), "--db", str(path), "--json"]) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["population"]["excluded_models"] == ["mtcnn-onet"]  # itself is left out
    p3 = [l["percentiles"] for l in o["layers"] if l["kernel"] == "3x3"]
    assert p3 and all({"sparsity", "n_comparable"} <= set(p) for p in p3)
    assert [l["percentiles"] for l in o["layers"] if l["kernel"] != "3x3"] == [None]
    assert main(["check", str(f), "--db", str(path)]) == 0
    assert "comparable layers" in capsys.readouterr().out


def test_dask_engine_same(db_path, models):
    pytest.importorskip("distributed")
    local = database_health(db_path, store=False, chunk_rows=500)
    dask = database_health(db_path, store=False, chunk_rows=500, engine="dask")
    cols = list(STORED)
    # same kernel; BLAS threading in the workers may change the last bits
    np.testing.assert_allclose(local[cols].to_numpy(), dask[cols].to_numpy(), rtol=0, atol=1e-12)


def test_orthogonality_precision(tmp_path, monkeypatch):
    """The database pass's orthogonality: float32 products accumulated in float64 by default
    (issue 21), the float64 path on request; both within 1e-6 of the float64 definition
    computed by hand (numpy) on the same weights; an unknown precision is a one-line error."""
    from filterdb.errors import FilterDBError
    from filterdb.kernels import layer_stats as LS

    rng = np.random.default_rng(7)
    ws = [(rng.standard_normal((96, 64, 3, 3)).astype(np.float32), 1),  # wide: BLAS path
          (rng.standard_normal((40, 8, 3, 3)).astype(np.float32) + 0.5, 1),
          (rng.standard_normal((16, 4, 3, 3)).astype(np.float32), 1)]  # small: direct loops
    with init_database(tmp_path / "db") as db:
        db.add_model(_model("wide", ws))

    def by_hand(w):
        R = w.reshape(len(w), -1).astype(np.float64)
        R = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-12)
        c = len(R)
        return 1.0 - np.abs(R @ R.T - np.eye(c)).sum() / (c * (c - 1))

    exp = np.array([by_hand(w) for w, _ in ws])
    calls = []
    real = LS.orthogonality_f32
    monkeypatch.setattr(LS, "orthogonality_f32", lambda r, c: calls.append(c) or real(r, c))
    got = {}
    for prec in ("float32", "float64"):
        calls.clear()
        df = database_health(tmp_path / "db", recompute=True, store=False,
                             orthogonality_precision=prec)
        got[prec] = df.sort_values("name")["orthogonality"].to_numpy()
        assert calls == ([96, 40] if prec == "float32" else [])
        assert np.abs(got[prec] - exp).max() <= 1e-6
    assert np.abs(got["float32"] - got["float64"]).max() <= 1e-6
    with pytest.raises(FilterDBError, match="orthogonality precision 'float16'"):
        database_health(tmp_path / "db", orthogonality_precision="float16")
    assert main(["health", str(tmp_path / "db"), "--recompute", "--json",
                 "--orthogonality-precision", "float64"]) == 0
