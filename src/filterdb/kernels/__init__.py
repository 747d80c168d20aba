"""Pure numerical kernels of the method: arrays in, arrays out.

Scaling and PCA (:mod:`.pca`), coefficient histograms and KDE (:mod:`.hist`), drift and
depth bins (:mod:`.drift`). The numba inner loops live in :mod:`._numba`.
"""
from .drift import (DEPTH_EDGES, depth_bin, depth_bin_labels, depth_edges, drift, drift_matrix,
                    drift_to_reference, resolve_weights, symmetric_kl)
from .hist import (EPS, FLOOR, bin_edges, density, hist2d_chunk, hist_chunk, kde_bandwidth,
                   kde_from_hist, probabilities)
from .pca import (PCA, PRECISIONS, at_precision, coeff_range_chunk, coefficients, fit_pca,
                  fix_signs, moments_chunk, notebook_float16, pca_from_moments, scale_filters,
                  shared_range)

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
