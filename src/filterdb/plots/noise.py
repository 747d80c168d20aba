"""Drift against its noise floor (filterdb.analysis.noise): one point per pair of groups."""
from __future__ import annotations

import numpy as np

from ._style import BLUE, GREY, ORANGE, new_figure, styled


@styled
def drift_vs_noise(result, alpha: float = 0.05, title: str | None = None):
    """Between-group drift per pair (points; filled when ``p <= alpha``) over the
    within-group model-to-model floor (grey band: pooled q25-q75, line: median) and each
    pair's permutation-null median (orange ticks). ``result``: a
    :class:`filterdb.analysis.NoiseFloor` (or anything with ``pairs``, ``within_pairs``, ``by``).
    Log y axis."""
    pairs = result.pairs.sort_values("drift").reset_index(drop=True)
    wd = np.asarray(result.within_pairs["drift"], float)
    n = len(pairs)
    fig = new_figure(max(3.6, 0.35 * n + 1.8), 3.4)
    ax = fig.add_subplot()
    x = np.arange(n)
    pos = wd[wd > 0]
    if len(pos):
        q25, q50, q75 = np.percentile(pos, [25, 50, 75])
        ax.axhspan(q25, q75, color=GREY, alpha=0.2, lw=0,
                   label=f"within-group drift q25-q75 ({len(wd)} pairs)")
        ax.axhline(q50, color=GREY, lw=1, label="within-group median")
    if n:
        sig = pairs["p_value"].to_numpy() <= alpha
        d = pairs["drift"].to_numpy()
        ax.scatter(x, pairs["null_median"], marker="_", s=120, color=ORANGE, lw=1.5,
                   label="permutation null median", zorder=2)
        ax.scatter(x[sig], d[sig], color=BLUE, s=28, zorder=3, label=f"pair, p <= {alpha:g}")
        ax.scatter(x[~sig], d[~sig], facecolor="white", edgecolor=BLUE, s=28, zorder=3,
                   label=f"pair, p > {alpha:g}")
        ax.set_xticks(x, [f"{a} | {b}" for a, b in zip(pairs["group_a"], pairs["group_b"])],
                      rotation=60, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("drift D")
    ax.set_xlabel(f"pairs of {result.by} groups")
    ax.set_title(title or f"drift by {result.by} against its noise floor")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return fig
