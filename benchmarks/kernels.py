"""Throughput of the drift kernels (millions of filters per second, data in RAM).

Moments (PCA pass) and group histograms (70 bins x 9 components, scaling and projection
fused) on synthetic filters: the numba kernel on one thread, the local engine on 2
threads, and the numpy reference (scale, project, np.histogram per group and component)
on a subset. Usage: python benchmarks/kernels.py [--n 20000000] [--groups 10]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def rate(n, fn, repeat=2):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return n / best / 1e6, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000_000)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--ref-n", type=int, default=2_000_000, help="rows for the numpy reference")
    a = ap.parse_args()

    from filterdb.engine import ArraySource, make_plan, map_reduce
    from filterdb.kernels import _numba, bin_edges, coeff_range_chunk, fit_pca, shared_range
    from filterdb.kernels.hist import hist_task
    from filterdb.kernels.pca import moments_task

    rng = np.random.default_rng(0)
    X = np.empty((a.n, 9), np.float32)
    for i in range(0, a.n, 1 << 22):  # chunked: keeps the temporaries small
        m = min(1 << 22, a.n - i)
        X[i:i + m] = rng.standard_normal((m, 9), np.float32) @ rng.standard_normal(
            (9, 9)).astype(np.float32)
    n_layers = 1000
    sizes = np.full(n_layers, a.n // n_layers)
    sizes[-1] += a.n - sizes.sum()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lids = np.arange(n_layers)
    lookup = lids % a.groups
    ids = np.repeat(lids, sizes)
    plan = make_plan(starts, sizes, lids)
    src = ArraySource(X)
    print(f"{a.n:,} filters, {len(plan)} tasks of <= {plan.max_span:,} rows, "
          f"{a.groups} groups, 70 bins")

    p = fit_pca(X[:1000])  # compiles / loads the cached kernels
    lo, hi = shared_range(*coeff_range_chunk(X[:1_000_000], p))
    lo, hi = lo - 1e-3, hi + 1e-3  # no value on the last edge: numpy's matmul rounds differently
    edges = bin_edges(lo, hi, 70)
    params = dict(lookup=lookup, n_groups=a.groups, mean=p.mean, components=p.components,
                  edges=edges)
    hist_task(X[:1000], ids[:1000], **params)

    r1, _ = rate(a.n, lambda: moments_task(X, ids))
    r2, _ = rate(a.n, lambda: map_reduce(src, plan, moments_task, workers=2))
    print(f"moments      numba 1 thread {r1:7.1f} M/s   engine 2 threads {r2:7.1f} M/s")
    h1, c1 = rate(a.n, lambda: hist_task(X, ids, **params))
    h2, c2 = rate(a.n, lambda: map_reduce(src, plan, hist_task, params, workers=2))
    assert (c1["counts"] == c2["counts"]).all()

    n = a.ref_n
    codes = lookup[ids[:n]]

    def reference():
        S = X[:n] / np.abs(X[:n]).max(1, keepdims=True)
        C = (S.astype(np.float64) - p.mean) @ p.components.T
        out = np.zeros((a.groups, 9, 70), np.int64)
        for g in range(a.groups):
            Cg = C[codes == g]
            for k in range(9):
                out[g, k] = np.histogram(Cg[:, k], 70, (lo, hi))[0]
        return out

    hr, ref = rate(n, reference, repeat=1)
    sub = hist_task(X[:n], ids[:n], **params)["counts"]
    diff = int(np.abs(sub - ref).sum())
    same = "same counts" if diff == 0 else f"{diff} counts differ"
    print(f"histograms   numba 1 thread {h1:7.1f} M/s   engine 2 threads {h2:7.1f} M/s   "
          f"numpy reference {hr:5.1f} M/s ({same})")
    print(f"ratio to numpy: {h1 / hr:.1f}x (1 thread), {h2 / hr:.1f}x (2 threads)")
    t = time.perf_counter()
    _numba.moments(X[:1000], ids[:1000], np.zeros(9), np.zeros((9, 9)))
    print(f"cached kernel call overhead {1e3 * (time.perf_counter() - t):.2f} ms")


if __name__ == "__main__":
    main()
