"""Numba inner loops of the drift pass (compiled once, cached on disk, GIL released).

Conventions shared by every kernel here:

- ``x`` is a C-contiguous ``(m, 9)`` float32 block of raw filters. Rows are processed in
  blocks of ``BLOCK``: each block is copied transposed into a ``(9, BLOCK)`` float32
  buffer and divided by the row's absolute peak in float32, which is exactly
  ``x / max|x|`` of numpy; all-zero rows stay zero. Everything downstream is float64.
- ``ids`` is an int64 ``(m,)`` array of per-row layer ids, or an empty array meaning
  "every row counts". Rows with a negative id are padding or gaps: skipped.
- ``lookup`` maps a layer id to a group code (empty: every kept row is group 0); a
  negative code skips the row.
- Coefficients: ``c_k = sum_j (v_j - mean_j) * components[k, j]`` in float64, summed in
  order j = 0..8.
- Filters must be finite: a NaN or Inf poisons the moments and is dropped by histograms.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")

# Rows per block: the block's buffers t, d, c and bins take 32 KB, one core's L1 data cache.
# 512 rows (126 KB) spilled to L2: the histograms with the c0-c1 density took 41-48 ns per
# filter against 34-41 at 128 (medians of 3 alternated runs, 8 M filters in RAM, one thread,
# 2026-12-04); moments_top 31 -> 22-26.
BLOCK = 128


@njit(**_OPTS)
def _load(x, r0, r1, ids, lookup, t, peak, g, src):
    """Scaled, transposed copy of the kept rows ``r0:r1`` into ``t`` (9, BLOCK) float32.

    ``g`` receives the group code of each kept row and ``src`` its row in ``x``. Returns
    the number of kept rows.
    """
    use_ids = ids.shape[0] > 0
    use_lookup = lookup.shape[0] > 0
    k = 0
    for r in range(r0, r1):
        code = 0
        if use_ids:
            lid = ids[r]
            if lid < 0:
                continue
            if use_lookup:
                code = lookup[lid]
                if code < 0:
                    continue
        g[k] = code
        src[k] = r
        m = np.float32(0.0)
        for j in range(9):
            v = x[r, j]
            t[j, k] = v
            a = abs(v)
            m = a if a > m else m
        peak[k] = m if m > 0 else np.float32(1.0)
        k += 1
    for j in range(9):
        for i in range(k):
            t[j, i] = t[j, i] / peak[i]
    return k


@njit(**_OPTS)
def _centre_project(t, k, mean, comps, d, c):
    """``c[q, i] = sum_j (t[j, i] - mean[j]) * comps[q, j]`` for the first ``k`` rows,
    summed in order j = 0..8 (no fused multiply-add). One output row at a time from the
    nine centred rows and nine scalar weights: 2x faster than accumulating into ``c``
    once per j (13 vs 7 ns per filter, one thread, 2026-12-02), the same values."""
    for j in range(9):
        mj = mean[j]
        tj = t[j]
        dj = d[j]
        for i in range(k):
            dj[i] = np.float64(tj[i]) - mj
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]
    for q in range(9):
        w0, w1, w2 = comps[q, 0], comps[q, 1], comps[q, 2]
        w3, w4, w5 = comps[q, 3], comps[q, 4], comps[q, 5]
        w6, w7, w8 = comps[q, 6], comps[q, 7], comps[q, 8]
        cq = c[q]
        for i in range(k):
            cq[i] = (((((((d0[i] * w0 + d1[i] * w1) + d2[i] * w2) + d3[i] * w3)
                         + d4[i] * w4) + d5[i] * w5) + d6[i] * w6) + d7[i] * w7) + d8[i] * w8


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _accumulate(t, k, u, s, sxx):
    """Add the block's column sums and upper-triangle products (float64) to s / sxx.

    The rows are first widened into the float64 scratch ``u`` (exact), so the 45 pair
    loops multiply float64 values without converting each operand again.
    """
    for a in range(9):
        ta = t[a]
        ua = u[a]
        acc = 0.0
        for i in range(k):
            w = np.float64(ta[i])
            ua[i] = w
            acc += w
        s[a] += acc
    for a in range(9):
        ua = u[a]
        for b in range(a, 9):
            ub = u[b]
            acc = 0.0
            for i in range(k):
                acc += ua[i] * ub[i]
            sxx[a, b] += acc


@njit(**_OPTS)
def _add_moments(t, k, u, bs, bxx, s, sxx):
    """One block's moments (:func:`_accumulate` into the scratch ``bs`` / ``bxx``; ``u``
    float64 scratch like ``t``), then added to the totals ``s`` / ``sxx`` (upper
    triangle)."""
    bs[:] = 0.0
    bxx[:, :] = 0.0
    _accumulate(t, k, u, bs, bxx)
    for a in range(9):
        s[a] += bs[a]
        for b in range(a, 9):
            sxx[a, b] += bxx[a, b]


@njit(**_OPTS)
def _scratch():
    """Per-call block buffers: scaled rows ``t``, row peaks, group codes, centred rows
    ``d`` and coefficients ``c``, an empty id array (no selection / no lookup) and the
    kept rows' source rows."""
    return (np.empty((9, BLOCK), np.float32), np.empty(BLOCK, np.float32),
            np.empty(BLOCK, np.int64), np.empty((9, BLOCK), np.float64),
            np.empty((9, BLOCK), np.float64), np.empty(0, np.int64),
            np.empty(BLOCK, np.int64))


