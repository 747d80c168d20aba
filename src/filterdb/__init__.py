"""filterdb: a queryable database of trained convolution filters.

Drift (how learned 3x3 filters shift between groups of models) and degeneration
(which layers are sparse, low in diversity or still random), from the weights alone.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import FilterDBError, ReadError  # noqa: E402
from .readers import read_model  # noqa: E402


def open(path, mode: str = "r"):  # noqa: A001 - mirrors the CLI's `filterdb DB`
    """Open a filter database directory (see :mod:`filterdb.store`)."""
    from .store import open_database

    return open_database(path, mode=mode)


__all__ = ["FilterDBError", "ReadError", "read_model", "open", "__version__"]
