"""PCA of the scaled 3x3 filters of a selection (docs/method.md, section 3)."""
from __future__ import annotations

import pandas as pd

from ..kernels import pca as _pca
from .context import analysis_context

__all__ = ["pca", "pca_frame"]


def pca(db, where=None, engine="local", scheduler=None, *, workers: int = 2, progress=None,
        cache: bool = True, recompute: bool = False,
        precision: str = "float32") -> _pca.PCA:
    """PCA (9 components) of the scaled 3x3 filters of the selection: one pass, cached
    (``recompute`` and ``cache`` as :func:`filterdb.analysis.drift`).

    Returns :class:`filterdb.kernels.PCA` (``n``, ``mean``, ``components`` as rows,
    ``explained_variance``, ``explained_variance_ratio``); :func:`pca_frame` tabulates it.
    ``precision="float16"`` rounds the filters to float16 and scales them in float16 first,
    as the published notebook does (:func:`filterdb.kernels.pca.notebook_float16`).
    """
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        ctx.layers  # noqa: B018 - raises on an empty selection
        return ctx.pca()


def pca_frame(p: _pca.PCA) -> pd.DataFrame:
    """One row per component: ``explained_variance``, ``evr``, ``cumulative`` and the
    eigen-image ``w0 .. w8`` (row-major 3x3); the same as ``p.frame()``."""
    return p.frame()
