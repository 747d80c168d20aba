"""Degeneration metrics of one layer (docs/method.md, section 5): pure functions.

``W`` is the ``(n, d)`` matrix of a layer's raw filters (``d = kh * kw``, 9 for 3x3);
``weight`` is the 4-D ``(c_out, c_in / groups, kh, kw)`` tensor. Everything is computed
in float64. Conventions where the method is silent:

- ``n = 0`` (no filters) gives NaN for every metric.
- ``n = 1``: the variances ``s^2 / (n - 1)`` are taken as 0, so ``H = 0``.
- ``H = 0`` when the centred filters carry no variance; "no variance" means a total centred
  sum of squares at most ``REL_TOL`` times the raw sum of squares (rounding noise of the
  mean, or of the cancellation in :func:`metrics_from_moments`, is not diversity).
- The clean entropy over the non-sparse filters is NaN when fewer than 2 are left.
- Orthogonality with ``c_out = 1`` is NaN (there is no pair of rows to compare).
"""
from __future__ import annotations

import numpy as np

# Relative size of the centred sum of squares below which a layer has no variance.
REL_TOL = 1e-12
# Eigenvalues below this share of a layer's largest one are rounding noise.
EIG_TOL = 1e-13

_LOG10_9 = float(np.log10(9.0))


def sparse_count(W, t) -> int:
    """Number of filters (rows of ``W``) whose entries all have ``|w| < t``."""
    W = np.asarray(W)
    if W.shape[0] == 0:
        return 0
    return int(np.count_nonzero((np.abs(W) < t).all(axis=1)))


def sparsity(W, eps: float = 0.01) -> float:
    """Share of sparse filters: all ``|w| < eps * max |W|``. An all-zero layer gives 1."""
    W = np.asarray(W)
    n = W.shape[0]
    if n == 0:
        return float("nan")
    peak = float(np.abs(W).max())
    if not np.isfinite(peak):
        return float("nan")
    if peak == 0.0:  # all-zero layer: every filter is (trivially) sparse
        return 1.0
    return sparse_count(W, eps * peak) / n


def entropy_from_eigenvalues(ev, ref=None) -> np.ndarray:
    """``H = -sum p log10 p`` with ``p = ev / sum(ev)`` along the last axis.

    ``ev`` are the eigenvalues of centred Gram matrices (any positive multiple of the
    variances). Negative values and values at most ``EIG_TOL`` times the largest
    (rounding) count as 0. ``H = 0`` where the sum is at
    most ``REL_TOL * ref`` (``ref``: the raw sum of squares; default: exactly 0).
    """
    ev = np.clip(np.asarray(ev, dtype=np.float64), 0.0, None)
    # eigenvalues at rounding-noise level of the largest carry no variance (their p log p
    # would be < 1e-11); dropping them makes rank-deficient layers exact
    ev = np.where(ev > EIG_TOL * ev.max(axis=-1, keepdims=True), ev, 0.0)
    total = ev.sum(axis=-1)
    limit = 0.0 if ref is None else REL_TOL * np.asarray(ref, dtype=np.float64)
    has_var = total > limit
    safe_total = np.where(has_var, total, 1.0)
    p = ev / safe_total[..., None]
    pos = p > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pos, p * np.log10(np.where(pos, p, 1.0)), 0.0)
    H = -terms.sum(axis=-1)
    H = np.where(has_var, np.clip(H, 0.0, None), 0.0)
    return np.where(np.isfinite(total), H, np.nan)


