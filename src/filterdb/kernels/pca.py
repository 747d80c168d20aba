"""Scaling, PCA from streamed moments, and coefficients (docs/method.md, section 3).

Pure functions: arrays in, arrays out. Partial moments of chunks combine by summing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FilterDBError
from . import _numba

_NONE = np.empty(0, np.int64)

PRECISIONS = ("float32", "float16")
F16_MAX = float(np.finfo(np.float16).max)


def check_precision(precision) -> str:
    """``"float32"`` (the default: the stored filters as they are) or ``"float16"``."""
    if precision not in PRECISIONS:
        raise FilterDBError(f"unknown precision {precision!r}: use 'float32' or 'float16'")
    return precision


def notebook_float16(X, layer_ids=None) -> np.ndarray:
    """The published notebook's float16 scaling (method.md section 4): the filters rounded
    to float16 (``.astype(np.float16)``) and scaled by their absolute peak in float16
    arithmetic (``X / den``, ``den = 1`` for zero rows), returned as float32.

    Every nonzero row's peak is then exactly 1, so the kernels' own float32 scaling
    leaves these values unchanged. Filters beyond float16's range (|w| > 65504) are
    refused: float16 would turn them into inf (rows whose ``layer_ids`` entry is negative,
    padding, are not looked at).
    """
    X = as_filters(X)
    peak = np.abs(X).max(axis=1) if len(X) else np.zeros(0, np.float32)
    kept = peak if layer_ids is None or len(layer_ids) == 0 else \
        peak[np.asarray(layer_ids) >= 0]
    if (kept > F16_MAX).any():
        raise FilterDBError(f"filter values beyond float16's range ({F16_MAX:g}): precision "
                            "float16 cannot represent them")
    with np.errstate(over="ignore", invalid="ignore"):
        h = X.astype(np.float16)
        den = np.abs(h).max(axis=1)
        den = np.where(den == 0, np.float16(1), den)[:, None]
        return (h / den).astype(np.float32)


def at_precision(X, precision="float32", layer_ids=None) -> np.ndarray:
    """``X`` (``(m, 9)`` float32) as the passes see it at ``precision``."""
    if check_precision(precision) == "float16":
        return notebook_float16(X, layer_ids)
    return as_filters(X)


def as_filters(X) -> np.ndarray:
    """``X`` as a C-contiguous ``(m, 9)`` float32 array (refuses other shapes)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 9:
        raise FilterDBError(f"filters must be an (n, 9) array, got shape {X.shape}")
    return np.ascontiguousarray(X, dtype=np.float32)


def _ids(ids, m) -> np.ndarray:
    if ids is None:
        return _NONE
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape != (m,):
        raise ValueError(f"need one id per row: {ids.shape} for {m} rows")
    return ids


def scale_filters(X) -> np.ndarray:
    """Each filter divided by its absolute peak, ``f / max_j |f_j|``; zero filters stay zero."""
    X = as_filters(X)
    out = np.empty_like(X)
    _numba.scale_rows(X, out)
    return out


def mirror_upper(sxx: np.ndarray) -> np.ndarray:
    """Copy the upper triangle of the ``(9, 9)`` ``sxx`` (what the numba moment kernels
    write) into its lower one, in place; returns ``sxx``."""
    iu = np.triu_indices(9, 1)
    sxx.T[iu] = sxx[iu]
    return sxx


def moments_chunk(X, layer_ids=None, precision="float32"):
    """Moments of the scaled filters: ``(n, sum (9,), sum of v v^T (9, 9))``, float64.

    Rows whose ``layer_ids`` entry is negative are skipped. Sum the results of
    several chunks to combine them. ``precision``: see :func:`at_precision`.
    """
    X = at_precision(X, precision, layer_ids)
    s = np.zeros(9)
    sxx = np.zeros((9, 9))
    n = _numba.moments(X, _ids(layer_ids, len(X)), s, sxx)
    return int(n), s, mirror_upper(sxx)


