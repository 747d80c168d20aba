"""PCA figures: eigen-images, explained variance, coefficient distributions (method.md 3-4)."""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.colors import LogNorm

from ._style import (
    BLUE,
    CMAP_DENSITY,
    CMAP_DIVERGING,
    CMAP_SEQUENTIAL,
    ORANGE,
    new_figure,
    size_labels,
    styled,
)


def _check_components(components, evr):
    c = np.asarray(components, dtype=float)
    e = np.asarray(evr, dtype=float).ravel()
    if c.ndim != 2 or c.shape[1] != 9:
        raise ValueError(f"components must be (k, 9), got shape {c.shape}")
    if e.shape[0] != c.shape[0]:
        raise ValueError(f"{c.shape[0]} components but {e.shape[0]} EVR values")
    return c, e


def evr_label(i: int, ratio: float) -> str:
    """``"c0  39.8 %"``."""
    return f"c{i}  {100 * ratio:.1f} %"


@styled
def eigen_images(components, evr, title: str | None = "Eigen-images (principal components)"):
    """The principal components as 3x3 images, one panel each, EVR under each panel.

    Colour limits are symmetric, shared by all panels: ``+- max |components|``.
    """
    c, e = _check_components(components, evr)
    k = c.shape[0]
    ncols = min(k, 9)
    nrows = int(np.ceil(k / ncols))
    fig = new_figure(0.95 * ncols + 0.9, 1.15 * nrows + (0.35 if title else 0.1))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    m = float(np.max(np.abs(c))) or 1.0
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_axis_off()
            continue
        im = ax.imshow(c[i].reshape(3, 3), cmap=CMAP_DIVERGING, vmin=-m, vmax=m)
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_color("#999999")
        ax.set_xlabel(evr_label(i, e[i]), fontsize=8.5, labelpad=3)
    cb = fig.colorbar(im, ax=axes, shrink=0.8, aspect=12, pad=0.015)
    cb.set_label("weight", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


@styled
def cumulative_evr(evr, title: str | None = "Explained variance"):
    """Explained variance ratio per component (bars) and its cumulative sum (line), in %."""
    e = 100 * np.asarray(evr, dtype=float).ravel()
    x = np.arange(e.size)
    fig = new_figure(4.6, 3.0)
    ax = fig.add_subplot()
    bars = ax.bar(x, e, color=BLUE, width=0.7, label="per component", zorder=2)
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in e], fontsize=7, padding=1.5)
    ax.plot(x, np.cumsum(e), color=ORANGE, marker="o", ms=4, lw=1.6, label="cumulative",
            zorder=3)
    ax.set_xticks(x, [f"c{i}" for i in x])
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio (%)")
    ax.set_ylim(0, 105)
    ax.yaxis.grid(True, zorder=0)
    ax.set_axisbelow(True)
    ax.legend(loc="center right")
    if title:
        ax.set_title(title)
    return fig


def ridge_scale(densities, overlap: float = 1.6) -> np.ndarray:
    """Per-component scale of the ridge plot: ``overlap / max density of that component``.

    A curve is drawn at ``y = row + density * scale[component]``; its rows (groups) are
    ``G - 1, ..., 0`` from the top, so a peak reaches ``overlap`` rows up.
    """
    d = np.asarray(densities, dtype=float)
    peak = np.nanmax(d, axis=(0, 2))
    peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    return overlap / peak


