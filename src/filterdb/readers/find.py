"""Which models the paths a user gives hold (``check DIR``, ``inspect DIR``, ``add DB DIR``).

The walk itself is :func:`filterdb.readers.folders.expand` (a folder that *is* a model, a
SavedModel, ``.mlpackage`` or Hugging Face folder, is one model; others are searched); these
two functions are the interface the CLI and the API use.
"""
from __future__ import annotations

import os

from .folders import expand


def expand_inputs(paths) -> list[tuple[str, str | None]]:
    """``[(model path, None)]`` for the given files and folders, in order; a folder without
    a model gives ``(folder, reason)`` (the reason without the path)."""
    out = []
    for p, err in expand(paths):
        if err and err.startswith(f"{p}: "):
            err = err[len(p) + 2:]
        out.append((p, err))
    return out


def find_models(path) -> list[str]:
    """The models under ``path`` (``[path]`` for a file or a folder model); a path that does
    not exist is returned as is (its read fails with the reason)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        return [p]
    return [m for m, err in expand([p]) if err is None]
