"""Which model files a folder holds (``check DIR``, ``inspect DIR``, ``add DB DIR``).

One small function, :func:`find_models`, so that folder formats (a Hugging Face style folder
read as one model) can hook in at a single place.
"""
from __future__ import annotations

import os

from ..errors import ReadError
from .detect import EXTENSION_HINTS, ONNX, detect_format

# extensions shared with non-model files (ONNX external data is often ``*.bin``): such a file
# counts only when its content is recognised
_AMBIGUOUS = {".bin"}


def _is_model_file(p: str) -> bool:
    ext = os.path.splitext(p)[1].lower()
    if ext in EXTENSION_HINTS and ext not in _AMBIGUOUS:
        return True  # named like a model: included, so that a broken one is reported
    try:
        fmt = detect_format(p)
    except (ReadError, OSError):
        return False
    return fmt != ONNX  # the ONNX test is a weak guess on unnamed bytes: needs ``.onnx``


def find_models(path) -> list[str]:
    """The model files under ``path``: ``[path]`` for a file; for a folder, recursively, the
    files named like a model (``.onnx``, ``.pt``, ``.keras``, ... see
    :data:`~filterdb.readers.detect.EXTENSION_HINTS`) and the unnamed files whose content is a
    known format, sorted by path. Hidden files and folders and symbolic links to folders are
    not followed. A path that does not exist is returned as is (its read fails with the
    reason)."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        return [p]
    out = []
    for root, dirs, files in os.walk(p):  # followlinks=False: stays inside the folder
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            fp = os.path.join(root, f)
            if f.startswith(".") or not os.path.isfile(fp):
                continue
            if os.path.islink(fp) and not os.path.realpath(fp).startswith(
                    os.path.realpath(p) + os.sep):
                continue  # a link out of the folder: nothing outside it is read
            if _is_model_file(fp):
                out.append(fp)
    return out


def expand_inputs(paths) -> list[tuple[str, str | None]]:
    """``[(path, None)]`` for every model file of the given files and folders, in order; a
    folder with no model file gives ``(folder, reason)``."""
    out: list[tuple[str, str | None]] = []
    for p in paths:
        found = find_models(p)
        if not found:
            out.append((os.fspath(p), "no model files in this folder"))
        out += [(f, None) for f in found]
    return out