@njit(**_OPTS)
def scale_rows(x, out):
    """``out[r] = x[r] / max|x[r]|`` (float32); all-zero rows stay zero."""
    m = x.shape[0]
    t, peak, g, _, _, none, src = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), none, none, t, peak, g, src)
        for i in range(k):
            for j in range(9):
                out[r0 + i, j] = t[j, i]


@njit(**_OPTS)
def moments(x, ids, s, sxx):
    """Add the scaled kept rows' sum to ``s`` (9,) and ``sum v v^T`` to ``sxx`` (9, 9).

    float64 accumulation per block, then into the totals. Only the upper triangle of
    ``sxx`` is written. Returns the number of rows counted.
    """
    m = x.shape[0]
    t, peak, g, u, _, none, src = _scratch()
    bs = np.zeros(9, np.float64)
    bxx = np.zeros((9, 9), np.float64)
    n = 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g, src)
        _add_moments(t, k, u, bs, bxx, s, sxx)
        n += k
    return n


@njit(**_OPTS)
def coefficients(x, mean, comps, out):
    """PCA coefficients of every row into ``out`` (m, 9) float64."""
    m = x.shape[0]
    t, peak, g, d, c, none, src = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), none, none, t, peak, g, src)
        _centre_project(t, k, mean, comps, d, c)
        for i in range(k):
            for q in range(9):
                out[r0 + i, q] = c[q, i]


@njit(**_OPTS)
def coeff_range(x, ids, mean, comps, cmin, cmax):
    """Fold the per-component min / max of the kept rows' coefficients into cmin / cmax."""
    m = x.shape[0]
    t, peak, g, d, c, none, src = _scratch()
    n = 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g, src)
        _centre_project(t, k, mean, comps, d, c)
        n += k
        for q in range(9):
            lo = cmin[q]
            hi = cmax[q]
            for i in range(k):
                v = c[q, i]
                lo = v if v < lo else lo
                hi = v if v > hi else hi
            cmin[q] = lo
            cmax[q] = hi
    return n


@njit(**_OPTS)
def _edge_tol(lo, hi, nb, fac):
    """How close (in bins) the arithmetic bin estimate ``(v - lo) * fac`` may come to a
    bin edge before np.histogram's correction against ``edges`` can change the bin: 64
    times the rounding of the estimate and of ``np.linspace``'s edges (about 1e-12 for a
    range of +-3 in 70 bins), so the correction runs for about one value in 1e11."""
    return 64.0 * 2.220446049250313e-16 * (nb + max(abs(lo), abs(hi)) * fac)


