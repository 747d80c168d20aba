"""Random references: simulated randomness thresholds and random-initialisation baselines.

- :func:`simulated_threshold`: the expected variance entropy ``H`` of ``n`` i.i.d. Gaussian
  filters of dimension ``d``; the randomness threshold of kernels other than 3x3 (3x3 keeps
  the published ``TH(n)`` of :func:`filterdb.kernels.health.randomness_threshold`).
  ``H`` of i.i.d. filters depends on ``n`` and ``d`` only: the centred scatter matrix of
  ``n`` i.i.d. ``N(0, I_d)`` rows is Wishart ``W_d(n - 1, I)``, drawn here with the Bartlett
  decomposition (cost independent of ``n``) when ``n - 1 >= d``, and from the rows otherwise.
- :func:`random_baseline`: every conv layer of a model re-drawn with common initialisers
  (numpy only) and measured like the trained layer. ``H``, ``S`` and orthogonality are
  scale-invariant, so an initialiser's scale does not matter, only its shape: with the same
  seed, ``kaiming_uniform`` (PyTorch's default) and ``xavier_uniform`` give the same metrics,
  and so do ``kaiming_normal`` and ``normal``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd

from ..kernels.health import entropy_from_eigenvalues

SIM_DRAWS = 256
SIM_SEED = 0


def simulated_threshold(n: int, d: int, n_draws: int = SIM_DRAWS, seed: int = SIM_SEED) -> float:
    """Mean ``H`` of ``n`` i.i.d. Gaussian filters of dimension ``d`` over ``n_draws`` draws.

    Deterministic for a given ``(n, d, n_draws, seed)`` and cached in-process.
    NaN for ``n < 1`` or ``d < 2``; 0 for ``n <= 2`` (``H`` is 0 for any two filters).
    """
    return _simulated_threshold(int(n), int(d), int(n_draws), int(seed))


@lru_cache(maxsize=4096)
def _simulated_threshold(n: int, d: int, n_draws: int, seed: int) -> float:
    if n < 1 or d < 2:
        return float("nan")
    return float(simulate_iid_entropy(n, d, n_draws, seed).mean())


def simulate_iid_entropy(n: int, d: int, n_draws: int = SIM_DRAWS, seed: int = SIM_SEED):
    """``n_draws`` samples of ``H`` for ``n`` i.i.d. ``N(0, I_d)`` filters."""
    rng = np.random.default_rng([seed, n, d])
    m = n - 1  # degrees of freedom of the centred scatter matrix
    if m >= d:  # Bartlett: scatter = L L^T, L lower triangular
        L = np.zeros((n_draws, d, d))
        rows, cols = np.tril_indices(d, -1)
        L[:, rows, cols] = rng.standard_normal((n_draws, rows.size))
        diag = np.arange(d)
        L[:, diag, diag] = np.sqrt(rng.chisquare(m - diag, size=(n_draws, d)))
        G = L @ np.swapaxes(L, -1, -2)
    else:
        X = rng.standard_normal((n_draws, n, d))
        X -= X.mean(axis=1, keepdims=True)
        G = np.swapaxes(X, -1, -2) @ X
    return entropy_from_eigenvalues(np.linalg.eigvalsh(G))


# --- random initialisations (numpy, from the definitions) -------------------------------

def fans(shape) -> tuple[int, int]:
    """PyTorch's fans of a conv weight ``(c_out, c_in / groups, kh, kw)``."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _kaiming_uniform(rng, shape, a=math.sqrt(5.0)):
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
        from ..errors import FilterDBError

        raise FilterDBError(f"unknown initialisation {init!r}; known: {', '.join(INITS)}") from None
    return fn(rng, tuple(int(s) for s in shape)).astype(np.float32)


def random_baseline(model, inits=DEFAULT_INITS, seed: int = 0, thresholds=None,
                    orthogonality: bool = True) -> pd.DataFrame:
    """The model's conv layers re-drawn at random, one row per (layer, init).

    Layer ``i`` is drawn from ``default_rng([seed, i])`` for every init, so inits of the
    same shape (uniform / normal) differ only by scale and give the same metrics.
    Columns: ``name``, ``init`` and the metric columns of :func:`model_health`.
    """
    from ..readers.base import ConvLayer
    from .check import HealthThresholds, layer_metrics

    thresholds = thresholds or HealthThresholds()
    rows = []
    for i, layer in enumerate(model.layers):
        for init in inits:
            w = init_weight(init, layer.shape, np.random.default_rng([seed, i]))
            fake = ConvLayer(layer.name, layer.op, w, groups=layer.groups,
                             graph_depth=layer.graph_depth, conv_depth=layer.conv_depth,
                             conv_depth_norm=layer.conv_depth_norm)
            row = layer_metrics(fake, thresholds, orthogonality)
            row["init"] = init
            rows.append(row)
    from .check import COLUMNS

    cols = ["name", "init"] + [c for c in COLUMNS if c != "name"]
    return pd.DataFrame(rows, columns=cols)


__all__ = ["simulated_threshold", "simulate_iid_entropy", "random_baseline", "init_weight",
           "fans", "INITS", "DEFAULT_INITS", "SIM_DRAWS", "SIM_SEED"]