def centred_gram(W) -> np.ndarray:
    """``(W - mean_row(W))^T (W - mean_row(W))`` in float64, shape ``(d, d)``."""
    X = np.asarray(W, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    return Xc.T @ Xc


def variance_entropy(W) -> float:
    """Variance entropy of the filters ``W`` (rows): ``0 <= H <= log10 d``.

    The squared singular values of the centred ``W`` are the eigenvalues of its
    centred ``d x d`` Gram matrix, or (fewer filters than dimensions, wide kernels) the
    nonzero ones of the ``n x n`` Gram of the centred rows; the factor ``1 / (n - 1)``
    cancels in ``p``.
    """
    X = np.asarray(W, dtype=np.float64)
    n = X.shape[0]
    if n == 0:
        return float("nan")
    if n == 1:
        return 0.0 if np.isfinite(X).all() else float("nan")
    if not np.isfinite(X).all():
        return float("nan")
    if n < X.shape[1]:
        Xc = X - X.mean(axis=0)
        ev = np.linalg.eigvalsh(Xc @ Xc.T)
    else:
        ev = np.linalg.eigvalsh(centred_gram(X))
    return float(entropy_from_eigenvalues(ev, ref=np.einsum("ij,ij->", X, X)))


def variance_entropy_clean(W, eps: float = 0.01) -> float:
    """Variance entropy of the non-sparse filters only (NaN if fewer than 2 remain)."""
    X = np.asarray(W)
    if X.shape[0] == 0:
        return float("nan")
    peak = float(np.abs(X).max())
    if not np.isfinite(peak):
        return float("nan")
    keep = ~(np.abs(X) < eps * peak).all(axis=1) if peak > 0 else np.zeros(X.shape[0], bool)
    k = np.count_nonzero(keep)
    if k < 2:
        return float("nan")
    return variance_entropy(X if k == len(X) else X[keep])


def randomness_threshold(n):
    """The published randomness threshold ``TH(n)`` of 3x3 layers with ``n`` filters.

    ``TH(n) = 1.2618047 / (1 + exp(-0.88767525 (log2 n - 2.30436435))) - 0.31050834``.
    It is negative for ``n <= 2``, where ``H`` is 0 for any weights.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        th = 1.2618047 / (1.0 + np.exp(-0.88767525 * (np.log2(n) - 2.30436435))) - 0.31050834
    return float(th) if th.ndim == 0 else th


def entropy_norm(H, n):
    """``H / TH(n)`` (3x3 filters; :func:`randomness_threshold`), NaN where ``TH(n) <= 0``
    (``n <= 2``) or ``H`` is NaN; arrays broadcast."""
    H = np.asarray(H, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        th = np.asarray(randomness_threshold(np.maximum(n, 1.0)), np.float64)
        out = np.where((n >= 1) & (th > 0), H / np.where(th > 0, th, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def variance_entropy_clean_norm(W, eps: float = 0.01) -> float:
    """``H_clean / TH(n_clean)``: the clean variance entropy over the randomness threshold
    of the number of non-sparse filters, torchconvquality's ``variance_entropy_clean_norm``
    (the authors' library normalises each entropy by ``TH`` of the filters it is taken
    over). ``TH`` is the published 3x3 curve: NaN for other kernels, and where
    ``n_clean <= 2`` (``TH <= 0``) or the clean entropy is NaN."""
    X = np.asarray(W)
    if X.ndim != 2 or X.shape[1] != 9 or X.shape[0] == 0:
        return float("nan")
    peak = float(np.abs(X).max())
    if not np.isfinite(peak):
        return float("nan")
    n_clean = X.shape[0] - (X.shape[0] if peak == 0 else sparse_count(X, eps * peak))
    return entropy_norm(variance_entropy_clean(X, eps), n_clean)


GRAM_BLOCK_ELEMENTS = 1 << 23  # 64 MB of float64 per block of Gram rows
NORM_EPS = 1e-12  # torch.nn.functional.normalize's default: x / max(||x||, 1e-12)


def orthogonality(weight) -> float:
    """``1 - sum |G - I| / (c_out (c_out - 1))`` over the L2-normalised output-channel rows.

    Rows are ``weight.reshape(c_out, -1)``, normalised as ``torch.nn.functional.normalize``
    (the convention of torchconvquality, method.md section 5): ``x / max(||x||, 1e-12)``.
    Zero and numerically-zero rows (e.g. of norm 1e-34) stay (near) zero: their diagonal
    entry of ``G`` is about 0 and counts about 1 in the sum. NaN for ``c_out < 2``.
    """
    w = np.asarray(weight)
    c = w.shape[0]
    if c < 2:
        return float("nan")
    R = w.reshape(c, -1).astype(np.float64)
    if not np.isfinite(R).all():
        return float("nan")
    norms = np.sqrt(np.einsum("ij,ij->i", R, R))
    R /= np.maximum(norms, NORM_EPS)[:, None]
    # G = R R^T in blocks of rows, so memory stays bounded for very wide layers
    block = max(1, min(c, GRAM_BLOCK_ELEMENTS // c))
    total = 0.0
    for i0 in range(0, c, block):
        G = R[i0:i0 + block] @ R.T
        k = G.shape[0]
        G[np.arange(k), i0 + np.arange(k)] -= 1.0
        total += float(np.abs(G).sum())
    return float(1.0 - total / (c * (c - 1)))


def metrics_from_moments(n, s, sxx, n_sparse, sparse_s=None, sparse_sxx=None, n_clean=None):
    """Entropy and sparsity from streamed per-layer moments; batched over leading axes.

    ``n`` filters, their sum ``s`` ``(..., d)`` and raw second moment ``sxx = W^T W``
    ``(..., d, d)``, and ``n_sparse`` (see :func:`sparse_count` with the layer's
    ``t = eps * max|W|``; pass ``n_sparse = n`` for an all-zero layer). With the sum and
    second moment of the sparse filters (``sparse_s``, ``sparse_sxx``) the clean entropy is
    computed too. Returns a dict of float arrays: ``sparsity``, ``variance_entropy`` and
    ``variance_entropy_clean`` (NaN when not computable), same conventions as the direct
    functions.
    """
    n = np.asarray(n, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    sxx = np.asarray(sxx, dtype=np.float64)
    n_sparse = np.asarray(n_sparse, dtype=np.float64)
    H = _entropy_from_moments(n, s, sxx)
    with np.errstate(invalid="ignore", divide="ignore"):
        S = np.where(n > 0, n_sparse / np.where(n > 0, n, 1.0), np.nan)
    out = {"sparsity": S, "variance_entropy": H}
    if sparse_s is not None and sparse_sxx is not None:
        m = n - n_sparse
        Hc = _entropy_from_moments(m, s - np.asarray(sparse_s, np.float64),
                                   sxx - np.asarray(sparse_sxx, np.float64))
        out["variance_entropy_clean"] = np.where(m >= 2, Hc, np.nan)
    else:
        out["variance_entropy_clean"] = np.full(n.shape, np.nan)
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def _entropy_from_moments(n, s, sxx):
    safe_n = np.where(n > 0, n, 1.0)
    mean = s / safe_n[..., None]
    G = sxx - safe_n[..., None, None] * (mean[..., :, None] * mean[..., None, :])
    G = 0.5 * (G + np.swapaxes(G, -1, -2))
    finite = np.isfinite(G).all(axis=(-1, -2))
    ev = np.linalg.eigvalsh(np.where(finite[..., None, None], G, 0.0))
    ref = np.trace(sxx, axis1=-2, axis2=-1)
    H = entropy_from_eigenvalues(ev, ref=ref)
    H = np.where(finite, H, np.nan)
    H = np.where(n == 1, 0.0, H)
    return np.where(n > 0, H, np.nan)


__all__ = ["sparse_count", "sparsity", "variance_entropy",
           "variance_entropy_clean", "randomness_threshold", "orthogonality",
           "entropy_from_eigenvalues", "centred_gram", "metrics_from_moments", "REL_TOL",
           "entropy_norm", "variance_entropy_clean_norm",
           "NORM_EPS"]
