"""Drift between the groups of one column, and of several at once (docs/method.md,
section 4: ``D(P, Q) = sum_i w_i (KL(P_i || Q_i) + KL(Q_i || P_i))`` over the notebook's
floored histograms of the PCA coefficients).

:class:`DriftResult` is the one result type of a drift matrix: :func:`drift` (a database
selection), :func:`drift_summary` (several columns from ONE PCA pass, which also proves the
range, and ONE histogram pass), :func:`drift_analysis` (a source and a plan, groups given by a lookup),
the noise floor (:mod:`filterdb.analysis.noise`) and :func:`filterdb.analysis.analyze`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import engine as E
from .._repr import dataclass_repr
from ..errors import FilterDBError
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from ..kernels.drift import drift_matrix, resolve_weights
from ..kernels.drift import mean_drift as kernel_mean_drift
from . import passes
from .context import DEPTH_BIN, analysis_context, norm_where
from .provenance import DEPTH_RULE, provenance, weights_name

__all__ = ["SUMMARY_COLUMNS", "DriftResult", "DriftSummary", "drift", "drift_summary",
           "drift_result", "drift_analysis", "mean_drift", "summary_provenance"]

SUMMARY_COLUMNS = ("task", "visual_category", "training_dataset", "architecture", DEPTH_BIN)


@dataclass
class DriftResult:
    """The drift matrix of the groups of one column, in display order (ascending mean
    drift; depth bins in bin order; :func:`drift_analysis`: group-code order)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    by: str | None
    matrix: pd.DataFrame  # (G, G), index and columns the group labels
    sizes: pd.Series  # filters per group
    counts: np.ndarray  # (G, 9, bins), same group order
    probabilities: np.ndarray  # (G, 9, bins)
    edges: np.ndarray
    bins: int
    range: tuple[float, float]
    weights: np.ndarray  # (9,)
    weights_name: str  # "evr" | "equal" | "custom"
    pca: _pca.PCA
    where: str | None = None
    precision: str = "float32"
    range_fixed: bool = False  # False: the global min and max of the selection
    hist2d: np.ndarray | None = None  # (b, b) c0-c1 counts (drift_analysis's hist2d_bins)

    @property
    def provenance(self) -> dict:
        """What the result was computed with (floor, precision, bins, range, weights)."""
        return provenance(self.bins, self.range, self.range_fixed, self.weights_name,
                          self.weights, self.precision, self.by)

    @property
    def groups(self) -> list[str]:
        return list(self.matrix.index)

    @property
    def mean_drift(self) -> pd.Series:
        """Mean drift of each group to the others."""
        return mean_drift(self.matrix)

    def frame(self) -> pd.DataFrame:
        """The drift matrix (groups x groups)."""
        return self.matrix

    def upper_triangle(self) -> np.ndarray:
        """The pairwise drifts ``D[i, j]``, ``i < j`` (the box plot's values)."""
        m = self.matrix.to_numpy()
        return m[np.triu_indices(len(m), 1)]

    def to_dict(self) -> dict:
        return {
            "by": self.by, "where": self.where, "groups": self.groups,
            "sizes": [int(v) for v in self.sizes], "matrix": self.matrix.to_numpy().tolist(),
            "mean_drift": self.mean_drift.tolist(), "bins": self.bins,
            "range": list(self.range), "weights": self.weights_name,
            "weight_values": self.weights.tolist(), "precision": self.precision,
            "floor": _hist.FLOOR, "provenance": self.provenance, "pca": self.pca.to_dict(),
        }


def mean_drift(matrix: pd.DataFrame) -> pd.Series:
    """:func:`filterdb.kernels.drift.mean_drift` of a drift matrix, by group."""
    return pd.Series(kernel_mean_drift(matrix.to_numpy()), index=matrix.index, name="mean_drift")


