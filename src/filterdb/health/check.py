"""Layer health of one model: metrics, flags and a summary (method.md, section 5).

Conventions where the method is silent (see also :mod:`filterdb.kernels.health`):

- Kernels other than 3x3 use the same metrics over ``d = kh * kw`` dimensions; their
  randomness threshold is the simulated mean ``H`` of i.i.d. Gaussian filters
  (:func:`filterdb.health.baseline.simulated_threshold`), and the low-diversity threshold
  is scaled by ``log10(d) / log10(9)`` (the same share of the maximum entropy as for 3x3).
- 1x1 kernels (``d = 1``): sparsity and the entropies are not applicable (NaN) and the
  layer is not flagged; orthogonality (over ``c_in / groups`` dimensions) is still reported.
- ``n <= 2`` filters: ``H`` is 0 for any weights (and ``TH(n) <= 0``), so the entropy
  flags (random, low diversity) are not raised and ``H / TH`` is NaN.
- Layers with NaN / Inf weights get NaN metrics and no flags.
- A layer is *assessed* (counted in the summary) when ``d > 1``, ``n >= 3`` and its
  weights are finite.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..kernels import health as K
from ..readers.base import kernel_key

FLAGS = ("random", "low_diversity", "sparse", "degenerated")
COLUMNS = ("name", "op", "kernel", "conv_depth", "conv_depth_norm", "n", "sparsity",
           "variance_entropy", "threshold", "variance_entropy_norm", "variance_entropy_clean",
           "orthogonality", "random", "low_diversity", "sparse", "degenerated", "assessed")
TYPICAL_NORM = 0.9  # H / TH of a typical trained layer (method.md)
N_WORST = 5
MIN_FILTERS = 3


@dataclass(frozen=True)
class HealthThresholds:
    """Configurable thresholds; the defaults are the method's.

    ``poor_share``: share of degenerated layers above which the verdict is "poor start".
    """

    sparsity_eps: float = 0.01
    random_margin: float = 0.02
    low_diversity_H: float = 0.5
    sparse_S: float = 0.14
    poor_share: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def randomness_threshold_for(n, d: int = 9) -> float:
    """``TH(n)`` for filters of dimension ``d``: the published curve for ``d = 9``,
    the simulated i.i.d. Gaussian mean otherwise, NaN for ``d < 2`` or ``n < 1``."""
    if d < 2 or n < 1:
        return float("nan")
    if d == 9:
        return K.randomness_threshold(n)
    from .baseline import simulated_threshold

    return simulated_threshold(n, d)


def low_diversity_limit(d: int, thresholds: HealthThresholds) -> float:
    """The low-diversity ``H`` limit for dimension ``d`` (the configured one for 3x3)."""
    if d == 9:
        return thresholds.low_diversity_H
    return thresholds.low_diversity_H * math.log10(d) / math.log10(9) if d > 1 else float("nan")


def flag_arrays(H, S, TH, n, d: int = 9,
                thresholds: HealthThresholds | None = None) -> dict[str, np.ndarray]:
    """The degeneration flags of many layers of dimension ``d`` (boolean arrays; False
    where not applicable).

    random: ``H >= TH - margin``; low_diversity: ``H < low_diversity_H``; sparse:
    ``S >= sparse_S``; degenerated: random or (low_diversity and sparse).
    """
    t = thresholds or HealthThresholds()
    H, S, TH = (np.asarray(v, np.float64) for v in (H, S, TH))
    ok = (d > 1) & (np.asarray(n) >= MIN_FILTERS) & np.isfinite(H) & np.isfinite(S)
    with np.errstate(invalid="ignore"):
        random = ok & np.isfinite(TH) & (H >= TH - t.random_margin)
        low = ok & (H < low_diversity_limit(d, t))
        sparse = ok & (S >= t.sparse_S)
    return {"random": random, "low_diversity": low, "sparse": sparse,
            "degenerated": random | (low & sparse)}


def flags(H, S, TH, n, d: int = 9, thresholds: HealthThresholds | None = None) -> dict:
    """The degeneration flags of one layer (:func:`flag_arrays`), as bools."""
    return {k: bool(v) for k, v in flag_arrays(H, S, TH, n, d, thresholds).items()}


def layer_metrics(layer, thresholds: HealthThresholds | None = None,
                  orthogonality: bool = True) -> dict:
    """All health metrics and flags of one :class:`~filterdb.readers.base.ConvLayer`
    (``orthogonality=False``: that costly metric is skipped, NaN; the flags do not use it)."""
    t = thresholds or HealthThresholds()
    kh, kw = layer.kernel
    d = kh * kw
    n = layer.n_filters
    finite = not layer.has_nonfinite()
    nan = float("nan")
    if d > 1 and finite and n > 0:
        W = layer.filters()
        S = K.sparsity(W, t.sparsity_eps)
        H = K.variance_entropy(W)
        Hc = K.variance_entropy_clean(W, t.sparsity_eps)
    else:
        S = H = Hc = nan
    TH = randomness_threshold_for(n, d)
    norm = H / TH if (np.isfinite(TH) and TH > 0 and n >= MIN_FILTERS) else nan
    orth = K.orthogonality(layer.weight) if finite and orthogonality else nan
    row = {"name": layer.name, "op": layer.op, "kernel": kernel_key(layer.kernel),
           "conv_depth": int(layer.conv_depth), "conv_depth_norm": float(layer.conv_depth_norm),
           "n": int(n), "sparsity": S, "variance_entropy": H, "threshold": TH,
           "variance_entropy_norm": norm, "variance_entropy_clean": Hc, "orthogonality": orth}
    row.update(flags(H, S, TH, n, d, t))
    row["assessed"] = bool(d > 1 and n >= MIN_FILTERS and finite)
    return row


def model_health(model, thresholds: HealthThresholds | None = None, orthogonality: bool = True):
    """Per-layer health of a :class:`~filterdb.readers.base.Model` and its summary.

    Returns ``(DataFrame, summary)``: one row per conv layer (columns :data:`COLUMNS`) and
    the dict of :func:`summarise`.
    """
    t = thresholds or HealthThresholds()
    df = pd.DataFrame([layer_metrics(l, t, orthogonality) for l in model.layers],
                      columns=list(COLUMNS))
    return df, summarise(df, t)


def flag_names(row) -> list[str]:
    """The names of the raised flags of a row (``degenerated`` last)."""
    return [f for f in FLAGS if bool(row[f])]


def summarise(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """The model summary of a :func:`model_health` table.

    - ``share_degenerated`` = degenerated / assessed layers (NaN if none assessed).
    - worst layers: the assessed layers sorted by (degenerated, number of flags,
      ``|H/TH - 0.9|``), all descending (0.9 is typical of trained layers); the top 5.
    - verdict: ``good start`` when no layer is degenerated, ``caution`` when at most
      ``poor_share`` of the assessed layers are, ``poor start`` above that;
      ``not assessed`` when no layer can be assessed.
    """
    t = thresholds or HealthThresholds()
    a = df[df["assessed"]] if len(df) else df
    n_assessed = int(len(a))
    n_deg = int(a["degenerated"].sum()) if n_assessed else 0
    n_random = int(a["random"].sum()) if n_assessed else 0
    n_lowsparse = int((a["low_diversity"] & a["sparse"]).sum()) if n_assessed else 0
    share = n_deg / n_assessed if n_assessed else float("nan")
    worst = []
    if n_assessed:
        n_flags = a[["random", "low_diversity", "sparse"]].sum(axis=1)
        dev = (a["variance_entropy_norm"] - TYPICAL_NORM).abs().fillna(0.0)
        order = pd.DataFrame({"deg": a["degenerated"].astype(int), "nf": n_flags, "dev": dev,
                              "pos": np.arange(n_assessed)}, index=a.index)
        order = order.sort_values(["deg", "nf", "dev", "pos"],
                                  ascending=[False, False, False, True])
        for i in order.index[:N_WORST]:
            r = a.loc[i]
            worst.append({"name": r["name"], "flags": flag_names(r),
                          "variance_entropy_norm": float(r["variance_entropy_norm"]),
                          "sparsity": float(r["sparsity"])})
    if not n_assessed:
        verdict = ("not assessed: no layer with a kernel larger than 1x1, at least "
                   f"{MIN_FILTERS} filters and finite weights")
    else:
        detail = f"{n_deg} of {n_assessed} layers degenerated"
        if n_deg:
            detail += f" ({n_random} random, {n_lowsparse} sparse and low-diversity)"
        if n_deg == 0:
            verdict = f"good start: {detail}"
        elif share <= t.poor_share:
            verdict = f"caution: {detail}"
        else:
            verdict = f"poor start: {detail}"
    by_depth = {}
    if n_assessed:
        from ..kernels.drift import depth_bin, depth_bin_labels

        bins = depth_bin(a["conv_depth_norm"].to_numpy())
        labels = depth_bin_labels()
        for b in sorted(set(bins.tolist())):
            sel = a[bins == b]
            by_depth[labels[b]] = {
                "n_layers": int(len(sel)),
                "sparsity": float(sel["sparsity"].mean()),
                "variance_entropy_norm": float(sel["variance_entropy_norm"].mean()),
                "orthogonality": float(sel["orthogonality"].mean()),
                "n_degenerated": int(sel["degenerated"].sum()),
            }
    return {"n_layers": int(len(df)), "n_assessed": n_assessed, "n_degenerated": n_deg,
            "n_random": n_random, "n_low_diversity_sparse": n_lowsparse,
            "share_degenerated": share, "worst_layers": worst, "by_depth": by_depth,
            "verdict": verdict, "thresholds": t.to_dict()}


def health_from_moments(n, s, sxx, n_sparse, d: int = 9, thresholds=None,
                        sparse_s=None, sparse_sxx=None) -> pd.DataFrame:
    """Vectorised metrics and flags of many layers of dimension ``d`` from streamed moments.

    Inputs are batched over layers (see :func:`filterdb.kernels.health.metrics_from_moments`).
    Returns one row per layer: n, sparsity, variance_entropy, threshold,
    variance_entropy_norm, variance_entropy_clean and the flags (no orthogonality).
    """
    t = thresholds or HealthThresholds()
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    m = K.metrics_from_moments(n, np.reshape(s, (n.size, d)), np.reshape(sxx, (n.size, d, d)),
                               np.atleast_1d(n_sparse),
                               None if sparse_s is None else np.reshape(sparse_s, (n.size, d)),
                               None if sparse_sxx is None else np.reshape(sparse_sxx, (n.size, d, d)))
    if d == 9:
        TH = np.asarray(K.randomness_threshold(n.astype(np.float64)), dtype=np.float64)
    else:
        TH = np.array([randomness_threshold_for(int(k), d) for k in n], dtype=np.float64)
    H = np.atleast_1d(m["variance_entropy"])
    S = np.atleast_1d(m["sparsity"])
    ok = (n >= MIN_FILTERS) & np.isfinite(TH) & (TH > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(ok, H / np.where(ok, TH, 1.0), np.nan)
    df = pd.DataFrame({"n": n, "sparsity": S, "variance_entropy": H, "threshold": TH,
                       "variance_entropy_norm": norm,
                       "variance_entropy_clean": np.atleast_1d(m["variance_entropy_clean"])})
    for f, v in flag_arrays(H, S, TH, n, d, t).items():
        df[f] = v
    return df


__all__ = ["HealthThresholds", "layer_metrics", "model_health", "summarise", "flags",
           "flag_names", "randomness_threshold_for", "low_diversity_limit",
           "health_from_moments", "COLUMNS", "FLAGS"]
