"""filterdb.analysis.noise (drift vs its noise floor) against a direct computation written here:
PCA by numpy eigh of the scaled filters, np.histogram per model over the global range,
the notebook's density with its eps floor, scipy.stats.entropy; permutation p-values by
brute force."""
from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

import _oracles as O
from filterdb import analysis, plots
from filterdb.analysis import noise
from filterdb.cli import main
from filterdb.errors import FilterDBError
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database

EPS = np.finfo(np.float32).eps
A_SAME = np.random.default_rng(100).standard_normal((3, 9))
A_DIFF = np.random.default_rng(200).standard_normal((3, 9)) * np.linspace(2, 0.2, 9)

# name, group, shape, seed, size: a and b from the same distribution, c from another
SPEC = ([(f"a{i}", "a", A_SAME, i, i % 2) for i in range(4)]
        + [(f"b{i}", "b", A_SAME, 10 + i, i % 2) for i in range(4)]
        + [(f"c{i}", "c", A_DIFF, 20 + i, i % 2) for i in range(5)])


def make_model(name, A, seed, n=120):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, 3)) @ A + 0.3 * rng.standard_normal((n, 9))).astype(np.float32)
    layers = [ConvLayer("conv0", "Conv", w[: n // 2].reshape(-1, 1, 3, 3)),
              ConvLayer("conv1", "Conv", w[n // 2:].reshape(-1, 2, 3, 3))]
    assign_order_depths(layers)
    sha = hashlib.sha256(w.tobytes()).hexdigest()
    return Model(path=f"{name}.npz", format="npz", sha256=sha, layers=layers), w


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    db = init_database(tmp_path_factory.mktemp("noise") / "db")
    weights = {}
    for name, g, A, seed, size in SPEC:
        m, w = make_model(name, A, seed)
        db.add_model(m, {"model": name, "visual_category": g, "x_size": str(size),
                         "task": "Classification"})
        weights[name] = w
    yield db, weights
    db.close()


def direct(weights, names, bins=70):
    """Per-model counts (M, 9, bins) over the global PCA and range, the EVR, the edges."""
    X = np.concatenate([weights[n] for n in sorted(weights)]).astype(np.float32)
    peak = np.abs(X).max(axis=1, keepdims=True)
    S = (X / peak).astype(np.float32).astype(np.float64)
    mean = S.mean(axis=0)
    var, vec = np.linalg.eigh(np.cov(S, rowvar=False))
    order = np.argsort(var)[::-1]
    comps = vec[:, order].T
    for k in range(9):  # largest-magnitude entry positive
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] *= -1
    C = (S - mean) @ comps.T
    lo, hi = C.min(), C.max()
    counts = []
    for n in names:
        x = weights[n].astype(np.float32)
        s = (x / np.abs(x).max(axis=1, keepdims=True)).astype(np.float64)
        c = (s - mean) @ comps.T
        counts.append([np.histogram(c[:, k], bins, range=(lo, hi))[0] for k in range(9)])
    return np.array(counts, float), var[order] / var.sum(), np.linspace(lo, hi, bins + 1)


def d_direct(ca, cb, w, edges):
    """Drift from two count arrays (9, bins) with scipy's KL, the probabilities as the
    notebook's: density (counts / (n * bin width)), empty bins at eps, renormalised."""
    width = np.diff(edges)

    def probs(c):
        h = c / width / c.sum(axis=1, keepdims=True)
        h[h == 0] = EPS
        return h / h.sum(axis=1, keepdims=True)

    P, Q = probs(ca), probs(cb)
    return O.drift(P, Q, w)


def test_between_matrix_equals_drift(built):
    db, _ = built
    r = noise.noise_floor(db, "visual_category", n_permutations=50, cache=False)
    d = analysis.drift(db, "visual_category", cache=False)
    assert r.groups == d.groups and sorted(r.groups) == ["a", "b", "c"]
    np.testing.assert_allclose(r.matrix.to_numpy(), d.matrix.to_numpy(), rtol=0, atol=1e-12)
    assert r.drift.sizes.tolist() == d.sizes.tolist()
    assert r.models["filters"].sum() == 13 * 120


def test_within_pairs_equal_direct_computation(built):
    db, weights = built
    names = sorted(weights)
    counts, evr, edges = direct(weights, names)
    r = noise.noise_floor(db, "visual_category", n_permutations=20, cache=False)
    assert r.models["model"].tolist() == names
    group = {n: g for n, g, *_ in SPEC}
    exp = {(a, b): d_direct(counts[names.index(a)], counts[names.index(b)], evr, edges)
           for a, b in itertools.combinations(names, 2) if group[a] == group[b]}
    got = {(t.model_a, t.model_b): t.drift for t in r.within_pairs.itertuples()}
    assert set(got) == set(exp) and len(got) == 6 + 6 + 10
    for k in exp:
        assert got[k] == pytest.approx(exp[k], rel=1e-9, abs=1e-12)
    w = r.within.set_index("group")
    for g in "abc":
        v = [d for (a, _), d in exp.items() if group[a] == g]
        assert w.at[g, "median"] == pytest.approx(np.median(v), rel=1e-9)
        assert w.at[g, "q75"] == pytest.approx(np.percentile(v, 75), rel=1e-9)
    # replicates: only pairs sharing x_size (a free column of the models' extra)
    rw = noise.noise_floor(db, "visual_category", within="x_size", n_permutations=20,
                           cache=False)
    size = {n: s for n, _, _, _, s in SPEC}
    pairs = {(t.model_a, t.model_b) for t in rw.within_pairs.itertuples()}
    assert pairs == {k for k in exp if size[k[0]] == size[k[1]]} and len(pairs) == 2 + 2 + 4
    s = rw.summary
    assert s["within_median"] == pytest.approx(np.median([exp[k] for k in pairs]), rel=1e-9)
    assert s["between_median"] == pytest.approx(np.median(rw.drift.upper_triangle()))
    assert s["ratio"] == pytest.approx(s["between_median"] / s["within_median"])


def test_exact_pvalue_by_enumeration(built):
    """2 groups x 3 models: all C(6, 3) = 20 relabellings, exact p."""
    db, weights = built
    sel = ["a0", "a1", "a2", "c0", "c1", "c2"]
    where = "model IN (" + ", ".join(f"'{m}'" for m in sel) + ")"
    r = noise.noise_floor(db, "visual_category", where=where, n_permutations=1000, cache=False)
    counts, evr, edges = direct({n: weights[n] for n in sel}, sel)
    d_obs = d_direct(counts[:3].sum(0), counts[3:].sum(0), evr, edges)
    ds = []
    for ia in itertools.combinations(range(6), 3):
        ib = [i for i in range(6) if i not in ia]
        ds.append(d_direct(counts[list(ia)].sum(0), counts[ib].sum(0), evr, edges))
    ds = np.array(ds)
    assert len(ds) == 20
    p_exact = np.mean(ds >= d_obs * (1 - 1e-9))
    t = r.pairs.iloc[0]
    assert (t.group_a, t.group_b, bool(t.exact), t.n) == ("a", "c", True, 20)
    assert t.drift == pytest.approx(d_obs, rel=1e-9)
    assert t.p_value == pytest.approx(p_exact)
    assert t.p_value == pytest.approx(2 / 20)  # observed and its mirror (n_a == n_b)
    assert t.null_median == pytest.approx(np.median(ds), rel=1e-9)


def test_monte_carlo_pvalue_equals_brute_force(built):
    db, weights = built
    names = sorted(weights)
    counts, evr, edges = direct(weights, names)
    N, seed = 60, 7
    r = noise.noise_floor(db, "visual_category", n_permutations=N, seed=seed, exact=False,
                          cache=False)
    group = {n: g for n, g, *_ in SPEC}
    labels = ["a", "b", "c"]
    for i, j in itertools.combinations(range(3), 2):
        ma = [k for k, n in enumerate(names) if group[n] == labels[i]]
        mb = [k for k, n in enumerate(names) if group[n] == labels[j]]
        pool = ma + mb
        d_obs = d_direct(counts[ma].sum(0), counts[mb].sum(0), evr, edges)
        rng = np.random.default_rng([seed, i, j])
        perm = rng.permuted(np.tile(np.arange(len(pool)), (N, 1)), axis=1)
        hits = 0
        for row in perm:
            a = [pool[k] for k in row[:len(ma)]]
            b = [pool[k] for k in row[len(ma):]]
            d = d_direct(counts[a].sum(0), counts[b].sum(0), evr, edges)
            hits += d >= d_obs * (1 - 1e-9)
        t = r.pairs[(r.pairs.group_a == labels[i]) & (r.pairs.group_b == labels[j])].iloc[0]
        assert t.n == N and not t.exact
        assert t.p_value == pytest.approx((1 + hits) / (1 + N))
    # deterministic with the seed
    r2 = noise.noise_floor(db, "visual_category", n_permutations=N, seed=seed, exact=False)
    assert r2.pairs["p_value"].tolist() == r.pairs["p_value"].tolist()


def test_same_vs_different_distributions(built):
    db, _ = built
    r = noise.noise_floor(db, "visual_category", n_permutations=1000, cache=False)
    p = r.p_values
    assert p.loc["a", "b"] > 0.05  # same distribution: no evidence
    # different: smallest possible exact p (C(9, 4) = 126 relabellings)
    assert p.loc["a", "c"] == pytest.approx(1 / 126) and p.loc["b", "c"] == pytest.approx(1 / 126)
    assert np.isnan(np.diag(p.to_numpy())).all()
    assert r.matrix.loc["a", "c"] > r.matrix.loc["a", "b"]


def test_cli_and_figure(built, capsys):
    db, _ = built
    assert main(["drift", str(db.path), "--by", "visual_category", "--noise-floor",
                 "--permutations", "30", "--within", "x_size", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"groups", "matrix", "within", "p_values", "n_permutations"} <= set(out)
    assert out["n_permutations"] == 30 and out["within"]["a"]["pairs"] == 2
    r = noise.noise_floor(db, "visual_category", within="x_size", n_permutations=30)
    np.testing.assert_allclose(out["matrix"], r.matrix.to_numpy())
    assert main(["drift", str(db.path), "--by", "visual_category", "--noise-floor"]) == 0
    text = capsys.readouterr().out
    assert "a | c" in text and "p <= 0.05" in text
    fig = plots.drift_vs_noise(r)
    assert len(fig.axes[0].get_xticks()) == 3


def test_bad_input(built):
    db, _ = built
    with pytest.raises(FilterDBError, match="depth bins vary within models"):
        noise.noise_floor(db, "depth_bin")
    with pytest.raises(FilterDBError, match="varies within model"):
        noise.noise_floor(db, "conv_depth")
    with pytest.raises(FilterDBError, match="unknown column"):
        noise.noise_floor(db, "x_nosuch")
    with pytest.raises(FilterDBError, match="n_permutations"):
        noise.noise_floor(db, "task", n_permutations=0)
