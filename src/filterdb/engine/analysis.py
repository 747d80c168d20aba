"""The drift analysis as passes of the engine: PCA, coefficient range, histograms.

Each function takes a source and a plan and the engine options of :func:`map_reduce`
(``engine``, ``scheduler``, ``workers``, ``progress``); pass an engine object as
``engine`` to reuse one pool or cluster for several passes. ``precision`` (``"float32"``,
or the notebook's ``"float16"``: :func:`filterdb.kernels.pca.notebook_float16`) is
applied by the task kernels to each block, on every engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FilterDBError
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from ..kernels.drift import drift_matrix, resolve_weights
from . import get_engine, map_reduce


def fit_pca(source, plan, precision="float32", **engine) -> _pca.PCA:
    """PCA of the scaled filters of the plan's selection (one pass)."""
    r = map_reduce(source, plan, _pca.moments_task,
                   {"precision": _pca.check_precision(precision)}, **engine)
    return _pca.pca_from_moments(int(r["n"]), r["s"], r["sxx"])


def _pca_params(p, precision="float32"):
    mean, comps = _pca._pca_arrays(p)
    return {"mean": mean, "components": comps, "precision": _pca.check_precision(precision)}


def coefficient_range(source, plan, pca: _pca.PCA, precision="float32",
                      **engine) -> tuple[float, float]:
    """The shared range: global min and max of all coefficients of the selection."""
    r = map_reduce(source, plan, _pca.range_task, _pca_params(pca, precision), **engine)
    return _pca.shared_range(r["cmin"], r["cmax"])


def _lookup(lookup, n_groups):
    lookup = np.ascontiguousarray(lookup, dtype=np.int64)
    if lookup.ndim != 1 or len(lookup) == 0:
        raise FilterDBError("the group lookup must be a 1-D array: layer id -> group code")
    if n_groups is None:
        n_groups = int(lookup.max()) + 1
    if n_groups < 1 or lookup.max() >= n_groups:
        raise FilterDBError(f"group codes must lie in [0, {n_groups}) (negative: leave out)")
    return lookup, int(n_groups)


def group_histograms(source, plan, pca: _pca.PCA, lookup, n_groups=None, bins: int = 70,
                     range=None, precision="float32", **engine) -> np.ndarray:  # noqa: A002
    """Counts ``(n_groups, 9, bins)``; ``lookup[layer_id]`` is the layer's group code."""
    lookup, n_groups = _lookup(lookup, n_groups)
    lo, hi = range if range is not None else \
        coefficient_range(source, plan, pca, precision, **engine)
    params = dict(_pca_params(pca, precision), lookup=lookup, n_groups=n_groups,
                  edges=_hist.bin_edges(lo, hi, bins))
    return map_reduce(source, plan, _hist.hist_task, params, **engine)["counts"]


def histogram2d(source, plan, pca: _pca.PCA, range, bins: int = 512, components=(0, 1),
                precision="float32", **engine) -> np.ndarray:  # noqa: A002
    """2-D counts of coefficient ``components[0]`` (rows) vs ``[1]`` over ``range``."""
    lo, hi = range
    params = dict(_pca_params(pca, precision), a=int(components[0]), b=int(components[1]),
                  edges_a=_hist.bin_edges(lo, hi, bins), edges_b=_hist.bin_edges(lo, hi, bins))
    return map_reduce(source, plan, _hist.hist2d_task, params, **engine)["counts"]


@dataclass
class DriftResult:
    pca: _pca.PCA
    range: tuple[float, float]
    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (G, 9, bins) int64
    probabilities: np.ndarray  # (G, 9, bins): the notebook's (density, eps floor, renormalised)
    weights: np.ndarray  # (9,)
    matrix: np.ndarray  # (G, G) drift
    hist2d: np.ndarray | None = None  # (b, b) counts of c0 vs c1 over the shared range
    precision: str = "float32"

    @property
    def group_sizes(self) -> np.ndarray:
        """Filters per group."""
        return self.counts[:, 0, :].sum(axis=1) if len(self.counts) else np.zeros(0, int)


def drift_analysis(source, plan, lookup, n_groups=None, *, bins: int = 70, range=None,
                   weights="evr", pca: _pca.PCA | None = None, hist2d_bins: int = 0,
                   engine="local", scheduler=None, workers: int = 2,
                   progress=None, precision: str = "float32") -> DriftResult:  # noqa: A002
    """PCA, shared range, per-group histograms and the drift matrix, in up to 4 passes.

    ``pca`` / ``range`` may be given (e.g. a model against a database's fitted PCA);
    ``hist2d_bins > 0`` adds the c0-vs-c1 histogram of the whole selection.
    """
    _pca.check_precision(precision)
    eng = get_engine(engine, scheduler, workers)
    kw = {"engine": eng, "progress": progress}
    try:
        p = pca if pca is not None else fit_pca(source, plan, precision, **kw)
        w = resolve_weights(weights, p.explained_variance_ratio)
        rng = tuple(float(v) for v in range) if range is not None else \
            coefficient_range(source, plan, p, precision, **kw)
        counts = group_histograms(source, plan, p, lookup, n_groups, bins, rng, precision,
                                  **kw)
        h2 = histogram2d(source, plan, p, rng, hist2d_bins, precision=precision, **kw) \
            if hist2d_bins else None
    finally:
        if eng is not engine:
            eng.close()
    edges = _hist.bin_edges(*rng, bins)
    probs = _hist.probabilities(counts, edges)
    return DriftResult(p, rng, edges, counts, probs, w, drift_matrix(probs, w), h2, precision)
