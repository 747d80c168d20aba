"""A model file against a database selection: its filters projected on the selection's PCA
and binned over the selection's shared range (docs/method.md, section 4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._repr import dataclass_repr
from ..errors import FilterDBError
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from ..kernels.drift import drift_to_reference, resolve_weights
from ..readers import read_model
from ..readers.base import Model
from .context import ALL, DEPTH_BIN, analysis_context, norm_where
from .provenance import provenance, weights_name

__all__ = ["ModelDrift", "model_histogram", "drift_to_model"]


@dataclass
class ModelDrift:
    """A model's 3x3 filters, projected on the selection's PCA and range, against the
    selection (and each group of ``by``)."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    model: str
    n_filters: int
    n_outside: int  # filters with a coefficient outside the shared range (not binned)
    drift: float  # against the whole selection
    by: str | None
    groups: pd.Series  # drift against each group, ascending (empty without ``by``)
    sizes: pd.Series  # filters per group
    counts: np.ndarray  # (9, bins) the model's counts
    bins: int
    range: tuple[float, float]
    weights: np.ndarray
    weights_name: str
    pca: _pca.PCA
    where: str | None = None
    extra: dict = field(default_factory=dict)
    precision: str = "float32"
    range_fixed: bool = False

    @property
    def provenance(self) -> dict:
        """What the result was computed with (floor, precision, bins, range, weights)."""
        return provenance(self.bins, self.range, self.range_fixed, self.weights_name,
                          self.weights, self.precision, self.by)

    def frame(self) -> pd.DataFrame:
        """One row per group of ``by``: its drift to the model and its filters."""
        return pd.DataFrame({"group": list(self.groups.index), "drift": self.groups.to_numpy(),
                             "filters": [int(self.sizes[g]) for g in self.groups.index]})

    def to_dict(self) -> dict:
        return {"model": self.model, "n_filters": self.n_filters, "n_outside": self.n_outside,
                "drift": self.drift, "by": self.by, "groups": list(self.groups.index),
                "group_drift": self.groups.tolist(),
                "sizes": [int(self.sizes[g]) for g in self.groups.index],
                "bins": self.bins, "range": list(self.range), "weights": self.weights_name,
                "weight_values": self.weights.tolist(), "precision": self.precision,
                "floor": _hist.FLOOR, "provenance": self.provenance, "where": self.where}


def model_histogram(X, p, rng, bins, precision="float32") -> tuple[np.ndarray, int]:
    """Counts ``(9, bins)`` of a model's coefficients (filters ``X`` ``(n, 9)`` on PCA ``p``
    over ``rng``), and the number of filters with any coefficient outside the range."""
    X = _pca.at_precision(X, precision)  # the kernels leave these scaled values unchanged
    c = _pca.coefficients(X, p)
    lo, hi = rng
    outside = int(((c < lo) | (c > hi)).any(axis=1).sum())
    counts = _hist.hist_chunk(X, np.zeros(len(X), np.int64), 1, p, bins, lo, hi)[0]
    return counts, outside


def drift_to_model(db, model, where=None, by=None, bins: int = 70, range=None,
                   weights="evr", engine="local", scheduler=None, *, workers: int = 2,
                   progress=None, cache: bool = True, recompute: bool = False,
                   precision: str = "float32") -> ModelDrift:
    """Drift of a model (a file path or a :class:`~filterdb.readers.Model`) against the
    selection: its filters are scaled and projected onto the selection's PCA and binned
    over the selection's shared range, at the same ``precision``. With ``by``, also against
    each group."""
    m = model if isinstance(model, Model) else read_model(model)
    name = str(m.path) if m.path else m.sha256[:12]
    X = m.filters_3x3()
    if len(X) == 0:
        raise FilterDBError(f"{name}: the model has no 3x3 convolution filters")
    resolve_weights(weights, np.ones(9) / 9)
    cols = [ALL] + ([by] if by is not None else [])
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        p, rng, got = ctx.shared_passes(cols, range, bins)
        sizes = ctx.group_sizes(by, got[by][0]) if by is not None else \
            pd.Series(dtype=np.int64)
    w = resolve_weights(weights, p.explained_variance_ratio)
    counts, outside = model_histogram(X, p, rng, bins, precision)
    if counts.sum() == 0:
        raise FilterDBError(f"{name}: every filter's coefficients fall outside the range "
                            f"{rng}: no distribution to compare")
    edges = _hist.bin_edges(*rng, bins)
    pm = _hist.probabilities(counts, edges)
    d_all = float(drift_to_reference(_hist.probabilities(got[ALL][1], edges), pm, w)[0])
    groups = pd.Series(dtype=float, name="drift")
    if by is not None and got[by][0]:
        labels, gc = got[by]
        d = drift_to_reference(_hist.probabilities(gc, edges), pm, w)
        order = np.argsort(d, kind="stable") if by != DEPTH_BIN else np.arange(len(d))
        groups = pd.Series(d[order], index=pd.Index([labels[i] for i in order], name=by),
                           name="drift")
    return ModelDrift(name, len(X), outside, d_all, by, groups, sizes, counts, int(bins), rng,
                      w, weights_name(weights), p, norm_where(where), {}, precision,
                      range is not None)
