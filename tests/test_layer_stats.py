"""The whole-layer kernel of the database health pass against direct numpy computations."""
from __future__ import annotations

import numpy as np
import pytest

import _oracles as O
from filterdb.kernels import health as K
from filterdb.kernels import layer_stats as LS

orthogonality_by_hand = O.orthogonality


@pytest.mark.parametrize("c_out, c_in", [(2, 1), (5, 7), (32, 16), (33, 4), (64, 64), (200, 30),
                                         (600, 1), (40, 3)])  # 600 x 1: depthwise, k = 9
def test_orthogonality_paths_equal_definition(c_out, c_in):
    rng = np.random.default_rng(c_out)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) + 0.2).astype(np.float32)
    w[1] = 0.0  # a zero row counts |0 - 1| on the diagonal
    if c_out > 2:
        w[2] *= np.float32(1e-35)  # numerically zero: stays near zero, as a zero row
    x = w.reshape(-1, 9)
    exp = orthogonality_by_hand(w)
    out = np.empty(1)
    LS.orthogonality_runs(x, np.array([0]), np.array([len(x)]), np.array([c_out]), out)
    assert out[0] == pytest.approx(exp, abs=1e-12)
    assert LS.orthogonality_blas(x, c_out) == pytest.approx(exp, abs=1e-12)


