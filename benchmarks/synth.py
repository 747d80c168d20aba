"""Build a synthetic database in the published shape (647 models, 21,436 layers).

A thin wrapper of :func:`filterdb.synth.build_synthetic` (see it for the shapes and the
filter model). Prints the time taken and the generation + ingest rate.

Usage: python benchmarks/synth.py DB --filters 100000000 [--seed 0] [--commit-rows N]
       [--widths real|legacy]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", metavar="DB")
    ap.add_argument("--filters", type=int, required=True, help="number of 3x3 filters")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit-rows", type=int, default=1 << 24,
                    help="commit models in batches of at least this many filters")
    ap.add_argument("--widths", default="real", choices=("real", "legacy"),
                    help="layer widths like real networks (default), or the earlier generator's")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()

    from filterdb.synth import build_synthetic, width_stats

    parent = os.path.dirname(os.path.abspath(a.db)) or "."
    os.makedirs(parent, exist_ok=True)  # a new folder for the benchmark databases
    need = a.filters * 36 * 1.05
    free = shutil.disk_usage(parent).free
    if free < need:
        raise SystemExit(f"need {need / 1e9:.1f} GB free in {parent}, have {free / 1e9:.1f} GB")
    r = build_synthetic(a.db, a.filters, seed=a.seed, commit_rows=a.commit_rows,
                        show_progress=a.progress, widths=a.widths)
    w = width_stats(a.filters, seed=a.seed, widths=a.widths)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{r['path']}: {r['models']} models, {r['layers']:,} layers, {r['filters']:,} filters "
          f"({r['added']} models added) in {r['seconds']:.1f} s = "
          f"{r['filters'] / r['seconds'] / 1e6:.1f} M filters/s; peak RSS {rss:.0f} MB; "
          f"widths {a.widths}: filter-weighted mean c_out {w['weighted_mean_c_out']:.0f}, "
          f"max {w['max_c_out']:,}")


if __name__ == "__main__":
    main()
