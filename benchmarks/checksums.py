"""What checking each layer costs a pass: zlib's crc32 vs the store's digest
(:mod:`filterdb.store.digest`), against the passes' kernels, in one run.

1. per window of ``--rows`` random filters (one thread, best of ``--repeat``, cycling
   through 4 windows so that each comes from memory, not the CPU cache, as in a pass):
   crc32, the digest, and the kernels of the drift passes (PCA moments, coefficient
   range, histogram) and of the health pass; the hash's cost as a share of each kernel;
2. with ``--db``: the PCA pass of a whole database (local engine, 2 workers, warm page
   cache) unchecked, checked by digest and checked by crc32 (median of ``--repeat``).

Usage: python benchmarks/checksums.py [--rows 1048576] [--repeat 5] [--db DB]
"""
from __future__ import annotations

import argparse
import time
import zlib

import numpy as np


def best(f, repeat):
    f()
    t = []
    for _ in range(repeat):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return min(t)


def kernels(rows: int, repeat: int) -> None:
    from filterdb.kernels import hist as H
    from filterdb.kernels import pca as P
    from filterdb.kernels.layer_stats import health_task
    from filterdb.store.digest import piece_sums

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((rows, 9)).astype(np.float32) for _ in range(4)]
    x = xs[0]
    ids = np.zeros(rows, np.int64)
    mvs = [memoryview(a.view(np.uint8).reshape(-1)) for a in xs]
    t_crc = best(lambda: [zlib.crc32(m) for m in mvs], repeat) / 4
    t_dig = best(lambda: [piece_sums(a, 0) for a in xs], repeat) / 4
    print(f"window of {rows:,} filters ({x.nbytes / 1e6:.0f} MB), one thread, best of {repeat}")
    print(f"  crc32  {t_crc * 1e3:7.2f} ms  {x.nbytes / t_crc / 1e9:5.1f} GB/s")
    print(f"  digest {t_dig * 1e3:7.2f} ms  {x.nbytes / t_dig / 1e9:5.1f} GB/s  "
          f"({t_crc / t_dig:.1f}x faster)")
    m = P.moments_task(x, ids)
    mean, comps = P._pca_arrays(P.pca_from_moments(int(m["n"]), m["s"], m["sxx"]))
    edges = H.bin_edges(-1.0, 1.0, 70)
    lookup = np.zeros(1, np.int64)
    L = rows // 4096
    ids_h = np.repeat(np.arange(L, dtype=np.int64), 4096)
    xs = x[:L * 4096]
    work = {
        "pca moments": lambda: P.moments_task(x, ids),
        "coefficient range": lambda: P.range_task(x, ids, mean, comps),
        "histograms (70 bins)": lambda: H.hist_task(x, ids, lookup, 1, mean, comps, edges),
        "health (layers of 4096)": lambda: health_task(xs, ids_h, np.arange(L), np.full(L, 64)),
    }
    print(f"  {'kernel':26s} {'ms':>8s} {'crc32 %':>8s} {'digest %':>9s}")
    times = {}
    for name, f in work.items():
        t = times[name] = best(f, repeat)
        print(f"  {name:26s} {t * 1e3:8.2f} {100 * t_crc / t:7.1f}% {100 * t_dig / t:8.1f}%")
    drift = sum(times[k] for k in ("pca moments", "coefficient range", "histograms (70 bins)"))
    print(f"  {'drift (the 3 passes)':26s} {drift * 1e3:8.2f} {300 * t_crc / drift:7.1f}% "
          f"{300 * t_dig / drift:8.1f}%")


def db_pass(path, repeat: int) -> None:
    from filterdb.engine import make_plan, map_reduce
    from filterdb.kernels import pca as P
    from filterdb.store import open_database

    with open_database(path) as db:
        lay = db.layers(columns=["layer_id", "filter_start", "filter_count"])
        lay = lay[lay["filter_count"] > 0].sort_values("filter_start")
        plan = make_plan(*(lay[c].to_numpy(np.int64)
                           for c in ("filter_start", "filter_count", "layer_id")))
        from filterdb.engine import RowReaderSource
        from filterdb.store.digest import LayerChecks

        plain = db.row_source(verify=False)
        crc_only = LayerChecks.from_catalog(db._con, db.path, digests=False)
        srcs = {"unchecked": plain, "digest": db.row_source(),
                "crc32": RowReaderSource(plain.read_rows, plain.path, plain.n_rows, crc_only)}
        map_reduce(srcs["unchecked"], plan, P.moments_task)  # warm the page cache
        t = {k: [] for k in srcs}
        for _ in range(repeat):
            for k, s in srcs.items():
                a = time.perf_counter()
                map_reduce(s, plan, P.moments_task, workers=2)
                t[k].append(time.perf_counter() - a)
        med = {k: float(np.median(v)) for k, v in t.items()}
        u = med["unchecked"]
        print(f"PCA pass over {plan.n_rows:,} filters in {len(plan)} tasks, warm, median of "
              f"{repeat}: unchecked {u:.3f} s, checked by digest {med['digest']:.3f} s "
              f"({100 * (med['digest'] / u - 1):+.1f} %), by crc32 {med['crc32']:.3f} s "
              f"({100 * (med['crc32'] / u - 1):+.1f} %)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db", help="also time a whole PCA pass of this database")
    a = ap.parse_args()
    kernels(a.rows, a.repeat)
    if a.db:
        db_pass(a.db, a.repeat)


if __name__ == "__main__":
    main()
