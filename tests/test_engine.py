"""The execution layer: plans, the local thread engine and Dask, against direct numpy."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import _oracles as O
from filterdb.analysis import drift_analysis, fit_pca
from filterdb.engine import ArraySource, aligned_empty, make_plan, map_reduce, run_task
from filterdb.errors import FilterDBError
from filterdb.kernels.pca import moments_task, range_task

HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None


def layered(n_layers=40, seed=0):
    """Synthetic database: layers of different sizes and statistics, back to back."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6000, n_layers)
    sizes[3] = 1  # a one-filter layer
    parts = []
    for i, n in enumerate(sizes):
        A = rng.standard_normal((9, 9)) * (0.3 + (i % 5) / 5)
        parts.append((rng.standard_normal((n, 9)) @ A + 0.1 * i).astype(np.float32))
    if n_layers > 5:
        parts[5][:] = 0  # an all-zero layer
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate(parts), starts, sizes


def selection(starts, sizes):
    """Every layer but every fourth (gaps), layer id = index."""
    keep = np.arange(len(sizes)) % 4 != 1
    return starts[keep], sizes[keep], np.flatnonzero(keep)


def rows_of(starts, counts):
    return np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])


def direct(X, starts, counts, lids, lookup, n_groups, bins=70, precision="float32"):
    """The drift analysis from the definitions, all in memory with numpy / scipy."""
    rows = rows_of(starts, counts)
    layer = np.repeat(lids, counts)
    F = X[rows]
    if precision == "float16":  # the notebook: .astype(np.float16), X / den in float16
        F = F.astype(np.float16)
        den = np.abs(F).max(axis=1)
        S = (F / np.where(den == 0, 1, den)[:, None]).astype(np.float64)
    else:
        peak = np.abs(F).max(1, keepdims=True)
        S = np.where(peak > 0, F / np.where(peak > 0, peak, 1), 0).astype(np.float64)
    var, vec = np.linalg.eigh(np.cov(S, rowvar=False))
    order = np.argsort(var)[::-1]
    var, comps = var[order], vec[:, order].T
    # the method's sign convention: the largest-magnitude entry of a component is positive
    comps = comps * np.sign(comps[np.arange(9), np.abs(comps).argmax(1)])[:, None]
    evr = var / var.sum()
    mean = S.mean(0)
    C = (S - mean) @ comps.T
    lo, hi = C.min(), C.max()
    codes = lookup[layer]
    counts_ = np.zeros((n_groups, 9, bins), np.int64)
    P = np.zeros((n_groups, 9, bins))
    for g in range(n_groups):
        for k in range(9):
            counts_[g, k] = np.histogram(C[codes == g, k], bins, (lo, hi))[0]
            # the published notebook's probabilities: density, eps floor, renormalised
            h = np.histogram(C[codes == g, k], bins, (lo, hi), density=True)[0]
            h[h == 0] = np.finfo(np.float32).eps
            P[g, k] = h / h.sum()
    D = np.zeros((n_groups, n_groups))
    for a in range(n_groups):
        for b in range(n_groups):
            D[a, b] = O.drift(P[a], P[b], evr)
    return dict(evr=evr, comps=comps, mean=mean, lo=lo, hi=hi, counts=counts_, D=D, C=C)


def test_aligned_empty():
    for shape, dt in [((1000, 9), np.float32), ((77,), np.int64)]:
        a = aligned_empty(shape, dt)
        assert a.shape == shape and a.dtype == dt and a.ctypes.data % 64 == 0


def test_plan_covers_the_selection_once():
    X, starts, sizes = layered()
    s, c, lids = selection(starts, sizes)
    for target in (1000, 4096, 1 << 20):
        plan = make_plan(s, c, lids, target_rows=target, gap_rows=100)
        assert plan.n_rows == c.sum() == sum(t.n_rows for t in plan.tasks)
        assert plan.max_span <= max(target, 16)
        # expand every task and compare with the direct expansion of the ranges
        got_rows, got_ids = [], []
        for t in plan.tasks:
            for off, n, lid in t.runs.tolist():
                # the buffer row off maps back to a source row through the reads
                r = next(r for r in t.reads.tolist() if r[2] <= off < r[2] + r[1])
                got_rows.append(np.arange(n) + r[0] + off - r[2])
                got_ids.append(np.full(n, lid))
            for r in t.reads.tolist():
                assert r[2] % 16 == 0  # every read lands 64-byte aligned
        np.testing.assert_array_equal(np.concatenate(got_rows), rows_of(s, c))
        np.testing.assert_array_equal(np.concatenate(got_ids), np.repeat(lids, c))


