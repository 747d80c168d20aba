"""The paper's whole drift analysis on a database vs one plain read of the same bytes.

1. floor: one sequential ``readinto`` of the N x 9 float32 segment files into a reused
   64-byte-aligned buffer (cold: page cache dropped first, when root; and warm);
2. filterdb: PCA, then drift by task, by visual category and by depth
   (``analysis.drift_summary``: a 4 M-filter sample, one PCA pass that also proves the
   range, one histogram pass for the three columns; no cache), cold and warm; goal <= 3x
   the read, peak RSS < 2 GB;
3. ``--reference``: the in-memory approach (all filters in RAM, numpy PCA, one
   ``np.histogram`` per group and component for every pair) in a child process;
4. ``--dask``: the same analysis on a Dask LocalCluster (2 workers) vs the local engine.

Build a database first: ``python benchmarks/synth.py DB --filters N``.
Usage: python benchmarks/analysis.py DB [--reference] [--dask] [--no-cold]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

COLUMNS = ("task", "visual_category", "depth_bin")
CHUNK = 1 << 21  # rows per read: 75 MB


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def plain_read(db_path) -> tuple[float, int]:
    """Seconds to read every segment file once (readinto an aligned, reused buffer)."""
    from filterdb.store import aligned_empty

    buf = aligned_empty(CHUNK)
    buf[:] = 0  # first touch outside the timing
    mv = memoryview(buf.view(np.uint8).reshape(-1))
    d = os.path.join(db_path, "filters")
    total = 0
    t = time.perf_counter()
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb", buffering=0) as f:
            while True:
                n = f.readinto(mv)
                if not n:
                    break
                total += n
    return time.perf_counter() - t, total


def run_analysis(db_path, engine="local"):
    from filterdb import analysis

    t = time.perf_counter()
    s = analysis.drift_summary(db_path, columns=COLUMNS, engine=engine, cache=False)
    return time.perf_counter() - t, s


def maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def reference(db_path) -> dict:
    """All filters in memory; numpy PCA; the published notebook's probabilities per group and
    component (np.histogram density, empty bins at float32 eps, renormalised) and its depth
    bins (pd.cut over np.arange(0, 1.1, 0.1), include_lowest). Its coefficients are float32 (as
    sklearn's on float32 data), filterdb's float64: the few filters near a bin edge that land
    differently move its medians by up to a few per cent (measured on 3 M synthetic filters:
    visual category 0.2085 vs 0.2135; a float64 reference gives filterdb's to 1e-15)."""
    import pandas as pd

    from filterdb.store import open_database

    out = {}
    t0 = time.perf_counter()
    with open_database(db_path) as db:
        layers = db.layers("filter_count > 0").sort_values("filter_start")
        X = db.read_filters(0, db.n_filters)
    out["load_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    peak = np.abs(X).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    S = X / peak
    del X
    mean = S.mean(axis=0, dtype=np.float64)
    cov = np.cov(S, rowvar=False)
    var, vec = np.linalg.eigh(cov)
    order = np.argsort(var)[::-1]
    comps, evr = vec[:, order].T, var[order] / var.sum()
    C = (S - mean.astype(np.float32)) @ comps.T.astype(np.float32)
    del S
    lo, hi = float(C.min()), float(C.max())
    out["pca_s"] = time.perf_counter() - t
    n = layers["filter_count"].to_numpy()
    labels = {"task": layers["task"].to_numpy(), "visual_category":
              layers["visual_category"].to_numpy(),
              "depth_bin": pd.cut(layers["conv_depth_norm"].to_numpy(), np.arange(0, 1.0 + 0.10, 0.10),
                              include_lowest=True, labels=False)}
    t = time.perf_counter()
    eps = np.finfo(np.float32).eps

    def hist(idx):
        h = np.array([np.histogram(C[idx, k], 70, range=(lo, hi), density=True)[0]
                      for k in range(9)], np.double)
        h[h == 0] = eps
        return h / h.sum(axis=1, keepdims=True)

    medians = {}
    for col, lab in labels.items():
        per_filter = np.repeat(lab, n)
        groups = sorted(set(lab.tolist()), key=str)
        idx = {g: np.flatnonzero(per_filter == g) for g in groups}
        vals = []
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                P, Q = hist(idx[a]), hist(idx[b])
                vals.append(float(evr @ ((P - Q) * (np.log(P) - np.log(Q))).sum(axis=1)))
        medians[col] = float(np.median(vals))
    out["hist_s"] = time.perf_counter() - t
    out["total_s"] = time.perf_counter() - t0
    out["medians"] = medians
    out["maxrss_gb"] = maxrss_gb()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--reference", action="store_true", help="also time the in-memory approach")
    ap.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold (dropped cache) runs")
    ap.add_argument("--reference-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.reference_child:
        print(json.dumps(reference(a.db)))
        return

    from filterdb import analysis
    from filterdb.store import open_database

    with open_database(a.db) as db:
        n = db.n_filters
    print(f"{a.db}: {n:,} filters ({n * 36 / 1e9:.2f} GB)")
    analysis.pca(a.db, where="layer_id < 3", cache=False)  # load the numba kernels
    res = {}
    cold = not a.no_cold and drop_caches()
    if not cold and not a.no_cold:
        print("cannot drop the page cache (not root): cold runs skipped")
    modes = (["cold"] if cold else []) + ["warm"]
    for mode in modes:
        if mode == "cold":
            drop_caches()
        tr, nbytes = plain_read(a.db)
        assert nbytes == n * 36, (nbytes, n * 36)
        if mode == "cold":
            drop_caches()
        else:
            plain_read(a.db)  # make sure it is all cached
        ta, s = run_analysis(a.db)
        res[mode] = (tr, ta)
        print(f"[{mode} page cache] plain read {tr:.2f} s ({nbytes / tr / 1e9:.2f} GB/s); "
              f"analysis {ta:.2f} s ({n / ta / 1e6:.1f} M filters/s): ratio {ta / tr:.2f}x")
    print("median pairwise drift: " + ", ".join(f"{c} {v:.4f}" for c, v in s.medians.items()))
    print(f"peak RSS of this process: {maxrss_gb():.2f} GB")
    # the published size is measured, not extrapolated: benchmarks/fullscale.py

    if a.dask:
        plain_read(a.db)
        tl, _ = run_analysis(a.db, "local")
        td, sd = run_analysis(a.db, "dask")
        same = all(np.array_equal(sd.results[c].matrix.to_numpy(), s.results[c].matrix.to_numpy())
                   for c in COLUMNS)
        print(f"[warm] local engine {tl:.2f} s, Dask LocalCluster (2 workers, incl. start) "
              f"{td:.2f} s: ratio dask/local {td / tl:.2f}; same matrices: {same}")

    if a.reference:
        plain_read(a.db)
        p = subprocess.run([sys.executable, __file__, a.db, "--reference-child"],
                           capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        tl, _ = run_analysis(a.db, "local")
        print(f"[warm] reference (in memory, numpy, per-pair np.histogram): {r['total_s']:.1f} s "
              f"(load {r['load_s']:.1f}, PCA {r['pca_s']:.1f}, histograms+KL {r['hist_s']:.1f}); "
              f"peak RSS {r['maxrss_gb']:.2f} GB; filterdb {tl:.2f} s: "
              f"{r['total_s'] / tl:.1f}x faster")
        print("reference medians: " + ", ".join(f"{c} {v:.4f}" for c, v in r["medians"].items()))


if __name__ == "__main__":
    main()
