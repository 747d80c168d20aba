"""Pure numerical kernels of the method: arrays in, arrays out.

Scaling and PCA (:mod:`.pca`), coefficient histograms and KDE (:mod:`.hist`), drift and
depth bins (:mod:`.drift`). The numba inner loops live in :mod:`._numba`.
"""
import importlib

# numpy only; eager, so that the name ``drift`` is the function, not the submodule
from .drift import (
    DEPTH_EDGES,
    depth_bin,
    depth_bin_labels,
    depth_edges,
    drift,
    drift_matrix,
    drift_to_reference,
    resolve_weights,
    symmetric_kl,
)

# name -> submodule using numba; imported on first access (PEP 562), so that the health
# kernels do not pull in numba (the drift loops' compiler, ~0.5 s): start-up time
_WHERE = {
    **dict.fromkeys(("EPS", "FLOOR", "bin_edges", "density", "hist2d_chunk", "hist_chunk",
                     "kde_bandwidth", "kde_from_hist", "probabilities"), "hist"),
    **dict.fromkeys(("PCA", "PRECISIONS", "at_precision", "coeff_range_chunk", "coefficients",
                     "fit_pca", "fix_signs", "moments_chunk", "notebook_float16",
                     "pca_from_moments", "scale_filters", "shared_range"), "pca"),
}


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PCA", "scale_filters", "moments_chunk", "pca_from_moments", "fit_pca", "fix_signs",
    "coefficients", "coeff_range_chunk", "shared_range", "PRECISIONS", "notebook_float16",
    "at_precision",
    "EPS", "FLOOR", "bin_edges", "hist_chunk", "hist2d_chunk", "density", "probabilities",
    "kde_bandwidth",
    "kde_from_hist",
    "symmetric_kl", "drift", "drift_matrix", "drift_to_reference", "resolve_weights",
    "depth_bin", "depth_bin_labels", "depth_edges", "DEPTH_EDGES",
]
