"""Layer-health figures: degeneration scatter, metrics over depth, a model against the
population (method.md 5)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..kernels import metrics as M
from ._style import (
    BLUE,
    DEPTH_BINS,
    GREEN,
    GREY,
    ORANGE,
    PURPLE,
    RED,
    depth_bin,
    new_figure,
    styled,
)

SPARSE_S = 0.14
RANDOM_MARGIN = 0.02
LOW_DIVERSITY_H = 0.5

# Category of a layer in the health scatter, its legend label and colour (first match wins).
CATEGORIES = (
    ("random", "random: H ≥ TH(n) − {margin:g}", RED),
    ("low_diverse_sparse", "low diversity (H < {low:g}) + sparse", PURPLE),
    ("low_diversity", "low diversity only", ORANGE),
    ("sparse", "sparse only (S ≥ {sparse:g})", GREEN),
    ("ok", "not flagged", BLUE),
)
CATEGORY_COLOURS = {k: c for k, _, c in CATEGORIES}

METRIC_LABELS = {s.name: s.title for s in M.METRICS}  # the registry (kernels.metrics)


def _flag(df, col, default=None):
    if col in df:
        return df[col].fillna(False).astype(bool).to_numpy()
    if default is None:
        raise ValueError(f"health table needs a column {col!r}")
    return np.asarray(default, dtype=bool)


def health_category(df: pd.DataFrame, sparse_S: float = SPARSE_S) -> np.ndarray:
    """Each layer's category (see ``CATEGORIES``) from its flag columns.

    Uses ``random``, ``low_diversity`` and ``sparse`` (or ``sparsity >= sparse_S`` when
    there is no ``sparse`` column).
    """
    S = df["sparsity"].to_numpy(dtype=float)
    random = _flag(df, "random")
    low = _flag(df, "low_diversity")
    sparse = _flag(df, "sparse", default=np.nan_to_num(S, nan=0.0) >= sparse_S)
    out = np.full(len(df), "ok", dtype=object)
    out[sparse] = "sparse"
    out[low] = "low_diversity"
    out[low & sparse] = "low_diverse_sparse"
    out[random] = "random"
    return out


@styled
def health_scatter(df: pd.DataFrame, title: str | None = "Layer degeneration",
                   sparse_S: float = SPARSE_S, random_margin: float = RANDOM_MARGIN,
                   low_diversity_H: float = LOW_DIVERSITY_H):
    """``H / TH`` against sparsity ``S``, one point per layer, coloured by flag.

    Draws the sparsity threshold ``S = sparse_S`` and ``H / TH = 1``: the randomness line
    (a layer is random at ``H >= TH(n) - margin``, so in these units the exact line
    depends on the layer's ``TH(n)``; the ``H < low_diversity_H`` limit likewise).
    Layers without finite metrics (1x1, too few filters) are left out and counted.
    """
    S = df["sparsity"].to_numpy(dtype=float)
    Hn = df["variance_entropy_norm"].to_numpy(dtype=float)
    cat = health_category(df, sparse_S)
    ok = np.isfinite(S) & np.isfinite(Hn)
    fig = new_figure(5.6, 4.6)
    ax = fig.add_subplot()
    ax.axvspan(sparse_S, 1.02, color="#f2f2f2", zorder=0, lw=0)
    ax.axvline(sparse_S, color=GREY, ls="--", lw=0.9, zorder=1)
    ax.axhline(1.0, color=RED, ls="--", lw=0.9, zorder=1)
    box = dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1)
    ax.text(0.99, 1.0, "H / TH = 1 (random-like)", color=RED, fontsize=7, ha="right",
            va="top", transform=ax.get_yaxis_transform(), bbox=box, zorder=2)
    ax.text(sparse_S, 0.01, f" S = {sparse_S:g} (sparse)", color="#555555", fontsize=7,
            ha="left", va="bottom", transform=ax.get_xaxis_transform(), bbox=box, zorder=2)
    fmt = dict(margin=random_margin, low=low_diversity_H, sparse=sparse_S)
    for key, label, colour in CATEGORIES:
        sel = ok & (cat == key)
        if sel.any():
            ax.scatter(S[sel], Hn[sel], s=22, color=colour, edgecolor="white", lw=0.4,
                       alpha=0.9, zorder=3, label=f"{label.format(**fmt)}  ({int(sel.sum())})")
    ax.set_xlim(-0.02, 1.02)
    top = np.nanmax(Hn[ok]) if ok.any() else 1.1
    ax.set_ylim(0, max(1.15, top * 1.05))
    ax.set_xlabel("sparsity S (share of near-zero filters)")
    ax.set_ylabel("normalised variance entropy H / TH(n)")
    n_out = int((~ok).sum())
    head = "degenerated: random, or low diversity + sparse"
    if n_out:
        head += f"\n{n_out} layer(s) without finite metrics not shown"
    h, l = ax.get_legend_handles_labels()
    fig.legend(h, l, loc="outside lower center", title=head, title_fontsize=7.5, ncols=2,
               columnspacing=1.2, handletextpad=0.3)
    if title:
        ax.set_title(title)
    return fig


def binned_median(x, y, n_bins: int = DEPTH_BINS):
    """Median of ``y`` per depth bin of ``x``: ``(bin centres, medians)`` of non-empty bins."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    b = depth_bin(x[ok], n_bins)
    centres, med = [], []
    for i in range(n_bins):
        v = y[ok][b == i]
        if v.size:
            centres.append((i + 0.5) / n_bins)
            med.append(float(np.median(v)))
    return np.array(centres), np.array(med)


HEALTH_METRICS = M.names(headline=True)


@styled
def health_by_depth(df: pd.DataFrame, metrics=HEALTH_METRICS,
                    title: str | None = "Layer metrics over depth", n_bins: int = DEPTH_BINS,
                    sparse_S: float = SPARSE_S):
    """Each metric against ``conv_depth_norm``: layers as points (degenerated ones red, if a
    ``degenerated`` column exists) and the median per depth bin as a line; dashed: ``H / TH
    = 1`` and the sparse threshold ``sparse_S`` in use."""
    x = df["conv_depth_norm"].to_numpy(dtype=float)
    deg = _flag(df, "degenerated", default=np.zeros(len(df), bool))
    fig = new_figure(3.0 * len(metrics) + 0.4, 3.0)
    axes = fig.subplots(1, len(metrics), sharex=True, squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        y = df[m].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        colours = np.where(deg[ok], RED, BLUE)
        ax.scatter(x[ok], y[ok], s=12, c=list(colours), alpha=0.6, lw=0, zorder=2)
        cx, my = binned_median(x, y, n_bins)
        ax.plot(cx, my, color="black", lw=1.5, marker="o", ms=3.5, zorder=3,
                label="median per depth bin")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("conv depth (normalised)")
        ax.set_ylabel(METRIC_LABELS.get(m, m))
        ax.yaxis.grid(True)
        ax.set_axisbelow(True)
        if m == "variance_entropy_norm":
            ax.axhline(1.0, color=RED, ls="--", lw=0.8, zorder=1)
        if m == "sparsity":
            ax.axhline(sparse_S, color=GREY, ls="--", lw=0.8, zorder=1)
    handles = [axes[0].scatter([], [], s=12, color=BLUE, label="layer"),
               axes[0].scatter([], [], s=12, color=RED, label="degenerated layer"),
               axes[0].lines[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    if title:
        fig.suptitle(title)
    return fig


BAND_COLUMNS = ("depth_bin", "metric", "p10", "p25", "p50", "p75", "p90")


def band_x(depth_bin, n_bins: int = DEPTH_BINS) -> np.ndarray:
    """x position of a depth bin: integer bin index -> its centre ``(i + 0.5) / n_bins``;
    floats are taken as positions; ``pandas.Interval`` -> its midpoint."""
    s = pd.Series(depth_bin)
    if len(s) and isinstance(s.iloc[0], pd.Interval):
        return np.array([iv.mid for iv in s], dtype=float)
    if pd.api.types.is_integer_dtype(s):
        return (s.to_numpy(dtype=float) + 0.5) / n_bins
    return s.to_numpy(dtype=float)


@styled
def model_health_vs_population(model_df: pd.DataFrame, population_bands: pd.DataFrame,
                               metrics=None, title: str | None = "This model against the database",
                               n_bins: int = DEPTH_BINS):
    """A model's per-layer metrics over depth on the population's percentile bands.

    ``population_bands``: columns ``depth_bin, metric, p10, p25, p50, p75, p90`` (one row
    per metric and depth bin; see :func:`band_x` for ``depth_bin``). Bands: 10-90 % light,
    25-75 % darker, median dashed; the model's layers are points (degenerated ones red).
    """
    missing = [c for c in BAND_COLUMNS if c not in population_bands]
    if missing:
        raise ValueError(f"population bands need columns {missing}")
    if metrics is None:
        present = list(dict.fromkeys(population_bands["metric"]))
        metrics = [m for m in HEALTH_METRICS if m in present] + \
            [m for m in present if m not in HEALTH_METRICS]
    x = model_df["conv_depth_norm"].to_numpy(dtype=float)
    deg = _flag(model_df, "degenerated", default=np.zeros(len(model_df), bool))
    fig = new_figure(3.0 * len(metrics) + 0.4, 3.1)
    axes = fig.subplots(1, len(metrics), sharex=True, squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        b = population_bands[population_bands["metric"] == m].copy()
        b["_x"] = band_x(b["depth_bin"], n_bins)
        b = b.sort_values("_x")
        bx = b["_x"].to_numpy()
        ax.fill_between(bx, b["p10"], b["p90"], color="#c6dbef", lw=0, zorder=1,
                        label="population 10-90 %")
        ax.fill_between(bx, b["p25"], b["p75"], color="#6baed6", lw=0, zorder=1.5,
                        label="population 25-75 %")
        ax.plot(bx, b["p50"], color="#08306b", lw=1.1, ls="--", zorder=2,
                label="population median")
        if m in model_df:
            y = model_df[m].to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok & ~deg], y[ok & ~deg], s=18, color="black", zorder=3,
                       label="this model's layers")
            if (ok & deg).any():
                ax.scatter(x[ok & deg], y[ok & deg], s=22, color=RED, marker="X", zorder=4,
                           label="degenerated layer")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("conv depth (normalised)")
        ax.set_ylabel(METRIC_LABELS.get(m, m))
    seen = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(l, h)
    handles, labels = list(seen.values()), list(seen)
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    if title:
        fig.suptitle(title)
    return fig
