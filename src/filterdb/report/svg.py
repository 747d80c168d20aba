"""Inline SVG figures whose points say what they are on hover (``<title>``): the health
scatter of variance entropy H against sparsity S with the flag thresholds in use drawn
(method.md, section 5). Pure text out; no matplotlib.

>>> import pandas as pd
>>> df = pd.DataFrame({"model": ["a"], "name": ["conv1"], "sparsity": [0.2],
...                    "variance_entropy": [0.3], "n": [64], "random": [False],
...                    "low_diversity": [True], "sparse": [True], "degenerated": [True]})
>>> svg = health_scatter_svg(df, low_diversity_H=0.5, sparse_S=0.14)
>>> svg.startswith("<svg") and "a · conv1" in svg
True
"""
from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd

from ..plots.health import CATEGORIES, health_category

W, H_, LEFT, RIGHT, TOP, BOTTOM = 660, 450, 58, 200, 26, 46
H_MAX = math.log10(9)  # the largest variance entropy of 3x3 filters


def _x(s):
    return LEFT + (np.asarray(s, float) + 0.02) / 1.04 * (W - LEFT - RIGHT)


def _y(h, top):
    return TOP + (1 - np.asarray(h, float) / top) * (H_ - TOP - BOTTOM)


def health_scatter_svg(df: pd.DataFrame, low_diversity_H: float = 0.5, sparse_S: float = 0.14,
                       random_rule: str = "random-like (its H in the range of random layers "
                                              "of its n)", max_points: int = 6000,
                       seed: int = 0) -> str:
    """H against S, one point per assessed layer, coloured by flag, with the two thresholds
    (``H < low_diversity_H``, ``S >= sparse_S``) drawn and their degenerated corner shaded.

    Layers flagged random depend on their own n, so the rule is named, not drawn. Beyond
    ``max_points`` layers, unflagged ones are thinned (deterministically, said in the
    figure); every flagged layer is kept."""
    S = df["sparsity"].to_numpy(float)
    Hv = df["variance_entropy"].to_numpy(float)
    ok = np.isfinite(S) & np.isfinite(Hv)
    cat = health_category(df, sparse_S)
    keep = ok.copy()
    plain = np.flatnonzero(ok & (cat == "ok"))
    # unflagged layers fill what the flagged leave of max_points, and at least a quarter of
    # it, so that the population they stand out from is always drawn
    budget = max(max_points - int((ok & (cat != "ok")).sum()), max_points // 4)
    thinned = 0
    if len(plain) > max(budget, 0):
        rng = np.random.default_rng(seed)
        drop = rng.choice(plain, len(plain) - max(budget, 0), replace=False)
        keep[drop] = False
        thinned = len(drop)
    top = max(H_MAX, float(np.nanmax(Hv[ok])) if ok.any() else H_MAX) * 1.02
    x0, x1 = _x(-0.02), _x(1.02)
    y0, y1 = _y(0, top), _y(top, top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H_}" width="{W}" '
           f'height="{H_}" role="img" aria-label="variance entropy against sparsity" '
           'font-family="system-ui, sans-serif" font-size="11">']
    # the degenerated corner (low diversity and sparse), then the threshold lines
    xs, yl = _x(sparse_S), _y(low_diversity_H, top)
    out.append(f'<rect x="{xs:.1f}" y="{yl:.1f}" width="{x1 - xs:.1f}" height="{y0 - yl:.1f}" '
               'fill="#fde4e1"><title>degenerated: low diversity and sparse '
               f'(H &lt; {low_diversity_H:g}, S ≥ {sparse_S:g})</title></rect>')
    out.append(f'<line x1="{xs:.1f}" y1="{y1:.1f}" x2="{xs:.1f}" y2="{y0:.1f}" stroke="#555" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{xs:.1f}" y="{y1 - 4:.1f}" fill="#555" text-anchor="middle">'
               f"sparse: S ≥ {sparse_S:g}</text>")
    out.append(f'<line x1="{x0:.1f}" y1="{yl:.1f}" x2="{x1:.1f}" y2="{yl:.1f}" stroke="#555" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x1 + 4:.1f}" y="{yl + 4:.1f}" fill="#555" font-size="10">'
               f"low diversity: H &lt; {low_diversity_H:g}</text>")
    ym = _y(H_MAX, top)
    out.append(f'<line x1="{x0:.1f}" y1="{ym:.1f}" x2="{x1:.1f}" y2="{ym:.1f}" stroke="#bbb"/>')
    out.append(f'<text x="{x1 - 3:.1f}" y="{ym - 4:.1f}" fill="#888" text-anchor="end">'
               "largest possible H, log10 9</text>")
    # axes
    out.append(f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}" '
               'fill="none" stroke="#999"/>')
    for t in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x = _x(t)
        out.append(f'<text x="{x:.1f}" y="{y0 + 15:.1f}" text-anchor="middle">{t:g}</text>')
    for t in (0, 0.2, 0.4, 0.6, 0.8):
        y = _y(t, top)
        out.append(f'<text x="{x0 - 5:.1f}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{H_ - 8}" text-anchor="middle">sparsity S '
               "(share of near-zero filters)</text>")
    out.append(f'<text transform="translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)" '
               'text-anchor="middle">variance entropy H</text>')
    # points, flagged ones last (on top)
    names = (df["model"].astype(str) + " · " + df["name"].astype(str)).to_numpy() \
        if "model" in df else df["name"].astype(str).to_numpy()
    Hn = df["variance_entropy_norm"].to_numpy(float) if "variance_entropy_norm" in df \
        else np.full(len(df), np.nan)
    n = df["n"].to_numpy() if "n" in df else np.full(len(df), 0)
    px, py = _x(S), _y(Hv, top)
    legend = []
    labels = {"random": random_rule}
    for key, label, colour in reversed(CATEGORIES):
        sel = np.flatnonzero(keep & (cat == key))
        total = int((ok & (cat == key)).sum())
        if not total:
            continue
        text = labels.get(key, label.format(margin=0, low=low_diversity_H, sparse=sparse_S))
        legend.append((colour, f"{text} ({total:,})", key))
        for i in sel:
            flags = "" if key == "ok" else f"; {key.replace('_', ' ')}"
            hn = f" (H/TH {Hn[i]:.3f})" if math.isfinite(Hn[i]) else ""
            out.append(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="3.2" fill="{colour}" '
                       f'fill-opacity="0.85" stroke="#fff" stroke-width="0.5"><title>'
                       f"{escape(names[i])}: S {S[i]:.3f}, H {Hv[i]:.3f}{hn}, n {int(n[i]):,}"
                       f"{escape(flags)}</title></circle>")
    # legend (right)
    lx, ly = W - RIGHT + 12, TOP + 40
    out.append(f'<text x="{lx}" y="{ly}" font-weight="600">layers ({int(ok.sum()):,})</text>')
    for k, (colour, text, _) in enumerate(reversed(legend)):
        y = ly + 18 + 30 * k
        out.append(f'<circle cx="{lx + 5}" cy="{y - 4}" r="4" fill="{colour}"/>')
        words, line, lines = text.split(), "", []
        for w in words:
            if len(line) + len(w) > 26 and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for j, l in enumerate(lines[:2]):
            out.append(f'<text x="{lx + 14}" y="{y + 12 * j}" font-size="10">{escape(l)}</text>')
    notes = []
    if thinned:
        notes.append(f"{thinned:,} unflagged layers not drawn (every flagged one is)")
    if int((~ok).sum()):
        notes.append(f"{int((~ok).sum()):,} without finite metrics")
    lines = []
    for t in notes:  # wrapped to the legend's width
        line = ""
        for w in t.split():
            if len(line) + len(w) > 34 and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
    for j, t in enumerate(lines):
        out.append(f'<text x="{lx}" y="{H_ - BOTTOM - 12 * (len(lines) - 1 - j)}" '
                   f'font-size="9.5" fill="#666">{escape(t)}</text>')
    out.append("</svg>")
    return "".join(out)