@styled
def ridge_plot(grid, densities, group_labels, group_sizes=None, overlap: float = 1.6,
               title: str | None = "Coefficient distributions per group",
               component_labels=None):
    """KDE curves of the PCA coefficients: one row per group, one column per component.

    ``densities`` is ``(G, k, x)`` evaluated on ``grid`` (``x``,), all columns share the
    x range. Group ``g`` is drawn at baseline ``G - 1 - g`` (first group on top) with
    ``y = baseline + densities[g, i] * ridge_scale(densities, overlap)[i]``.
    """
    x = np.asarray(grid, dtype=float).ravel()
    d = np.asarray(densities, dtype=float)
    if d.ndim != 3 or d.shape[2] != x.size:
        raise ValueError(f"densities must be (groups, components, {x.size}), got {d.shape}")
    G, k, _ = d.shape
    labels = size_labels(group_labels, group_sizes)
    if len(labels) != G:
        raise ValueError(f"{G} groups but {len(labels)} labels")
    scale = ridge_scale(d, overlap)
    comp = component_labels or [f"c{i}" for i in range(k)]
    row_h = 0.28 if G > 12 else 0.4
    fig = new_figure(1.3 + 0.9 * k + 0.09 * max(len(s) for s in labels),
                     1.0 + row_h * (G + overlap))
    axes = fig.subplots(1, k, sharex=True, sharey=True, squeeze=False)[0]
    colours = [fig_colour(g, G) for g in range(G)]
    lw = 0.9 if G <= 20 else 0.6
    for i, ax in enumerate(axes):
        for g in range(G):
            base = G - 1 - g
            y = base + d[g, i] * scale[i]
            ax.fill_between(x, base, y, color=colours[g], alpha=0.55, lw=0, zorder=2 * g)
            ax.plot(x, y, color="#222222", lw=lw, zorder=2 * g + 1)
        ax.set_title(comp[i])
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        ax.tick_params(axis="x", labelsize=7)
        ax.locator_params(axis="x", nbins=3)
        ax.set_xlim(x[0], x[-1])
    axes[0].set_yticks(np.arange(G)[::-1], labels, fontsize=8 if G <= 20 else 6.5)
    axes[0].set_ylim(-0.15, G - 1 + overlap + 0.1)
    fig.supxlabel("coefficient (projection on the global PCA)", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def fig_colour(g: int, G: int):
    """Colour of group ``g`` of ``G`` in the ridge plot (a sequential ramp)."""
    return mpl.colormaps[CMAP_SEQUENTIAL](0.2 + 0.65 * g / max(G - 1, 1))


def _range_pair(v):
    v = np.asarray(v, dtype=float).ravel()
    return (float(v[0]), float(v[0])) if v.size == 1 else (float(v[0]), float(v[1]))


@styled
def density_c0_c1(counts2d, lo, hi, title: str | None = "Filters in the c0-c1 plane",
                  xlabel: str = "c0", ylabel: str = "c1"):
    """Log-density image of the (c0, c1) coefficients.

    ``counts2d[i, j]`` counts filters with c0 in bin ``i`` and c1 in bin ``j`` (the
    ``numpy.histogram2d(c0, c1)`` convention) over ``[lo, hi]`` (scalars, or pairs for
    (c0, c1)). Shown as ``counts2d.T`` (c0 on x, c1 on y); empty bins are blank.
    """
    c = np.asarray(counts2d, dtype=float)
    if c.ndim != 2:
        raise ValueError(f"counts2d must be 2-D, got shape {c.shape}")
    (lo0, lo1), (hi0, hi1) = _range_pair(lo), _range_pair(hi)
    img = np.ma.masked_less_equal(c.T, 0)
    fig = new_figure(4.4, 3.7)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    pos = c[c > 0]
    norm = LogNorm(vmin=pos.min(), vmax=max(pos.max(), pos.min() * 10)) if pos.size else None
    im = ax.imshow(img, origin="lower", extent=(lo0, hi0, lo1, hi1), aspect="auto",
                   cmap=CMAP_DENSITY, norm=norm, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, pad=0.02)
    cb.set_label("filters per bin (log scale)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for s in ("top", "right"):
        ax.spines[s].set_visible(True)
    if title:
        ax.set_title(title)
    return fig


def mean_filter(mean, title: str | None = "Mean scaled filter"):
    """The mean of the scaled filters as a 3x3 image, each weight written in its cell
    (method.md 3: a mean of about -0.04 in every position on the published data set)."""
    m = np.asarray(mean, dtype=float).reshape(3, 3)
    fig = new_figure(2.6, 2.4)
    ax = fig.add_subplot()
    lim = float(np.max(np.abs(m))) or 1.0
    im = ax.imshow(m, cmap=CMAP_DIVERGING, vmin=-lim, vmax=lim)
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, shrink=0.85, aspect=14, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title)
    return fig
