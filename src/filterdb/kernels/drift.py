"""Drift between coefficient distributions, and depth bins (docs/method.md, section 4).

``D(P, Q) = sum_i w_i * (KL(P_i || Q_i) + KL(Q_i || P_i))`` with natural logarithms, over
the 9 components i; ``P`` and ``Q`` are bin probabilities (see ``hist.probabilities``).
"""
from __future__ import annotations

import numpy as np

from ..errors import FilterDBError

N_COMPONENTS = 9


def resolve_weights(weights="evr", evr=None) -> np.ndarray:
    """Component weights: ``"evr"`` (the global explained variance ratio, needs ``evr``),
    ``"equal"`` (1/9 each), or an explicit array of 9."""
    if isinstance(weights, str):
        if weights == "evr":
            if evr is None:
                raise FilterDBError("weights 'evr' need the PCA's explained variance ratio")
            w = np.asarray(evr, dtype=np.float64)
        elif weights == "equal":
            w = np.full(N_COMPONENTS, 1.0 / N_COMPONENTS)
        else:
            raise FilterDBError(f"unknown drift weights {weights!r}: use 'evr', 'equal' "
                                "or 9 numbers")
    else:
        w = np.asarray(weights, dtype=np.float64)
    if w.shape != (N_COMPONENTS,) or not np.isfinite(w).all() or (w < 0).any():
        raise FilterDBError(f"drift weights must be 9 finite non-negative numbers, got {w!r}")
    return w


def _check(p, name):
    p = np.asarray(p, dtype=np.float64)
    if (p <= 0).any():
        raise FilterDBError(f"{name} has empty bins: turn the histograms into probabilities "
                            "first (hist.probabilities)")
    return p


def symmetric_kl(P, Q) -> np.ndarray:
    """``KL(P || Q) + KL(Q || P)`` along the last axis, as ``sum (p - q)(log p - log q)``."""
    P, Q = _check(P, "P"), _check(Q, "Q")
    return ((P - Q) * (np.log(P) - np.log(Q))).sum(axis=-1)


def drift(P, Q, weights="evr", evr=None) -> float:
    """Drift between two groups' bin probabilities ``(9, bins)``."""
    return float(np.dot(resolve_weights(weights, evr), symmetric_kl(P, Q)))


def drift_to_reference(probs, ref, weights="evr", evr=None) -> np.ndarray:
    """Drift of each group ``(G, 9, bins)`` against one reference ``(9, bins)`` -> ``(G,)``."""
    return symmetric_kl(probs, np.asarray(ref)[None]) @ resolve_weights(weights, evr)


def drift_matrix(probs, weights="evr", evr=None, max_bytes: int = 1 << 25) -> np.ndarray:
    """Pairwise drift ``(G, G)`` of bin probabilities ``(G, 9, bins)``.

    Symmetric, exactly zero on the diagonal. Computed a block of rows at a time, each
    block's temporaries about ``max_bytes``. ``evr`` is needed for ``weights="evr"``.
    """
    P = _check(probs, "probabilities")
    if P.ndim != 3 or P.shape[1] != N_COMPONENTS:
        raise FilterDBError(f"probabilities must be (groups, 9, bins), got {P.shape}")
    w = resolve_weights(weights, evr)
    L = np.log(P)
    G = len(P)
    D = np.zeros((G, G))
    block = max(1, int(max_bytes // max(1, P[0].size * G * 8)))
    for a0 in range(0, G, block):
        a1 = min(a0 + block, G)
        sym = ((P[a0:a1, None] - P[None]) * (L[a0:a1, None] - L[None])).sum(axis=-1)
        D[a0:a1] = sym @ w
    D = (D + D.T) / 2  # the two halves may round differently in the matrix products
    np.fill_diagonal(D, 0.0)
    return D


# Depth bins: the published notebook's pd.cut(x, np.arange(0, 1.1, 0.1), include_lowest=True),
# with those float edges unrounded (0.30000000000000004, 0.6000000000000001, ...):
# [e0, e1], (e1, e2], ..., (e9, e10].
DEPTH_EDGES = np.arange(0, 1.0 + 0.10, 0.10)


def mean_drift(matrix) -> np.ndarray:
    """Mean drift of each group to the others: the off-diagonal mean of its row of a drift
    matrix (``(G, G)``; zeros for one group). It orders the groups of the heat maps.

    >>> mean_drift([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]]).round(3).tolist()
    [0.3, 0.4, 0.5]
    """
    m = np.asarray(matrix, dtype=float)
    G = len(m)
    if G < 2:
        return np.zeros(G)
    return (m.sum(axis=1) - np.diag(m)) / (G - 1)


def depth_edges(n_bins: int = 10) -> np.ndarray:
    """The ``n_bins + 1`` edges: ``np.arange(0, 1 + 1 / n_bins, 1 / n_bins)`` as the
    notebook builds them (10 bins: exactly its edges)."""
    if n_bins == 10:
        return DEPTH_EDGES.copy()
    e = np.arange(0, 1.0 + 1.0 / n_bins, 1.0 / n_bins)
    return e[:n_bins + 1]


def depth_bin(conv_depth_norm, n_bins: int = 10) -> np.ndarray:
    """Depth bin 0..n_bins-1 of ``conv_depth_norm`` in [0, 1]: the interval
    ``(e[j], e[j + 1]]`` holding it (the first bin including 0), as
    ``pd.cut(x, edges, include_lowest=True)`` assigns it."""
    x = np.asarray(conv_depth_norm, dtype=np.float64)
    e = depth_edges(n_bins)
    if not np.isfinite(x).all() or (x < e[0]).any() or (x > e[-1]).any():
        raise FilterDBError(f"conv_depth_norm must lie in [0, {e[-1]!r}]")
    return np.clip(np.searchsorted(e, x, side="left") - 1, 0, n_bins - 1).astype(np.int64)


def depth_bin_labels(n_bins: int = 10) -> list[str]:
    """``["[0.0, 0.1]", "(0.1, 0.2]", ...]``."""
    e = [f"{v:.1f}" if float(v * 10).is_integer() else f"{v:g}"
         for v in (j / n_bins for j in range(n_bins + 1))]
    return [("[" if j == 0 else "(") + f"{e[j]}, {e[j + 1]}]" for j in range(n_bins)]