@dataclass
class PCA:
    """PCA of the scaled filters: rows of ``components`` sorted by variance, descending."""

    n: int
    mean: np.ndarray  # (9,)
    components: np.ndarray  # (9, 9), one component per row
    explained_variance: np.ndarray  # (9,), unbiased (n - 1)
    explained_variance_ratio: np.ndarray  # (9,)

    def __repr__(self) -> str:  # sizes, never the arrays
        evr = ", ".join(f"{v:.3f}" for v in np.asarray(self.explained_variance_ratio)[:3])
        return f"PCA(n={self.n:,}, {len(self.components)} components, evr [{evr}, ...])"

    def frame(self):
        """One row per component: ``explained_variance``, ``evr``, ``cumulative`` and the
        eigen-image ``w0 .. w8`` (row-major 3x3)."""
        import pandas as pd  # lazy: the kernels stay numpy-only until a table is asked for

        df = pd.DataFrame(np.asarray(self.components),
                          columns=[f"w{j}" for j in range(np.asarray(self.components).shape[1])])
        df.insert(0, "cumulative", np.cumsum(self.explained_variance_ratio))
        df.insert(0, "evr", self.explained_variance_ratio)
        df.insert(0, "explained_variance", self.explained_variance)
        df.index.name = "component"
        return df

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance": self.explained_variance.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
        }

    @classmethod
    def from_dict(cls, d) -> PCA:
        return cls(int(d["n"]), np.asarray(d["mean"], float), np.asarray(d["components"], float),
                   np.asarray(d["explained_variance"], float),
                   np.asarray(d["explained_variance_ratio"], float))


def fix_signs(components) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry (the first, on ties) is positive."""
    c = np.array(components, dtype=np.float64)
    pick = c[np.arange(len(c)), np.argmax(np.abs(c), axis=1)]
    c[pick < 0] *= -1
    return c


def pca_from_moments(n, s, sxx) -> PCA:
    """PCA from ``(n, sum, second moment)``: eigenvectors of the unbiased covariance."""
    n = int(n)
    if n == 0:
        raise FilterDBError("empty selection: no filters to analyse")
    if n < 2:
        raise FilterDBError("PCA needs at least 2 filters, the selection has 1")
    s = np.asarray(s, dtype=np.float64)
    mean = s / n
    cov = (np.asarray(sxx, dtype=np.float64) - n * np.outer(mean, mean)) / (n - 1)
    cov = (cov + cov.T) / 2
    var, vec = np.linalg.eigh(cov)
    order = np.argsort(var)[::-1]
    var = np.clip(var[order], 0.0, None)
    total = var.sum()
    if not total > 0:
        raise FilterDBError(f"the {n} filters of the selection are all identical after "
                            "scaling (zero variance): nothing to analyse")
    return PCA(n, mean, fix_signs(vec[:, order].T), var, var / total)


def fit_pca(X, precision="float32") -> PCA:
    """PCA of an in-memory ``(n, 9)`` array of raw filters (scaled here)."""
    return pca_from_moments(*moments_chunk(X, precision=precision))


def _pca_arrays(pca: PCA):
    return (np.ascontiguousarray(pca.mean, dtype=np.float64),
            np.ascontiguousarray(pca.components, dtype=np.float64))


def coefficients(X, pca: PCA, precision="float32") -> np.ndarray:
    """Coefficients ``(scaled X - mean) @ components.T`` (float64 ``(m, 9)``)."""
    X = at_precision(X, precision)
    out = np.empty((len(X), 9))
    _numba.coefficients(X, *_pca_arrays(pca), out)
    return out


def coeff_range_chunk(X, pca: PCA, layer_ids=None, precision="float32"):
    """Per-component ``(min (9,), max (9,))`` of the coefficients (+inf / -inf when empty)."""
    X = at_precision(X, precision, layer_ids)
    cmin = np.full(9, np.inf)
    cmax = np.full(9, -np.inf)
    _numba.coeff_range(X, _ids(layer_ids, len(X)), *_pca_arrays(pca), cmin, cmax)
    return cmin, cmax


def shared_range(cmin, cmax) -> tuple[float, float]:
    """One range shared by all components and groups: global min and max of the coefficients."""
    lo, hi = float(np.min(cmin)), float(np.max(cmax))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise FilterDBError("empty selection: no coefficients to take a range from")
    return lo, hi


# ---- task kernels for the engine: kernel(filters, layer_ids, **params) -> dict ----

def moments_task(filters, layer_ids, precision="float32"):
    n, s, sxx = moments_chunk(filters, layer_ids, precision)
    return {"n": np.array(n, dtype=np.int64), "s": s, "sxx": sxx}


def task_filters(filters, layer_ids, precision="float32"):
    """A task's block of filters at ``precision`` (float32: the block itself, no copy)."""
    return filters if precision == "float32" else at_precision(filters, precision, layer_ids)


def range_task(filters, layer_ids, mean, components, precision="float32"):
    cmin = np.full(9, np.inf)
    cmax = np.full(9, -np.inf)
    _numba.coeff_range(task_filters(filters, layer_ids, precision), layer_ids, mean, components,
                       cmin, cmax)
    return {"cmin": cmin, "cmax": cmax}


range_task.reduce = {"cmin": "min", "cmax": "max"}
