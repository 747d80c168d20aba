"""Per-layer digests, and checking them while the engine's passes read the layers.

A layer's ``digest`` (catalog column, 32 hex digits) is a position-weighted sum of its
little-endian 32-bit words ``w_0 .. w_{n-1}`` (9 per filter row)::

    A = sum_i w_i            (exact: n < 2**32 words of < 2**32 each)
    B = sum_i (i + 1) * w_i  mod 2**64

Any change of one word changes ``A``; two changed words ``i != j`` keep ``A`` only if
their changes ``e`` cancel, and then change ``B`` by ``(i - j) * e``, never 0 mod 2**64
(both factors below 2**32). Pieces of a layer digested at their word offsets simply add up,
so a layer cut across the engine's windows is checked from its pieces in any order (also
on Dask workers). It runs at memory speed: ``benchmarks/checksums.py`` measured it 4-11x
faster than zlib's crc32, per window of 1 M filters 2-9 % of a pass's kernel against 20-100 %
for crc32 (4 % against 34 % of the three drift passes).

The crc32 in ``checksum`` stays (``filterdb verify`` checks both); layers of databases
written before digests existed are checked against their crc32, pieces joined with
:func:`crc32_combine`.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
from numba import njit

from ..errors import FilterDBError
from .catalog import CATALOG, connect

KEY = "_layer_checks"  # the engine result key the partial checks travel under
_M64 = (1 << 64) - 1


@njit(cache=True, nogil=True, boundscheck=False)
def _wsum(w, first):
    a = np.uint64(0)
    b = np.uint64(0)
    o = np.uint64(first + 1)
    for i in range(w.shape[0]):
        v = np.uint64(w[i])
        a += v
        b += (o + np.uint64(i)) * v
    return a, b


def _words(rows: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(rows, dtype="<f4")
    return a.view(np.uint32).reshape(-1)


def piece_sums(rows: np.ndarray, first_row: int = 0) -> tuple[int, int]:
    """``(A, B)`` of ``rows`` lying at row ``first_row`` of their layer (sums add up)."""
    a, b = _wsum(_words(rows), int(first_row) * 9)
    return int(a), int(b)


def digest_hex(a: int, b: int) -> str:
    return f"{int(a) & _M64:016x}{int(b) & _M64:016x}"


def parse_digest(s: str) -> tuple[int, int]:
    return int(s[:16], 16), int(s[16:32], 16)


def layer_digest(rows: np.ndarray) -> str:
    """The digest of a whole layer's ``(n, 9)`` float32 filters."""
    return digest_hex(*piece_sums(rows, 0))


# ---- crc32 of pieces (GF(2) polynomial arithmetic, reflected, polynomial 0xEDB88320) ----

