"""The compute floor of ``analyze``: its kernels' CPU seconds, spread over both cores.

A command cannot be faster than its kernels' CPU seconds over the cores, whatever the disk.
This script measures each kernel's CPU seconds inside ``analyze`` as the command runs it, so
that a goal stated as a multiple of the read can be checked against what the machine can
do (issue 21):

1. each part of each pass (:func:`filterdb.kernels.fused.fused_task`'s parts, and the
   orthogonality) is timed on its own thread's CPU clock inside
   :func:`filterdb.analysis.analyze` (both cores, the engine as the CLI runs it), with the
   page cache dropped before each run (as ``fullscale.py``), ``--repeat`` runs (medians);
2. the floor is their sum over the cores, against the median of ``--reads`` cold
   ``O_DIRECT`` reads of the whole database, or ``--read SECONDS``.

The floor leaves out reading, each process's fixed costs, combining the blocks' results
and any core left idle: a lower bound of the command, measured, not estimated.

``--every N`` measures a sample instead (every N-th layer id: the widths, models and groups
keep their mix), read into the page cache first and read from mapped pages
(``FILTERDB_STREAM_READ=map``), then scales it to the whole database: the parts by the
number of filters, the orthogonality by its multiply-adds (``c_out * 9 n / 2`` per layer).
That is an estimate, for a quick look.

Usage::

    python benchmarks/floor.py DB [--repeat 2] [--reads 3 | --read SECONDS] [--every N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections import defaultdict

import numpy as np

# name -> analyze keyword arguments (the commands of fullscale.py)
CONFIGS = {"analyze": {}, "analyze-range": {"range": (-3.0, 3.0)}}


def ortho_macs(layers) -> np.ndarray:
    """Multiply-adds of each layer's orthogonality, as ``analyze`` estimates them."""
    n = layers["filter_count"].fillna(0).to_numpy(np.float64)
    c = layers["c_out"].fillna(0).to_numpy(np.float64)
    return np.where(c >= 2, n * 4.5 * c, 0.0)


def warm(db_path, where) -> float:
    """Read the selection's rows once (into the page cache); seconds."""
    from filterdb.store import open_database

    t = time.perf_counter()
    with open_database(db_path) as db:
        for _ in db.filters(where, verify=False):
            pass
    return time.perf_counter() - t


class PartClock:
    """Wraps :func:`filterdb.kernels.fused.fused_task` so that each part of a pass runs on
    its own and its thread CPU seconds add up under ``pass N/part``."""

    def __init__(self):
        from filterdb.kernels import fused

        self.fused, self.orig = fused, fused.fused_task
        self.cpu = defaultdict(float)
        self.lock = threading.Lock()
        self.n_pass = 0

    def __enter__(self):
        orig = self.orig

        def timed(filters, layer_ids, parts=(), ortho=None):
            out = {}
            for part in list(parts) + ([None] if ortho is not None else []):
                t = time.thread_time()
                out.update(orig(filters, layer_ids, [part], None) if part is not None
                           else orig(filters, layer_ids, (), ortho))
                dt = time.thread_time() - t
                with self.lock:
                    self.cpu["orthogonality" if part is None else part[0]] += dt
            return out

        self.fused.fused_task = timed
        return self

    def __exit__(self, *exc):
        self.fused.fused_task = self.orig


def part_seconds(db_path, where, kw) -> tuple[dict, float, float]:
    """Thread CPU seconds of each part of one ``analyze`` of ``where`` (summed over its
    passes), its wall seconds and the CPU seconds of this process during it."""
    from filterdb.analysis import analyze

    c = time.process_time()
    with PartClock() as clock:
        r = analyze(db_path, where, cache=False, **kw)
    return dict(clock.cpu), r.seconds, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", metavar="DB")
    ap.add_argument("--every", type=int, default=1,
                    help="estimate from every N-th layer id, warm, scaled (default 1: all, cold)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--reads", type=int, default=3, help="cold reads of the whole database")
    ap.add_argument("--read", type=float, help="seconds of one cold read (skips the reads)")
    a = ap.parse_args()
    sample = a.every > 1
    if sample:  # before filterdb is imported: the sample is read from the page cache
        os.environ["FILTERDB_STREAM_READ"] = "map"

    from filterdb.store import open_database
    from fullscale import evict, plain_read_direct

    where = f"layer_id % {a.every} = 0" if sample else None
    with open_database(a.db) as db:
        every = db.layers()
        some = db.layers(where)
    f_all, f_some = every["filter_count"].fillna(0).sum(), some["filter_count"].fillna(0).sum()
    m_all, m_some = ortho_macs(every).sum(), ortho_macs(some).sum()
    rf, rm = f_all / f_some, m_all / m_some
    print(f"{a.db}: {int(f_all):,} filters, {len(every):,} layers, orthogonality "
          f"{m_all / 1e12:.2f} T multiply-adds; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    if sample:
        print(f"sample {where!r}: {len(some):,} layers, {int(f_some):,} filters (1/{rf:.1f}), "
              f"{m_some / 1e9:.0f} G multiply-adds (1/{rm:.1f}), warm, scaled")

    if a.read is None:
        reads = []
        for _ in range(a.reads):
            evict(a.db)
            reads.append(plain_read_direct(a.db))
        read = statistics.median(reads)
        print(f"cold O_DIRECT read: median {read:.1f} s of {', '.join(f'{r:.1f}' for r in reads)}")
    else:
        read = a.read
        print(f"read: {read:.1f} s (given)")
    if sample:
        print(f"warm-up read of the sample: {warm(a.db, where):.1f} s")

    cores = os.cpu_count() or 1
    for name, kw in CONFIGS.items():
        if sample:
            part_seconds(a.db, where, kw)  # warm-up: numba's cache, BLAS, the pages
        runs = []
        for _ in range(a.repeat):
            if not sample:
                evict(a.db)
            runs.append(part_seconds(a.db, where, kw))
        cpu = {k: statistics.median(r[0].get(k, 0.0) for r in runs) for k in runs[0][0]}
        scaled = {k: v * (rm if k == "orthogonality" else rf) for k, v in cpu.items()}
        total = sum(scaled.values())
        rest = total - scaled.get("orthogonality", 0.0)
        wall, proc = (statistics.median(r[i] for r in runs) for i in (1, 2))
        if not sample:
            print(f"{name}: {wall:.1f} s ({wall / read:.2f}x the read), {proc:.0f} CPU-s in "
                  f"this process, of which the kernels {total:.0f}")
        print(f"{name} kernels: " + ", ".join(f"{k} {v:.0f}" for k, v in scaled.items()) +
              f" CPU-s; over {cores} cores at least {total / cores:.1f} s = "
              f"{total / cores / read:.2f}x the read; without the orthogonality "
              f"{rest / cores:.1f} s = {rest / cores / read:.2f}x")


if __name__ == "__main__":
    main()
