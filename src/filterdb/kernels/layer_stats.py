"""Per-layer health statistics of whole layers held in a buffer (method.md, section 5).

The kernel of the whole-database health pass: a block of float32 filter rows whose
per-row layer ids (``-1`` = padding or gap) come in runs, each run one *whole* layer
(the plan cuts tasks on layer boundaries, so a layer's ``max |W|`` is known before its
filters are classified). Per layer, one numba pass over its rows and one over its sparse
rows:

1. ``max |w|`` (float32) per row and of the layer, the float64 sums of ``y = x - s`` and
   ``y y^T`` with ``s`` the mean of the layer's first block (a shift near the mean: no
   cancellation of a large mean), the raw sum of squares;
2. with ``t = eps * max|W|``: the same sums over the sparse rows (``max_j |w| < t``).

The centred Gram of all rows and of the non-sparse rows follows (the latter from the
difference), the entropies from one batched ``eigvalsh`` per task, and the
orthogonality from the layer's ``(c_out, c_in / groups * 9)`` rows (the filters of a
layer are stored in ``(c_out, c_in)`` order). Conventions are those of
:mod:`filterdb.kernels.health`; the results equal its direct functions up to rounding.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

from . import _numba
from . import health as K
from . import metrics as M
from .pca import mirror_upper

_OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
NORM_EPS = K.NORM_EPS

# orthogonality in numba loops for layers with at most this many output channels, or rows
# (c_in / groups * 9 values) shorter than this; BLAS otherwise (measured crossovers)
SMALL_C_OUT = 32
SHORT_ROWS = 32
# columns of the per-layer value table a task returns: counts, then the registry's stored
# metrics (filterdb.kernels.metrics)
VALUES = ("n", "n_sparse") + M.STORED


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


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _load_shifted(x, r0, k, shift, t, rmax, raw):
    """``t[:, :k] = (x[r0:r0 + k] - shift)^T`` in float64, ``rmax[i] = max_j |x[r0 + i, j]|``
    (float32), and, if ``raw`` has rows, ``raw[:9, :k] = x[r0:r0 + k]^T`` (float32);
    returns the block's raw sum of squares and its largest ``rmax``."""
    keep = raw.shape[0] > 0
    sq = 0.0
    pk = np.float32(0.0)
    for i in range(k):
        m = np.float32(0.0)
        for j in range(9):
            v = x[r0 + i, j]
            if keep:
                raw[j, i] = v
            m = max(m, abs(v))
            w = np.float64(v)
            sq += w * w
            t[j, i] = w - shift[j]
        rmax[i] = m
        pk = max(pk, m)
    return sq, pk


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _load_scaled(x, r0, k, shift, t, rmax, t32, u):
    """:func:`_load_shifted`, and ``u[:, :k] = (x[r0:r0 + k] / max|x|)^T`` in float64 for
    the PCA moments: each row divided by its peak ``rmax`` in float32 (exactly
    ``x / max|x|`` of numpy, as :func:`filterdb.kernels._numba.scale_rows`; all-zero
    rows stay zero), then widened (exact). The raw rows are first copied transposed into
    the float32 scratch ``t32`` (10, BLOCK), so the divisions run on contiguous rows
    (vectorised)."""
    sq, pk = _load_shifted(x, r0, k, shift, t, rmax, t32)
    for i in range(k):
        p = rmax[i]
        t32[9, i] = p if p > 0 else np.float32(1.0)
    p = t32[9]
    for j in range(9):
        tj = t32[j]
        uj = u[j]
        for i in range(k):
            uj[i] = np.float64(tj[i] / p[i])
    return sq, pk


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _block_sums(t, k, out):
    """``out[j] += sum_r t[j, r]`` over the first ``k`` columns."""
    for j in range(9):
        s = 0.0
        for r in range(k):
            s += t[j, r]
        out[j] += s


