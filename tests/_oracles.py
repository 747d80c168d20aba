"""Test oracles: the method's quantities computed by hand from their definitions
(docs/method.md sections 4-5; paper sections 3-4), with numpy / scipy only and no filterdb code.

Every test that checks a value against "the definition" imports it from here, so there is one
independent reference per quantity.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.stats

# --- layer health (method.md section 5) ----------------------------------------------------

def variance_entropy(W) -> float:
    """H: -sum p log10 p of the variances s^2 / (n - 1) of the centred filters (numpy SVD);
    0 for fewer than two filters or no variance."""
    W = np.asarray(W, dtype=np.float64)
    W = W.reshape(len(W), -1)
    n = W.shape[0]
    if n < 2:
        return 0.0
    s = np.linalg.svd(W - W.mean(axis=0), compute_uv=False)
    var = s ** 2 / (n - 1)
    if var.sum() == 0:
        return 0.0
    p = var / var.sum()
    return float(-sum(x * math.log10(x) for x in p if x > 0))


def sparsity(W, eps: float = 0.01) -> float:
    """S: share of filters whose entries are all below eps * max |W| (1 for an all-zero layer)."""
    W = np.asarray(W, dtype=np.float64)
    peak = np.abs(W).max()
    if peak == 0:
        return 1.0
    t = eps * peak
    return sum(all(abs(v) < t for v in row) for row in W) / W.shape[0]


def variance_entropy_clean(W, eps: float = 0.01) -> float:
    """H of the non-sparse filters (NaN when fewer than two remain)."""
    W = np.asarray(W, dtype=np.float64)
    if np.abs(W).max() == 0:
        return float("nan")
    t = eps * np.abs(W).max()
    keep = [row for row in W if not all(abs(v) < t for v in row)]
    return variance_entropy(np.array(keep)) if len(keep) >= 2 else float("nan")


def randomness_threshold(n) -> float:
    """TH(n), the published logistic fit in log2 n, typed in from method.md."""
    return 1.2618047 / (1 + math.exp(-0.88767525 * (math.log2(n) - 2.30436435))) - 0.31050834


def orthogonality(w) -> float:
    """Rows (c_out, -1) normalised as torch.nn.functional.normalize (x / max(||x||, 1e-12)),
    then 1 - sum |G - I| / (c (c - 1)), with an explicit loop."""
    c = w.shape[0]
    R = np.asarray(w, dtype=np.float64).reshape(c, -1)
    N = np.zeros_like(R)
    for i in range(c):
        N[i] = R[i] / max(np.linalg.norm(R[i]), 1e-12)
    G = N @ N.T
    return float(1 - np.abs(G - np.eye(c)).sum() / (c * (c - 1)))


# --- drift (method.md section 4) -----------------------------------------------------------

def scale(X) -> np.ndarray:
    """Each filter divided by its peak |value| (float32; all-zero filters stay zero)."""
    X = np.asarray(X, np.float32)
    peak = np.abs(X).max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        S = X / peak
    S[(peak == 0).ravel()] = 0
    return S


def pca(X):
    """``(mean, components, variances, explained variance ratio)``: eigen-decomposition of
    np.cov of the scaled filters, sorted by variance."""
    S = scale(X).astype(np.float64)
    cov = np.cov(S, rowvar=False)
    var, vec = np.linalg.eigh(cov)
    order = np.argsort(var)[::-1]
    return S.mean(0), vec[:, order].T, var[order], var[order] / var.sum()


def symmetric_kl(p, q) -> float:
    """KL(p || q) + KL(q || p) of two histograms (scipy.stats.entropy normalises them)."""
    return float(scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p))


def drift(P, Q, w) -> float:
    """sum_i w_i (KL(P_i || Q_i) + KL(Q_i || P_i)) over the coefficient histograms (nine for
    3x3 filters; one weight per histogram)."""
    return sum(w[i] * symmetric_kl(P[i], Q[i]) for i in range(len(w)))