def test_whole_layer_plan():
    """whole_layers: every layer in exactly one task, layers grouped in order while their
    rows stay within the target (greedy, by hand), a bigger layer alone; the rows each task
    covers are the same as in the ordinary plan's expansion."""
    X, starts, sizes = layered()
    s, c, lids = selection(starts, sizes)
    for target in (1, 700, 5000, 1 << 20):
        plan = make_plan(s, c, lids, target_rows=target, gap_rows=100, whole_layers=True)
        groups, cur, fill = [], [], 0  # the grouping written out
        for lid, n in zip(lids.tolist(), c.tolist()):
            if cur and fill + n > target:
                groups.append(cur)
                cur, fill = [], 0
            cur.append(lid)
            fill += n
        groups.append(cur)
        assert [[int(r[2]) for r in t.runs.tolist()] for t in plan.tasks] == groups
        got = [np.arange(n) + r[0] + off - r[2] for t in plan.tasks
               for off, n, _ in t.runs.tolist()
               for r in [next(r for r in t.reads.tolist() if r[2] <= off < r[2] + r[1])]]
        np.testing.assert_array_equal(np.concatenate(got), rows_of(s, c))
        assert plan.n_rows == c.sum()


def test_plan_errors():
    with pytest.raises(FilterDBError, match="empty selection"):
        make_plan([], [], [])
    with pytest.raises(FilterDBError, match="empty selection"):
        make_plan([0, 5], [0, 0], [0, 1])
    with pytest.raises(FilterDBError, match="sorted"):
        make_plan([10, 0], [5, 5], [0, 1])
    with pytest.raises(FilterDBError, match="overlap"):
        make_plan([0, 3], [5, 5], [0, 1])


def test_run_task_reads_and_labels_rows():
    X, starts, sizes = layered(12)
    s, c, lids = selection(starts, sizes)
    plan = make_plan(s, c, lids, target_rows=5000, gap_rows=0)

    def grab(filters, layer_ids):
        keep = layer_ids >= 0
        return {"x": filters[keep].copy(), "ids": layer_ids[keep].copy()}

    xs = [run_task(ArraySource(X), t, grab) for t in plan.tasks]
    np.testing.assert_array_equal(np.concatenate([r["x"] for r in xs]), X[rows_of(s, c)])
    np.testing.assert_array_equal(np.concatenate([r["ids"] for r in xs]), np.repeat(lids, c))


def test_local_engine_equals_direct_computation():
    X, starts, sizes = layered()
    s, c, lids = selection(starts, sizes)
    lookup = np.full(len(sizes), -1)
    lookup[lids] = lids % 3  # three groups of layers
    lookup[3] = 3  # a group of one filter (layer 3 holds 1 filter)
    ref = direct(X, s, c, lids, lookup, 4)
    plan = make_plan(s, c, lids, target_rows=8192)
    assert len(plan) > 5
    r = drift_analysis(ArraySource(X), plan, lookup, 4, hist2d_bins=32, workers=2)
    np.testing.assert_allclose(r.pca.explained_variance_ratio, ref["evr"], atol=1e-9)
    for g, w in zip(r.pca.components, ref["comps"]):
        np.testing.assert_allclose(g, np.sign(g @ w) * w, atol=1e-6)
    assert r.range == pytest.approx((ref["lo"], ref["hi"]), abs=1e-12)
    np.testing.assert_array_equal(r.counts, ref["counts"])
    assert r.sizes.iloc[3] == 1
    np.testing.assert_allclose(r.matrix, ref["D"], rtol=1e-9, atol=1e-12)
    h2 = np.histogram2d(ref["C"][:, 0], ref["C"][:, 1], 32, [[ref["lo"], ref["hi"]]] * 2)[0]
    np.testing.assert_array_equal(r.hist2d, h2)
    # the same with one thread, and a single group, and equal weights
    r1 = drift_analysis(ArraySource(X), plan, np.zeros(len(sizes), int), workers=1,
                        weights="equal")
    np.testing.assert_array_equal(r1.counts[0], ref["counts"].sum(0))
    np.testing.assert_array_equal(r1.matrix, [[0.0]])


def test_float16_precision_equals_direct_computation():
    X, starts, sizes = layered()
    s, c, lids = selection(starts, sizes)
    X[starts[1]:starts[1] + sizes[1]] *= 1e6  # beyond float16, in a layer left out: ignored
    lookup = np.full(len(sizes), -1)
    lookup[lids] = lids % 3
    ref = direct(X, s, c, lids, lookup, 3, precision="float16")
    plan = make_plan(s, c, lids, target_rows=8192)
    r = drift_analysis(ArraySource(X), plan, lookup, 3, precision="float16", workers=2)
    assert r.precision == "float16"
    np.testing.assert_allclose(r.pca.explained_variance_ratio, ref["evr"], atol=1e-12)
    assert r.range == pytest.approx((ref["lo"], ref["hi"]), abs=1e-12)
    np.testing.assert_array_equal(r.counts, ref["counts"])
    np.testing.assert_allclose(r.matrix, ref["D"], rtol=1e-9, atol=1e-12)
    r32 = drift_analysis(ArraySource(X), plan, lookup, 3, workers=2)
    assert np.abs(r32.matrix.to_numpy() - r.matrix.to_numpy()).max() > 1e-9
    # a selected filter beyond float16's range is refused, not turned into inf
    plan_all = make_plan(starts, sizes, np.arange(len(sizes)), target_rows=8192)
    with pytest.raises(FilterDBError, match="float16"):
        drift_analysis(ArraySource(X), plan_all, np.zeros(len(sizes), int),
                       precision="float16")
    with pytest.raises(FilterDBError, match="precision"):
        drift_analysis(ArraySource(X), plan, lookup, 3, precision="bfloat16")


