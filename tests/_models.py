"""Small model files for tests: random float32 conv weights written with numpy."""
from __future__ import annotations

import numpy as np


def write_npz(path, seed, shapes, name: str = "conv{i}.weight") -> str:
    """An ``.npz`` state dict with one standard-normal float32 weight per shape (``seed``: an
    int or a numpy Generator); returns the path as str (ready for a CLI argv)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    np.savez(path, **{name.format(i=i): rng.standard_normal(s).astype(np.float32)
                      for i, s in enumerate(shapes)})
    return str(path)
