"""The stored metrics of one layer from its raw weight (method.md, section 5): one function
shared by ``filterdb check`` (a model file) and ingest (layers whose filters the database
does not keep, i.e. kernels other than 3x3), so both assess the same numbers."""
from __future__ import annotations

import numpy as np

from . import health as K

NAN = float("nan")


def weight_metrics(weight, eps: float = 0.01, orthogonality: bool = True) -> dict:
    """``{sparsity, variance_entropy, variance_entropy_clean, orthogonality, n_sparse}`` of a
    ``(c_out, c_in / groups, kh, kw)`` weight (floats; NaN where not applicable: 1x1
    kernels have no entropy or sparsity, non-finite weights no metric)."""
    w = np.asarray(weight)
    c_out, c_in_g, kh, kw = w.shape
    n = c_out * c_in_g
    d = kh * kw
    finite = bool(np.isfinite(w).all())
    out = {"sparsity": NAN, "variance_entropy": NAN, "variance_entropy_clean": NAN,
           "orthogonality": NAN, "n_sparse": NAN}
    if not finite:
        return out
    if d > 1 and n > 0:
        W = w.reshape(n, d)
        peak = float(np.abs(W).max())
        out["sparsity"] = K.sparsity(W, eps)
        out["n_sparse"] = float(n if peak == 0 else K.sparse_count(W, eps * peak))
        out["variance_entropy"] = K.variance_entropy(W)
        # no sparse filter: the clean entropy is H itself (and costs a second Gram)
        out["variance_entropy_clean"] = (out["variance_entropy"] if out["n_sparse"] == 0
                                         and n >= 2 else K.variance_entropy_clean(W, eps))
    if orthogonality:
        out["orthogonality"] = K.orthogonality(w)
    return out


__all__ = ["weight_metrics"]
