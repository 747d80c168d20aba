"""The whole paper at the published scale: each command cold against one cold read.

Builds (once; a re-run completes a killed build) a synthetic database of the published shape
and size (647 models, 21,436 layers, 1,464,797,156 filters, 52.7 GB; :mod:`filterdb.synth`,
``widths="real"`` by default), then runs, ``--repeat`` times in turn:

1. one plain sequential read of the segment files (``readinto`` a reused aligned buffer),
   and one read past the page cache (``O_DIRECT``, two requests in flight, as the store
   reads a database larger than half the memory); the faster of the two is "the read";
2. each command as its own ``filterdb`` process, the page cache dropped before it
   (``/proc/sys/vm/drop_caches``, root only; otherwise ``posix_fadvise(DONTNEED)`` per file).

Each command is timed against the plain read just before it ("paired"); the medians of
both, the median of the paired ratios, the process's CPU seconds and peak RSS are printed
(``os.wait4``'s resource usage of that process alone). The analysis cache is bypassed
(``--recompute``), so every run reads the filters.

Usage::

    python benchmarks/fullscale.py DB [--filters 1464797156] [--repeat 3] [--only drift,health]

Needs about 56 GB free beside DB and, at full size, about 4-5 minutes per command here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

PUBLISHED_FILTERS = 1_464_797_156
CHUNK = 1 << 21  # rows per read: 75 MB

# name -> filterdb arguments after the database path
COMMANDS = {
    "drift": ["drift", "{db}", "--by", "task", "--recompute"],
    "drift-range": ["drift", "{db}", "--by", "task", "--range=-3,3", "--recompute"],
    "health": ["health", "{db}", "--recompute"],
    "health-no-orth": ["health", "{db}", "--recompute", "--no-orthogonality"],
    # everything the report needs: PCA + health, range, histograms of 6 columns (issue 21)
    "analyze": ["analyze", "{db}", "--recompute"],
    "analyze-range": ["analyze", "{db}", "--range=-3,3", "--recompute"],
    "analyze-f64": ["analyze", "{db}", "--recompute", "--orthogonality-precision", "float64"],
    "analyze-no-orth": ["analyze", "{db}", "--recompute", "--no-orthogonality"],
}


def evict(db_path) -> str:
    """Empty the page cache of the database's files: drop_caches as root, else fadvise."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        d = os.path.join(db_path, "filters")
        for name in os.listdir(d):
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return "fadvise"


def plain_read(db_path) -> float:
    """Seconds for one sequential read of every segment file."""
    from filterdb.store import aligned_empty

    buf = aligned_empty(CHUNK)
    buf[:] = 0  # first touch outside the timing
    mv = memoryview(buf.view(np.uint8).reshape(-1))
    d = os.path.join(db_path, "filters")
    t = time.perf_counter()
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb", buffering=0) as f:
            while f.readinto(mv):
                pass
    return time.perf_counter() - t


