"""Drift figures: the heat map of a drift matrix and box plots of pairwise drifts (method.md 4)."""
from __future__ import annotations

import numpy as np
from matplotlib.colors import Normalize

from ..kernels.drift import mean_drift as kernel_mean_drift
from ._style import BLUE, CMAP_SEQUENTIAL, new_figure, size_labels, styled, text_colour_on

ANNOTATE_MAX = 16  # annotate cell values up to this many groups


def mean_drift(matrix) -> np.ndarray:
    """:func:`filterdb.kernels.drift.mean_drift`, with non-finite means last (``inf``)."""
    out = kernel_mean_drift(matrix)
    return np.where(np.isfinite(out), out, np.inf)


def drift_order(matrix, labels=None, order=None) -> np.ndarray:
    """Display order of the groups.

    ``order=None``: ascending mean drift (stable for ties). ``"keep"``: the given order
    (e.g. depth bins). Otherwise a sequence of indices or of labels.
    """
    m = np.asarray(matrix, dtype=float)
    G = m.shape[0]
    if order is None:
        return np.argsort(mean_drift(m), kind="stable")
    if isinstance(order, str):
        if order != "keep":
            raise ValueError(f"order must be None, 'keep', or a sequence, got {order!r}")
        return np.arange(G)
    order = list(order)
    if order and not all(isinstance(o, (int, np.integer)) for o in order):
        pos = {str(l): i for i, l in enumerate(labels)}
        try:
            order = [pos[str(o)] for o in order]
        except KeyError as e:
            raise ValueError(f"order names an unknown group: {e.args[0]!r}") from None
    idx = np.asarray(order, dtype=int)
    if sorted(idx.tolist()) != list(range(G)):
        raise ValueError(f"order must be a permutation of the {G} groups")
    return idx


@styled
def drift_heatmap(matrix, labels, sizes=None, order=None, title: str | None = None,
                  annotate: bool | None = None, vmax: float | None = None,
                  cbar_label: str = "drift D"):
    """Heat map of a symmetric drift matrix ``(G, G)``.

    Rows and columns are labelled ``"name (n=1,234)"`` and sorted by :func:`drift_order`;
    cell values are written when ``G <= 16`` (or ``annotate=True``).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"drift matrix must be square, got shape {m.shape}")
    G = m.shape[0]
    lab = size_labels(labels, sizes)
    if len(lab) != G:
        raise ValueError(f"{G} groups but {len(lab)} labels")
    idx = drift_order(m, [str(l) for l in labels], order)
    shown = m[np.ix_(idx, idx)]
    lab = [lab[i] for i in idx]
    annotate = G <= ANNOTATE_MAX if annotate is None else annotate
    longest = max((len(s) for s in lab), default=1)
    cell = 0.42 if G <= 16 else max(0.14, 6.5 / G)
    side = cell * G + 0.065 * longest
    fig = new_figure(side + 1.4, side + 0.4)
    ax = fig.add_subplot()
    finite = shown[np.isfinite(shown)]
    top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0) or 1.0
    norm = Normalize(vmin=0.0, vmax=top)
    im = ax.imshow(shown, cmap=CMAP_SEQUENTIAL, norm=norm, interpolation="nearest")
    fs = 8 if G <= 16 else max(4.5, 8 - (G - 16) * 0.1)
    ax.set_xticks(np.arange(G), lab, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=fs)
    ax.set_yticks(np.arange(G), lab, fontsize=fs)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if annotate:
        afs = 7.5 if G <= 8 else 6.5 if G <= 12 else 5.5
        for r in range(G):
            for c in range(G):
                v = shown[r, c]
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center",
                            va="center", fontsize=afs, color=text_colour_on(CMAP_SEQUENTIAL,
                                                                              norm, v))
    cb = fig.colorbar(im, ax=ax, shrink=min(1.0, 0.5 + 0.05 * G), pad=0.02, aspect=25)
    cb.set_label(cbar_label)
    if title:
        ax.set_title(title)
    return fig


def upper_triangle(matrix) -> np.ndarray:
    """The values above the diagonal of a square matrix (row-major), NaN dropped."""
    m = np.asarray(matrix, dtype=float)
    v = m[np.triu_indices(m.shape[0], k=1)]
    return v[np.isfinite(v)]


@styled
def drift_boxplot(values, title: str | None = "Pairwise drift per grouping",
                  log: bool = False, ylabel: str = "pairwise drift D"):
    """One box per grouping column of its pairwise drifts (upper-triangle values).

    ``values``: ``{column: 1-D values}``, boxes in the dict's order; whiskers at 1.5 IQR,
    every pair drawn as a jittered point on top. ``log=True`` uses a log y axis.
    """
    names = list(values)
    data = [np.asarray(values[k], dtype=float).ravel() for k in names]
    data = [v[np.isfinite(v)] for v in data]
    fig = new_figure(1.1 + 1.05 * max(len(names), 2), 3.2)
    ax = fig.add_subplot()
    pos = np.arange(1, len(names) + 1)
    ax.boxplot(data, positions=pos, widths=0.55, showfliers=False, patch_artist=True,
               medianprops=dict(color="black", lw=1.4),
               boxprops=dict(facecolor="#cfe3f3", edgecolor="#333333", lw=0.9),
               whiskerprops=dict(color="#333333", lw=0.9), capprops=dict(color="#333333", lw=0.9))
    rng = np.random.default_rng(0)
    for p, v in zip(pos, data):
        if v.size:
            ax.scatter(p + rng.uniform(-0.17, 0.17, v.size), v, s=7, color=BLUE, alpha=0.55,
                       lw=0, zorder=3)
    ax.set_xticks(pos, [f"{n}\n({v.size:,} pairs)" for n, v in zip(names, data)])
    ax.set_xlim(0.4, len(names) + 0.6)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.yaxis.grid(True)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return fig
