"""The shared range found inside the PCA pass (kernels/extremes.py) against brute force:
the record of extreme rows against numpy's sort of the coefficients, merging against one
record of all rows, and the proved range: exact (``==`` the range pass) or refused."""
from __future__ import annotations

import numpy as np
import pytest

import _oracles as O
from filterdb.engine import (
    ArraySource,
    make_plan,
    map_reduce,
    plan_ranges,
    reversed_plan,
    sample_plan,
)
from filterdb.kernels import coeff_range_chunk, fit_pca, moments_chunk, shared_range
from filterdb.kernels import extremes as X


def filters(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 9)) @ rng.standard_normal((9, 9)) + 0.3 * rng.standard_normal(9)
    return x.astype(np.float32)


def rotated(p, angle, seed):
    """The components of ``p`` turned by about ``angle`` radians (a random rotation)."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((9, 9))
    S = (S - S.T) / np.linalg.norm(S - S.T, 2) * angle
    w, V = np.linalg.eig(S)  # expm of a skew matrix: an exact rotation
    R = (V @ np.diag(np.exp(w)) @ np.linalg.inv(V)).real
    return p.components @ R.T


def test_record_holds_the_k_most_extreme_rows_and_theta():
    x = filters(20_000)
    x[5] = np.nan  # dropped, as the range pass drops it
    ids = np.zeros(len(x), np.int64)
    ids[::7] = -1  # padding rows: skipped
    p = fit_pca(x[10:5000])
    r = X.moments_top_task(x, ids, p.mean, p.components, k=16)
    # the moments are moments_chunk's, to the bit
    n, s, sxx = moments_chunk(x, ids)
    assert int(r["n"]) == n
    np.testing.assert_array_equal(r["s"], s)
    np.testing.assert_array_equal(r["sxx"], sxx)
    keep = (ids >= 0) & np.isfinite(x).all(axis=1)
    c = (O.scale(x[keep]).astype(np.float64) - p.mean) @ p.components.T  # numpy's own
    top = r["top"]
    for d in range(18):
        v = np.sort(c[:, d // 2] * (1 if d % 2 == 0 else -1))[::-1]
        np.testing.assert_allclose(np.sort(top[d, :16, 0])[::-1], v[:16], rtol=0, atol=1e-12)
        np.testing.assert_allclose(top[d, 16, 0], v[16], rtol=0, atol=1e-12)  # theta
        # each kept value belongs to its kept row
        rows = top[d, :16, 1:].astype(np.float32)
        cr = (O.scale(rows).astype(np.float64) - p.mean) @ p.components[d // 2]
        np.testing.assert_allclose(cr * (1 if d % 2 == 0 else -1), top[d, :16, 0], atol=1e-12)


def test_merged_records_equal_one_record_of_all_rows():
    x = filters(30_000, seed=1)
    p = fit_pca(x)
    whole = X.moments_top_task(x, np.zeros(len(x), np.int64), p.mean, p.components)["top"]
    acc = None
    for a in range(0, len(x), 4096):
        part = X.moments_top_task(x[a:a + 4096], np.zeros(len(x[a:a + 4096]), np.int64),
                                  p.mean, p.components)["top"]
        acc = part if acc is None else X.merge_top(acc, part, out=acc)
    np.testing.assert_array_equal(np.sort(acc[:, :-1, 0], axis=1), np.sort(whole[:, :-1, 0], axis=1))
    np.testing.assert_array_equal(acc[:, -1, 0], whole[:, -1, 0])
    # through the engine's "top" reduction, forwards and backwards
    src = ArraySource(x)
    plan = make_plan([0], [len(x)], [0], target_rows=2048)
    for pl in (plan, reversed_plan(plan)):
        got = map_reduce(src, pl, X.moments_top_task, {"mean": p.mean, "components": p.components})
        np.testing.assert_array_equal(np.sort(got["top"][:, :-1, 0], axis=1),
                                      np.sort(whole[:, :-1, 0], axis=1))
        np.testing.assert_array_equal(got["top"][:, -1, 0], whole[:, -1, 0])


@pytest.mark.parametrize("k", [1, 4, 32])
def test_range_is_exact_or_refused(k):
    """Over many provisional bases, near and far: the range found equals the brute-force
    range to the bit, or the check refuses; near bases pass, and some far ones refuse."""
    x = filters(40_000, seed=2)
    p = fit_pca(x)
    exact = shared_range(*coeff_range_chunk(x, p))
    outcomes = []
    for seed, angle in enumerate([0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0, 2.0, 3.0] * 2):
        pm = p.mean + (0.0 if angle == 0 else 0.01 * angle)
        pc = rotated(p, angle, seed)
        r = X.moments_top_task(x, np.zeros(len(x), np.int64), pm, pc, k=k)
        got = X.range_from_top(r["top"], pm, pc, p.mean, p.components)
        assert got is None or got == exact, (angle, got, exact)
        outcomes.append((angle, got is not None))
    assert all(ok for a, ok in outcomes if a <= 1e-3)
    assert not all(ok for _, ok in outcomes)


def test_crowded_extremes_are_refused_not_guessed():
    """Many rows at nearly the same extreme along the provisional direction, the true
    extreme among the ones not kept: the check must refuse."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.2, 0.2, (5000, 9)).astype(np.float32)
    x[:, 0] = 1.0  # every row's peak at w0
    x[:200, 1] = rng.uniform(0.95, 1.0, 200)  # a crowd along w0 + w1
    p = fit_pca(x)
    exact = shared_range(*coeff_range_chunk(x, p))
    pc = rotated(p, 0.3, 7)
    r = X.moments_top_task(x, np.zeros(len(x), np.int64), p.mean, pc, k=2)
    kept = shared_range(*coeff_range_chunk(X.kept_rows(r["top"]), p))
    assert kept != exact  # the construction works: the kept rows miss the extreme
    assert X.range_from_top(r["top"], p.mean, pc, p.mean, p.components) is None


