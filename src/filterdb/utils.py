"""Utilities every layer may use (layer 1): JSON output that writes NaN as null, the
progress bar, and aligned buffers. Imports nothing else from filterdb."""
from __future__ import annotations

import json
import math
import sys


def json_default(o):
    """``json.dumps``'s ``default``: numpy arrays and scalars as Python values."""
    import numpy as np  # lazy: start-up time
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o):
    """NaN / Inf are not JSON: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def print_json(obj) -> None:
    text = json.dumps(_clean(json.loads(json.dumps(obj, default=json_default, allow_nan=True))),
                      indent=2)
    sys.stdout.write(text + "\n")


def progress(iterable=None, total=None, desc=None, unit="it", disable=None):
    """A tqdm progress bar on stderr, silent when stderr is not a terminal."""
    from tqdm.auto import tqdm  # lazy: start-up time (tqdm only when a bar is shown)

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True)


def aligned_empty(shape, dtype="float32", align: int = 64):
    """An uninitialised array whose data starts on an ``align``-byte boundary: reads into a
    buffer 8 or 16 bytes past a 32-byte boundary run about 6x slower here, and large numpy
    arrays start 16 bytes into a page."""
    import numpy as np  # lazy: start-up time

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes].view(dtype).reshape(shape)
