"""The passes of the drift analysis over a source and a plan (docs/method.md, sections 3-4):
PCA moments, the shared coefficient range, per-group histograms, the c0-c1 histogram.
:func:`fit_pca_range` finds the exact range in the PCA pass itself (a provisional basis
from a sample, :mod:`filterdb.kernels.extremes`), so a drift needs two passes, not three.

Each function takes a source and a plan (:mod:`filterdb.engine`) and the engine options of
:func:`~filterdb.engine.map_reduce` (``engine``, ``scheduler``, ``workers``, ``progress``);
pass an engine object as ``engine`` to reuse one pool or cluster for several passes.
``precision`` (``"float32"``, or the notebook's ``"float16"``:
:func:`filterdb.kernels.pca.notebook_float16`) is applied by the task kernels to each block,
on every engine. Caching and grouping are :mod:`filterdb.analysis.context`'s job.
"""
from __future__ import annotations

import numpy as np

from .. import engine as E  # E.map_reduce: looked up per call (tests count passes)
from ..errors import FilterDBError
from ..kernels import extremes as _ext
from ..kernels import fused as _fused
from ..kernels import hist as _hist
from ..kernels import pca as _pca

__all__ = ["pca_params", "check_lookup", "fit_pca", "provisional_pca", "fit_pca_range",
           "pca_range_from", "coefficient_range", "group_histograms", "histograms",
           "histogram2d"]


def pca_params(p: _pca.PCA, precision="float32") -> dict:
    """The task parameters projecting onto ``p``: ``mean``, ``components``, ``precision``."""
    mean, comps = _pca._pca_arrays(p)
    return {"mean": mean, "components": comps, "precision": _pca.check_precision(precision)}


def fit_pca(source, plan, precision="float32", **engine) -> _pca.PCA:
    """PCA of the scaled filters of the plan's selection (one pass; method.md section 3)."""
    r = E.map_reduce(source, plan, _pca.moments_task,
                   {"precision": _pca.check_precision(precision)}, **engine)
    return _pca.pca_from_moments(int(r["n"]), r["s"], r["sxx"])


def provisional_pca(source, sample, precision="float32", **engine) -> _pca.PCA | None:
    """The PCA of the sample plan ``sample`` (:func:`filterdb.engine.sample_plan`): the
    provisional basis of :func:`fit_pca_range`; None if the sample has no variance."""
    r = E.map_reduce(source, sample, _pca.moments_task,
                     {"precision": _pca.check_precision(precision)}, **engine)
    try:
        return _pca.pca_from_moments(int(r["n"]), r["s"], r["sxx"])
    except FilterDBError:
        return None


def pca_range_from(result: dict, prov: _pca.PCA) -> tuple[_pca.PCA, tuple | None]:
    """``(pca, range or None)`` from a :func:`~filterdb.kernels.extremes.moments_top_task`
    result taken on the provisional ``prov``."""
    p = _pca.pca_from_moments(int(result["n"]), result["s"], result["sxx"])
    return p, _ext.range_from_top(result["top"], prov.mean, prov.components, p.mean,
                                  p.components)


def fit_pca_range(source, plan, prov: _pca.PCA | None, precision="float32",
                  **engine) -> tuple[_pca.PCA, tuple | None]:
    """The PCA and, when the check of :mod:`filterdb.kernels.extremes` passes, the exact
    shared range, in one pass (None: run :func:`coefficient_range`)."""
    if prov is None:
        return fit_pca(source, plan, precision, **engine), None
    r = E.map_reduce(source, plan, _ext.moments_top_task,
                     dict(pca_params(prov, precision)), **engine)
    return pca_range_from(r, prov)


def coefficient_range(source, plan, pca: _pca.PCA, precision="float32",
                      **engine) -> tuple[float, float]:
    """The shared range: global min and max of all coefficients of the selection
    (method.md section 4)."""
    r = E.map_reduce(source, plan, _pca.range_task, pca_params(pca, precision), **engine)
    return _pca.shared_range(r["cmin"], r["cmax"])


def check_lookup(lookup, n_groups=None) -> tuple[np.ndarray, int]:
    """``(lookup, n_groups)`` checked: ``lookup[layer_id]`` is the layer's group code in
    ``[0, n_groups)``, negative to leave the layer out."""
    lookup = np.ascontiguousarray(lookup, dtype=np.int64)
    if lookup.ndim != 1 or len(lookup) == 0:
        raise FilterDBError("the group lookup must be a 1-D array: layer id -> group code")
    if n_groups is None:
        n_groups = int(lookup.max()) + 1
    if n_groups < 1 or lookup.max() >= n_groups:
        raise FilterDBError(f"group codes must lie in [0, {n_groups}) (negative: leave out)")
    return lookup, int(n_groups)


def group_histograms(source, plan, pca: _pca.PCA, lookup, n_groups=None, bins: int = 70,
                     range=None, precision="float32", **engine) -> np.ndarray:
    """Counts ``(n_groups, 9, bins)`` of each group's coefficients over ``range`` (the shared
    range if None: one more pass); ``lookup[layer_id]`` is the layer's group code."""
    lookup, n_groups = check_lookup(lookup, n_groups)  # before any pass
    rng = range if range is not None else \
        coefficient_range(source, plan, pca, precision, **engine)
    return histograms(source, plan, pca, lookup, n_groups, bins, rng, 0, precision,
                      **engine)[0]


def histograms(source, plan, pca: _pca.PCA, lookup, n_groups, bins: int, range,
               hist2d_bins: int = 0, precision="float32", **engine):
    """:func:`group_histograms` and (``hist2d_bins > 0``, else None) :func:`histogram2d`
    of components 0 and 1 over the same ``range``, from one projection, in one pass."""
    lookup, n_groups = check_lookup(lookup, n_groups)
    lo, hi = range
    d2 = None
    if hist2d_bins:
        e2 = _hist.bin_edges(lo, hi, int(hist2d_bins))
        d2 = {"a": 0, "b": 1, "edges_a": e2, "edges_b": e2}
    params = dict(pca_params(pca, precision), lookup=lookup, n_groups=n_groups,
                  edges=_hist.bin_edges(lo, hi, bins), hist2d=d2)
    r = E.map_reduce(source, plan, _fused.hist_cells_task, params, **engine)
    return r["counts"], r.get("counts2d")


def histogram2d(source, plan, pca: _pca.PCA, range, bins: int = 512, components=(0, 1),
                precision="float32", **engine) -> np.ndarray:
    """2-D counts of coefficient ``components[0]`` (rows) vs ``[1]`` over ``range``."""
    lo, hi = range
    params = dict(pca_params(pca, precision), a=int(components[0]), b=int(components[1]),
                  edges_a=_hist.bin_edges(lo, hi, bins), edges_b=_hist.bin_edges(lo, hi, bins))
    return E.map_reduce(source, plan, _hist.hist2d_task, params, **engine)["counts"]
