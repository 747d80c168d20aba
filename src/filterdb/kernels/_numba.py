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

BLOCK = 512  # rows per block


@njit(**_OPTS)
def _load(x, r0, r1, ids, lookup, t, peak, g):
    """Scaled, transposed copy of the kept rows ``r0:r1`` into ``t`` (9, BLOCK) float32.

    ``g`` receives the group code of each kept row. Returns the number of kept rows.
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
    """``c[q, i] = sum_j (t[j, i] - mean[j]) * comps[q, j]`` for the first ``k`` rows."""
    for j in range(9):
        mj = mean[j]
        for i in range(k):
            d[j, i] = np.float64(t[j, i]) - mj
    for q in range(9):
        for i in range(k):
            c[q, i] = 0.0
        for j in range(9):
            w = comps[q, j]
            for i in range(k):
                c[q, i] += d[j, i] * w


@njit(fastmath={"reassoc", "nsz"}, **_OPTS)
def _accumulate(t, k, s, sxx):
    """Add the block's column sums and upper-triangle products (float64) to s / sxx."""
    for a in range(9):
        acc = 0.0
        for i in range(k):
            acc += np.float64(t[a, i])
        s[a] += acc
        for b in range(a, 9):
            acc = 0.0
            for i in range(k):
                acc += np.float64(t[a, i]) * np.float64(t[b, i])
            sxx[a, b] += acc


@njit(**_OPTS)
def _scratch():
    """Per-call block buffers: scaled rows ``t``, row peaks, group codes, centred rows
    ``d`` and coefficients ``c``, and an empty id array (no selection / no lookup)."""
    return (np.empty((9, BLOCK), np.float32), np.empty(BLOCK, np.float32),
            np.empty(BLOCK, np.int64), np.empty((9, BLOCK), np.float64),
            np.empty((9, BLOCK), np.float64), np.empty(0, np.int64))


@njit(**_OPTS)
def scale_rows(x, out):
    """``out[r] = x[r] / max|x[r]|`` (float32); all-zero rows stay zero."""
    m = x.shape[0]
    t, peak, g, _, _, none = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), none, none, t, peak, g)
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
    t, peak, g, _, _, none = _scratch()
    bs = np.zeros(9, np.float64)
    bxx = np.zeros((9, 9), np.float64)
    n = 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g)
        bs[:] = 0.0
        bxx[:, :] = 0.0
        _accumulate(t, k, bs, bxx)
        n += k
        for a in range(9):
            s[a] += bs[a]
            for b in range(a, 9):
                sxx[a, b] += bxx[a, b]
    return n


@njit(**_OPTS)
def coefficients(x, mean, comps, out):
    """PCA coefficients of every row into ``out`` (m, 9) float64."""
    m = x.shape[0]
    t, peak, g, d, c, none = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), none, none, t, peak, g)
        _centre_project(t, k, mean, comps, d, c)
        for i in range(k):
            for q in range(9):
                out[r0 + i, q] = c[q, i]


@njit(**_OPTS)
def coeff_range(x, ids, mean, comps, cmin, cmax):
    """Fold the per-component min / max of the kept rows' coefficients into cmin / cmax."""
    m = x.shape[0]
    t, peak, g, d, c, none = _scratch()
    n = 0
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g)
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
def _bin_index(v, edges, nb, lo, hi, fac):
    """Bin of ``v`` (np.histogram's rule), or -1 outside ``[lo, hi]`` (and for NaN).

    Bin j holds ``edges[j] <= v < edges[j + 1]``; the last bin also holds ``hi``. The
    arithmetic estimate is corrected against ``edges`` as np.histogram does.
    """
    if not (v >= lo and v <= hi):
        return -1
    b = int((v - lo) * fac)
    if b >= nb:
        b = nb - 1
    if v < edges[b]:
        b -= 1
    if v >= edges[b + 1] and b != nb - 1:
        b += 1
    return b


@njit(**_OPTS)
def hist(x, ids, lookup, mean, comps, edges, counts):
    """Add per-group, per-component histogram counts to ``counts`` (G, 9, nb) int64.

    Per block: scale, centre and project into float64 coefficients, then bin and count
    each one in the same loop (np.histogram's rule, as :func:`_bin_index`: bin j holds
    ``edges[j] <= v < edges[j + 1]``, the last bin also ``hi``; values outside and NaN are
    dropped). One loop instead of a binning loop and a counting loop measured 1.4x faster
    (22 vs 15.7 M filters/s on one thread, 2026-12-02), with the same counts.
    """
    m = x.shape[0]
    nb = edges.shape[0] - 1
    lo = edges[0]
    hi = edges[nb]
    fac = nb / (hi - lo)
    n_groups = counts.shape[0]
    size = n_groups * 9 * nb
    flat = np.zeros(size, np.int64)
    t, peak, g, d, c, _ = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, lookup, t, peak, g)
        _centre_project(t, k, mean, comps, d, c)
        for q in range(9):
            for i in range(k):
                v = c[q, i]
                if v >= lo and v <= hi:
                    b = int((v - lo) * fac)
                    if b >= nb:
                        b = nb - 1
                    if v < edges[b]:
                        b -= 1
                    elif b != nb - 1 and v >= edges[b + 1]:
                        b += 1
                    flat[(g[i] * 9 + q) * nb + b] += 1
    out = counts.reshape(-1)
    for p in range(size):
        out[p] += flat[p]


@njit(**_OPTS)
def hist2d(x, ids, mean, comps, a, b, edges_a, edges_b, counts):
    """Add the 2-D histogram of coefficient ``a`` (rows) vs ``b`` (columns) to ``counts``."""
    m = x.shape[0]
    na = edges_a.shape[0] - 1
    nbb = edges_b.shape[0] - 1
    lo_a, hi_a = edges_a[0], edges_a[na]
    lo_b, hi_b = edges_b[0], edges_b[nbb]
    fac_a = na / (hi_a - lo_a)
    fac_b = nbb / (hi_b - lo_b)
    t, peak, g, d, c, none = _scratch()
    for r0 in range(0, m, BLOCK):
        k = _load(x, r0, min(r0 + BLOCK, m), ids, none, t, peak, g)
        _centre_project(t, k, mean, comps, d, c)
        for i in range(k):
            p = _bin_index(c[a, i], edges_a, na, lo_a, hi_a, fac_a)
            if p < 0:
                continue
            q = _bin_index(c[b, i], edges_b, nbb, lo_b, hi_b, fac_b)
            if q < 0:
                continue
            counts[p, q] += 1


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
