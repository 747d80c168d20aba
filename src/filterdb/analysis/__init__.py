"""The drift analysis over a filter database (docs/method.md, sections 3-4), one module per
job:

- :mod:`.passes`: the pure passes over a source and a plan (PCA moments, shared range,
  group histograms, c0-c1 histogram);
- :mod:`.context`: the selection and cache context of one call (through
  :class:`~filterdb.store.Database` methods), running the passes cached;
- :func:`pca` (:mod:`.pca`), :func:`distributions` (:mod:`.distributions`);
- :func:`drift`, :func:`drift_summary`, :func:`drift_analysis` and the one
  :class:`DriftResult` (:mod:`.drift`);
- :func:`drift_to_model` (:mod:`.model`): a model file against the selection;
- :func:`noise_floor` (:mod:`.noise`): drift against its within-group floor;
- :func:`analyze` (:mod:`.analyze`): everything the report needs in the fewest passes.

``db`` is a :class:`~filterdb.store.Database` or a path; ``where`` a SQL expression over
the layer view. ``by`` is any column of the layer view (``depth`` is the layer view's
column) or ``"depth_bin"`` (10 bins of ``conv_depth_norm``). The names ``pca``, ``drift``,
``distributions`` and ``analyze`` here are the functions; import a module's other names
with ``from filterdb.analysis.drift import ...``.
"""
from __future__ import annotations

from .analyze import COLUMNS, AnalyzeResult, PassInfo, analyze, assign_orthogonality
from .context import ALL, CACHE_VERSION, DEPTH_BIN
from .distributions import Distributions, distributions
from .drift import SUMMARY_COLUMNS, DriftResult, DriftSummary, drift, drift_analysis, drift_summary
from .model import ModelDrift, drift_to_model
from .noise import NoiseFloor, noise_floor, pair_drift, permutation_pvalue, within_pairs
from .passes import coefficient_range, fit_pca, group_histograms, histogram2d
from .pca import pca, pca_frame
from .provenance import provenance, provenance_text

__all__ = ["pca", "pca_frame", "distributions", "drift", "drift_summary", "drift_to_model",
           "drift_analysis", "noise_floor", "analyze", "Distributions", "DriftResult",
           "DriftSummary", "ModelDrift", "NoiseFloor", "AnalyzeResult", "PassInfo",
           "provenance", "provenance_text", "pair_drift", "permutation_pvalue", "within_pairs",
           "fit_pca", "coefficient_range", "group_histograms", "histogram2d",
           "assign_orthogonality", "COLUMNS", "SUMMARY_COLUMNS", "DEPTH_BIN", "ALL",
           "CACHE_VERSION"]
