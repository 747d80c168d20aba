"""Small statistics for the analyses: multiple-comparison correction of p-values."""
from __future__ import annotations

import numpy as np


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    With ``m`` p-values sorted ascending, ``p_(i)`` is adjusted to
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted value is at most
    alpha controls the family-wise error rate at alpha. NaNs are left out of ``m`` and stay
    NaN.

    >>> holm([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
    [0.04, 0.09, 0.09, 0.5]
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if not m:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * q[order])
    adj = np.maximum.accumulate(adj)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out