def drift_result(by, labels, counts, sizes, p, rng, bins, weights, where=None,
                 precision="float32", range_fixed=False, *, sort=None,
                 hist2d=None) -> DriftResult:
    """The :class:`DriftResult` of per-group ``counts`` ``(G, 9, bins)`` over ``rng``:
    probabilities with the notebook's floor, the drift matrix with ``weights`` (``"evr"``,
    ``"equal"`` or 9 numbers), groups sorted by mean drift (``sort``; default: unless
    ``by`` is the depth bins, kept in bin order)."""
    w = resolve_weights(weights, p.explained_variance_ratio)
    edges = _hist.bin_edges(*rng, bins)
    probs = _hist.probabilities(counts, edges)
    D = drift_matrix(probs, w) if len(labels) else np.zeros((0, 0))
    sort = by != DEPTH_BIN if sort is None else sort
    if not sort or len(labels) < 2:
        order = np.arange(len(labels))
    else:
        G = len(labels)
        order = np.argsort((D.sum(axis=1) - np.diag(D)) / (G - 1), kind="stable")
    lab = [labels[i] for i in order]
    idx = pd.Index(lab, name=by)
    M = pd.DataFrame(D[np.ix_(order, order)], index=idx, columns=idx.copy())
    return DriftResult(by, M, sizes.loc[lab], counts[order], probs[order],
                       edges, int(bins), rng, w, weights_name(weights),
                       p, where, precision, bool(range_fixed), hist2d)


def drift(db, by, where=None, bins: int = 70, range=None, weights="evr",
          engine="local", scheduler=None, *, workers: int = 2, progress=None,
          cache: bool = True, recompute: bool = False,
          precision: str = "float32") -> DriftResult:
    """Drift matrix between the groups of ``by`` (a layer-view column, or ``"depth_bin"``:
    the 10 bins of ``conv_depth_norm``).

    PCA, shared range (the global min and max of the coefficients unless ``range`` is
    given) and per-group histograms with ``bins`` bins; ``weights`` ``"evr"`` (default),
    ``"equal"`` or 9 numbers. ``precision``: ``"float32"`` or the notebook's ``"float16"``
    (see :func:`filterdb.analysis.pca`). Two passes over the selection (PCA with the range,
    histograms; a range pass too if the range proof fails), each cached: ``recompute``
    computes again and replaces the cached results (the CLI's ``--recompute``),
    ``cache=False`` neither reads nor stores them.
    """
    resolve_weights(weights, np.ones(9) / 9)  # fail early on bad weights
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        p, rng, got = ctx.shared_passes([by], range, bins)
        labels, counts = got[by]
        sizes = ctx.group_sizes(by, labels)
    if not labels:
        raise FilterDBError(f"no groups: every selected layer has a NULL {by!r}")
    return drift_result(by, labels, counts, sizes, p, rng, bins, weights, norm_where(where),
                        precision, range is not None)


