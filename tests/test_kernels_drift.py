"""Drift math against independent numpy / scipy computations written from method.md."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import _oracles as O
from filterdb.errors import FilterDBError
from filterdb.kernels import (
    EPS,
    PCA,
    bin_edges,
    coeff_range_chunk,
    coefficients,
    depth_bin,
    depth_bin_labels,
    drift,
    drift_matrix,
    drift_to_reference,
    fit_pca,
    hist2d_chunk,
    hist_chunk,
    kde_from_hist,
    moments_chunk,
    pca_from_moments,
    probabilities,
    scale_filters,
    shared_range,
)

F32_EPS = float(np.finfo(np.float32).eps)  # 2**-23


# ---- independent references -------------------------------------------------------------

ref_scale = O.scale
ref_pca = O.pca


def ref_coef(X, mean, comps):
    """``(scaled X - mean) @ comps.T``, summed over j = 0..8 in order without BLAS, so that
    extreme values used as the histogram range do not move by an ulp between runs."""
    D = ref_scale(X).astype(np.float64) - mean
    R = np.zeros((len(D), len(comps)))
    for j in range(D.shape[1]):
        R += D[:, j:j + 1] * comps[:, j]
    return R


def low_rank(n, seed=0, noise=0.05):
    """Synthetic filters: a few smooth 3x3 patterns plus noise (distinct eigenvalues)."""
    rng = np.random.default_rng(seed)
    basis = np.array([np.ones(9), np.tile([-1, 0, 1], 3), np.repeat([-1, 0, 1], 3),
                      [0, 1, 0, 1, -4, 1, 0, 1, 0]], float)
    w = rng.standard_normal((n, 4)) * np.array([3.0, 2.0, 1.2, 0.6])
    X = w @ basis + noise * rng.standard_normal((n, 9)) * np.linspace(0.5, 1.5, 9)
    return (X * rng.lognormal(-3, 1, (n, 1))).astype(np.float32)


def torch_filters(path):
    """All 3x3 filters of a PyTorch state dict, loaded directly with torch, per layer."""
    torch = pytest.importorskip("torch")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return [v.float().numpy().reshape(-1, 9) for k, v in sd.items()
            if v.ndim == 4 and tuple(v.shape[2:]) == (3, 3)]


def assert_components(got, want, atol=1e-6):
    for g, w in zip(got, want):
        s = np.sign(g @ w)
        np.testing.assert_allclose(g, s * w, atol=atol)


# ---- scaling and PCA ----------------------------------------------------------------------

def test_scale_filters_matches_numpy_and_keeps_zero_rows():
    X = low_rank(5000)
    X[::7] = 0
    X[3] = [-2, 1, 0, 0, 0, 0, 0, 0, 1]
    S = scale_filters(X)
    assert S.dtype == np.float32
    np.testing.assert_array_equal(S, ref_scale(X))
    assert (S[::7] == 0).all()
    np.testing.assert_array_equal(S[3], np.array([-1, .5, 0, 0, 0, 0, 0, 0, .5], np.float32))
    assert np.abs(S).max(axis=1)[1:7].min() == 1.0


def test_moments_combine_by_summing():
    X = low_rank(10_000, seed=1)
    n, s, sxx = moments_chunk(X)
    parts = [moments_chunk(X[a:b]) for a, b in [(0, 1), (1, 3000), (3000, 10_000)]]
    S = ref_scale(X).astype(np.float64)
    assert n == 10_000 == sum(p[0] for p in parts)
    np.testing.assert_allclose(s, S.sum(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sxx, S.T @ S, rtol=1e-12)
    np.testing.assert_allclose(sum(p[2] for p in parts), sxx, rtol=1e-12)
    # rows with a negative layer id are not counted
    ids = np.where(np.arange(10_000) % 3 == 0, -1, 5)
    n2, s2, sxx2 = moments_chunk(X, ids)
    keep = ids >= 0
    assert n2 == keep.sum()
    np.testing.assert_allclose(sxx2, S[keep].T @ S[keep], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_pca_matches_eigh_of_np_cov(seed):
    X = low_rank(20_000, seed=seed)
    X[:50] = 0  # all-zero filters stay zero and count
    p = fit_pca(X)
    mean, comps, var, evr = ref_pca(X)
    assert p.n == 20_000
    np.testing.assert_allclose(p.mean, mean, atol=1e-12)
    np.testing.assert_allclose(p.explained_variance, var, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(p.explained_variance_ratio, evr, atol=1e-9)
    assert_components(p.components, comps)
    # deterministic sign: largest-magnitude entry of each component positive
    for c in p.components:
        assert c[np.argmax(np.abs(c))] > 0
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(9), atol=1e-12)


@pytest.mark.zoo
def test_pca_on_real_filters(zoo_path):
    layers = torch_filters(zoo_path("digit-recognizer")) + torch_filters(zoo_path("mtcnn-onet"))
    X = np.concatenate(layers)
    assert len(X) == 10_272 + 6_240
    p = fit_pca(X)
    mean, comps, var, evr = ref_pca(X)
    np.testing.assert_allclose(p.explained_variance_ratio, evr, atol=1e-9)
    np.testing.assert_allclose(p.mean, mean, atol=1e-12)
    assert_components(p.components, comps)
    # combining per-layer moments gives the same PCA
    parts = [moments_chunk(L) for L in layers]
    q = pca_from_moments(sum(a[0] for a in parts), sum(a[1] for a in parts),
                         sum(a[2] for a in parts))
    np.testing.assert_allclose(q.components, p.components, atol=1e-9)


def test_pca_errors():
    with pytest.raises(FilterDBError, match="empty selection"):
        fit_pca(np.zeros((0, 9), np.float32))
    with pytest.raises(FilterDBError, match="at least 2"):
        fit_pca(np.ones((1, 9), np.float32))
    with pytest.raises(FilterDBError, match="zero variance"):
        fit_pca(np.zeros((10, 9), np.float32))
    with pytest.raises(FilterDBError, match=r"\(n, 9\)"):
        fit_pca(np.zeros((10, 4), np.float32))


def test_pca_dict_round_trip():
    p = fit_pca(low_rank(1000))
    q = PCA.from_dict(p.to_dict())
    np.testing.assert_array_equal(q.components, p.components)
    assert q.n == p.n


# ---- coefficients and histograms -------------------------------------------------------

def test_coefficients_and_shared_range():
    X = low_rank(30_000, seed=2)
    p = fit_pca(X)
    C = coefficients(X, p)
    R = ref_coef(X, p.mean, p.components)
    np.testing.assert_allclose(C, R, rtol=0, atol=1e-12)
    cmin, cmax = coeff_range_chunk(X, p)
    np.testing.assert_array_equal(cmin, C.min(0))
    np.testing.assert_array_equal(cmax, C.max(0))
    lo, hi = shared_range(cmin, cmax)
    assert lo == R.min() or abs(lo - R.min()) < 1e-12
    assert hi == R.max() or abs(hi - R.max()) < 1e-12
    # the projection is centred: coefficients have mean ~0 and variance = explained variance
    np.testing.assert_allclose(R.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(R.var(0, ddof=1), p.explained_variance, rtol=1e-9)


def ref_hist(C, codes, n_groups, bins, lo, hi):
    out = np.zeros((n_groups, 9, bins), np.int64)
    for g in range(n_groups):
        for k in range(9):
            out[g, k] = np.histogram(C[codes == g, k], bins=bins, range=(lo, hi))[0]
    return out


@pytest.mark.parametrize("bins,rng", [(70, None), (70, (-3.0, 3.0)), (13, (-0.5, 0.25))])
def test_hist_chunk_equals_np_histogram(bins, rng):
    X = low_rank(40_000, seed=3)
    X[:30] = 0
    p = fit_pca(X)
    R = ref_coef(X, p.mean, p.components)
    lo, hi = rng if rng else (R.min(), R.max())
    codes = np.random.default_rng(0).integers(-1, 4, len(X))
    counts = hist_chunk(X, codes, 4, p, bins=bins, lo=lo, hi=hi)
    assert counts.dtype == np.int64 and counts.shape == (4, 9, bins)
    np.testing.assert_array_equal(counts, ref_hist(R, codes, 4, bins, lo, hi))
    if rng is None:  # the full range: every kept filter counted once per component
        assert counts.sum() == 9 * (codes >= 0).sum()


def test_hist_edges_and_last_bin_like_np_histogram():
    # exact edge values, hi itself, values outside: one component's coefficients made
    # exact by a PCA with the identity as components and zero mean
    p = PCA(3, np.zeros(9), np.eye(9), np.ones(9), np.full(9, 1 / 9))
    vals = np.array([-1, -0.75, -0.5, 0, 0.25, 0.5, 0.999, 1.0, -1.0, 1.0], np.float32)
    X = np.zeros((len(vals), 9), np.float32)
    X[:, 0] = vals
    X[:, 1] = 1.0  # peak 1 everywhere: scaling leaves the values alone
    counts = hist_chunk(X, np.zeros(len(X), int), 1, p, bins=8, lo=-0.75, hi=0.999)
    np.testing.assert_array_equal(counts[0, 0],
                                  np.histogram(vals.astype(float), 8, (-0.75, 0.999))[0])
    # a zero-width range widens like np.histogram
    counts = hist_chunk(X, np.zeros(len(X), int), 1, p, bins=4, lo=0.5, hi=0.5)
    np.testing.assert_array_equal(counts[0, 0], np.histogram(vals.astype(float), 4, (.5, .5))[0])
    np.testing.assert_array_equal(bin_edges(0.5, 0.5, 4), np.histogram_bin_edges([], 4, (.5, .5)))


def test_binning_next_to_every_edge_like_np_histogram():
    """The kernels check a value against the edges only near one (``_edge_tol``); values on
    every edge and 1-4 float64 steps either side, in ranges whose edges round badly (also a
    range 1e-6 wide at 1000), bin as np.histogram and np.histogram2d bin them."""
    from filterdb.kernels import _numba

    for lo, hi, nb in [(-3.0, 3.0, 70), (-2.774476909660922, 2.5071633455100204, 70),
                       (0.1, 0.7, 7), (1000.0, 1000.000001, 70), (-1e-300, 1e-300, 3)]:
        edges = bin_edges(lo, hi, nb)
        v = [edges]
        for steps in (1, 2, 4):
            up, down = edges.copy(), edges.copy()
            for _ in range(steps):
                up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
            v += [up, down]
        v = np.concatenate(v + [[lo - 1, hi + 1, np.nan]])
        k = len(v)
        c = np.tile(v, (9, 1))
        c[3] = v[::-1]
        flat = np.zeros(2 * 9 * nb, np.int64)
        g = np.zeros(k, np.int64)
        g[1::2] = 1
        _numba._count_block(c, k, g, edges, flat, np.empty((9, k), np.int64))
        got = flat.reshape(2, 9, nb)
        for grp in (0, 1):
            for q in (0, 3):
                want = np.histogram(c[q, g == grp], edges)[0]
                np.testing.assert_array_equal(got[grp, q], want, err_msg=f"{lo, hi, q}")
        h2 = np.zeros((nb, nb), np.int64)
        _numba._count2d_block(c, k, 0, 3, edges, edges, h2, np.empty((2, k), np.int64))
        np.testing.assert_array_equal(h2, np.histogram2d(c[0], c[3], [edges, edges])[0])


def test_hist2d_equals_np_histogram2d():
    X = low_rank(20_000, seed=4)
    p = fit_pca(X)
    R = ref_coef(X, p.mean, p.components)
    np.testing.assert_allclose(R, (ref_scale(X) - p.mean) @ p.components.T, rtol=0, atol=1e-12)
    lo, hi = R.min(), R.max()
    h = hist2d_chunk(X, p, lo, hi, bins=64)
    ref = np.histogram2d(R[:, 0], R[:, 1], bins=64, range=[[lo, hi], [lo, hi]])[0]
    np.testing.assert_array_equal(h, ref.astype(np.int64))
    h = hist2d_chunk(X, p, (-1, -2), (1, 0.5), bins=(40), components=(2, 4))
    ref = np.histogram2d(R[:, 2], R[:, 4], bins=40, range=[[-1, 1], [-2, 0.5]])[0]
    np.testing.assert_array_equal(h, ref.astype(np.int64))


def notebook_probs(values, bins, lo, hi):
    """The published notebook's probabilities, typed from its definition: the density
    histogram, its empty bins at float32 eps, renormalised."""
    h = np.histogram(values, range=(lo, hi), bins=bins, density=True)[0].astype(np.double)
    h[h == 0] = np.finfo(np.float32).eps
    return h / h.sum()


def test_probabilities_floor_the_density_as_the_notebook():
    rng = np.random.default_rng(3)
    for n, bins, (lo, hi) in [(7, 70, (-3, 3)), (500, 70, (-2.5, 4.1)), (40, 13, (0, 1))]:
        v = rng.normal(size=(2, n))
        v[1, :3] = hi  # values on the last edge count in the last bin
        edges = bin_edges(lo, hi, bins)
        counts = np.array([np.histogram(x, bins, range=(lo, hi))[0] for x in v])
        P = probabilities(counts, edges)
        for i in range(2):
            np.testing.assert_allclose(P[i], notebook_probs(v[i], bins, lo, hi), rtol=1e-13,
                                       atol=0)
    # by hand: 4 values in 4 bins of width 0.5; density = counts / (4 * 0.5)
    P = probabilities(np.array([[0, 3, 1, 0]]), [0, 0.5, 1, 1.5, 2])[0]
    dens = np.array([F32_EPS, 1.5, 0.5, F32_EPS])
    np.testing.assert_allclose(P, dens / dens.sum(), rtol=1e-15)
    # the floor differs from a floor of the counts: empty bins eps / (2 eps + 1 / 0.5)
    # instead of eps / (2 eps + 4), a factor of (filters x bin width) = 2
    counts_floor = np.array([F32_EPS, 3, 1, F32_EPS]) / (4 + 2 * F32_EPS)
    assert P[0] / counts_floor[0] == pytest.approx(2.0, rel=1e-6)
    # a histogram with no value in the range has no density: the floor everywhere, uniform
    np.testing.assert_allclose(probabilities(np.zeros((9, 4)), [0, 1, 2, 3, 4]), 0.25)
    assert EPS == F32_EPS


# ---- drift ----------------------------------------------------------------------------------

ref_drift = O.drift


def test_drift_and_matrix_against_scipy_entropy():
    X = low_rank(30_000, seed=5)
    p = fit_pca(X)
    R = ref_coef(X, p.mean, p.components)
    lo, hi = R.min(), R.max()
    rng = np.random.default_rng(1)
    # groups of different sizes, one of a single filter, one of all-zero filters
    codes = rng.integers(0, 4, len(X))
    codes[:3] = 4
    X[:3] = 0
    codes[3] = 5
    p = fit_pca(X)
    R = ref_coef(X, p.mean, p.components)
    lo, hi = R.min(), R.max()
    counts = hist_chunk(X, codes, 6, p, lo=lo, hi=hi)
    np.testing.assert_array_equal(counts, ref_hist(R, codes, 6, 70, lo, hi))
    assert counts[5].sum() == 9 and counts[4].sum() == 27
    P = probabilities(counts, bin_edges(lo, hi, 70))
    for k in range(9):  # the notebook's probabilities of the reference coefficients
        for g in range(6):
            np.testing.assert_allclose(P[g, k], notebook_probs(R[codes == g, k], 70, lo, hi),
                                       rtol=1e-12)
    for weights, w in [("evr", p.explained_variance_ratio), ("equal", np.full(9, 1 / 9)),
                       (np.arange(9.0), np.arange(9.0))]:
        D = drift_matrix(P, weights, evr=p.explained_variance_ratio)
        ref = np.array([[ref_drift(P[a], P[b], w) for b in range(6)] for a in range(6)])
        np.testing.assert_allclose(D, ref, rtol=1e-9, atol=1e-12)
        assert (D == D.T).all() and (np.diag(D) == 0).all() and (D >= 0).all()
        assert drift(P[0], P[5], weights, p.explained_variance_ratio) == pytest.approx(ref[0, 5], rel=1e-12)
    # random halves of one population drift little; the single filter drifts a lot
    D = drift_matrix(P, p.explained_variance_ratio)
    assert D[0, 1] < 0.05 and D[0, 5] > 1
    # model-vs-selection: each group against the pooled selection
    ref_all = np.array([notebook_probs(R[:, k], 70, lo, hi) for k in range(9)])
    d = drift_to_reference(P, ref_all, "equal")
    np.testing.assert_allclose(d, [ref_drift(P[g], ref_all, np.full(9, 1 / 9))
                                   for g in range(6)], rtol=1e-9)


def test_drift_single_group_and_bad_weights():
    P = probabilities(np.ones((1, 9, 70)), np.linspace(0, 1, 71))
    np.testing.assert_array_equal(drift_matrix(P, "equal"), [[0.0]])
    with pytest.raises(FilterDBError, match="evr"):
        drift_matrix(P, "evr")
    with pytest.raises(FilterDBError, match="9 finite"):
        drift_matrix(P, np.ones(3))
    with pytest.raises(FilterDBError, match="probabilities"):
        drift(np.zeros((9, 70)), P[0], "equal")


@pytest.mark.zoo
def test_drift_on_real_layers(zoo_path):
    """Layers of two real models as groups; drift from scipy entropy of np.histogram."""
    layers = torch_filters(zoo_path("digit-recognizer")) + torch_filters(zoo_path("mtcnn-onet"))
    X = np.concatenate(layers)
    codes = np.concatenate([np.full(len(L), i) for i, L in enumerate(layers)])
    p = fit_pca(X)
    mean, comps, _, evr = ref_pca(X)
    # reference coefficients with the reference PCA (signs aligned to ours)
    comps = comps * np.sign((comps * p.components).sum(1))[:, None]
    R = ref_coef(X, mean, comps)
    lo, hi = R.min(), R.max()
    G = len(layers)
    counts = hist_chunk(X, codes, G, p, lo=-3, hi=3)
    np.testing.assert_array_equal(counts, ref_hist(R, codes, G, 70, -3, 3))
    cmin, cmax = coeff_range_chunk(X, p)
    assert shared_range(cmin, cmax) == pytest.approx((lo, hi), abs=1e-9)
    P = probabilities(counts, bin_edges(-3, 3, 70))
    D = drift_matrix(P, p.explained_variance_ratio)
    Pref = [np.array([notebook_probs(R[codes == g, k], 70, -3, 3) for k in range(9)])
            for g in range(G)]
    ref = np.array([[ref_drift(Pref[a], Pref[b], evr) for b in range(G)] for a in range(G)])
    np.testing.assert_allclose(D, ref, rtol=1e-8, atol=1e-12)
    assert (D[np.triu_indices(G, 1)] > 0).all()


# ---- depth bins and KDE --------------------------------------------------------------------

def test_depth_bins_are_the_notebooks_pd_cut():
    import pandas as pd

    # the notebook's pd.cut(x, np.arange(0, 1.1, 0.1), include_lowest=True): right-closed
    # bins over the unrounded float edges (0.1 + 0.2 == 0.30000000000000004 is an edge)
    x = np.array([0.0, 0.05, 0.1, 0.1000001, 0.100002, 0.2, 0.25, 0.3, 3 / 10, 6 / 20,
                  0.1 + 0.2, np.nextafter(0.1 + 0.2, 1), 0.7, 7 / 10, 0.9, 0.90001, 1.0])
    want = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 6, 6, 8, 9, 9]
    np.testing.assert_array_equal(depth_bin(x), want)
    edges = np.arange(0, 1.0 + 0.10, 0.10)  # as the notebook builds them
    for last in range(1, 60):  # conv_depth / (n - 1) of every model up to 60 conv depths
        v = np.arange(last + 1) / last
        for xs in (v, v.astype(np.float32).astype(np.float64)):
            ref = pd.cut(xs, edges, include_lowest=True, labels=False)
            np.testing.assert_array_equal(depth_bin(xs), ref)
    # float64 k / (n - 1) also agrees with exact rational arithmetic
    import math
    from fractions import Fraction
    for last in range(1, 60):
        k = np.arange(last + 1)
        exact = [max(math.ceil(Fraction(10 * int(i), last)) - 1, 0) for i in k]
        np.testing.assert_array_equal(depth_bin(k / last), exact)
    assert depth_bin_labels()[:2] == ["[0.0, 0.1]", "(0.1, 0.2]"]
    with pytest.raises(FilterDBError):
        depth_bin([1.5])
    with pytest.raises(FilterDBError):
        depth_bin([np.nan])


def test_kde_from_hist_equals_scipy_gaussian_kde():
    rng = np.random.default_rng(2)
    vals = np.concatenate([rng.normal(-1, 0.5, 3000), rng.normal(1.5, 0.3, 1000)])
    counts, edges = np.histogram(vals, bins=70)
    centres = (edges[:-1] + edges[1:]) / 2
    grid = np.linspace(-4, 4, 301)
    ref = scipy.stats.gaussian_kde(np.repeat(centres, counts), bw_method="silverman")(grid)
    np.testing.assert_allclose(kde_from_hist(counts, edges, grid), ref, rtol=1e-9, atol=1e-15)
    # degenerate groups: one value gives a bump of one bin width; none gives zeros
    one = np.zeros(70, int)
    one[10] = 1
    k = kde_from_hist(one, edges, grid)
    assert np.trapezoid(k, grid) == pytest.approx(1, rel=1e-3)
    assert grid[np.argmax(k)] == pytest.approx(centres[10], abs=grid[1] - grid[0])
    np.testing.assert_array_equal(kde_from_hist(np.zeros(70), edges, grid), 0)


def test_float16_precision_is_the_notebooks_scaling():
    from filterdb.kernels import notebook_float16

    rng = np.random.default_rng(8)
    X = (rng.standard_normal((3000, 9)) * np.exp(rng.uniform(-12, 8, (3000, 1)))).astype(
        np.float32)
    X[0] = 0
    X[1] = 1e-9  # underflows to float16 zero: stays a zero filter
    # the notebook, by hand: .astype(np.float16), X / den in float16, den = 1 for zero rows
    h = X.astype(np.float16)
    den = np.abs(h).max(axis=1)
    want = h / np.where(den == 0, 1, den)[:, None]
    got = notebook_float16(X)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert (got[0] == 0).all() and (got[1] == 0).all()
    # the kernels' own float32 scaling leaves these values exactly as they are
    np.testing.assert_array_equal(scale_filters(got), got)
    p = fit_pca(X, precision="float16")
    np.testing.assert_allclose(p.mean, want.astype(np.float64).mean(axis=0), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(coefficients(X, p, precision="float16"), coefficients(got, p))
    with pytest.raises(FilterDBError, match="float16"):
        notebook_float16(np.full((1, 9), 7e4, np.float32))
    with pytest.raises(FilterDBError, match="precision"):
        fit_pca(X, precision="half")