@njit(**_OPTS)
def layer_moments(x, starts, ends, eps, n_sparse, finite, peak, sq, sq_sp, sy, sy_sp,
                  gyy, gyy_sp, ps, psxx):
    """Fill the per-run statistics (run ``q`` = rows ``starts[q]:ends[q]`` of ``x``;
    the outputs start at 0).

    ``n_sparse`` (int64), ``finite`` (bool), ``peak`` (float64: ``max|w|`` in float32),
    ``sq`` / ``sq_sp``: raw sums of squares of all / the sparse rows; ``sy`` / ``sy_sp``
    ``(L, 9)``: sums of ``y = x - s``; ``gyy`` / ``gyy_sp`` ``(L, 9, 9)``: sums of
    ``y y^T`` (full, symmetric), where the shift ``s`` is the mean of the layer's first
    block of rows: close to the layer mean, so the centred Gram
    ``sum y y^T - sy sy^T / n`` loses no digits to a large mean. One pass over all rows
    (moments, per-row ``max|w|``), then one over the sparse rows only (their rows'
    ``max|w| < eps * peak``). A layer whose peak is 0 is all sparse. Non-finite layers are
    only marked (their other outputs stay 0).

    ``ps`` non-empty: also add the PCA moments of the runs' rows scaled by their peaks (the sum to
    ``ps`` (9,), ``sum v v^T`` to the upper triangle of ``psxx`` (9, 9), float64: the
    values of :func:`filterdb.kernels._numba.moments` up to the order of summation) from
    the same load of each block, instead of a second pass over the rows; non-finite rows
    poison them, as there.
    """
    longest = 0
    for q in range(starts.shape[0]):
        longest = max(longest, ends[q] - starts[q])
    rmax = np.empty(longest, np.float32)
    shift = np.empty(9, np.float64)
    t = np.empty((9, BLOCK), np.float64)
    u = np.empty((9, BLOCK), np.float64)
    acc = np.empty((9, 9), np.float64)
    pca = ps.shape[0] > 0
    t32 = np.empty((10 if pca else 0, BLOCK), np.float32)  # raw rows only for the PCA
    for q in range(starts.shape[0]):
        a = starts[q]
        b = ends[q]
        n = b - a
        k0 = min(BLOCK, n)
        for j in range(9):
            s = 0.0
            for r in range(a, a + k0):
                s += x[r, j]
            shift[j] = s / k0
        acc[:, :] = 0.0
        s_all = 0.0
        pk = np.float32(0.0)
        for r0 in range(a, b, BLOCK):
            k = min(BLOCK, b - r0)
            if pca:
                bsq, bpk = _load_scaled(x, r0, k, shift, t, rmax[r0 - a:], t32, u)
                _block_sums(u, k, ps)
                _block_gram(u, k, psxx)
            else:
                bsq, bpk = _load_shifted(x, r0, k, shift, t, rmax[r0 - a:], t32)
            s_all += bsq
            pk = max(pk, bpk)
            _block_sums(t, k, sy[q])
            _block_gram(t, k, acc)
        ok = np.isfinite(s_all)
        for j in range(9):
            ok = ok and np.isfinite(sy[q, j])
        finite[q] = ok
        peak[q] = pk
        if not ok:
            sy[q, :] = 0.0
            continue
        sq[q] = s_all
        for i in range(9):
            for j in range(i, 9):
                gyy[q, i, j] = acc[i, j]
                gyy[q, j, i] = acc[i, j]
        if pk == 0.0:  # all-zero layer: every row is sparse
            n_sparse[q] = n
            sq_sp[q] = s_all
            sy_sp[q, :] = sy[q, :]
            gyy_sp[q, :, :] = gyy[q, :, :]
            continue
        thr = eps * np.float64(pk)
        acc[:, :] = 0.0
        ns = 0
        kk = 0
        s_sp = 0.0
        for i in range(n):
            if np.float64(rmax[i]) < thr:
                for j in range(9):
                    w = np.float64(x[a + i, j])
                    s_sp += w * w
                    t[j, kk] = w - shift[j]
                kk += 1
                if kk == BLOCK:
                    _block_sums(t, kk, sy_sp[q])
                    _block_gram(t, kk, acc)
                    ns += kk
                    kk = 0
        _block_sums(t, kk, sy_sp[q])
        _block_gram(t, kk, acc)
        n_sparse[q] = ns + kk
        sq_sp[q] = s_sp
        for i in range(9):
            for j in range(i, 9):
                gyy_sp[q, i, j] = acc[i, j]
                gyy_sp[q, j, i] = acc[i, j]


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def orthogonality_runs(x, starts, ends, c_out, out):
    """Orthogonality of many layers (runs) in one call: rows of run ``q`` reshaped to
    ``(c_out[q], -1)``, float64, as :func:`filterdb.kernels.health.orthogonality`.

    Direct loops, vectorised over the rows ``j > i`` for each row ``i`` (rows stored
    transposed): faster than BLAS for narrow layers and for short rows (depthwise layers,
    ``k = 9``: BLAS is bound by writing the ``c x c`` Gram), see :func:`use_loops`.
    """
    big = 0
    cmax = 0
    for q in range(starts.shape[0]):
        big = max(big, (ends[q] - starts[q]) * 9)
        cmax = max(cmax, c_out[q])
    Rt = np.empty(big, np.float64)
    inv = np.empty(cmax, np.float64)
    acc = np.empty(cmax, np.float64)
    for q in range(starts.shape[0]):
        c = c_out[q]
        a = starts[q]
        k = (ends[q] - a) * 9 // c
        flat = x[a:ends[q]].reshape(-1)
        R = Rt[:c * k].reshape(k, c)
        _rows_f64(flat, c, k, R.T, inv)
        tot = 0.0
        for i in range(c):
            m = c - i - 1
            for j in range(m):
                acc[j] = 0.0
            g = 0.0
            for d in range(k):
                r = R[d, i]
                g += r * r
                row = R[d, i + 1:]
                for j in range(m):
                    acc[j] += r * row[j]
            s = 0.0
            for j in range(m):
                s += abs(acc[j]) * inv[i + 1 + j]
            tot += abs(g * inv[i] * inv[i] - 1.0) + 2.0 * s * inv[i]
        out[q] = 1.0 - tot / (c * (c - 1))