def _mulmod(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32 polynomial, bit-reflected (bit 31 is x^0)."""
    p = 0
    m = 1 << 31
    while m:
        if a & m:
            p ^= b
        m >>= 1
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1
    return p


def _xpow8n(n: int) -> int:
    """``x**(8 n)`` modulo the polynomial."""
    r, sq = 1 << 31, 1 << 23  # x^0; x^8 (bit 31 - 8)
    while n:
        if n & 1:
            r = _mulmod(r, sq)
        sq = _mulmod(sq, sq)
        n >>= 1
    return r


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``."""
    return _mulmod(_xpow8n(int(len2)), int(crc1)) ^ int(crc2)


# ---- checking the layers a pass reads -----------------------------------------------------

class LayerChecks:
    """The expected digests (or crc32) of a database's layers, by layer id."""

    def __init__(self, db_path, layer_ids, starts, counts, digests, crcs):
        self.db_path = os.fspath(db_path)
        order = np.argsort(np.asarray(layer_ids, np.int64), kind="stable")
        self.lids = np.asarray(layer_ids, np.int64)[order]
        self.starts = np.asarray(starts, np.int64)[order]
        self.counts = np.asarray(counts, np.int64)[order]
        d = [digests[i] for i in order]
        c = [crcs[i] for i in order]
        has_d = np.array([bool(x) for x in d], bool)
        has_c = np.array([x is not None for x in c], bool)
        self.kind = np.where(has_d, 1, np.where(has_c, 2, 0)).astype(np.int8)  # 1 digest,
        # 2 crc32 only (written before digests), 0 nothing to check
        z = "0" * 32
        ab = np.frombuffer(bytes.fromhex("".join(x if x else z for x in d)), ">u8")
        ab = ab.reshape(-1, 2).astype(np.uint64) if len(d) else np.zeros((0, 2), np.uint64)
        self.a = np.where(has_d, ab[:, 0],
                          np.array([int(x) & 0xFFFFFFFF if x is not None else 0 for x in c],
                                   np.uint64))
        self.b = ab[:, 1].copy()

    @classmethod
    def from_catalog(cls, con, db_path, digests: bool = True) -> LayerChecks:
        """From the ``layers`` table (``digests=False``: check the crc32 only)."""
        have = {r[1] for r in con.execute("PRAGMA table_info(layers)")}
        dcol = "digest" if digests and "digest" in have else "NULL"
        rows = con.execute(f"SELECT layer_id, filter_start, filter_count, {dcol}, checksum "
                           "FROM layers WHERE filter_count > 0").fetchall()
        if not rows:
            return cls(db_path, [], [], [], [], [])
        lid, st, cnt, dig, crc = zip(*rows)
        return cls(db_path, lid, st, cnt, list(dig), list(crc))

    def for_plan(self, plan) -> PlanChecks:
        """The checks of one plan's layers: what each task verifies alone and the layers
        cut across tasks (verified from their pieces when the pass ends)."""
        return PlanChecks(self, plan)


class PlanChecks:
    """Checks bound to one plan (pickles small: only the plan's layers)."""

    key = KEY

    def __init__(self, checks: LayerChecks, plan):
        self.db_path = checks.db_path
        runs = [t.runs[:, 2] for t in plan.tasks]
        lids_all = np.concatenate(runs) if runs else np.zeros(0, np.int64)
        lids, n_tasks = np.unique(lids_all, return_counts=True)
        if len(checks.lids) == 0:
            lids = lids[:0]
        pos = np.minimum(np.searchsorted(checks.lids, lids), max(len(checks.lids) - 1, 0))
        known = checks.lids[pos] == lids if len(lids) else np.zeros(0, bool)
        lids, n_tasks, pos = lids[known], n_tasks[known], pos[known]
        self.lids = lids
        self.starts = checks.starts[pos]
        self.counts = checks.counts[pos]
        self.kind = checks.kind[pos]
        self.a = checks.a[pos]
        self.b = checks.b[pos]
        # layers cut across tasks: a slot each, a cell per piece (in row order)
        self.slot = np.full(len(lids), -1, np.int64)
        spanning = np.flatnonzero(n_tasks > 1)
        self.slot[spanning] = np.arange(len(spanning))
        self.n_pieces = int(n_tasks.max()) if len(spanning) else 0
        self.n_slots = len(spanning)
        self.piece_starts = {}
        if len(spanning):
            span_lids = lids[spanning]
            got_l, got_s = [], []
            for t in plan.tasks:
                _, _, lids_t, src = _runs_with_source(t)
                keep = np.isin(lids_t, span_lids)
                got_l.append(lids_t[keep])
                got_s.append(src[keep])
            got_l, got_s = np.concatenate(got_l), np.concatenate(got_s)
            order = np.lexsort((got_s, got_l))
            got_l, got_s = got_l[order], got_s[order]
            cut = np.flatnonzero(np.diff(got_l)) + 1
            for grp_l, grp_s in zip(np.split(got_l, cut), np.split(got_s, cut)):
                self.piece_starts[self._index(int(grp_l[0]))] = grp_s

    def _index(self, lid: int) -> int:
        i = int(np.searchsorted(self.lids, lid))
        return i if i < len(self.lids) and self.lids[i] == lid else -1

    def check_task(self, task, x: np.ndarray) -> dict:
        """Check the whole layers of a task's rows ``x`` (raises on a mismatch); the pieces
        of layers cut across tasks come back as ``{KEY: (slots, pieces, 3) uint64}``."""
        # every task returns the partial sums when the plan has cut layers (the engine
        # folds results key by key: a key missing from the first result would not fold)
        empty = {} if self.n_slots == 0 else \
            {KEY: np.zeros((self.n_slots, self.n_pieces, 3), np.uint64)}
        off, n, lid, src = _runs_with_source(task)
        if len(self.lids) == 0 or len(off) == 0:
            return empty
        i = np.minimum(np.searchsorted(self.lids, lid), len(self.lids) - 1)
        first = src - self.starts[i]
        use = (self.lids[i] == lid) & (self.kind[i] > 0) & (first >= 0) \
            & (first + n <= self.counts[i])  # else: not this layer's rows, nothing to compare
        off, n, i, first, src = off[use], n[use], i[use], first[use], src[use]
        h1 = np.zeros(len(off), np.uint64)
        h2 = np.zeros(len(off), np.uint64)
        dig = self.kind[i] == 1
        if dig.any():
            words = x.view(np.uint32).reshape(-1)
            h1[dig], h2[dig] = _run_sums(words, off[dig] * 9, n[dig] * 9, first[dig] * 9)
        for r in np.flatnonzero(~dig).tolist():  # crc32 (databases without digests)
            rows = x[off[r]:off[r] + n[r]]
            h1[r] = zlib.crc32(memoryview(rows.view(np.uint8).reshape(-1)))
            h2[r] = n[r] * 36
        whole = (self.slot[i] < 0) & (n == self.counts[i])
        bad = whole & ((h1 != self.a[i]) | (dig & (h2 != self.b[i])))
        if bad.any():
            raise self.mismatch(int(self.lids[i[np.flatnonzero(bad)[0]]]))
        cut = np.flatnonzero(self.slot[i] >= 0)
        if len(cut) == 0:
            return empty
        part = empty[KEY]
        for r in cut.tolist():
            k = int(np.searchsorted(self.piece_starts[int(i[r])], src[r]))
            part[self.slot[i[r]], k] += np.array([h1[r], h2[r], n[r]], np.uint64)
        return {KEY: part}

    def _matches(self, i: int, h1: int, h2: int) -> bool:
        if self.kind[i] == 1:
            return h1 == int(self.a[i]) and h2 == int(self.b[i])
        return h1 == int(self.a[i])

    def finish(self, part) -> None:
        """Check the layers cut across tasks from their summed pieces."""
        if part is None:
            return
        for i in np.flatnonzero(self.slot >= 0).tolist():
            cells = part[self.slot[i]]
            if int(cells[:, 2].sum()) != int(self.counts[i]):
                continue  # not every row of the layer was in the plan
            if self.kind[i] == 1:
                h1 = int(cells[:, 0].sum(dtype=np.uint64))
                h2 = int(cells[:, 1].sum(dtype=np.uint64))
            else:
                h1 = None
                for c, nbytes, n in cells.tolist():
                    if n:
                        h1 = c if h1 is None else crc32_combine(h1, c, nbytes)
                h2 = 0
            if not self._matches(i, h1, h2):
                raise self.mismatch(int(self.lids[i]))

    def mismatch(self, lid: int) -> FilterDBError:
        return layer_damaged(self.db_path, lid)


def layer_damaged(db_path, lid: int) -> FilterDBError:
    """The one-line error for a layer whose filters changed on disk."""
    what = f"layer {lid}"
    try:
        con = connect(os.path.join(os.fspath(db_path), CATALOG), readonly=True)
        try:
            r = con.execute("SELECT m.model, l.layer_index, l.name FROM layers l JOIN models m "
                            "ON m.model_id = l.model_id WHERE l.layer_id = ?",
                            (int(lid),)).fetchone()
        finally:
            con.close()
        if r:
            what = f"model {r[0]}, layer {r[1]} ({r[2]})"
    except Exception:  # the names are a courtesy; the error stands
        pass
    return FilterDBError(f"{db_path}: {what}: filters changed on disk (checksum mismatch); "
                         "run 'filterdb verify'")


def _runs_with_source(task):
    """``(buffer offset, count, layer id, source row)`` arrays of a task's runs."""
    runs, reads = task.runs, task.reads
    off, n, lid = runs[:, 0], runs[:, 1], runs[:, 2]
    j = np.searchsorted(reads[:, 2], off, side="right") - 1
    return off, n, lid, reads[j, 0] + (off - reads[j, 2])


@njit(cache=True, nogil=True, boundscheck=False)
def _run_sums(words, offs, ns, firsts):
    """``(A, B)`` of each run ``words[offs[r]:offs[r] + ns[r]]`` at word ``firsts[r]``."""
    a = np.zeros(offs.shape[0], np.uint64)
    b = np.zeros(offs.shape[0], np.uint64)
    for r in range(offs.shape[0]):
        a[r], b[r] = _wsum(words[offs[r]:offs[r] + ns[r]], firsts[r])
    return a, b


class StreamChecks:
    """Checks the layers of a sequential stream of a selection (:func:`.query.stream`):
    rows ``pos .. pos + m - 1`` of the selection come in order; each layer is compared once
    its last row has been seen."""

    def __init__(self, checks: LayerChecks, layer_ids, counts):
        self.db_path = checks.db_path
        lids = np.asarray(layer_ids, np.int64)
        counts = np.asarray(counts, np.int64)
        self.lids = lids
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        kind = np.zeros(len(lids), np.int8)
        a = np.zeros(len(lids), np.uint64)
        b = np.zeros(len(lids), np.uint64)
        if len(checks.lids) and len(lids):
            pos = np.minimum(np.searchsorted(checks.lids, lids), len(checks.lids) - 1)
            ok = (checks.lids[pos] == lids) & (checks.counts[pos] == counts)
            kind[ok], a[ok], b[ok] = checks.kind[pos[ok]], checks.a[pos[ok]], checks.b[pos[ok]]
        self.kind, self.a, self.b = kind, a, b
        self._acc: dict[int, list[int]] = {}  # layer -> [h1, h2, rows seen]

    def check(self, x: np.ndarray, pos: int) -> None:
        m = x.shape[0]
        bd = self.bounds
        i0 = int(np.searchsorted(bd, pos, side="right")) - 1
        i1 = int(np.searchsorted(bd, pos + m, side="left"))
        idx = np.arange(i0, i1)
        idx = idx[self.kind[idx] > 0]
        if len(idx) == 0:
            return
        lo = np.maximum(bd[idx], pos)
        hi = np.minimum(bd[idx + 1], pos + m)
        off, n, first = lo - pos, hi - lo, lo - bd[idx]
        dig = self.kind[idx] == 1
        h1 = np.zeros(len(idx), np.uint64)
        h2 = np.zeros(len(idx), np.uint64)
        if dig.any():
            words = np.ascontiguousarray(x).view(np.uint32).reshape(-1)
            h1[dig], h2[dig] = _run_sums(words, off[dig] * 9, n[dig] * 9, first[dig] * 9)
        whole = (first == 0) & (n == bd[idx + 1] - bd[idx])
        bad = whole & dig & ((h1 != self.a[idx]) | (h2 != self.b[idx]))
        if bad.any():
            raise layer_damaged(self.db_path, int(self.lids[idx[np.flatnonzero(bad)[0]]]))
        for r in np.flatnonzero(~whole | ~dig).tolist():
            i = int(idx[r])
            acc = self._acc.setdefault(i, [0, 0, 0])
            if dig[r]:
                acc[0] += int(h1[r])
                acc[1] = (acc[1] + int(h2[r])) & _M64
            else:  # crc32 in order
                rows = np.ascontiguousarray(x[off[r]:off[r] + n[r]])
                acc[0] = zlib.crc32(memoryview(rows.view(np.uint8).reshape(-1)), acc[0])
            acc[2] += int(n[r])
            if acc[2] == int(bd[i + 1] - bd[i]):
                del self._acc[i]
                good = (acc[0] == int(self.a[i]) and acc[1] == int(self.b[i])) if dig[r] \
                    else acc[0] == int(self.a[i])
                if not good:
                    raise layer_damaged(self.db_path, int(self.lids[i]))
