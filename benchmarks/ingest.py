"""Ingest throughput of the store vs a plain sequential write (+fsync) of the same bytes.

Adds synthetic models (8 layers of 512x512 3x3 convs, 2.1 M filters each) until --filters
are stored, through ``Database.add_model`` (segment writes, fsync, one SQLite transaction per
model, per-layer crc32), then writes the same bytes to one file with ``os.write`` and one
``fsync``. Reading files (the readers) is not part of either. Also times one streaming pass
over the stored filters (``Database.filters``; warm page cache: it was just written).
Two rounds each, in alternating order. Prints filters/s, the ratio and the peak memory.

Usage: python benchmarks/ingest.py [--filters 50000000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filters", type=int, default=50_000_000)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    a = ap.parse_args()

    from filterdb.readers.base import ConvLayer, Model, assign_order_depths
    from filterdb.store import init_database

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((512, 512, 3, 3)).astype(np.float32) for _ in range(8)]
    per_model = sum(w.shape[0] * w.shape[1] for w in weights)
    n_models = max(1, -(-a.filters // per_model))
    total = n_models * per_model
    gb = total * 36 / 1e9
    scratch = tempfile.mkdtemp(prefix="filterdb-bench-", dir=a.dir)
    free = shutil.disk_usage(scratch).free / 1e9
    if free < 3.3 * gb:
        raise SystemExit(f"need {3.3 * gb:.1f} GB free in {scratch}, have {free:.1f} GB")
    print(f"{n_models} models x {per_model:,} filters = {total:,} filters ({gb:.2f} GB)")

    def model(i):
        layers = [ConvLayer(f"conv{j}", "Conv", w) for j, w in enumerate(weights)]
        assign_order_depths(layers)
        return Model(path=f"synthetic{i}.npz", format="npz", sha256=f"{i:064x}", layers=layers)

    def run_store(k):
        db_path = os.path.join(scratch, f"db{k}")
        db = init_database(db_path)
        t = time.perf_counter()
        for i in range(n_models):
            db.add_model(model(i), {"task": "Classification"})
        dt = time.perf_counter() - t
        assert db.n_filters == total
        db.close()
        return dt, db_path

    def run_plain(k):
        plain = os.path.join(scratch, f"plain{k}.f32")
        t = time.perf_counter()
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for _ in range(n_models):
            for w in weights:
                mv = memoryview(w.reshape(-1).view(np.uint8))
                while mv:
                    mv = mv[os.write(fd, mv):]
        os.fsync(fd)
        os.close(fd)
        dt = time.perf_counter() - t
        os.unlink(plain)
        return dt

    try:
        # alternate the order (plain, store, store, plain): disk write-back makes whichever
        # runs second slower
        t_plain1 = run_plain(0)
        t_store1, db_path = run_store(0)
        t_store2, db2 = run_store(1)
        shutil.rmtree(db2)
        t_plain2 = run_plain(1)
        t_store, t_plain = (t_store1 + t_store2) / 2, (t_plain1 + t_plain2) / 2
        print(f"  rounds: store {t_store1:.1f} s, {t_store2:.1f} s; plain {t_plain1:.1f} s, "
              f"{t_plain2:.1f} s")

        import filterdb

        with filterdb.open(db_path) as rdb:
            t = time.perf_counter()
            n = 0
            for c in rdb.filters(chunk_rows=1 << 20):
                n += c.filters.shape[0]
            t_read = time.perf_counter() - t
        assert n == total

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"store ingest : {total / t_store / 1e6:7.2f} M filters/s  "
              f"({gb / t_store:.2f} GB/s, {t_store:.1f} s)")
        print(f"plain write  : {total / t_plain / 1e6:7.2f} M filters/s  "
              f"({gb / t_plain:.2f} GB/s, {t_plain:.1f} s)")
        print(f"ratio store/plain: {t_plain / t_store:.2f}")
        print(f"stream read (warm): {total / t_read / 1e6:7.1f} M filters/s ({gb / t_read:.2f} GB/s)")
        print(f"peak RSS: {peak:.0f} MB (the synthetic weights alone are "
              f"{per_model * 36 / 1e6:.0f} MB)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
