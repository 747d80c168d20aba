"""The one assessment of layers and the one verdict (docs/method.md, section 5), used by
``filterdb check``, ``filterdb health``, the reports and the Python API alike (summaries
of assessed tables: :mod:`filterdb.health.summary`).

Inputs per layer: ``n`` filters, the kernel ``kh x kw`` (``d = kh * kw``), sparsity ``S``
and variance entropy ``H`` (from a model file or from the database's stored metrics).

- **assessed**: ``d > 1``, ``n >= 3`` and finite ``S`` and ``H`` (otherwise the column
  ``not_assessed`` says why: 1x1 kernel, fewer than 3 filters, non-finite weights, no
  stored metrics).
- **random-like**, rule ``calibrated`` (the default): ``H`` lies inside the distribution of
  ``H`` of i.i.d. random layers of the same ``n`` and kernel
  (:func:`filterdb.kernels.randomness.random_entropy`): ``p_random >= alpha`` with
  ``p_random`` = the share of simulated random layers whose ``H`` is at most the layer's
  (small: more structured than random layers of its size). Rule ``paper``:
  ``H >= TH(n) - margin``; that flag is always the column ``random_paper``.
- **low diversity**: ``H < low_diversity_H`` (scaled by ``log10 d / log10 9`` for
  kernels other than 3x3); **sparse**: ``S >= sparse_S``.
- **degenerated**: random-like, or low-diversity and sparse.
- **verdict**: ``good start`` when no assessed layer is degenerated, ``caution`` when at
  most ``poor_share`` of them are, ``poor start`` above; ``not assessed`` without one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..kernels import health as K
from ..kernels.randomness import K_EXACT, random_stats, simulated_threshold

FLAGS = ("random", "low_diversity", "sparse", "degenerated")
RULES = ("calibrated", "paper")
MIN_FILTERS = 3
VERDICTS = ("good start", "caution", "poor start", "not assessed")
ASSESS_COLUMNS = ("threshold", "variance_entropy_norm", "random_mean", "random_sd",
                  "p_random", "random_method", "random_paper", "random", "low_diversity", "sparse",
                  "degenerated", "assessed", "not_assessed", "reason")


@dataclass(frozen=True)
class HealthThresholds:
    """Configurable thresholds; the defaults are the method's (``alpha``: see the module
    docstring; ``poor_share``: share of degenerated layers above which the verdict is
    "poor start")."""

    sparsity_eps: float = 0.01
    random_margin: float = 0.02
    low_diversity_H: float = 0.5
    sparse_S: float = 0.14
    poor_share: float = 0.2
    rule: str = "calibrated"
    alpha: float = 0.05

    def __post_init__(self):
        if self.rule not in RULES:
            raise FilterDBError(f"unknown randomness rule {self.rule!r}; use "
                                + " or ".join(RULES))
        if not (0.0 < self.alpha < 1.0):
            raise FilterDBError(f"alpha must lie in (0, 1), got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)


def paper_threshold(n, d: int = 9) -> float:
    """``TH(n)``: the published curve for ``d = 9``, the mean ``H`` of i.i.d. random
    layers otherwise (:func:`filterdb.kernels.randomness.simulated_threshold`); NaN for
    ``d < 2`` or ``n < 1``."""
    if d < 2 or n < 1:
        return float("nan")
    return K.randomness_threshold(n) if d == 9 else simulated_threshold(n, d)


def low_diversity_limit(d, thresholds: HealthThresholds):
    """The low-diversity ``H`` limit for dimension ``d`` (the configured one for 3x3)."""
    d = np.asarray(d, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lim = np.where(d > 1, thresholds.low_diversity_H * np.log10(np.maximum(d, 1))
                       / math.log10(9), np.nan)
    lim = np.where(d == 9, thresholds.low_diversity_H, lim)
    return float(lim) if lim.ndim == 0 else lim


def assess(n, kh, kw, S, H, thresholds: HealthThresholds | None = None,
           missing=None) -> pd.DataFrame:
    """The assessment of many layers (arrays of equal length): the columns
    :data:`ASSESS_COLUMNS`. ``missing``: True where the metrics are unknown (the database
    holds none for the layer). Each distinct ``(n, d)`` is simulated once (cached)."""
    t = thresholds or HealthThresholds()
    n = np.atleast_1d(np.asarray(n, np.int64))
    kh = np.broadcast_to(np.atleast_1d(np.asarray(kh, np.int64)), n.shape)
    kw = np.broadcast_to(np.atleast_1d(np.asarray(kw, np.int64)), n.shape)
    S = np.atleast_1d(np.asarray(S, np.float64))
    H = np.atleast_1d(np.asarray(H, np.float64))
    missing = (np.zeros(n.shape, bool) if missing is None
               else np.broadcast_to(np.atleast_1d(np.asarray(missing, bool)), n.shape))
    d = kh * kw
    nan = np.nan
    TH = np.full(n.shape, nan)
    mean = np.full(n.shape, nan)
    sd = np.full(n.shape, nan)
    p = np.full(n.shape, nan)
    method = np.full(n.shape, "", dtype=object)
    is3 = d == 9
    TH[is3 & (n >= 1)] = K.randomness_threshold(n[is3 & (n >= 1)].astype(np.float64))
    sim = (d > 1) & (n >= MIN_FILTERS)
    idx = np.flatnonzero(sim)
    if len(idx):
        mean[idx], sd[idx], p[idx], method[idx] = random_stats(n[idx], d[idx], H[idx])
        other = idx[d[idx] != 9]
        TH[other] = mean[other]
    assessed = sim & np.isfinite(H) & np.isfinite(S) & ~missing
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(sim & (TH > 0), H / np.where(TH > 0, TH, 1.0), nan)
        random_paper = assessed & (TH - t.random_margin <= H)
        random_cal = assessed & (p >= t.alpha)
        low = assessed & (low_diversity_limit(d, t) > H)
        sparse = assessed & (t.sparse_S <= S)
    random = random_paper if t.rule == "paper" else random_cal
    deg = random | (low & sparse)
    why = np.full(n.shape, "", dtype=object)
    why[~assessed] = "non-finite weights"
    why[~assessed & missing] = "no stored metrics"
    why[n < MIN_FILTERS] = f"fewer than {MIN_FILTERS} filters"
    why[d <= 1] = "1x1 kernel"
    df = pd.DataFrame({"threshold": TH, "variance_entropy_norm": norm, "random_mean": mean,
                       "random_sd": sd, "p_random": np.where(assessed, p, nan),
                       "random_method": method,
                       "random_paper": random_paper, "random": random, "low_diversity": low,
                       "sparse": sparse, "degenerated": deg, "assessed": assessed,
                       "not_assessed": why})
    df["reason"] = reasons(df, n, d, S, H, t)
    return df


def assess_frame(df: pd.DataFrame, thresholds: HealthThresholds | None = None,
                 missing=None) -> pd.DataFrame:
    """``df`` (needs ``n``, ``kernel`` "KHxKW", ``sparsity``, ``variance_entropy``) with the
    columns of :func:`assess` set."""
    kk = [str(k).split("x") for k in df["kernel"].tolist()]
    kh = np.array([int(a) for a, _ in kk], np.int64)
    kw = np.array([int(b) for _, b in kk], np.int64)
    a = assess(df["n"].to_numpy(np.int64), kh, kw, df["sparsity"].to_numpy(np.float64),
               df["variance_entropy"].to_numpy(np.float64), thresholds, missing)
    out = df.copy()
    for c in ASSESS_COLUMNS:
        out[c] = a[c].to_numpy()
    return out


def reasons(df: pd.DataFrame, n, d, S, H, t: HealthThresholds) -> list[str]:
    """One sentence per flagged layer ("" for the others): what was found, against what."""
    out = [""] * len(df)
    ld = np.broadcast_to(low_diversity_limit(d, t), np.shape(n))
    rnd, low, sp = (df[c].to_numpy(bool) for c in ("random", "low_diversity", "sparse"))
    TH, mean, sd, p = (df[c].to_numpy(np.float64) for c in
                       ("threshold", "random_mean", "random_sd", "p_random"))
    for i in np.flatnonzero(rnd | low | sp).tolist():
        parts = []
        if rnd[i]:
            if t.rule == "paper":
                parts.append(f"random-like (paper rule): H {H[i]:.3f} >= TH({n[i]}) - "
                             f"{t.random_margin:g} = {TH[i] - t.random_margin:.3f}")
            else:
                parts.append(f"random-like: H {H[i]:.3f}, random layers of n={n[i]} give "
                             f"{mean[i]:.3f} +- {sd[i]:.3f} (p {p[i]:.2f} >= {t.alpha:g})")
        if low[i] and sp[i]:
            parts.append(f"sparse and low-diversity: S {S[i]:.3f} >= {t.sparse_S:g} and "
                         f"H {H[i]:.3f} < {ld[i]:.3f}")
        elif low[i]:
            parts.append(f"low diversity only: H {H[i]:.3f} < {ld[i]:.3f}, but S {S[i]:.3f} "
                         f"< {t.sparse_S:g} (not degenerated by it)")
        elif sp[i]:
            parts.append(f"sparse only: S {S[i]:.3f} >= {t.sparse_S:g}, but H {H[i]:.3f} >= "
                         f"{ld[i]:.3f} (not degenerated by it)")
        out[i] = "; ".join(parts)
    return out


def flag_names(row) -> list[str]:
    """The names of the raised flags of a row (``degenerated`` last)."""
    return [f for f in FLAGS if bool(row[f])]


def verdict(n_assessed: int, n_degenerated: int,
            thresholds: HealthThresholds | None = None) -> str:
    """The verdict: ``good start`` / ``caution`` / ``poor start`` / ``not assessed``
    (module docstring); the one rule every summary uses."""
    t = thresholds or HealthThresholds()
    if not n_assessed:
        return "not assessed"
    if not n_degenerated:
        return "good start"
    return "caution" if n_degenerated / n_assessed <= t.poor_share else "poor start"


def verdict_sentence(counts: dict, thresholds: HealthThresholds | None = None) -> str:
    """The :func:`verdict` as one unambiguous sentence from the counts of
    :func:`filterdb.health.summary.summarise`."""
    t = thresholds or HealthThresholds()
    a, g = counts["n_assessed"], counts["n_degenerated"]
    cls = verdict(a, g, t)
    if cls == "not assessed":
        return ("not assessed: no layer with a kernel larger than 1x1, at least "
                f"{MIN_FILTERS} filters and metrics")
    limit = f"{t.poor_share:.0%}"
    if not g:
        s = (f"good start: none of the {a} assessed layers is degenerated "
             "(random-like, or sparse and low-diversity)")
    else:
        share = f"{g / a:.0%}"
        how = (f"at most the {limit} limit of a poor start" if cls == "caution"
               else f"more than the {limit} limit")
        s = (f"{cls}: {g} of {a} assessed layers ({share}, {how}) "
             f"{'is' if g == 1 else 'are'} degenerated: "
             f"{counts['n_random']} random-like, {counts['n_low_diversity_sparse']} both "
             "sparse and low-diversity")
    extra = []
    if counts.get("n_low_diversity_only"):
        extra.append(f"{counts['n_low_diversity_only']} low-diversity only")
    if counts.get("n_sparse_only"):
        extra.append(f"{counts['n_sparse_only']} sparse only")
    if extra:
        s += "; flagged but not degenerated: " + ", ".join(extra)
    return s + "."


def extrapolated_line(df: pd.DataFrame) -> str:
    """Which layers' random reference is extrapolated, and how ("" when none is)."""
    if not len(df) or "random_method" not in df:
        return ""
    sel = df["assessed"].to_numpy(bool) & (df["random_method"] == "extrapolated").to_numpy()
    k = int(np.count_nonzero(sel))
    if not k:
        return ""
    return (f"H random of {k} layer{'s' if k != 1 else ''} with min(n - 1, kh*kw) > "
            f"{K_EXACT} is extrapolated (bounded cost): drawn at {K_EXACT} dimensions with "
            "the same ratio and mapped by the Marchenko-Pastur limit")