def test_map_reduce_sums_and_min_max_in_plan_order():
    X, starts, sizes = layered(20, seed=3)
    plan = make_plan(starts, sizes, np.arange(len(sizes)), target_rows=3000)
    src = ArraySource(X)
    a = map_reduce(src, plan, moments_task, workers=2)
    b = map_reduce(src, plan, moments_task, workers=1)
    for k in a:  # reproducible: combined in plan order whatever the threads do
        np.testing.assert_array_equal(a[k], b[k])
    p = fit_pca(src, plan)
    params = {"mean": p.mean, "components": p.components}
    r = map_reduce(src, plan, range_task, params)
    from filterdb.kernels import coefficients

    C = coefficients(X, p)
    np.testing.assert_array_equal(r["cmin"], C.min(0))
    np.testing.assert_array_equal(r["cmax"], C.max(0))
    seen = []
    map_reduce(src, plan, moments_task, progress=seen.append)
    assert sum(seen) == len(X) and len(seen) == len(plan)


def test_engine_errors():
    X, starts, sizes = layered(5)
    plan = make_plan(starts, sizes, np.arange(5))
    with pytest.raises(FilterDBError, match="unknown engine"):
        map_reduce(ArraySource(X), plan, moments_task, engine="spark")
    with pytest.raises(FilterDBError, match="zero variance"):
        fit_pca(ArraySource(np.zeros((100, 9), np.float32)), make_plan([0], [100], [0]))
    with pytest.raises(FilterDBError, match="group codes"):
        drift_analysis(ArraySource(X), plan, np.array([0, 1, 2, 3, 9]), 4)

    class Bad:
        n_rows = len(X)

        def read(self, start, count, out):
            return X[start:start + count].astype(np.float64)

    with pytest.raises(FilterDBError, match="expected C-contiguous float32"):
        map_reduce(Bad(), plan, moments_task)


@pytest.mark.skipif(not HAS_DISTRIBUTED, reason="dask.distributed is not installed "
                    "(pip install 'filterdb[dask]')")
@pytest.mark.timeout(120)
def test_dask_engine_equals_local():
    from filterdb.engine.dask import DaskEngine

    X, starts, sizes = layered(30, seed=7)
    s, c, lids = selection(starts, sizes)
    lookup = np.full(len(sizes), -1)
    lookup[lids] = lids % 4
    plan = make_plan(s, c, lids, target_rows=10_000)
    local = drift_analysis(ArraySource(X), plan, lookup, hist2d_bins=16)
    local16 = drift_analysis(ArraySource(X), plan, lookup, precision="float16")
    with DaskEngine(workers=2) as eng:
        assert len(eng.client.scheduler_info()["workers"]) == 2
        dist = drift_analysis(ArraySource(X), plan, lookup, hist2d_bins=16, engine=eng)
        dist16 = drift_analysis(ArraySource(X), plan, lookup, precision="float16", engine=eng)
    np.testing.assert_array_equal(dist16.counts, local16.counts)
    np.testing.assert_allclose(dist16.matrix, local16.matrix, rtol=1e-12, atol=1e-15)
    # counts are integers: equal; float results equal to rounding (partial sums may be
    # combined in another order on the workers)
    np.testing.assert_allclose(dist.pca.components, local.pca.components, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(dist.counts, local.counts)
    np.testing.assert_array_equal(dist.hist2d, local.hist2d)
    np.testing.assert_allclose(dist.matrix, local.matrix, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dist.range, local.range, rtol=1e-12, atol=0)


class CopySource:
    """Copies into the engine's buffers (as the store does) and is slow now and then, so
    reads and computations overlap and every buffer is reused many times."""

    def __init__(self, X):
        self.X, self.n_rows = X, len(X)

    def read(self, start, count, out):
        if start % 3 == 0:
            import time

            time.sleep(0.002)
        out[:count] = self.X[start:start + count]
        return out[:count]


def test_local_engine_reuses_buffers_safely():
    from filterdb.engine.local import LocalEngine

    X, starts, sizes = layered(60, seed=5)
    s, c, lids = selection(starts, sizes)
    plan = make_plan(s, c, lids, target_rows=2000)
    assert len(plan) > 20
    rows = rows_of(s, c)
    with LocalEngine(workers=2) as eng:
        calls = []

        def failing(x, ids):
            calls.append(1)
            if len(calls) == 7:
                raise ValueError("kernel failed on task 7")
            return moments_task(x, ids)

        with pytest.raises(ValueError, match="task 7"):
            map_reduce(CopySource(X), plan, failing, engine=eng)
        # the same engine (and buffers) right after: still exact
        r = map_reduce(CopySource(X), plan, moments_task, engine=eng)
    ref = map_reduce(ArraySource(X), plan, moments_task, workers=1)
    for k in r:
        np.testing.assert_array_equal(r[k], ref[k])
    assert r["n"] == len(rows)