def test_sample_plan_spreads_windows_over_the_selection():
    starts = np.array([0, 10_000, 50_000, 90_000])
    counts = np.array([5_000, 30_000, 1_000, 20_000])
    lids = np.array([3, 1, 7, 2])
    plan = sample_plan(starts, counts, lids, rows=4096, windows=64)
    assert 4000 <= plan.n_rows <= 4096
    got = []
    for t in plan.tasks:
        for (s, c, _off) in t.reads.tolist():
            got.append((s, c))
    ends = starts + counts
    for s, c in got:  # every window inside one selected range
        assert any(a <= s and s + c <= b for a, b in zip(starts, ends))
    # spread: every range holding 1/64 of the rows or more is sampled
    seen = {int(np.searchsorted(starts, s, side="right") - 1) for s, _ in got}
    assert seen == {0, 1, 2, 3}  # window spacing 875 rows: even the 1,000-row range
    small = sample_plan(starts, counts, lids, rows=1 << 20)
    assert small.n_rows == counts.sum()  # fewer rows than a sample: all of them


def test_plan_ranges_gives_back_the_selection():
    starts = np.array([0, 10_000, 10_500, 50_000, 90_000])
    counts = np.array([5_000, 500, 29_500, 1_000, 20_000])
    lids = np.array([3, 1, 4, 7, 2])
    for kw in ({"target_rows": 4096}, {"whole_layers": True}, {}):
        s, c, l = plan_ranges(make_plan(starts, counts, lids, **kw))
        # tasks cut layers into pieces: join the touching pieces of a layer again
        keep = np.r_[True, (l[1:] != l[:-1]) | (s[1:] != s[:-1] + c[:-1])]
        grp = np.cumsum(keep) - 1
        np.testing.assert_array_equal(s[keep], starts)
        np.testing.assert_array_equal(np.bincount(grp, weights=c).astype(int), counts)
        np.testing.assert_array_equal(l[keep], lids)
