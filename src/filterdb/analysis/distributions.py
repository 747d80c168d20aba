"""Per-group coefficient distributions: histograms, probabilities, KDE curves and the 2-D
c0-c1 density (docs/method.md, section 4)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._repr import dataclass_repr
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from .context import ALL, analysis_context, norm_where
from .provenance import provenance

__all__ = ["Distributions", "distributions"]


@dataclass
class Distributions:
    """Per-group coefficient distributions over one shared range."""

    __repr__ = dataclass_repr  # shapes and sizes, never raw arrays

    by: str
    groups: list[str]
    sizes: pd.Series  # filters per group
    pca: _pca.PCA
    range: tuple[float, float]
    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (G, 9, bins) int64
    probabilities: np.ndarray  # (G, 9, bins): the notebook's (density, eps floor, renormalised)
    grid: np.ndarray  # KDE evaluation points
    kde: np.ndarray  # (G, 9, len(grid)) densities (Silverman bandwidth, from binned data)
    hist2d: np.ndarray | None  # (b, b) counts of c0 (rows) vs c1 (columns) over ``range``
    where: str | None = None
    precision: str = "float32"
    range_fixed: bool = False

    @property
    def provenance(self) -> dict:
        """Floor, precision, bins and range of the probabilities (no weights here)."""
        d = provenance(len(self.edges) - 1, self.range, self.range_fixed, None, [],
                       self.precision, self.by)
        del d["weights"], d["weight_values"]
        return d

    def frame(self) -> pd.DataFrame:
        """Long table: group, component, bin_lo, bin_hi, count, probability."""
        G, K, B = self.counts.shape
        return pd.DataFrame({
            "group": np.repeat(self.groups, K * B),
            "component": np.tile(np.repeat(np.arange(K), B), G),
            "bin_lo": np.tile(self.edges[:-1], G * K),
            "bin_hi": np.tile(self.edges[1:], G * K),
            "count": self.counts.ravel(),
            "probability": self.probabilities.ravel(),
        })


def distributions(db, by=None, where=None, bins: int = 70, range=None,
                  grid=None, hist2d_bins: int = 512, engine="local", scheduler=None, *,
                  workers: int = 2, progress=None, cache: bool = True,
                  recompute: bool = False,
                  precision: str = "float32") -> Distributions:
    """Histograms, probabilities and KDE curves of each group's coefficients, and the 2-D
    c0-c1 density of the whole selection (``hist2d_bins=0`` skips it).

    ``by=None`` gives one group, ``"all"``. ``grid`` defaults to 256 points over the range.
    """
    by = ALL if by is None else by
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        p, rng, got = ctx.shared_passes([by], range, bins)
        labels, counts = got[by]
        h2 = ctx.hist2d(p, rng, hist2d_bins) if hist2d_bins else None
        sizes = ctx.group_sizes(by, labels)
    edges = _hist.bin_edges(*rng, bins)
    g = np.linspace(rng[0], rng[1], 256) if grid is None else np.asarray(grid, float)
    kde = np.array([[_hist.kde_from_hist(counts[i, k], edges, g) for k in np.arange(9)]
                    for i in np.arange(len(labels))]).reshape(len(labels), 9, len(g))
    return Distributions(by, labels, sizes, p, rng, edges, counts,
                         _hist.probabilities(counts, edges), g, kde, h2, norm_where(where),
                         precision, range is not None)