@njit(**_OPTS)
def _bin_values(v, k, edges, out):
    """``out[i]``: the bin of ``v[i]`` for ``i < k`` (np.histogram's rule), -1 outside
    ``[lo, hi]`` and for NaN.

    Bin j holds ``edges[j] <= v < edges[j + 1]``; the last bin also holds ``hi``. The
    arithmetic estimate ``(v - lo) * fac`` is computed for all values in one vectorised
    loop; np.histogram's correction against ``edges`` runs, in a second loop, only if a
    value lies within :func:`_edge_tol` of an edge (about one in 1e11).
    """
    nb = edges.shape[0] - 1
    lo = edges[0]
    hi = edges[nb]
    fac = nb / (hi - lo)
    tol = _edge_tol(lo, hi, nb, fac)
    near = 0
    for i in range(k):
        x = v[i]
        ok = (x >= lo) & (x <= hi)
        f = (x - lo) * fac if ok else 0.0  # outside: no conversion of a huge or NaN value
        b = min(np.int64(f), nb - 1)
        r = f - b
        near += (r < tol) | (r > 1.0 - tol)
        out[i] = b if ok else -1
    if near == 0:
        return
    for i in range(k):
        b = out[i]
        if b < 0:
            continue
        x = v[i]
        r = (x - lo) * fac - b
        if r < tol or r > 1.0 - tol:
            if x < edges[b]:
                b -= 1
            elif b != nb - 1 and x >= edges[b + 1]:
                b += 1
            out[i] = b


@njit(**_OPTS)
def _bin_scratch():
    """Per-call bin buffers: the nine components' bins ``(9, BLOCK)`` and two rows for
    the 2-D counts."""
    return np.empty((9, BLOCK), np.int64), np.empty((2, BLOCK), np.int64)


@njit(**_OPTS)
def _count_block(c, k, g, edges, flat, bins):
    """Bin the block's coefficients ``c[:, :k]`` (:func:`_bin_values`, into ``bins``
    ``(9, >= k)``) and count them into ``flat`` (group ``g[i]``, component, bin; rows with
    ``g[i] < 0`` skipped). Binning in vectorised loops, then counting row by row (a row's
    nine counts lie in one group's cells): 27 against 40 ns per filter with the scaling
    and projection for binning and counting in one scalar loop (10 M filters of the
    1.46 B database, one thread, 2026-12-02), the same counts."""
    nb = edges.shape[0] - 1
    for q in range(9):
        _bin_values(c[q], k, edges, bins[q])
    for i in range(k):
        gi = g[i]
        if gi < 0:
            continue
        base = gi * 9 * nb
        for q in range(9):
            b = bins[q, i]
            if b >= 0:
                flat[base + q * nb + b] += 1


@njit(**_OPTS)
def _count2d_block(c, k, a, b, edges_a, edges_b, counts, bins):
    """Add the block's 2-D counts of coefficient ``a`` (rows) vs ``b`` to ``counts``
    (``bins``: ``(2, >= k)`` scratch)."""
    _bin_values(c[a], k, edges_a, bins[0])
    _bin_values(c[b], k, edges_b, bins[1])
    for i in range(k):
        p = bins[0, i]
        q = bins[1, i]
        if p >= 0 and q >= 0:
            counts[p, q] += 1


@njit(**_OPTS)
def hist(x, ids, lookup, mean, comps, edges, counts):
    """Add per-group, per-component histogram counts to ``counts`` (G, 9, nb) int64.

    Per block: scale, centre and project into float64 coefficients, then bin and count
    them (:func:`_count_block`; np.histogram's rule, as :func:`_bin_values`: bin j holds
    ``edges[j] <= v < edges[j + 1]``, the last bin also ``hi``; values outside and NaN are
    dropped).
    """
    m = x.shape[0]
    size = counts.size
    flat = np.zeros(size, np.int64)
    t, peak, g, d, c, _, src = _scratch()
    bins, _ = _bin_scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, lookup, t, peak, g, src)
        _centre_project(t, k, mean, comps, d, c)
        _count_block(c, k, g, edges, flat, bins)
    out = counts.reshape(-1)
    for p in range(size):
        out[p] += flat[p]


@njit(**_OPTS)
def hist2d(x, ids, mean, comps, a, b, edges_a, edges_b, counts):
    """Add the 2-D histogram of coefficient ``a`` (rows) vs ``b`` (columns) to ``counts``."""
    m = x.shape[0]
    t, peak, g, d, c, none, src = _scratch()
    _, bins2 = _bin_scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g, src)
        _centre_project(t, k, mean, comps, d, c)
        _count2d_block(c, k, a, b, edges_a, edges_b, counts, bins2)