def use_loops(c_out, k):
    """Layers whose orthogonality :func:`orthogonality_runs` computes faster than BLAS:
    at most :data:`SMALL_C_OUT` rows, or rows shorter than :data:`SHORT_ROWS`."""
    return (np.asarray(c_out) <= SMALL_C_OUT) | (np.asarray(k) < SHORT_ROWS)


@njit(**_OPTS)
def _rows_f64(flat, c, k, R, inv):
    """``R = flat.reshape(c, k)`` in float64 (``R`` may be a transposed view) and
    ``inv[i] = 1 / max(|R_i|, 1e-12)``: ``torch.nn.functional.normalize``'s convention, so
    zero and numerically-zero rows stay (near) zero (see ``health.orthogonality``)."""
    for i in range(c):
        nrm = 0.0
        for j in range(k):
            v = np.float64(flat[i * k + j])
            R[i, j] = v
            nrm += v * v
        inv[i] = 1.0 / max(np.sqrt(nrm), NORM_EPS)


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _gram_deviation(G, inv):
    """``sum_ij |G_ij inv_i inv_j - delta_ij|`` from the upper triangle of the symmetric
    Gram ``G`` of the raw rows (normalising the Gram equals the Gram of normalised rows)."""
    c = G.shape[0]
    diag = 0.0
    off = 0.0
    for i in range(c):
        diag += abs(G[i, i] * inv[i] * inv[i] - 1.0)
        a = inv[i]
        s = 0.0
        for j in range(i + 1, c):
            s += abs(G[i, j] * inv[j])
        off += a * s
    return diag + 2.0 * off


_local = threading.local()


def _scratch_f64(n: int, which: str = "rows") -> np.ndarray:
    """A per-thread float64 buffer (``which``: one per use) of at least ``n`` elements,
    reused across layers (first touch of fresh memory is slow)."""
    buf = getattr(_local, which, None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1 << 20), np.float64)
        setattr(_local, which, buf)
    return buf


def orthogonality_blas(rows, c: int) -> float:
    """Orthogonality of one layer from its float32 filter rows (``rows``: ``(n, 9)`` with
    ``n = c * c_in / groups``): a float64 copy with row norms in one numba pass, the Gram
    of the raw rows by BLAS (``syrk``: numpy detects ``R @ R.T``; into a reused buffer),
    normalised while summed. Very wide layers go to the direct function (blocks of Gram
    rows, bounded memory).

    numpy's BLAS, not scipy's: scipy's OpenBLAS runs calls from two threads one after the
    other (measured: two threads 1.0x one), numpy's side by side (1.5-2x).
    """
    if c * c > K.GRAM_BLOCK_ELEMENTS:  # over 2,896 rows: the blocked direct function
        return K.orthogonality(rows.reshape(c, -1))
    flat = rows.reshape(-1)
    k = flat.size // c
    R = _scratch_f64(c * k)[:c * k].reshape(c, k)
    inv = np.empty(c, np.float64)
    _rows_f64(flat, c, k, R, inv)
    G = np.matmul(R, R.T, out=_scratch_f64(c * c, "gram")[:c * c].reshape(c, c))
    return 1.0 - _gram_deviation(G, inv) / (c * (c - 1))


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


COL_BLOCK = 4096  # columns (c_in / groups * 9 values) per float32 product block
GRAM_ELEMENTS = 1 << 23  # float64 Gram elements per row block (64 MB)