def test_orthogonality_blas_reuses_its_buffers_safely():
    """Wide, then narrow, then wide layers on two threads at once: the per-thread float64
    copy and Gram buffers are reused (stale values from a bigger layer, or another
    thread's layer, would change the sums)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    shapes = [(300, 40), (40, 12), (180, 64), (41, 5), (300, 40), (97, 33)] * 2
    ws = [(rng.standard_normal((c, ci, 3, 3)) + 0.1 * i).astype(np.float32)
          for i, (c, ci) in enumerate(shapes)]
    exp = [orthogonality_by_hand(w) for w in ws]

    def one_thread(order):
        return [(i, LS.orthogonality_blas(ws[i].reshape(-1, 9), len(ws[i]))) for i in order]
    with ThreadPoolExecutor(2) as ex:
        got = [r for part in ex.map(one_thread, [range(0, 12, 2), range(1, 12, 2)])
               for r in part]
    assert sorted(i for i, _ in got) == list(range(12))
    for i, v in got:
        assert v == pytest.approx(exp[i], abs=1e-12)


def test_orthogonal_rows_give_one():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((90, 40)))
    x = np.ascontiguousarray(q.T, np.float32).reshape(-1, 9)  # 40 orthonormal rows of 90
    assert LS.orthogonality_blas(x, 40) == pytest.approx(1.0, abs=1e-6)


def _layers(rng):
    half = rng.standard_normal((600, 9)).astype(np.float32)
    half[::2] *= np.float32(1e-5)  # 300 sparse rows: more than one block of the sparse pass
    far = (rng.standard_normal((700, 9)) * 1e-3 + 1e3).astype(np.float32)  # mean >> spread
    return [
        rng.standard_normal((1000, 9)).astype(np.float32),
        half,
        far,
        np.zeros((50, 9), np.float32),  # all zero: S = 1, H = 0
        np.tile(rng.standard_normal(9).astype(np.float32), (40, 1)),  # identical: H = 0
        rng.standard_normal((1, 9)).astype(np.float32),  # one filter: H = 0
    ]


def test_health_task_equals_direct_functions():
    rng = np.random.default_rng(3)
    layers = _layers(rng)
    # layers in a buffer with gaps of unselected rows (-1) between them
    parts, ids = [], []
    for i, w in enumerate(layers):
        parts += [w, rng.standard_normal((3, 9)).astype(np.float32)]
        ids += [np.full(len(w), i), np.full(3, -1)]
    x = np.ascontiguousarray(np.concatenate(parts))
    c_out = np.array([100, 60, 70, 5, 4, 1])
    r = LS.health_task(x, np.concatenate(ids), np.arange(len(layers)), c_out)
    v = dict(zip(LS.VALUES, r["values"].T))
    assert (r["count"] == 1).all()
    for i, w in enumerate(layers):
        assert v["n"][i] == len(w)
        peak = np.abs(w).max()
        assert v["n_sparse"][i] == (len(w) if peak == 0 else K.sparse_count(w, 0.01 * peak))
        assert v["sparsity"][i] == pytest.approx(K.sparsity(w), abs=1e-12)
        for key, fn in (("variance_entropy", K.variance_entropy),
                        ("variance_entropy_clean", K.variance_entropy_clean)):
            exp = fn(w)
            assert (np.isnan(v[key][i]) and np.isnan(exp)) or abs(v[key][i] - exp) <= 1e-9, (i, key)
        exp = K.orthogonality(w.reshape(c_out[i], -1))
        assert (np.isnan(v["orthogonality"][i]) and np.isnan(exp)) \
            or abs(v["orthogonality"][i] - exp) <= 1e-12, i
    assert v["sparsity"][1] == 0.5 and v["sparsity"][3] == 1.0
    assert v["variance_entropy"][3] == 0.0 and v["variance_entropy"][4] == 0.0
    assert v["variance_entropy"][5] == 0.0


def test_non_finite_layer_is_nan_and_does_not_spoil_others():
    rng = np.random.default_rng(4)
    good = rng.standard_normal((300, 9)).astype(np.float32)
    bad = rng.standard_normal((300, 9)).astype(np.float32)
    bad[17, 3] = np.nan
    x = np.concatenate([bad, good])
    ids = np.repeat([0, 1], 300)
    r = LS.health_task(x, ids, np.arange(2), np.array([30, 30]))
    v = dict(zip(LS.VALUES, r["values"].T))
    assert np.isnan(v["sparsity"][0]) and np.isnan(v["variance_entropy"][0])
    assert np.isnan(v["orthogonality"][0])
    assert v["variance_entropy"][1] == pytest.approx(K.variance_entropy(good), abs=1e-9)


def _scaled_moments_by_hand(x, keep):
    """The PCA moments of method.md section 3 by numpy: rows ``x / max|x|`` in float32
    (all-zero rows stay zero), then ``n``, the sum and ``sum v v^T`` in float64."""
    v = x[keep]
    peak = np.abs(v).max(axis=1, keepdims=True)
    v = (v / np.where(peak > 0, peak, np.float32(1))).astype(np.float64)
    return len(v), v.sum(axis=0), v.T @ v


@pytest.mark.parametrize("which", ["all", "some", "none"])
def test_health_task_pca_moments_equal_the_definition(which):
    """``pca_moments=True``: the PCA moments from the health statistics' load equal numpy's
    on the scaled rows, for the layers in ``index`` and for those not in it (gaps and
    padding skipped), and the health values are those of the task without them."""
    rng = np.random.default_rng(7)
    sizes = [3 * 64, 1000, 600, 9, 2 * 300]  # runs over several 256-row blocks
    x = (rng.standard_normal((sum(sizes) + 5, 9)) * 0.05 + 0.01).astype(np.float32)
    x[3] = 0.0  # an all-zero row stays zero
    x[400] *= np.float32(1e-6)  # a sparse row
    x[1500] *= np.float32(-3e3)  # a large row
    ids = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)] + [np.full(5, -1)])
    ids[1300:1310] = -1  # a gap
    ids = ids.astype(np.int64)
    c_out = np.array([64, 10, 60, 1, 300])
    index = {"all": np.arange(5), "some": np.array([-1, 0, -1, 1, 2]),
             "none": np.full(5, -1)}[which]
    got = LS.health_task(x, ids, index, c_out, pca_moments=True)
    n, s, sxx = _scaled_moments_by_hand(x, ids >= 0)
    assert int(got["n"]) == n
    np.testing.assert_allclose(got["s"], s, rtol=1e-13, atol=0)
    np.testing.assert_allclose(got["sxx"], sxx, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(got["sxx"], got["sxx"].T)
    plain = LS.health_task(x, ids, index, c_out)
    np.testing.assert_array_equal(got["values"], plain["values"])
    np.testing.assert_array_equal(got["count"], plain["count"])


def test_health_task_pca_moments_are_poisoned_by_non_finite_rows():
    """A NaN or an infinity in a layer makes the PCA moments non-finite, as in the PCA's own
    kernel (the analysis then refuses them); the health values mark only that layer."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((700, 9)).astype(np.float32)
    ids = np.repeat(np.arange(2), [300, 400]).astype(np.int64)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[350, 4] = bad
        got = LS.health_task(y, ids, np.arange(2), np.array([30, 40]), pca_moments=True)
        assert not np.isfinite(got["sxx"]).all()
        plain = LS.health_task(y, ids, np.arange(2), np.array([30, 40]))
        np.testing.assert_array_equal(got["values"], plain["values"])
