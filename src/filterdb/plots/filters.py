"""The filters of one layer as a grid of small images."""
from __future__ import annotations

import matplotlib as mpl
import numpy as np

from ._style import CMAP_DIVERGING, new_figure, styled

GAP_COLOUR = "#b8b8b8"  # the gaps between filters


def scale_by_peak(filters) -> np.ndarray:
    """Each filter (last two axes) divided by its absolute peak; all-zero filters stay zero."""
    f = np.asarray(filters, dtype=float)
    peak = np.max(np.abs(f), axis=(-2, -1), keepdims=True)
    return np.divide(f, peak, out=np.zeros_like(f), where=peak > 0)


def filter_mosaic(weight, ncols: int | None = None, gap: int = 1, block_gap: int = 3):
    """Lay the filters of ``weight (c_out, c_in, kh, kw)`` out as one image.

    Output channel ``o`` is a block of its ``c_in`` filters side by side; blocks fill a
    grid of ``ncols`` blocks per row. Filters are scaled by their own absolute peak
    (:func:`scale_by_peak`); gaps are NaN. Returns ``(mosaic, origins)`` with
    ``origins[o, i] = (row, col)`` of filter ``(o, i)``'s top-left pixel.
    """
    w = scale_by_peak(weight)
    if w.ndim != 4:
        raise ValueError(f"weight must be (c_out, c_in, kh, kw), got shape {w.shape}")
    c_out, c_in, kh, kw = w.shape
    if ncols is None:
        # a landscape mosaic (width about 1.3 x height)
        bw = c_in * kw + (c_in - 1) * gap
        ncols = int(round(np.sqrt(1.3 * c_out * (kh + block_gap) / (bw + block_gap))))
        ncols = min(c_out, max(ncols, 1))
    nrows = int(np.ceil(c_out / ncols))
    bw = c_in * kw + (c_in - 1) * gap
    H = nrows * kh + (nrows - 1) * block_gap
    W = ncols * bw + (ncols - 1) * block_gap
    mosaic = np.full((H, W), np.nan)
    origins = np.zeros((c_out, c_in, 2), dtype=int)
    for o in range(c_out):
        r0 = (o // ncols) * (kh + block_gap)
        c0 = (o % ncols) * (bw + block_gap)
        for i in range(c_in):
            c = c0 + i * (kw + gap)
            mosaic[r0:r0 + kh, c:c + kw] = w[o, i]
            origins[o, i] = (r0, c)
    return mosaic, origins


@styled
def first_layer_filters(weight, title: str | None = "First-layer filters", ncols=None,
                        max_out: int = 256, name: str | None = None):
    """The filters of a layer (usually the first) as a grid of small images.

    Each filter is scaled to its own absolute peak (colour range -1..1, diverging map);
    one block per output channel holds its ``c_in`` filters side by side (see
    :func:`filter_mosaic`). At most ``max_out`` output channels are shown.
    """
    w = np.asarray(weight, dtype=float)
    if w.ndim != 4:
        raise ValueError(f"weight must be (c_out, c_in, kh, kw), got shape {w.shape}")
    shown = w[:max_out]
    mosaic, _ = filter_mosaic(shown, ncols)
    H, W = mosaic.shape
    width = min(9.0, max(3.0, 0.075 * W + 1.2))
    height = min(12.0, max(2.0, (width - 1.2) * H / W + 0.8))
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    cmap = mpl.colormaps[CMAP_DIVERGING].with_extremes(bad=GAP_COLOUR)
    im = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=-1, vmax=1,
                   interpolation="nearest")
    ax.set_axis_off()
    cb = fig.colorbar(im, ax=ax, shrink=0.6, pad=0.02, aspect=20)
    cb.set_label("w / max|w| (per filter)")
    c_out, c_in = w.shape[:2]
    sub = f"{c_out} × {c_in} filters of {w.shape[2]}×{w.shape[3]}"
    if c_out > max_out:
        sub += f", first {max_out} output channels"
    if title:
        ax.set_title(f"{title}{': ' + name if name else ''}\n{sub}", fontsize=9)
    return fig