@njit(fastmath={"reassoc", "nsz", "contract"}, **_OPTS)
def _row_squares(R, sq):
    """``sq[i] = sum_j R_ij^2``, the float32 rows' squared norms summed in float64
    (vectorised: 0.07 ns per value against 0.85 for a loop that also tracks the peak, one
    thread, 2026-12-03). No finiteness test runs inside this fast-math loop (its flags
    keep NaN and infinity semantics): see :func:`_row_norms`."""
    c, k = R.shape
    for i in range(c):
        s = 0.0
        for j in range(k):
            d = np.float64(R[i, j])
            s += d * d
        sq[i] = s


def _row_norms(R):
    """``(inv, largest, finite)`` of the ``(c, k)`` float32 rows: ``inv[i] = 1 / max(|R_i|,
    1e-12)`` (``torch.nn.functional.normalize``'s clamp; norms summed in float64), the
    largest row norm, and whether every value is finite.

    One pass over the rows: a float32 value squared in float64 is at most 1.2e77, so a
    row's float64 sum of squares is finite exactly when all its values are (a NaN stays
    NaN, an infinity +inf; with only non-negative terms no order of the sum can cancel
    them). numpy's ``max`` and ``min`` for the same test took two more passes (1.5-2.4 ns
    per filter each, one thread, 2026-12-04).
    """
    if R.size == 0:
        return np.full(R.shape[0], 1.0 / NORM_EPS), 0.0, True
    sq = np.empty(R.shape[0], np.float64)
    _row_squares(R, sq)
    if not np.isfinite(sq).all():
        return None, 0.0, False
    norms = np.sqrt(sq)
    return 1.0 / np.maximum(norms, NORM_EPS), float(norms.max()), True


