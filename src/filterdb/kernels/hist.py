"""Coefficient histograms, their normalisation, and KDE curves from binned data
(docs/method.md, section 4). Pure functions: arrays in, arrays out."""
from __future__ import annotations

import numpy as np

from ..errors import FilterDBError
from . import _numba
from .pca import PCA, _ids, _pca_arrays, at_precision, task_filters

EPS = float(np.finfo(np.float32).eps)


def bin_edges(lo: float, hi: float, bins: int = 70) -> np.ndarray:
    """The ``bins + 1`` edges np.histogram uses for ``range=(lo, hi)`` (lo == hi widens by 0.5)."""
    if int(bins) < 1:
        raise FilterDBError(f"bins must be >= 1, got {bins}")
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise FilterDBError(f"invalid histogram range ({lo}, {hi})")
    return np.histogram_bin_edges(np.empty(0), bins=int(bins), range=(lo, hi))


def _codes(group_codes, m, n_groups):
    codes = np.ascontiguousarray(group_codes, dtype=np.int64)
    if codes.shape != (m,):
        raise ValueError(f"need one group code per filter: {codes.shape} for {m} filters")
    if len(codes) and codes.max() >= n_groups:
        raise ValueError(f"group code {codes.max()} >= n_groups {n_groups}")
    return codes


def hist_chunk(X, group_codes, n_groups: int, pca: PCA, bins: int = 70, lo: float = -3.0,
               hi: float = 3.0, precision: str = "float32") -> np.ndarray:
    """Counts ``(n_groups, 9, bins)`` int64 of each group's coefficients per component.

    Same counts as ``np.histogram(c, bins, range=(lo, hi))`` of the float64 coefficients:
    values equal to ``hi`` fall in the last bin, values outside are dropped. Filters with a
    negative group code are skipped. ``precision``: see :func:`.pca.at_precision`.
    """
    X = at_precision(X, precision)
    codes = _codes(group_codes, len(X), n_groups)
    counts = np.zeros((int(n_groups), 9, int(bins)), np.int64)
    _numba.hist(X, codes, np.arange(n_groups, dtype=np.int64), *_pca_arrays(pca),
                bin_edges(lo, hi, bins), counts)
    return counts


def hist2d_chunk(X, pca: PCA, lo, hi, bins: int = 512, components=(0, 1),
                 layer_ids=None, precision: str = "float32") -> np.ndarray:
    """2-D counts ``(bins, bins)`` of coefficient ``components[0]`` (rows) vs ``[1]`` (columns).

    ``lo`` / ``hi`` are scalars (one square range) or pairs (one per axis). Same counts
    as ``np.histogram2d(c0, c1, bins, range=[[lo0, hi0], [lo1, hi1]])``.
    """
    X = at_precision(X, precision, layer_ids)
    lo0, lo1 = np.broadcast_to(np.asarray(lo, float), (2,))
    hi0, hi1 = np.broadcast_to(np.asarray(hi, float), (2,))
    ea, eb = bin_edges(lo0, hi0, bins), bin_edges(lo1, hi1, bins)
    counts = np.zeros((int(bins), int(bins)), np.int64)
    a, b = (int(c) for c in components)
    _numba.hist2d(X, _ids(layer_ids, len(X)), *_pca_arrays(pca), a, b, ea, eb, counts)
    return counts


FLOOR = "density"  # the convention of :func:`probabilities`, named in every result


def density(counts, edges) -> np.ndarray:
    """``np.histogram(..., density=True)`` from counts along the last axis and the bin
    ``edges``: ``counts / bin_width / counts.sum()`` (the same operations in the same
    order as numpy). A histogram with no counts gives NaN, as numpy does."""
    n = np.asarray(counts, dtype=np.float64)
    db = np.diff(np.asarray(edges, dtype=np.float64))
    if db.shape != n.shape[-1:]:
        raise ValueError(f"{n.shape[-1]} bins need {n.shape[-1] + 1} edges, got {db.size + 1}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / db / n.sum(axis=-1, keepdims=True)


def probabilities(counts, edges, eps: float = EPS) -> np.ndarray:
    """Bin probabilities exactly as the published notebook (method.md section 4):
    ``h = np.histogram(c, bins, range, density=True)[0]``; ``h[h == 0] = eps`` (float32
    eps); ``h / h.sum()``, along the last axis of ``counts``.

    The floor is put on the *density*: an empty bin's probability is then
    ``eps / (eps * n_empty + 1 / bin_width)``, not ``eps / (eps * n_empty + n)`` as when
    the counts are floored. A histogram with no counts in the range (every value outside
    it) has no density (NaN in numpy); it gets the floor in every bin: uniform.
    """
    h = density(counts, edges)
    h[(h == 0) | ~np.isfinite(h)] = eps
    return h / h.sum(axis=-1, keepdims=True)


def kde_bandwidth(counts, edges) -> float:
    """Silverman's factor as scipy's gaussian_kde defines it, times the binned std.

    ``bw = (n * 3 / 4) ** (-1 / 5) * std`` with ``n`` the number of values and ``std``
    their unbiased standard deviation, both taken from the bin centres weighted by counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    n = counts.sum()
    if n < 2:
        return 0.0
    mean = (counts * centres).sum() / n
    var = (counts * (centres - mean) ** 2).sum() / (n - 1)
    return float((n * 0.75) ** -0.2 * np.sqrt(var))


def kde_from_hist(counts, edges, grid, bandwidth: float | None = None) -> np.ndarray:
    """Gaussian KDE (density on ``grid``) of binned values, each at its bin centre.

    Equals ``scipy.stats.gaussian_kde(np.repeat(centres, counts), 'silverman')(grid)``.
    A group whose values all share one bin (zero spread) gets the bin width as
    bandwidth; an empty group gives zeros.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return np.zeros_like(grid)
    bw = kde_bandwidth(counts, edges) if bandwidth is None else float(bandwidth)
    if not bw > 0:
        bw = float(np.diff(edges).mean())
    centres = (edges[:-1] + edges[1:]) / 2
    keep = counts > 0
    z = (grid[:, None] - centres[keep][None, :]) / bw
    dens = np.exp(-0.5 * z * z) @ counts[keep]
    return dens / (n * bw * np.sqrt(2 * np.pi))


# ---- task kernels for the engine: kernel(filters, layer_ids, **params) -> dict ----

def hist_task(filters, layer_ids, lookup, n_groups, mean, components, edges,
              precision="float32"):
    counts = np.zeros((int(n_groups), 9, len(edges) - 1), np.int64)
    _numba.hist(task_filters(filters, layer_ids, precision), layer_ids, lookup, mean, components,
                edges, counts)
    return {"counts": counts}


def hist2d_task(filters, layer_ids, mean, components, a, b, edges_a, edges_b,
                precision="float32"):
    counts = np.zeros((len(edges_a) - 1, len(edges_b) - 1), np.int64)
    _numba.hist2d(task_filters(filters, layer_ids, precision), layer_ids, mean, components,
                  int(a), int(b), edges_a, edges_b, counts)
    return {"counts": counts}
