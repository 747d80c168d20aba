"""Raw filter segments: ``filters/seg-NNNNNN.f32``, little-endian float32 rows of 9.

Filter id ``g`` lives in segment ``g // segment_rows`` at row ``g % segment_rows``.
Reads are plain ``os.preadv`` into 64-byte-aligned buffers (measured when the store was designed: a
misaligned destination is 6x slower, ``np.memmap`` streaming 3-30x slower). Streaming
passes instead map each window and read it in with one ``MADV_POPULATE_READ``
(:meth:`SegmentReader.map_rows`): the disk fills the page cache and nothing is copied. A
database larger than half the memory, which cannot stay cached, is read past the page
cache into the engine's buffers (``O_DIRECT``, :meth:`SegmentReader.read_direct`).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DiskFullError, FilterDBError, is_disk_full
from ..utils import aligned_empty as _aligned
from .catalog import CATALOG, read_meta_readonly

ROW_FLOATS = 9
ROW_BYTES = ROW_FLOATS * 4
ALIGN = 64
DTYPE = np.dtype("<f4")
# madvise(2) advice "populate (prefault) page tables readable" (Linux 5.14); the mmap module
# names it from Python 3.13 on
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ",
                             22 if sys.platform.startswith("linux") else None)


def _libc_madvise():
    """libc's ``madvise`` through ctypes, which releases the GIL for the call (the mmap
    module's ``madvise`` holds it while the disk reads: the kernels' threads would stall)."""
    if MADV_POPULATE_READ is None:
        return None
    try:
        f = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover
        return None
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    f.restype = ctypes.c_int
    return f


_madvise = _libc_madvise()
_mapping = {"ok": _madvise is not None}
MAP_MIN_BYTES = 1 << 20  # smaller windows are read: a mapping costs a few system calls
# O_DIRECT reads: file offsets, lengths and memory aligned to 4096 bytes (every device's
# logical block divides it); a buffer for them needs this many rows of room beyond its rows
# (up to 3 blocks per segment a window touches: two segments)
DIRECT_ALIGN = 4096
DIRECT_SLACK_ROWS = -(-6 * DIRECT_ALIGN // ROW_BYTES)
_direct = {"ok": hasattr(os, "O_DIRECT")}


def _populate(m: mmap.mmap) -> None:
    """Read a whole mapping in (``MADV_POPULATE_READ``); raises OSError."""
    ref = ctypes.c_char.from_buffer(m)
    try:
        addr = ctypes.addressof(ref)
    finally:
        del ref
    if _madvise(addr, len(m), MADV_POPULATE_READ) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def segment_name(k: int) -> str:
    return f"seg-{k:06d}.f32"


def segment_path(filters_dir, k: int) -> str:
    return os.path.join(os.fspath(filters_dir), segment_name(k))


def aligned_empty(rows: int, align: int = ALIGN) -> np.ndarray:
    """An uninitialised ``(rows, 9)`` float32 array whose data starts on an ``align`` boundary."""
    return _aligned((max(int(rows), 0), ROW_FLOATS), DTYPE, align)


def split_range(start: int, count: int, segment_rows: int):
    """Yield ``(segment, row_in_segment, n, position_in_range)`` pieces of a filter-id range."""
    pos = 0
    while pos < count:
        g = start + pos
        k, r = divmod(g, segment_rows)
        n = min(count - pos, segment_rows - r)
        yield k, r, n, pos
        pos += n


class SegmentReader:
    """Reads filter-id ranges from the segment files, keeping their descriptors open."""

    def __init__(self, filters_dir, segment_rows: int):
        self.dir = os.fspath(filters_dir)
        self.segment_rows = int(segment_rows)
        self._fds: dict[int, int] = {}
        self._dfds: dict[int, int] = {}

    def _open(self, k: int, flags: int) -> int:
        path = segment_path(self.dir, k)
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            raise FilterDBError(f"{path}: segment file missing (the database is damaged; "
                                "run 'filterdb verify')") from None

    def _fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            fd = self._fds[k] = self._open(k, os.O_RDONLY)
        return fd

    def _truncated(self, k: int, row: int) -> FilterDBError:
        return FilterDBError(f"{segment_path(self.dir, k)}: segment file is truncated (needs "
                             f"row {row}); run 'filterdb verify'")

    def map_rows(self, start: int, count: int) -> np.ndarray | None:
        """Rows ``start .. start+count-1`` as a view of their segment file mapped into
        memory (private, so writable without touching the file) and read in with one
        ``MADV_POPULATE_READ``: the page cache is filled at disk speed, its pages are
        mapped rather than copied (measured on 3.6 GB: 0.2 instead of 0.8-2.7 core-s cold,
        0.04 instead of 0.6 s warm). None for windows under :data:`MAP_MIN_BYTES`, rows
        spanning two segments, or a system that cannot; use :meth:`read_into` then. The
        mapping lives as long as the array.

        Segments only grow past the committed rows, so a mapping of committed rows stays
        valid (truncating a segment file under a running pass is damage: SIGBUS).
        """
        if not _mapping["ok"] or count <= 0 or count * ROW_BYTES < MAP_MIN_BYTES:
            return None
        k, r = divmod(int(start), self.segment_rows)
        if r + count > self.segment_rows:
            return None
        fd = self._fd(k)
        off, n = r * ROW_BYTES, count * ROW_BYTES
        if os.fstat(fd).st_size < off + n:
            raise self._truncated(k, r + count - 1)
        a = off - off % mmap.ALLOCATIONGRANULARITY
        try:
            m = mmap.mmap(fd, off + n - a, access=mmap.ACCESS_COPY, offset=a)
        except (OSError, ValueError):
            return None
        try:
            _populate(m)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # older kernel
                _mapping["ok"] = False
            m.close()
            return None  # an I/O error: the buffered read reports it
        return np.frombuffer(m, DTYPE, count * ROW_FLOATS, off - a).reshape(count, ROW_FLOATS)

    def read_direct(self, start: int, count: int, out: np.ndarray) -> np.ndarray | None:
        """Rows ``start .. start+count-1`` read past the page cache (``O_DIRECT``) into the
        memory of ``out``: a view of ``out`` that starts up to :data:`DIRECT_SLACK_ROWS`
        rows in, so ``out`` needs that many rows more than ``count``.

        The disk writes straight into the reused buffer: measured on 17 GB cold, 0.06 core-s
        per GB against 1.6-2.0 for a buffered read, whose kernel copy and page-cache
        turnover take a core here (see README, "At the published scale"). Rows spanning two
        segments are read piece by piece and moved together. None for a short ``out``
        (more than two segments need more room) or a file system without ``O_DIRECT``; use
        :meth:`read_into` then.
        """
        if not _direct["ok"] or count <= 0 or not out.flags.c_contiguous:
            return None
        raw = out.reshape(-1).view(np.uint8)
        pos = (-raw.ctypes.data) % DIRECT_ALIGN  # the first aligned byte of out
        first = None
        for k, r, n, _ in split_range(int(start), int(count), self.segment_rows):
            got = self._read_piece(k, r, n, raw, pos)
            if got is None:
                return None
            b, pos = got
            if first is None:
                first, end = b, b + n * ROW_BYTES
            else:  # move the piece down to follow the rows before it (memmove: no temporary)
                ctypes.memmove(raw.ctypes.data + end, raw.ctypes.data + b, n * ROW_BYTES)
                end += n * ROW_BYTES
        return raw[first:end].view(DTYPE).reshape(count, ROW_FLOATS)

    def _read_piece(self, k: int, r: int, count: int, raw: np.ndarray, pos: int):
        """Rows ``r .. r+count-1`` of segment ``k`` read with ``O_DIRECT`` into ``raw`` at
        the aligned byte ``pos``: ``(byte where the rows start, next aligned byte)``, or
        None (no room, no ``O_DIRECT``)."""
        off, n = r * ROW_BYTES, count * ROW_BYTES
        a0 = off - off % DIRECT_ALIGN
        a1 = -(-(off + n) // DIRECT_ALIGN) * DIRECT_ALIGN
        if pos + (a1 - a0) > raw.nbytes:
            return None
        fd = self._direct_fd(k)
        if fd is None:
            return None
        if os.fstat(fd).st_size < off + n:
            raise self._truncated(k, r + count - 1)
        mv = memoryview(raw)[pos:pos + (a1 - a0)]
        lo, need = 0, off + n - a0
        while lo < need:
            try:
                got = os.preadv(fd, [mv[lo:]], a0 + lo)
            except OSError as e:
                if e.errno != errno.EINVAL or lo:
                    raise
                _direct["ok"] = False  # the device wants a coarser alignment
                return None
            if got <= 0:
                raise self._truncated(k, r + count - 1)
            lo += got
            if lo < need and lo % DIRECT_ALIGN:
                raise self._truncated(k, r + count - 1)  # a short read before the rows' end
        return pos + off - a0, pos + (a1 - a0)

    def _direct_fd(self, k: int) -> int | None:
        fd = self._dfds.get(k)
        if fd is None:
            try:
                fd = self._open(k, os.O_RDONLY | os.O_DIRECT)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # e.g. an old tmpfs
                    _direct["ok"] = False
                    return None
                raise
            self._dfds[k] = fd
        return fd

    def read_into(self, start: int, count: int, out: np.ndarray) -> np.ndarray:
        """Read rows ``start .. start+count-1`` into the first ``count`` rows of ``out``."""
        if count == 0:
            return out[:0]
        if out.dtype != DTYPE or out.ndim != 2 or out.shape[1] != ROW_FLOATS \
                or not out.flags.c_contiguous or out.shape[0] < count:
            raise ValueError("out must be a C-contiguous (>= count, 9) float32 array")
        mv = memoryview(out[:count].view(np.uint8).reshape(-1))
        for k, r, n, pos in split_range(start, count, self.segment_rows):
            fd = self._fd(k)
            lo, hi = pos * ROW_BYTES, (pos + n) * ROW_BYTES
            off = r * ROW_BYTES
            while lo < hi:
                got = os.preadv(fd, [mv[lo:hi]], off)
                if got <= 0:
                    raise self._truncated(k, off // ROW_BYTES + (hi - lo) // ROW_BYTES - 1)
                lo += got
                off += got
        return out[:count]

    def close(self) -> None:
        for fd in (*self._fds.values(), *self._dfds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._dfds.clear()

    def __del__(self):  # pragma: no cover - best effort
        self.close()


class SegmentWriter:
    """Appends rows after the committed ones; ``sync()`` makes them durable.

    On creation it truncates everything past ``committed`` rows: the garbage a crashed
    writer may have left (readers never look past ``committed``).
    """

    WRITE_CHUNK_ROWS = 1 << 18  # 9.4 MB per write call

    def __init__(self, filters_dir, segment_rows: int, committed: int):
        self.dir = os.fspath(filters_dir)
        self.segment_rows = int(segment_rows)
        self.position = int(committed)
        self._fds: dict[int, int] = {}
        self._new_files = False
        self._truncate_tail(committed)

    def _truncate_tail(self, committed: int) -> None:
        k, r = divmod(committed, self.segment_rows)
        for name in os.listdir(self.dir):
            if not (name.startswith("seg-") and name.endswith(".f32")):
                continue
            try:
                j = int(name[4:-4])
            except ValueError:
                continue
            path = os.path.join(self.dir, name)
            if j > k:
                os.unlink(path)
                self._new_files = True
            elif j == k and os.path.getsize(path) > r * ROW_BYTES:
                os.truncate(path, r * ROW_BYTES)

    def _fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            path = segment_path(self.dir, k)
            if not os.path.exists(path):
                self._new_files = True
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            self._fds[k] = fd
        return fd

    def _full(self, e: OSError) -> OSError | FilterDBError:
        if is_disk_full(e):
            return DiskFullError(os.path.dirname(self.dir) or self.dir,
                                 "writing the filter segments; the write is undone, nothing "
                                 "committed is lost")
        return e

    def append(self, rows: np.ndarray) -> int:
        """Append ``(n, 9)`` float32 rows; return the filter id of the first one. A full
        disk raises :class:`~filterdb.errors.DiskFullError` (the caller rewinds)."""
        try:
            return self._append(rows)
        except OSError as e:
            raise self._full(e) from None

    def _append(self, rows: np.ndarray) -> int:
        rows = np.ascontiguousarray(rows, dtype=DTYPE).reshape(-1, ROW_FLOATS)
        first = self.position
        for c in range(0, rows.shape[0], self.WRITE_CHUNK_ROWS):
            part = rows[c:c + self.WRITE_CHUNK_ROWS]
            mv = memoryview(part.view(np.uint8).reshape(-1))
            for k, r, n, pos in split_range(self.position, part.shape[0], self.segment_rows):
                fd = self._fd(k)
                lo, hi, off = pos * ROW_BYTES, (pos + n) * ROW_BYTES, r * ROW_BYTES
                while lo < hi:
                    w = os.pwrite(fd, mv[lo:hi], off)
                    lo += w
                    off += w
            self.position += part.shape[0]
        return first

    def rewind(self, position: int) -> None:
        """Drop every row from ``position`` on (an aborted, uncommitted write)."""
        self.close()
        self._truncate_tail(int(position))
        self.position = int(position)

    def sync(self) -> None:
        try:
            self._sync()
        except OSError as e:
            raise self._full(e) from None

    def _sync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)
        if self._new_files:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._new_files = False

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


_LAYOUTS: dict = {}  # (catalog path, device, inode) -> (committed rows, segment rows)


def _layout(db_path, end: int) -> tuple[int, int]:
    """``(committed rows, segment rows)`` of a database, from the catalog, or from an earlier
    call if rows up to ``end`` were committed then: committed rows never change and their
    count never shrinks in the same catalog file (a replaced catalog has a new inode), so
    a pass does not open SQLite for each of its 1,500 windows."""
    cat = os.path.join(os.fspath(db_path), CATALOG)
    try:
        st = os.stat(cat)
    except OSError:
        st = None
    key = (cat, st.st_dev, st.st_ino) if st is not None else None
    hit = _LAYOUTS.get(key) if key is not None else None
    if hit is not None and end <= hit[0]:
        return hit
    meta = read_meta_readonly(db_path)
    got = (int(meta["committed_filters"]), int(meta["segment_rows"]))
    if key is not None:
        _LAYOUTS[key] = got
    return got


# how streaming passes read their windows: "map" (MADV_POPULATE_READ, no copy), "direct"
# (O_DIRECT into the engine's reused buffers, past the page cache), "copy" (os.preadv into
# them) or "auto": direct for a database larger than DIRECT_MIN_RAM of this machine's memory
# (it cannot stay cached, and a buffered read costs a core here), else map; see README,
# "At the published scale"
STREAM_READ = os.environ.get("FILTERDB_STREAM_READ", "auto")
DIRECT_MIN_RAM = 0.5


@functools.cache
def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 62


def stream_mode(n_bytes: int) -> str:
    """How a streaming pass over a database of ``n_bytes`` reads (:data:`STREAM_READ`)."""
    if STREAM_READ != "auto":
        return STREAM_READ
    return "direct" if n_bytes > DIRECT_MIN_RAM * _memory_bytes() else "map"


def read_rows(db_path, start: int, count: int, out: np.ndarray | None = None,
              mapped: bool | None = None) -> np.ndarray:
    """Rows ``start .. start+count-1`` of a database, given only its path (the engine's
    source, also on Dask workers).

    Reads the segment layout and the committed row count from the catalog and refuses any
    row past the committed ones. The rows come back in ``out`` (read past the page cache
    when :func:`stream_mode` says "direct" and ``out`` has :data:`DIRECT_SLACK_ROWS` rows
    of room: then a view starting a little into it), or as a view of the mapped file
    (:meth:`SegmentReader.map_rows`) with ``mapped``, by default when there is no ``out``.
    """
    start, count = int(start), int(count)
    committed, segment_rows = _layout(db_path, start + count)
    if start < 0 or count < 0 or start + count > committed:
        raise FilterDBError(f"{db_path}: rows {start}..{start + count - 1} are outside the "
                            f"{committed} committed filters")
    reader = SegmentReader(os.path.join(os.fspath(db_path), "filters"), segment_rows)
    mode = stream_mode(committed * ROW_BYTES)
    if mapped is None:
        mapped = mode != "copy" or out is None
    try:
        x = None
        if mode == "direct" and out is not None:
            x = reader.read_direct(start, count, out)
        if x is None and mapped:
            x = reader.map_rows(start, count)
        if x is not None:
            return x
        return reader.read_into(start, count, aligned_empty(count) if out is None else out)
    finally:
        reader.close()


@dataclass(frozen=True)
class RowReaderSource:
    """A source from a module-level function ``read_rows(path, start, count, out)``
    (the store's :func:`read_rows`): pickles as the function's name and the path.

    ``checks`` (optional) verifies what a pass reads: ``checks.for_plan(plan)`` gives an
    object with ``check_task(task, x) -> dict`` (run where the task ran, after its read;
    raises on damage; may return partial results that are summed like a kernel's) and
    ``finish(summed partial or None)`` (run when the pass ends); the partial results travel
    under the result key ``key``."""

    read_rows: Callable
    path: str
    n_rows: int
    checks: object = None
    # rows of room a read wants in ``out`` beyond its rows (:meth:`SegmentReader.read_direct`)
    read_slack: int = DIRECT_SLACK_ROWS

    def read(self, start, count, out):
        return self.read_rows(self.path, start, count, out)

    def for_plan(self, plan) -> RowReaderSource:
        """This source with its checks bound to ``plan`` (only that plan's layers)."""
        if self.checks is None or not hasattr(self.checks, "for_plan"):
            return self
        return RowReaderSource(self.read_rows, self.path, self.n_rows,
                               self.checks.for_plan(plan), self.read_slack)