def orthogonality_f32(rows, c: int, col_block: int = COL_BLOCK,
                      gram_elements: int = GRAM_ELEMENTS) -> float:
    """Orthogonality (method.md, section 5) of one layer from its float32 rows: the Gram
    ``R R^T`` of the raw ``(c, k)`` rows as float32 BLAS products over blocks of
    ``col_block`` columns, summed in float64; only Gram rows ``i`` against columns
    ``j >= i0`` of their row block (the upper part: half the products), row blocks of at
    most ``gram_elements`` elements; then normalised by the float64 row norms as
    :func:`filterdb.kernels.health.orthogonality` (``torch.nn.functional.normalize``).
    NaN if a weight is not finite."""
    R = np.ascontiguousarray(rows, dtype=np.float32).reshape(c, -1)
    k = R.shape[1]
    inv, big, finite = _row_norms(R)  # norms of the rows as given (the clamp at 1e-12)
    if not finite:
        return float("nan")
    if big > 0 and not (2.0 ** -30 < big < 2.0 ** 30):  # keep products clear of float32
        s = 2.0 ** -np.floor(np.log2(big))  # under/overflow: an exact power-of-2 scaling
        R = R * np.float32(s)
        inv = inv / s  # the Gram of the scaled rows is s^2 times the Gram
    rb = max(1, min(c, gram_elements // c))
    nblk = max(1, -(-k // col_block))  # equal column blocks of at most col_block
    cb = max(1, -(-k // nblk))
    tot = 0.0
    for i0 in range(0, c, rb):
        i1 = min(c, i0 + rb)
        G = None
        for k0 in range(0, max(k, 1), cb):
            if i0 == 0 and i1 == c:  # one row block: A A^T of a strided view (numpy: syrk)
                A = R[:, k0:k0 + cb]
                P = A @ A.T
            else:
                P = R[i0:i1, k0:k0 + cb] @ R[i0:, k0:k0 + cb].T
            if nblk == 1:
                G = P  # float32 products of one block: summed in float64 below
            elif G is None:
                G = P.astype(np.float64)
            else:
                G += P
        tot += _block_deviation(G, inv, i0)
    return 1.0 - tot / (c * (c - 1))


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _block_deviation(G, inv, i0):
    """``sum |G_ij inv_i inv_j - delta_ij|`` over Gram rows ``i = i0 + r`` and columns
    ``j >= i`` (counted twice off the diagonal), in float64; ``G[r, j - i0]``."""
    m = G.shape[0]
    diag = 0.0
    off = 0.0
    for r in range(m):
        i = i0 + r
        a = inv[i]
        diag += abs(np.float64(G[r, r]) * a * a - 1.0)
        s = 0.0
        for j in range(r + 1, G.shape[1]):
            s += abs(np.float64(G[r, j]) * inv[i0 + j])
        off += a * s
    return diag + 2.0 * off


_NONE, _NONE2 = np.zeros(0), np.zeros((0, 0))  # layer_moments without the PCA moments


def health_task(x, ids, index, c_out, eps=0.01, orthogonality=True,
                float32_products=False, pca_moments=False) -> dict:
    """The engine kernel: statistics of the whole layers in the block ``x``.

    ``index[layer_id]`` is the layer's row in the output (``-1``: not wanted), ``c_out``
    its output channels by row (< 2 or not dividing the filter count: orthogonality NaN).
    ``float32_products``: the wide layers' Gram as float32 products accumulated in float64
    (:func:`orthogonality_f32`, within 1e-6 of the definition) instead of float64 BLAS.
    The stored metrics are the registry's (:func:`filterdb.kernels.metrics.pass_values`
    from these statistics). Returns ``values`` ``(L, len(VALUES))`` (zero rows for layers
    not in this block) and ``count`` ``(L,)``: how many runs of each layer the block held
    (the pass checks 1).

    ``pca_moments``: the result also holds ``n``, ``s`` and ``sxx``, the PCA moments of
    every row with a non-negative id (those of :func:`filterdb.kernels.pca.moments_task`
    at float32), taken from the health statistics' load of each row for the layers in
    ``index`` (:func:`layer_moments`) and by :func:`filterdb.kernels._numba.moments` for
    the others.
    """
    L = len(c_out)
    values = np.zeros((L, len(VALUES)), np.float64)
    count = np.zeros(L, np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    starts, ends, lids = layer_runs(ids)
    rows = index[lids] if len(lids) else np.empty(0, np.int64)
    keep = rows >= 0
    ps, psxx = (np.zeros(9), np.zeros((9, 9))) if pca_moments else (_NONE, _NONE2)
    out = {"values": values, "count": count}
    if pca_moments:  # psxx is out["sxx"]: its upper triangle filled below, then mirrored
        out.update(n=np.array(int((ends - starts).sum()), np.int64), s=ps, sxx=psxx)
        if not keep.all():  # the rows of layers not in ``index``: the PCA's own kernel
            rest = ids.copy()
            for a, b in zip(starts[keep].tolist(), ends[keep].tolist()):
                rest[a:b] = -1
            _numba.moments(x, rest, ps, psxx)
    starts, ends, rows = starts[keep], ends[keep], rows[keep]
    k = len(rows)
    if k == 0:
        if pca_moments:
            mirror_upper(psxx)
        return out
    n_sparse = np.zeros(k, np.int64)
    finite = np.zeros(k, np.bool_)
    peak = np.zeros(k, np.float64)
    sq, sq_sp = np.zeros(k), np.zeros(k)
    sy, sy_sp = np.zeros((k, 9)), np.zeros((k, 9))
    gyy, gyy_sp = np.zeros((k, 9, 9)), np.zeros((k, 9, 9))
    layer_moments(x, starts, ends, float(eps), n_sparse, finite, peak, sq, sq_sp, sy, sy_sp,
                  gyy, gyy_sp, ps, psxx)
    n = ends - starts
    met = metrics_from_centred(n, n_sparse, finite, sq, sq_sp, sy, sy_sp, gyy, gyy_sp)
    orth = np.full(k, np.nan)
    if orthogonality:
        co = c_out[rows]
        ok = (co >= 2) & finite & (n % np.maximum(co, 1) == 0)
        small = ok & use_loops(co, n * 9 // np.maximum(co, 1))
        if small.any():
            o = np.empty(int(small.sum()))
            orthogonality_runs(x, starts[small], ends[small], co[small], o)
            orth[small] = o
        wide = orthogonality_f32 if float32_products else orthogonality_blas
        for q in np.flatnonzero(ok & ~small).tolist():
            orth[q] = wide(x[starts[q]:ends[q]], int(co[q]))
    stored = M.pass_values({"n": n, "n_sparse": n_sparse, **met, "orthogonality": orth},
                           x, starts, ends)
    values[rows] = np.column_stack([n, n_sparse] + [stored[k] for k in M.STORED])
    np.add.at(count, rows, 1)
    if pca_moments:
        mirror_upper(psxx)
    return out


__all__ = ["VALUES", "layer_runs", "layer_moments", "orthogonality_runs", "orthogonality_blas",
           "use_loops", "metrics_from_centred", "health_task", "orthogonality_f32", "COL_BLOCK"]
