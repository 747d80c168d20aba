"""numpy ``.npz`` archives of named arrays (``np.savez``), read with numpy only and
``allow_pickle=False``: object arrays are refused, never unpickled.

Tensor order: the archive's member order (the write order). Conv-layer rules:
:mod:`filterdb.readers.tensors`.
"""
from __future__ import annotations

import zipfile

import numpy as np

from ..errors import ReadError
from ._zip import check_zip_file
from .base import check_file, file_sha256
from .tensors import TensorInfo, tensors_to_model


def _load_all(path: str) -> list[tuple[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ReadError(path, "a single .npy array, not an .npz archive of named arrays")
            out = []
            for name in z.files:
                try:
                    out.append((name, z[name]))
                except ValueError as e:
                    if "pickle" in str(e).lower():
                        raise ReadError(path, f"refusing to unpickle array {name!r}: object "
                                              "arrays need pickle (allow_pickle=False)") from None
                    raise ReadError(path, f"corrupt array {name!r} ({e})") from None
            return out
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ReadError(path, f"corrupt or truncated npz archive ({type(e).__name__}: {e})") \
            from None


def read(path, fmt: str = "npz"):
    p = check_file(path)
    check_zip_file(p, "npz archive")  # zip bombs, hostile member names
    arrays = _load_all(p)
    infos = []
    for name, a in arrays:
        is_float = a.dtype.kind == "f"
        infos.append(TensorInfo(name, a.shape, is_float,
                                (lambda a=a: np.asarray(a, dtype=np.float32))))
    return tensors_to_model(infos, path=p, fmt=fmt, sha256=file_sha256(p), producer="numpy")
