"""Figures of filterdb's analyses (matplotlib, Agg); each function returns a Figure.

Inputs are plain arrays and DataFrames, so the figures do not depend on the store.
:func:`save` writes a figure as PNG and SVG.
"""
from __future__ import annotations

from ._style import depth_bin, depth_bin_labels, save, size_label
from .drift import drift_boxplot, drift_heatmap, drift_order, mean_drift, upper_triangle
from .filters import filter_mosaic, first_layer_filters, scale_by_peak
from .health import (
                     binned_median,
                     health_by_depth,
                     health_category,
                     health_scatter,
                     model_health_vs_population,
)
from .noise import drift_vs_noise
from .pca import cumulative_evr, density_c0_c1, eigen_images, mean_filter, ridge_plot, ridge_scale

__all__ = [
    "save", "size_label", "depth_bin", "depth_bin_labels",
    "eigen_images", "mean_filter", "cumulative_evr", "ridge_plot", "ridge_scale", "density_c0_c1",
    "drift_heatmap", "drift_boxplot", "drift_vs_noise", "drift_order", "mean_drift", "upper_triangle",
    "health_scatter", "health_category", "health_by_depth", "binned_median",
    "model_health_vs_population",
    "first_layer_filters", "filter_mosaic", "scale_by_peak",
]
