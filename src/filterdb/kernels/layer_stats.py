"""Per-layer health statistics of whole layers held in a buffer (method.md, section 5).

The kernel of the whole-database health pass: a block of float32 filter rows whose
per-row layer ids (``-1`` = padding or gap) come in runs, each run one *whole* layer
(the plan cuts tasks on layer boundaries, so a layer's ``max |W|`` is known before its
filters are classified). Per layer, two numba passes over its rows:

1. ``max |w|`` (float32), finiteness, the float64 sum (the mean ``mu``);
2. with ``t = eps * max|W|``: the sparse mask, the centred second moment
   ``sum (x - mu)(x - mu)^T`` of all rows and of the sparse rows, their centred sums
   and raw sums of squares.

The centred Gram of the non-sparse rows follows from the difference (no cancellation of
a large mean), the entropies from one batched ``eigvalsh`` per task, and the
orthogonality from the layer's ``(c_out, c_in / groups * 9)`` rows (the filters of a
layer are stored in ``(c_out, c_in)`` order). Conventions are those of
:mod:`filterdb.kernels.health`; the results equal its direct functions up to rounding.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import health as K

_OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")

# columns of the per-layer value table a task returns
# layers with at most this many output channels: orthogonality in numba loops (BLAS above)
SMALL_C_OUT = 128
VALUES = ("n", "n_sparse", "sparsity", "variance_entropy", "variance_entropy_clean",
          "orthogonality")


@njit(**_OPTS)
def layer_runs(ids):
    """``(starts, ends, layer_ids)`` of the runs of equal non-negative ids in ``ids``."""
    m = ids.shape[0]
    starts = np.empty(m, np.int64)
    ends = np.empty(m, np.int64)
    lids = np.empty(m, np.int64)
    k = 0
    r = 0
    while r < m:
        lid = ids[r]
        e = r + 1
        while e < m and ids[e] == lid:
            e += 1
        if lid >= 0:
            starts[k] = r
            ends[k] = e
            lids[k] = lid
            k += 1
        r = e
    return starts[:k], ends[:k], lids[:k]


BLOCK = 256  # rows per block of the second-moment loop


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _block_gram(t, k, acc):
    """``acc[i, j] += sum_r t[i, r] t[j, r]`` over the first ``k`` columns (upper triangle)."""
    for i in range(9):
        for j in range(i, 9):
            s = 0.0
            for r in range(k):
                s += t[i, r] * t[j, r]
            acc[i, j] += s


@njit(**_OPTS)
def layer_moments(x, starts, ends, eps, n_sparse, finite, peak, sq, sq_sp, sy, sy_sp,
                  gyy, gyy_sp):
    """Fill the per-run statistics (run ``q`` = rows ``starts[q]:ends[q]`` of ``x``).

    ``n_sparse`` (int64), ``finite`` (bool), ``peak`` (float64: ``max|w|`` in float32),
    ``sq`` / ``sq_sp``: raw sums of squares of all / the sparse rows; ``sy`` / ``sy_sp``
    ``(L, 9)``: sums of ``x - mu``; ``gyy`` / ``gyy_sp`` ``(L, 9, 9)``: sums of
    ``(x - mu)(x - mu)^T`` (full, symmetric). A layer whose peak is 0 is all sparse.
    Non-finite layers are only marked (their other outputs are left at 0).
    """
    mu = np.empty(9, np.float64)
    t = np.empty((9, BLOCK), np.float64)
    acc = np.empty((9, 9), np.float64)
    acc_sp = np.empty((9, 9), np.float64)
    for q in range(starts.shape[0]):
        a = starts[q]
        b = ends[q]
        pk = np.float32(0.0)
        for j in range(9):
            mu[j] = 0.0
        for r in range(a, b):
            for j in range(9):
                v = x[r, j]
                mu[j] += v
                pk = max(pk, abs(v))
        ok = True
        for j in range(9):  # a NaN or Inf anywhere makes the float64 sum non-finite
            ok = ok and np.isfinite(mu[j])
        finite[q] = ok
        peak[q] = pk
        if not ok:
            continue
        n = b - a
        for j in range(9):
            mu[j] /= n
        thr = eps * np.float64(pk)
        all_sparse = pk == 0.0
        acc[:, :] = 0.0
        acc_sp[:, :] = 0.0
        ns = 0
        s_all = 0.0
        s_sp = 0.0
        for r0 in range(a, b, BLOCK):
            k = min(BLOCK, b - r0)
            for i in range(k):
                r = r0 + i
                sparse = True
                rsq = 0.0
                for j in range(9):
                    v = np.float64(x[r, j])
                    rsq += v * v
                    if not abs(v) < thr:
                        sparse = False
                    y = v - mu[j]
                    t[j, i] = y
                    sy[q, j] += y
                s_all += rsq
                if sparse or all_sparse:
                    ns += 1
                    s_sp += rsq
                    for j in range(9):
                        sy_sp[q, j] += t[j, i]
                        for jj in range(j, 9):
                            acc_sp[j, jj] += t[j, i] * t[jj, i]
            _block_gram(t, k, acc)
        n_sparse[q] = ns
        sq[q] = s_all
        sq_sp[q] = s_sp
        for i in range(9):
            for j in range(i, 9):
                gyy[q, i, j] = acc[i, j]
                gyy[q, j, i] = acc[i, j]
                gyy_sp[q, i, j] = acc_sp[i, j]
                gyy_sp[q, j, i] = acc_sp[i, j]


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def orthogonality_runs(x, starts, ends, c_out, out):
    """Orthogonality of the layers (runs) with ``out[q]`` NaN-free selection done by the
    caller: rows of run ``q`` reshaped to ``(c_out[q], -1)``, float64, as
    :func:`filterdb.kernels.health.orthogonality` (direct loops: for small layers)."""
    for q in range(starts.shape[0]):
        c = c_out[q]
        a = starts[q]
        k = (ends[q] - a) * 9 // c
        flat = x[a:ends[q]].reshape(-1)
        R = np.empty((c, k), np.float64)
        for i in range(c):
            nrm = 0.0
            for j in range(k):
                v = np.float64(flat[i * k + j])
                R[i, j] = v
                nrm += v * v
            nrm = np.sqrt(nrm)
            if nrm > 0:
                for j in range(k):
                    R[i, j] /= nrm
        tot = 0.0
        for i in range(c):
            for i2 in range(i, c):
                g = 0.0
                for j in range(k):
                    g += R[i, j] * R[i2, j]
                if i2 == i:
                    tot += abs(g - 1.0)
                else:
                    tot += 2.0 * abs(g)
        out[q] = 1.0 - tot / (c * (c - 1))


def metrics_from_centred(n, n_sparse, finite, sq, sq_sp, sy, sy_sp, gyy, gyy_sp) -> dict:
    """Sparsity and the two variance entropies of many layers from :func:`layer_moments`.

    The centred Gram of a subset with centred sum ``c`` and ``m`` rows is
    ``Syy - c c^T / m``; its eigenvalues give ``H`` (``ref``: the subset's raw sum of
    squares, as in :func:`filterdb.kernels.health.variance_entropy`).
    """
    n = np.asarray(n, np.float64)
    m = n - n_sparse
    safe_n = np.where(n > 0, n, 1.0)
    safe_m = np.where(m > 0, m, 1.0)
    G = gyy - sy[:, :, None] * sy[:, None, :] / safe_n[:, None, None]
    c = sy - sy_sp
    Gc = (gyy - gyy_sp) - c[:, :, None] * c[:, None, :] / safe_m[:, None, None]
    ev = np.linalg.eigvalsh(np.concatenate([G, Gc])) if len(n) else np.empty((0, 9))
    H = K.entropy_from_eigenvalues(ev[:len(n)], ref=sq)
    Hc = K.entropy_from_eigenvalues(ev[len(n):], ref=sq - sq_sp)
    H = np.where(n == 1, 0.0, H)
    H = np.where((n > 0) & finite, H, np.nan)
    Hc = np.where((m >= 2) & finite, Hc, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        S = np.where((n > 0) & finite, n_sparse / safe_n, np.nan)
    return {"sparsity": S, "variance_entropy": H, "variance_entropy_clean": Hc}


def health_task(x, ids, index, c_out, eps=0.01, orthogonality=True) -> dict:
    """The engine kernel: statistics of the whole layers in the block ``x``.

    ``index[layer_id]`` is the layer's row in the output (``-1``: not wanted), ``c_out``
    its output channels by row (< 2 or not dividing the filter count: orthogonality NaN).
    Returns ``values`` ``(L, len(VALUES))`` (zero rows for layers not in this block) and
    ``count`` ``(L,)``: how many runs of each layer the block held (the pass checks 1).
    """
    L = len(c_out)
    values = np.zeros((L, len(VALUES)), np.float64)
    count = np.zeros(L, np.int64)
    starts, ends, lids = layer_runs(np.ascontiguousarray(ids, dtype=np.int64))
    rows = index[lids] if len(lids) else np.empty(0, np.int64)
    keep = rows >= 0
    starts, ends, rows = starts[keep], ends[keep], rows[keep]
    k = len(rows)
    if k == 0:
        return {"values": values, "count": count}
    n_sparse = np.zeros(k, np.int64)
    finite = np.zeros(k, np.bool_)
    peak = np.zeros(k, np.float64)
    sq, sq_sp = np.zeros(k), np.zeros(k)
    sy, sy_sp = np.zeros((k, 9)), np.zeros((k, 9))
    gyy, gyy_sp = np.zeros((k, 9, 9)), np.zeros((k, 9, 9))
    layer_moments(x, starts, ends, float(eps), n_sparse, finite, peak, sq, sq_sp, sy, sy_sp,
                  gyy, gyy_sp)
    n = ends - starts
    met = metrics_from_centred(n, n_sparse, finite, sq, sq_sp, sy, sy_sp, gyy, gyy_sp)
    orth = np.full(k, np.nan)
    if orthogonality:
        co = c_out[rows]
        ok = (co >= 2) & finite & (n % np.maximum(co, 1) == 0)
        small = ok & (co <= SMALL_C_OUT)
        if small.any():
            o = np.empty(int(small.sum()))
            orthogonality_runs(x, starts[small], ends[small], co[small], o)
            orth[small] = o
        for q in np.flatnonzero(ok & ~small).tolist():
            orth[q] = K.orthogonality(x[starts[q]:ends[q]].reshape(int(co[q]), -1))
    values[rows] = np.column_stack([n, n_sparse, met["sparsity"], met["variance_entropy"],
                                    met["variance_entropy_clean"], orth])
    np.add.at(count, rows, 1)
    return {"values": values, "count": count}


__all__ = ["VALUES", "layer_runs", "layer_moments", "orthogonality_runs", "metrics_from_centred", "health_task"]