def not_assessed_line(summary: dict) -> str:
    """The non-assessed layers in one line ("" when every layer is assessed)."""
    nota = summary.get("not_assessed") or {}
    if not nota:
        return ""
    total = sum(nota.values())
    return (f"not assessed: {total} layer{'s' if total != 1 else ''} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(nota.items(), key=lambda kv: -kv[1]))
            + ")")


def legend(thresholds: HealthThresholds | None = None) -> list[str]:
    """The legend, thresholds and rule printed under every health table."""
    t = thresholds or HealthThresholds()
    if t.rule == "paper":
        rnd = (f"random-like (rule paper): H >= TH(n) - {t.random_margin:g}; the calibrated "
               f"flag is p >= {t.alpha:g}")
    else:
        rnd = (f"random-like (rule calibrated): p >= {t.alpha:g}; the paper's rule "
               f"H >= TH(n) - {t.random_margin:g} is the column (count) 'paper'")
    return [
        f"S: sparsity, share of filters with every |w| < {t.sparsity_eps:g} * max|W|; "
        f"sparse: S >= {t.sparse_S:g}",
        "H: variance entropy of the filters (0 .. log10(kh*kw)); TH: the paper's randomness "
        "threshold TH(n) (3x3; other kernels: mean H of random layers); H/TH: normalised",
        "H random: mean +- sd of H of i.i.d. random layers with the same n and kernel "
        "(simulated); p: share of those random layers whose H is <= the layer's",
        rnd,
        f"low diversity: H < {t.low_diversity_H:g} (3x3; x log10(d)/log10(9) for d = kh*kw);"
        " degenerated = random-like, or low-diversity and sparse",
        f"verdict: good start if no assessed layer is degenerated, caution up to "
        f"{t.poor_share:.0%} of them, poor start above",
    ]


__all__ = ["HealthThresholds", "assess", "assess_frame", "verdict", "verdict_sentence",
           "legend", "not_assessed_line", "extrapolated_line", "flag_names", "paper_threshold",
           "low_diversity_limit", "reasons", "FLAGS", "RULES", "MIN_FILTERS",
           "ASSESS_COLUMNS", "VERDICTS"]