@dataclass
class DriftSummary:
    """Pairwise drifts of several grouping columns (one PCA, one range, one histogram
    pass for all of them)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    results: dict  # column -> DriftResult
    pca: _pca.PCA
    range: tuple[float, float]
    provenance: dict = field(default_factory=dict)  # floor, precision, bins, range, weights

    @property
    def values(self) -> dict:
        """``{column: upper-triangle drifts}`` (the box plot)."""
        return {c: r.upper_triangle() for c, r in self.results.items()}

    @property
    def medians(self) -> pd.Series:
        return pd.Series({c: float(np.median(v)) if len(v) else np.nan
                          for c, v in self.values.items()}, name="median_drift")

    def frame(self) -> pd.DataFrame:
        """Long table: column, group_a, group_b, drift (upper triangle)."""
        rows = []
        for c, r in self.results.items():
            g = r.groups
            iu = np.triu_indices(len(g), 1)
            m = r.matrix.to_numpy()
            rows += [(c, g[i], g[j], m[i, j]) for i, j in zip(*iu)]
        return pd.DataFrame(rows, columns=["column", "group_a", "group_b", "drift"])

    def to_dict(self) -> dict:
        return {"columns": list(self.results), "medians": self.medians.to_dict(),
                "values": {c: v.tolist() for c, v in self.values.items()},
                "range": list(self.range), "provenance": self.provenance,
                "pca": self.pca.to_dict(),
                "results": {c: r.to_dict() for c, r in self.results.items()}}


def summary_provenance(columns, bins, rng, range_fixed, weights, p, precision) -> dict:
    """The provenance of a :class:`DriftSummary` (the depth bins' rule if one column is
    :data:`DEPTH_BIN`)."""
    prov = provenance(bins, rng, range_fixed, weights_name(weights),
                      resolve_weights(weights, p.explained_variance_ratio), precision)
    if DEPTH_BIN in columns:
        prov["depth_bins"] = DEPTH_RULE
    return prov


def drift_summary(db, columns=SUMMARY_COLUMNS, where=None, bins: int = 70,
                  range=None, weights="evr", engine="local", scheduler=None,
                  *, workers: int = 2, progress=None, cache: bool = True,
                  recompute: bool = False,
                  precision: str = "float32") -> DriftSummary:
    """:func:`drift` for several columns at once, sharing every pass."""
    resolve_weights(weights, np.ones(9) / 9)
    columns = list(columns)
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        p, rng, got = ctx.shared_passes(columns, range, bins)
        sizes = {c: ctx.group_sizes(c, got[c][0]) for c in columns}
    w = norm_where(where)
    res = {c: drift_result(c, *got[c], sizes[c], p, rng, bins, weights, w, precision,
                           range is not None)
           for c in columns if got[c][0]}
    return DriftSummary(res, p, rng, summary_provenance(columns, bins, rng, range is not None,
                                                        weights, p, precision))


def drift_analysis(source, plan, lookup, n_groups=None, *, bins: int = 70, range=None,
                   weights="evr", pca: _pca.PCA | None = None, hist2d_bins: int = 0,
                   engine="local", scheduler=None, workers: int = 2,
                   progress=None, precision: str = "float32") -> DriftResult:
    """PCA, shared range, per-group histograms and the drift matrix over a source and a plan
    (:mod:`filterdb.engine`), uncached, in two passes: the PCA with the range
    (:func:`.passes.fit_pca_range`, after a sample pass; a range pass if its proof fails),
    then the histograms with the c0-c1 density. ``lookup[layer_id]`` is the layer's group
    code (negative: left out); groups are labelled ``"0" .. "G-1"`` and kept in code order;
    ``sizes`` are the filters binned per group.

    ``pca`` / ``range`` may be given (e.g. a model against a database's fitted PCA);
    ``hist2d_bins > 0`` adds the c0-vs-c1 histogram of the whole selection.
    """
    _pca.check_precision(precision)
    lookup, n_groups = passes.check_lookup(lookup, n_groups)
    eng = E.get_engine(engine, scheduler, workers)
    kw = {"engine": eng, "progress": progress}
    try:
        rng = tuple(float(v) for v in range) if range is not None else None
        p = pca
        if p is None and rng is None:
            prov = passes.provisional_pca(source, E.sample_plan(*E.plan_ranges(plan)),
                                          precision, **kw)
            p, rng = passes.fit_pca_range(source, plan, prov, precision, **kw)
        elif p is None:
            p = passes.fit_pca(source, plan, precision, **kw)
        resolve_weights(weights, p.explained_variance_ratio)
        if rng is None:
            rng = passes.coefficient_range(source, E.reversed_plan(plan), p, precision, **kw)
        counts, h2 = passes.histograms(source, E.reversed_plan(plan), p, lookup, n_groups,
                                       bins, rng, hist2d_bins, precision, **kw)
    finally:
        if eng is not engine:
            eng.close()
    labels = [str(i) for i in np.arange(len(counts))]
    sizes = pd.Series(counts[:, 0, :].sum(axis=1), index=pd.Index(labels), name="filters")
    return drift_result(None, labels, counts, sizes, p, rng, bins, weights,
                        precision=precision, range_fixed=range is not None, sort=False,
                        hist2d=h2)