@njit(**_OPTS)
def hist_and_2d(x, ids, lookup, mean, comps, edges, counts, a, b, edges_a, edges_b,
                counts2d):
    """:func:`hist` and :func:`hist2d` (of every kept row, whatever its group code) from
    one scaling and projection of each block: the same counts as the two kernels."""
    m = x.shape[0]
    size = counts.size
    flat = np.zeros(size, np.int64)
    t, peak, g, d, c, none, src = _scratch()
    bins, bins2 = _bin_scratch()
    coded = ids.shape[0] > 0 and lookup.shape[0] > 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g, src)
        if coded:
            for i in range(k):
                g[i] = lookup[ids[src[i]]]
        _centre_project(t, k, mean, comps, d, c)
        _count_block(c, k, g, edges, flat, bins)
        _count2d_block(c, k, a, b, edges_a, edges_b, counts2d, bins2)
    out = counts.reshape(-1)
    for p in range(size):
        out[p] += flat[p]


TOP_K = 32  # rows kept per direction by moments_top


@njit(**_OPTS)
def _lowest(top, d, low, pos):
    """``low[d]`` / ``pos[d]``: the smallest kept value of direction ``d`` and its slot."""
    K = top.shape[1] - 1
    mn, ps = top[d, 0, 0], 0
    for e in range(1, K):
        if top[d, e, 0] < mn:
            mn, ps = top[d, e, 0], e
    low[d] = mn
    pos[d] = ps


@njit(**_OPTS)
def _track(c, k, src, x, top, low, pos):
    """Fold the block's coefficients into ``top`` (see :func:`moments_top`); ``low[d]`` /
    ``pos[d]``: the smallest kept value of direction ``d`` and its slot."""
    K = top.shape[1] - 1
    for d in range(18):
        q = d // 2
        sg = 1.0 if d % 2 == 0 else -1.0
        if d % 2 == 0:  # the block's largest and smallest c_q in one scan
            hi = -np.inf
            lo = np.inf
            for i in range(k):
                v = c[q, i]
                hi = v if v > hi else hi
                lo = v if v < lo else lo
        bm = hi if d % 2 == 0 else -lo
        if not bm > low[d]:  # nothing to keep: the block's best only raises theta
            if bm > top[d, K, 0]:
                top[d, K, 0] = bm
            continue
        for i in range(k):
            v = sg * c[q, i]
            if v > low[d]:
                if low[d] > top[d, K, 0]:
                    top[d, K, 0] = low[d]  # the evicted value
                s = pos[d]
                top[d, s, 0] = v
                r = src[i]
                for j in range(9):
                    top[d, s, 1 + j] = x[r, j]
                _lowest(top, d, low, pos)
            elif v > top[d, K, 0]:
                top[d, K, 0] = v


@njit(**_OPTS)
def moments_top(x, ids, s, sxx, mean, comps, top):
    """:func:`moments`, and the rows most extreme along each direction ``+-comps[q]``.

    ``top`` ``(18, K + 1, 10)`` float64, direction ``d = 2 q`` (``+c_q``) or ``2 q + 1``
    (``-c_q``) of the coefficients on ``(mean, comps)``: ``top[d, :K, 0]`` the ``K``
    largest values seen (``-inf``: empty slot) with their raw rows in ``top[d, :K, 1:]``,
    ``top[d, K, 0]`` (theta) the largest value not kept. Start from ``-inf`` everywhere.
    Returns the number of rows counted.
    """
    m = x.shape[0]
    t, peak, g, d, c, none, src = _scratch()
    bs = np.zeros(9, np.float64)
    bxx = np.zeros((9, 9), np.float64)
    low = np.empty(18, np.float64)
    pos = np.zeros(18, np.int64)
    for e in range(18):
        _lowest(top, e, low, pos)
    n = 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g, src)
        _add_moments(t, k, d, bs, bxx, s, sxx)  # d: scratch until projected
        n += k
        _centre_project(t, k, mean, comps, d, c)
        _track(c, k, src, x, top, low, pos)
    return n


@njit(**_OPTS)
def fill_runs(ids, span, runs):
    """``ids[:span] = -1``, then ``ids[off:off + n] = layer`` for each run (off, n, layer)."""
    for r in range(span):
        ids[r] = -1
    for q in range(runs.shape[0]):
        off = runs[q, 0]
        lid = runs[q, 2]
        for r in range(off, off + runs[q, 1]):
            ids[r] = lid
