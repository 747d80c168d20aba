"""Utilities every layer may use (layer 1): JSON output that writes NaN as null, and the
progress bar. Imports nothing else from filterdb."""
from __future__ import annotations

import json
import math
import sys


def _default(o):
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
    text = json.dumps(_clean(json.loads(json.dumps(obj, default=_default, allow_nan=True))), indent=2)
    sys.stdout.write(text + "\n")


def progress(iterable=None, total=None, desc=None, unit="it", disable=None):
    """A tqdm progress bar on stderr, silent when stderr is not a terminal."""
    from tqdm.auto import tqdm  # lazy: start-up time (tqdm only when a bar is shown)

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True)
