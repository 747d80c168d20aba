"""The stored metrics of one layer from its raw weight (method.md, section 5): one function
shared by ``filterdb check`` (a model file) and ingest (layers whose filters the database
does not keep, i.e. kernels other than 3x3), so both assess the same numbers. The metrics
are those of the registry (:mod:`filterdb.kernels.metrics`)."""
from __future__ import annotations

from .metrics import layer_values


def weight_metrics(weight, eps: float = 0.01, orthogonality: bool = True) -> dict:
    """Every registry metric computed from the weight (``source="weight"``: sparsity, the
    entropies, orthogonality, ...) and ``n_sparse`` of a ``(c_out, c_in / groups, kh, kw)``
    weight (floats; NaN where not applicable: 1x1 kernels have no entropy or sparsity,
    non-finite weights no metric; ``orthogonality=False`` skips the costly ones)."""
    return layer_values(weight, eps, orthogonality)


__all__ = ["weight_metrics"]
