"""The exact shared coefficient range from the PCA pass, without a pass of its own
(method.md, sections 3-4; issue 21).

The shared range is the minimum and maximum of every coefficient of every filter on the
PCA basis, which is known only once the PCA pass is over. This module finds it inside
that pass, and proves the result:

1. a *provisional* basis ``(m_p, P)``, the PCA of a sample of the selection, is fixed
   before the pass;
2. during the pass, :func:`filterdb.kernels._numba.moments_top` keeps, along each of the
   18 directions ``+-c_p`` of the provisional coefficients ``c_p(v) = (v - m_p) . P_p``,
   the ``K`` most extreme rows and ``theta``, the largest value it did not keep
   (:func:`merge_top` combines tasks);
3. :func:`range_from_top` computes the final coefficients of the kept rows, and checks
   that no other row can reach beyond them. With ``A = F P^T`` (``F``: the final
   components), ``c_q(v) = sum_p A_qp c_p(v) + (m_p - m) . F_q`` exactly, so a row not
   kept along direction ``(p, sign A_qp)`` has
   ``c_q(v) <= |A_qp| theta + R_qp + (m_p - m) . F_q``, where ``R_qp`` bounds the other
   terms: ``sum_{p' != p} |A_qp'| max|c_p'|``, or, as the scaled filters have
   ``|v_j| <= 1``, ``||w||_1 + |m_p . w|`` with ``w = F_q - A_qp P_p``. If for every
   component and side some ``p`` keeps the bound within the kept rows' extreme, that
   extreme is the range, bit for bit the value of the range pass (the same float64
   kernel on the same rows). Otherwise the caller runs the range pass.

The check fails only when the provisional basis is far from the final one (a poor
sample, near-equal eigenvalues) *and* many rows crowd the extremes; the result is never
approximate.
"""
from __future__ import annotations

import numpy as np

from . import _numba
from .pca import _ids, mirror_upper, task_filters

TOP_K = _numba.TOP_K
_NONE = np.empty(0, np.int64)
SLACK = 1e-9  # absolute, on coefficients of size <= 4: far above float64 rounding


def empty_top(k: int = TOP_K) -> np.ndarray:
    """An empty ``(18, k + 1, 10)`` record: every value and theta ``-inf``."""
    top = np.zeros((18, k + 1, 10), np.float64)
    top[:, :, 0] = -np.inf
    return top


def merge_top(a, b, out=None) -> np.ndarray:
    """Two records of the same ``k`` as one: per direction the ``k`` largest values (and
    their rows), theta the largest of both thetas and the values dropped here."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = a.shape[1] - 1
    both = np.concatenate([a[:, :k], b[:, :k]], axis=1)  # (18, 2k, 10)
    order = np.argsort(-both[:, :, 0], axis=1, kind="stable")
    both = np.take_along_axis(both, order[:, :, None], axis=1)
    theta = np.maximum(np.maximum(a[:, k, 0], b[:, k, 0]), both[:, k:, 0].max(axis=1))
    res = np.empty_like(a) if out is None else out  # ``out`` may be ``a``: read above
    res[:, :k] = both[:, :k]
    res[:, k] = 0.0
    res[:, k, 0] = theta
    return res


def moments_top_task(filters, layer_ids, mean, components, precision="float32", k=TOP_K):
    """The engine kernel: :func:`filterdb.kernels.pca.moments_task`'s ``n``, ``s``,
    ``sxx`` and the ``top`` record on the provisional ``(mean, components)``."""
    x = task_filters(filters, layer_ids, precision)
    s = np.zeros(9)
    sxx = np.zeros((9, 9))
    top = empty_top(k)
    n = _numba.moments_top(x, _ids(layer_ids, len(x)), s, sxx,
                           np.ascontiguousarray(mean, np.float64),
                           np.ascontiguousarray(components, np.float64), top)
    return {"n": np.array(n, dtype=np.int64), "s": s, "sxx": mirror_upper(sxx), "top": top}


moments_top_task.reduce = {"top": "top"}


def kept_rows(top) -> np.ndarray:
    """The distinct rows a record kept, ``(n, 9)`` float32 (as the kernels saw them)."""
    top = np.asarray(top)
    k = top.shape[1] - 1
    vals = top[:, :k, 0].reshape(-1)
    rows = top[:, :k, 1:].reshape(-1, 9)[np.isfinite(vals)].astype(np.float32)
    return np.unique(rows, axis=0) if len(rows) else rows


def range_from_top(top, prov_mean, prov_components, mean, components):
    """The exact shared range ``(lo, hi)`` on ``(mean, components)`` from a record taken
    on the provisional basis, or None when the check fails (module docstring)."""
    top = np.asarray(top, np.float64)
    k = top.shape[1] - 1
    rows = kept_rows(top)
    if len(rows) == 0:
        return None
    F = np.ascontiguousarray(components, np.float64)
    m = np.ascontiguousarray(mean, np.float64)
    P = np.asarray(prov_components, np.float64)
    mp = np.asarray(prov_mean, np.float64)
    cmin, cmax = np.full(9, np.inf), np.full(9, -np.inf)
    _numba.coeff_range(rows, _NONE, m, F, cmin, cmax)  # the range pass's own kernel
    lo, hi = float(cmin.min()), float(cmax.max())
    best = top[:, 0, 0]  # the largest value along each direction: all rows
    theta = top[:, k, 0]
    B = np.maximum(best[0::2], best[1::2])  # max |c_p| over all rows
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(B).all()):
        return None
    A = F @ P.T
    delta = (mp - m) @ F.T
    for q in range(9):
        for side, target in ((1.0, hi), (-1.0, -lo)):
            a = side * A[q]
            ok = False
            for p in range(9):
                if a[p] == 0.0:
                    continue
                th = theta[2 * p if a[p] > 0 else 2 * p + 1]
                if th == -np.inf:  # nothing left out along this direction
                    ok = True
                    break
                others = np.abs(np.delete(A[q], p))
                w = F[q] - A[q, p] * P[p]
                rest = min(float(others @ np.delete(B, p)),
                           float(np.abs(w).sum() + abs(mp @ w)))
                if abs(a[p]) * th + rest + side * delta[q] + SLACK <= target:
                    ok = True
                    break
            if not ok:
                return None
    return lo, hi


__all__ = ["TOP_K", "empty_top", "merge_top", "moments_top_task", "kept_rows",
           "range_from_top"]