def plain_read_direct(db_path, readers: int = 2) -> float:
    """Seconds for one read of every segment file past the page cache (``O_DIRECT``,
    ``readers`` requests in flight, into reused page-aligned buffers)."""
    import mmap
    import threading

    d = os.path.join(db_path, "filters")
    pieces = []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        pieces += [(path, off) for off in range(0, os.path.getsize(path), CHUNK * 36)]
    lock = threading.Lock()

    def work():
        buf = mmap.mmap(-1, CHUNK * 36)
        buf.write(b"\0" * len(buf))  # first touch outside the reads
        fds = {}
        try:
            while True:
                with lock:
                    if not pieces:
                        return
                    path, off = pieces.pop(0)
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECT)
                os.preadv(fds[path], [buf], off)
        finally:
            for fd in fds.values():
                os.close(fd)

    t = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(readers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def run_command(argv) -> dict:
    """Run one ``filterdb`` process; its wall time, CPU seconds and peak RSS (GB)."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "filterdb.cli", *argv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace").strip()
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {code}: {err.splitlines()[-1:]}")
    return {"seconds": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_gb": ru.ru_maxrss / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", metavar="DB")
    ap.add_argument("--filters", type=int, default=PUBLISHED_FILTERS)
    ap.add_argument("--widths", default="real", choices=("real", "legacy"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(COMMANDS),
                    help=f"comma-separated subset of {', '.join(COMMANDS)}")
    ap.add_argument("--json", action="store_true", help="also print the runs as JSON lines")
    ap.add_argument("--no-buffered-read", action="store_true",
                    help="time only the O_DIRECT read before each command (the buffered one "
                         "is the slower here, 68-80 s against 27-33 s on 2026-12-02)")
    a = ap.parse_args()
    only = [c.strip() for c in a.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(COMMANDS))
    if unknown:
        raise SystemExit(f"unknown commands {unknown}; known: {', '.join(COMMANDS)}")

    from filterdb.store import is_database
    from filterdb.synth import build_synthetic, width_stats

    if not is_database(a.db) or not os.path.isdir(os.path.join(a.db, "filters")):
        parent = os.path.dirname(os.path.abspath(a.db)) or "."
        os.makedirs(parent, exist_ok=True)
        need = a.filters * 36 * 1.05
        if shutil.disk_usage(parent).free < need:
            raise SystemExit(f"need {need / 1e9:.1f} GB free in {parent}")
    from filterdb.errors import FilterDBError

    try:
        r = build_synthetic(a.db, a.filters, widths=a.widths, show_progress=sys.stderr.isatty())
    except FilterDBError as e:  # e.g. a database built with another --filters
        raise SystemExit(f"{a.db}: not the synthetic database of {a.filters:,} filters "
                         f"({e}); pass its --filters, or a new path") from None
    if r["added"]:
        print(f"built {a.db}: {r['filters']:,} filters in {r['seconds']:.0f} s "
              f"({r['filters'] / r['seconds'] / 1e6:.1f} M filters/s)")
    w = width_stats(a.filters, widths=a.widths)
    size = sum(os.path.getsize(os.path.join(a.db, "filters", f))
               for f in os.listdir(os.path.join(a.db, "filters")))
    print(f"{a.db}: {a.filters:,} filters, {size / 1e9:.1f} GB; widths {a.widths}: "
          f"filter-weighted mean c_out {w['weighted_mean_c_out']:.0f}, "
          f"max {w['max_c_out']:,}; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")

    runs = {c: [] for c in only}
    reads, buffered_reads, direct_reads = [], [], []
    for i in range(a.repeat):
        for c in only:
            how = evict(a.db)
            buffered = None if a.no_buffered_read else plain_read(a.db)
            evict(a.db)
            direct = plain_read_direct(a.db)
            read = direct if buffered is None else min(buffered, direct)
            reads.append(read)
            if buffered is not None:
                buffered_reads.append(buffered)
            direct_reads.append(direct)
            evict(a.db)
            argv = [x.format(db=a.db) for x in COMMANDS[c]]
            m = run_command(argv)
            m.update(read=read, buffered_read=buffered, direct_read=direct,
                     ratio=m["seconds"] / read, run=i, command=c, evict=how)
            runs[c].append(m)
            if a.json:
                print(json.dumps(m))
            print(f"  run {i + 1}/{a.repeat} {c:15s} {m['seconds']:7.1f} s  read {read:6.1f} s  "
                  f"{m['ratio']:.2f}x  cpu {m['cpu']:.0f} s  rss {m['rss_gb']:.2f} GB",
                  flush=True)
    read = statistics.median(reads)
    print(f"\nplain read (the faster of each pair): median {read:.1f} s "
          f"({size / read / 1e9:.2f} GB/s) over {len(reads)}; buffered median "
          f"{statistics.median(buffered_reads) if buffered_reads else float('nan'):.1f} s, "
          f"O_DIRECT median {statistics.median(direct_reads):.1f} s")
    print(f"{'command':15s} {'median s':>9s} {'vs read':>8s} {'paired':>7s} {'cpu s':>7s} "
          f"{'peak RSS':>9s}")
    for c, ms in runs.items():
        sec = statistics.median(m["seconds"] for m in ms)
        print(f"{c:15s} {sec:9.1f} {sec / read:7.2f}x "
              f"{statistics.median(m['ratio'] for m in ms):6.2f}x "
              f"{statistics.median(m['cpu'] for m in ms):7.0f} "
              f"{max(m['rss_gb'] for m in ms):7.2f} GB")


if __name__ == "__main__":
    main()
