"""Random-initialisation baselines (docs/method.md, section 5; the simulated randomness
threshold of kernels other than 3x3 is :func:`filterdb.kernels.randomness.simulated_threshold`).

:func:`random_baseline`: every conv layer of a model re-drawn with common initialisers
(numpy only) and measured like the trained layer. ``H``, ``S`` and orthogonality are
scale-invariant, so an initialiser's scale does not matter, only its shape: with the same
seed, ``kaiming_uniform`` (PyTorch's default) and ``xavier_uniform`` give the same metrics,
and so do ``kaiming_normal`` and ``normal``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..readers.base import ConvLayer
from .assess import HealthThresholds, assess_frame
from .check import COLUMNS, raw_metrics

# --- random initialisations (numpy, from the definitions) -------------------------------

def fans(shape) -> tuple[int, int]:
    """PyTorch's fans of a conv weight ``(c_out, c_in / groups, kh, kw)``."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _kaiming_uniform(rng, shape, a=5.0 ** 0.5):  # torch's default a = sqrt(5)
    fan_in, _ = fans(shape)
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in)  # = 1 / sqrt(fan_in) for a = sqrt(5)
    return rng.uniform(-bound, bound, size=shape)


def _kaiming_normal(rng, shape):
    fan_in, _ = fans(shape)
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def _xavier_uniform(rng, shape):
    fan_in, fan_out = fans(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def _normal(rng, shape, std=0.01):
    return rng.standard_normal(shape) * std


INITS = {
    "kaiming_uniform": _kaiming_uniform,  # PyTorch's default Conv2d init (a = sqrt(5))
    "kaiming_normal": _kaiming_normal,
    "xavier_uniform": _xavier_uniform,
    "normal": _normal,
}
DEFAULT_INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "normal")


def init_weight(init: str, shape, rng) -> np.ndarray:
    """A float32 weight of ``shape`` drawn with the named initialiser."""
    try:
        fn = INITS[init]
    except KeyError:
        raise FilterDBError(f"unknown initialisation {init!r}; known: {', '.join(INITS)}") from None
    return fn(rng, tuple(int(s) for s in shape)).astype(np.float32)


def random_baseline(model, inits=DEFAULT_INITS, seed: int = 0, thresholds=None,
                    orthogonality: bool = True) -> pd.DataFrame:
    """The model's conv layers re-drawn at random, one row per (layer, init).

    Layer ``i`` is drawn from ``default_rng([seed, i])`` for every init, so inits of the
    same shape (uniform / normal) differ only by scale and give the same metrics.
    Columns: ``name``, ``init`` and the metric columns of :func:`model_health`.
    """
    thresholds = thresholds or HealthThresholds()
    rows = []
    for i, layer in enumerate(model.layers):
        for init in inits:
            w = init_weight(init, layer.shape, np.random.default_rng([seed, i]))
            fake = ConvLayer(layer.name, layer.op, w, groups=layer.groups,
                             graph_depth=layer.graph_depth, conv_depth=layer.conv_depth,
                             conv_depth_norm=layer.conv_depth_norm)
            row = raw_metrics(fake, thresholds, orthogonality)
            row["init"] = init
            rows.append(row)
    cols = ["name", "init"] + [c for c in COLUMNS if c != "name"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return assess_frame(pd.DataFrame(rows), thresholds)[cols]


__all__ = ["random_baseline", "init_weight", "fans", "INITS", "DEFAULT_INITS"]
