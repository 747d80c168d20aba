"""Shared styling, figure creation and saving for the figures of :mod:`filterdb.plots`.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
figure registry, Agg rendering), under one rc style applied with :func:`styled`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

# Colour maps suited to the quantity.
CMAP_DIVERGING = "RdBu_r"  # signed, symmetric around 0 (eigen-images, filters)
CMAP_SEQUENTIAL = "viridis"  # non-negative, ordered (drift)
CMAP_DENSITY = "magma"  # counts on a log scale

# Categorical colours (colour-blind-safe, Okabe-Ito).
BLUE, ORANGE, GREEN, RED, PURPLE, GREY, SKY = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#7F7F7F", "#56B4E9")

STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "axes.edgecolor": "#333333",
    "axes.grid": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "xtick.major.width": 0.8,
    "ytick.major.width": 0.8,
    "legend.frameon": False,
    "image.interpolation": "nearest",
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "svg.hashsalt": "filterdb",  # deterministic SVG ids
}


def styled(func):
    """Run a figure function under the package style (rc settings are restored after)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A Figure of ``width x height`` inches with the constrained layout engine."""
    kwargs.setdefault("layout", "constrained")
    return Figure(figsize=(width, height), **kwargs)


def save(fig: Figure, path_stem, formats=("png", "svg"), dpi: int | None = None) -> list[Path]:
    """Write ``fig`` to ``<path_stem>.png`` and ``<path_stem>.svg``; return the paths.

    Metadata dates are left out so that the same figure gives the same bytes.
    """
    stem = Path(os.fspath(path_stem))
    if stem.suffix.lower() in {".png", ".svg", ".pdf"}:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with mpl.rc_context(STYLE):
        for fmt in formats:
            p = stem.with_name(f"{stem.name}.{fmt}")
            meta = {"Software": None} if fmt == "png" else {"Date": None}
            fig.savefig(p, format=fmt, dpi=dpi, metadata=meta)
            out.append(p)
    return out


def size_label(label, size=None) -> str:
    """``"name (n=1,234)"``, or ``"name"`` when ``size`` is None."""
    if size is None or (isinstance(size, float) and not np.isfinite(size)):
        return str(label)
    return f"{label} (n={int(size):,})"


def size_labels(labels, sizes=None) -> list[str]:
    labels = [str(l) for l in labels]
    if sizes is None:
        return labels
    sizes = list(sizes)
    if len(sizes) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(sizes)} sizes")
    return [size_label(l, s) for l, s in zip(labels, sizes)]


def text_colour_on(cmap, norm, value) -> str:
    """Black or white, whichever reads better on the colour of ``value``."""
    r, g, b, _ = mpl.colormaps[cmap](norm(value)) if isinstance(cmap, str) else cmap(norm(value))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "black" if lum > 0.45 else "white"


DEPTH_BINS = 10


# one definition of the depth bins for the whole package (method.md section 4)
from ..kernels.drift import depth_bin, depth_bin_labels  # noqa: E402,F401
