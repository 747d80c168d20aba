"""filterdb: a queryable database of trained convolution filters.

Drift (how learned 3x3 filters shift between groups of models) and degeneration
(which layers are sparse, low in diversity or still random), from the weights alone.

The Python API mirrors the ``filterdb`` command line:

- ``filterdb.check(obj, **options)`` -> :class:`~filterdb.api.CheckResult`: layer health
  (``.layers`` DataFrame, ``.summary``, ``.verdict``, ``.reasons``, ``.to_json()``) of a
  model file, a folder of them, a torch ``nn.Module``, a state dict, a Keras model or an
  ``onnx.ModelProto``.
- ``filterdb.inspect(obj)`` -> :class:`~filterdb.api.InspectResult`: its 2-D conv layers.
- ``filterdb.read_model(obj)`` -> :class:`~filterdb.readers.Model` (files and live objects).
- ``filterdb.open(path, mode)`` -> a filter database (``db.add(obj, meta=...)``,
  ``db.models()``, ``db.layers()``).
- ``filterdb.analysis``: ``pca``, ``distributions``, ``drift``, ``drift_summary``,
  ``drift_to_model``, ``noise_floor`` and ``analyze`` over a database.
- ``filterdb.health``: ``model_health``, ``database_health``, thresholds, random baselines.
- ``filterdb.analyze(db, ...)`` -> :class:`~filterdb.analysis.AnalyzeResult`: PCA, drift of
  every grouping column, c0-c1 density and health in 2 passes (3 if the range proof
  fails), cached for the rest.

Submodules and heavy dependencies load on first use (PEP 562), so ``import filterdb`` is fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import FilterDBError, ReadError

# name -> (module, attribute or None for the module itself); loaded on first access
_LAZY = {
    "check": ("filterdb.api", "check"),
    "inspect": ("filterdb.api", "inspect"),
    "read_model": ("filterdb.readers", "read_model"),
    "CheckResult": ("filterdb.api", "CheckResult"),
    "InspectResult": ("filterdb.api", "InspectResult"),
    "Model": ("filterdb.readers.base", "Model"),
    "analysis": ("filterdb.analysis", None),
    "analyze": ("filterdb.analysis", "analyze"),
    "health": ("filterdb.health", None),
    "readers": ("filterdb.readers", None),
    "store": ("filterdb.store", None),
    "plots": ("filterdb.plots", None),
    "api": ("filterdb.api", None),
}


def open(path, mode: str = "r", create: bool = False):  # shadows the builtin: mirrors `filterdb DB`
    """Open a filter database directory (see :mod:`filterdb.store`); ``mode="w"`` to add
    models (``create=True`` makes it if missing)."""
    from .store import open_database  # lazy: start-up time (import filterdb stays fast)

    return open_database(path, mode=mode, create=create)


def __getattr__(name: str):
    """PEP 562: the API's functions and submodules, imported on first access."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'filterdb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["check", "inspect", "read_model", "open", "analysis", "analyze", "health", "CheckResult",
           "InspectResult", "Model", "FilterDBError", "ReadError", "__version__"]
