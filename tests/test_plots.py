"""The figures show the quantities they are given: image data, line data, offsets, labels
and orders are checked against values computed here from the inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure

from filterdb import plots as P

RNG = np.random.default_rng(7)


def _panels(fig):
    """Axes that hold data (colour-bar axes left out)."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def _sample_pca():
    q, _ = np.linalg.qr(RNG.standard_normal((9, 9)))
    ev = np.sort(RNG.gamma(2.0, 1.0, 9))[::-1]
    return q.T, ev / ev.sum()


def test_eigen_images_panels_show_components_and_evr():
    comps, evr = _sample_pca()
    fig = P.eigen_images(comps, evr)
    assert isinstance(fig, Figure)
    axes = [ax for ax in _panels(fig) if ax.images]
    assert len(axes) == 9
    m = np.abs(comps).max()
    for i, ax in enumerate(axes):
        img = ax.images[0]
        np.testing.assert_array_equal(np.asarray(img.get_array()), comps[i].reshape(3, 3))
        assert img.get_clim() == pytest.approx((-m, m))  # symmetric, shared
        label = ax.get_xlabel()
        assert label.startswith(f"c{i} ") and f"{100 * evr[i]:.1f} %" in label
    cbars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert len(cbars) == 1


def test_cumulative_evr_bars_and_line():
    _, evr = _sample_pca()
    fig = P.cumulative_evr(evr)
    ax = _panels(fig)[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, 100 * evr)
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), 100 * np.cumsum(evr))
    assert line.get_ydata()[-1] == pytest.approx(100)
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"c{i}" for i in range(9)]


def test_ridge_plot_curves_are_scaled_densities():
    G, k, nx = 5, 9, 50
    grid = np.linspace(-3, 3, nx)
    dens = RNG.uniform(0, 2, (G, k, nx))
    labels = [f"g{g}" for g in range(G)]
    sizes = [5, 1234, 99, 1000000, 42]
    overlap = 1.6
    fig = P.ridge_plot(grid, dens, labels, sizes, overlap=overlap)
    axes = _panels(fig)
    assert len(axes) == k
    for i, ax in enumerate(axes):
        assert ax.get_title() == f"c{i}"
        assert len(ax.lines) == G
        peak = dens[:, i, :].max()  # documented: per component, the peak over all groups
        for g, line in enumerate(ax.lines):
            np.testing.assert_allclose(line.get_xdata(), grid)
            np.testing.assert_allclose(line.get_ydata(),
                                       (G - 1 - g) + dens[g, i] * overlap / peak)
        assert ax.get_xlim() == pytest.approx((grid[0], grid[-1]))  # shared range
    ticks = axes[0].get_yticks()
    text = [t.get_text() for t in axes[0].get_yticklabels()]
    by_pos = dict(zip(np.round(ticks).astype(int), text))
    for g in range(G):
        assert by_pos[G - 1 - g] == f"g{g} (n={sizes[g]:,})"
    assert by_pos[G - 1 - 1] == "g1 (n=1,234)"


def _sym(G, scale=0.1):
    a = RNG.gamma(2.0, scale, (G, G))
    m = a + a.T
    np.fill_diagonal(m, 0.0)
    return m


def _heat_image(fig):
    (ax,) = [a for a in _panels(fig) if a.images]
    return ax, np.asarray(ax.images[0].get_array())


def test_drift_heatmap_sorted_by_mean_drift():
    G = 7
    M = _sym(G)
    labels = [f"task{i}" for i in range(G)]
    sizes = RNG.integers(1, 2_000_000, G)
    # mean drift of each group to the others, ascending
    means = [sum(M[i, j] for j in range(G) if j != i) / (G - 1) for i in range(G)]
    order = sorted(range(G), key=lambda i: means[i])
    fig = P.drift_heatmap(M, labels, sizes)
    ax, img = _heat_image(fig)
    np.testing.assert_array_equal(img, M[np.ix_(order, order)])
    want = [f"task{i} (n={int(sizes[i]):,})" for i in order]
    assert [t.get_text() for t in ax.get_xticklabels()] == want
    assert [t.get_text() for t in ax.get_yticklabels()] == want
    # small G: every cell annotated with its value
    texts = [t for t in ax.texts]
    assert len(texts) == G * G
    shown = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in texts}
    for r in range(G):
        for c in range(G):
            assert shown[(r, c)] == f"{M[order[r], order[c]]:.2f}"
    assert img.min() == 0 and ax.images[0].get_clim()[0] == 0  # sequential from 0


def test_drift_heatmap_given_order_kept_and_large_unannotated():
    G = 10  # depth bins keep their order
    M = _sym(G)
    labels = [f"({i / 10:.1f}, {(i + 1) / 10:.1f}]" for i in range(G)]
    fig = P.drift_heatmap(M, labels, order="keep")
    ax, img = _heat_image(fig)
    np.testing.assert_array_equal(img, M)
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    order = [3, 1, 0, 2, 4, 5, 6, 7, 8, 9]
    fig = P.drift_heatmap(M, labels, order=[labels[i] for i in order])
    np.testing.assert_array_equal(_heat_image(fig)[1], M[np.ix_(order, order)])
    big = _sym(30)
    ax, _ = _heat_image(P.drift_heatmap(big, [f"m{i}" for i in range(30)]))
    assert len(ax.texts) == 0
    with pytest.raises(ValueError):
        P.drift_heatmap(M, labels, order=[0, 0, 1, 2, 3, 4, 5, 6, 7, 8])


def test_drift_boxplot_one_box_per_column():
    vals = {"task": RNG.gamma(2, 0.05, 55), "visual category": RNG.gamma(2, 0.2, 120),
            "depth bin": RNG.gamma(2, 0.01, 45)}
    fig = P.drift_boxplot(vals)
    ax = _panels(fig)[0]
    boxes = [p for p in ax.patches]
    assert len(boxes) == 3
    medians = [l for l in ax.lines if l.get_color() == "black"]
    assert len(medians) == 3
    for line, v in zip(medians, vals.values()):
        assert line.get_ydata()[0] == pytest.approx(np.median(v))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    for lab, (name, v) in zip(labels, vals.items()):
        assert lab.startswith(name) and f"{len(v):,} pairs" in lab
    pts = [c for c in ax.collections if isinstance(c, PathCollection)]
    for c, v in zip(pts, vals.values()):
        np.testing.assert_allclose(np.sort(c.get_offsets()[:, 1]), np.sort(v))


def test_upper_triangle_values():
    M = _sym(5)
    want = [M[i, j] for i in range(5) for j in range(i + 1, 5)]
    np.testing.assert_array_equal(P.upper_triangle(M), want)


def test_density_c0_c1_log_image():
    c0, c1 = RNG.standard_normal((2, 5000))
    counts, _, _ = np.histogram2d(c0, c1, bins=40, range=[[-3, 3], [-2, 2]])
    fig = P.density_c0_c1(counts, (-3, -2), (3, 2))
    (ax,) = [a for a in _panels(fig) if a.images]
    im = ax.images[0]
    arr = im.get_array()
    np.testing.assert_array_equal(arr.filled(0), counts.T)  # c0 on x, c1 on y
    assert (arr.mask == (counts.T == 0)).all()  # empty bins blank
    assert isinstance(im.norm, LogNorm)
    assert im.get_extent() == pytest.approx([-3, 3, -2, 2])
    assert im.origin == "lower"
    assert ax.get_xlabel() == "c0" and ax.get_ylabel() == "c1"


def _health_df(n=40):
    df = pd.DataFrame({
        "name": [f"conv{i}" for i in range(n)],
        "conv_depth_norm": np.round(RNG.uniform(0, 1, n), 3),
        "sparsity": RNG.beta(0.6, 3, n),
        "variance_entropy_norm": RNG.normal(0.85, 0.2, n),
        "orthogonality": RNG.uniform(0.5, 1, n),
    })
    df.loc[0, "conv_depth_norm"] = 0.0
    df.loc[1, "conv_depth_norm"] = 1.0
    df.loc[2, "conv_depth_norm"] = 0.3
    df["random"] = df["variance_entropy_norm"] > 1.0
    df["low_diversity"] = df["variance_entropy_norm"] < 0.7
    df["sparse"] = df["sparsity"] >= 0.14
    df["degenerated"] = df["random"] | (df["low_diversity"] & df["sparse"])
    df.loc[3, ["sparsity", "variance_entropy_norm"]] = np.nan  # e.g. a 1x1 layer
    return df


def test_health_scatter_points_and_colours():
    df = _health_df()
    fig = P.health_scatter(df)
    ax = _panels(fig)[0]
    expect = {}
    for r in df.itertuples():
        if not (np.isfinite(r.sparsity) and np.isfinite(r.variance_entropy_norm)):
            continue
        if r.random:
            cat = "random"
        elif r.low_diversity and r.sparse:
            cat = "low_diverse_sparse"
        elif r.low_diversity:
            cat = "low_diversity"
        elif r.sparse:
            cat = "sparse"
        else:
            cat = "ok"
        expect.setdefault(cat, []).append((r.sparsity, r.variance_entropy_norm))
    colls = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(colls) == len(expect)
    seen = set()
    for c in colls:
        rgba = tuple(c.get_facecolor()[0][:3])
        (cat,) = [k for k, col in P.health.CATEGORY_COLOURS.items()
                  if to_rgba(col)[:3] == pytest.approx(rgba)]
        np.testing.assert_allclose(c.get_offsets(), np.array(expect[cat]))
        seen.add(cat)
    assert seen == set(expect)
    assert len(set(P.health.CATEGORY_COLOURS.values())) == len(P.health.CATEGORY_COLOURS)
    # threshold lines: S = 0.14 (vertical) and H / TH = 1 (horizontal)
    assert any(np.allclose(l.get_xdata(), 0.14) for l in ax.lines)
    assert any(np.allclose(l.get_ydata(), 1.0) for l in ax.lines)
    assert "1 layer(s) without finite metrics" in fig.legends[0].get_title().get_text()


def _bin_medians(x, y):
    """Median of y per depth bin [0, .1], (.1, .2], ..., (.9, 1], by explicit comparisons."""
    out = []
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        sel = [(lo < xi <= hi) or (b == 0 and xi == 0) for xi in x]
        v = [yi for yi, s in zip(y, sel) if s and np.isfinite(yi)]
        if v:
            out.append(((lo + hi) / 2, float(np.median(v))))
    return np.array(out)


def test_depth_bins_edges():
    # the package's one definition (kernels.drift.depth_bin): the notebook's pd.cut bins
    # over np.arange(0, 1.1, 0.1), right-closed, the first including 0
    x = [0.0, 0.05, 0.1, 0.1000001, 0.10001, 0.3, 0.1 + 0.2, 0.7, 0.95, 1.0]
    np.testing.assert_array_equal(P.depth_bin(x), [0, 0, 0, 1, 1, 2, 2, 6, 9, 9])
    assert P.depth_bin_labels()[:2] == ["[0.0, 0.1]", "(0.1, 0.2]"]


def test_health_by_depth_points_and_binned_median():
    df = _health_df()
    fig = P.health_by_depth(df)
    axes = _panels(fig)
    metrics = ["sparsity", "variance_entropy_norm", "orthogonality"]
    assert len(axes) == 3
    x = df["conv_depth_norm"].to_numpy()
    for ax, m in zip(axes, metrics):
        y = df[m].to_numpy()
        ok = np.isfinite(y)
        (pts,) = [c for c in ax.collections if len(c.get_offsets())]
        np.testing.assert_allclose(pts.get_offsets(), np.c_[x[ok], y[ok]])
        red = np.array([to_rgba(P.health.RED)[:3] == pytest.approx(tuple(fc[:3]))
                        for fc in pts.get_facecolor()])
        np.testing.assert_array_equal(red, df["degenerated"].to_numpy()[ok])
        med = [l for l in ax.lines if l.get_marker() == "o"][0]
        want = _bin_medians(x, y)
        np.testing.assert_allclose(np.c_[med.get_xdata(), med.get_ydata()], want)


def _bands():
    rows = []
    for b in range(10):
        for j, m in enumerate(["orthogonality", "sparsity", "variance_entropy_norm"]):
            base = 0.1 * j + 0.01 * b
            rows.append(dict(depth_bin=b, metric=m, p10=base, p25=base + 0.05, p50=base + 0.1,
                             p75=base + 0.15, p90=base + 0.2))
    return pd.DataFrame(rows)


def test_model_health_vs_population_bands_and_points():
    df = _health_df(25)
    bands = _bands()
    fig = P.model_health_vs_population(df, bands)
    axes = _panels(fig)
    assert [a.get_ylabel() for a in axes][0].startswith("sparsity")
    for ax, m in zip(axes, ["sparsity", "variance_entropy_norm", "orthogonality"]):
        b = bands[bands.metric == m].sort_values("depth_bin")
        xc = (b.depth_bin.to_numpy() + 0.5) / 10
        polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(polys) == 2
        for poly, (lo, hi) in zip(polys, [("p10", "p90"), ("p25", "p75")]):
            v = poly.get_paths()[0].vertices
            for xi, a, c in zip(xc, b[lo], b[hi]):
                at = v[np.isclose(v[:, 0], xi)][:, 1]
                assert np.isclose(at, a).any() and np.isclose(at, c).any()
        med = [l for l in ax.lines if l.get_linestyle() == "--"][0]
        np.testing.assert_allclose(med.get_xdata(), xc)
        np.testing.assert_allclose(med.get_ydata(), b.p50)
        pts = np.concatenate([c.get_offsets() for c in ax.collections
                              if isinstance(c, PathCollection)])
        y = df[m].to_numpy()
        ok = np.isfinite(y)
        want = np.c_[df.conv_depth_norm.to_numpy()[ok], y[ok]]
        np.testing.assert_allclose(pts[np.lexsort(pts.T)], want[np.lexsort(want.T)])
    with pytest.raises(ValueError, match="p90"):
        P.model_health_vs_population(df, bands.drop(columns="p90"))


def test_first_layer_filters_each_scaled_to_its_peak():
    w = RNG.standard_normal((10, 3, 3, 3))
    w[4, 1] = 0.0  # an all-zero filter stays zero
    mosaic, origins = P.filter_mosaic(w)
    covered = np.zeros(mosaic.shape, int)
    for o in range(10):
        for i in range(3):
            r, c = origins[o, i]
            f = w[o, i]
            peak = np.abs(f).max()
            want = f / peak if peak else f
            np.testing.assert_allclose(mosaic[r:r + 3, c:c + 3], want)
            covered[r:r + 3, c:c + 3] += 1
    assert covered.max() == 1  # no overlap
    np.testing.assert_array_equal(covered == 1, np.isfinite(mosaic))  # the rest is gap
    assert np.nanmax(np.abs(mosaic)) == 1.0
    fig = P.first_layer_filters(w, name="conv1")
    (ax,) = [a for a in _panels(fig) if a.images]
    im = ax.images[0]
    np.testing.assert_array_equal(im.get_array().filled(np.nan), mosaic)
    assert im.get_clim() == (-1, 1)
    assert "10 × 3 filters" in ax.get_title()


def test_save_png_and_svg(tmp_path):
    comps, evr = _sample_pca()
    fig = P.cumulative_evr(evr)
    paths = P.save(fig, tmp_path / "sub" / "evr")
    assert [p.name for p in paths] == ["evr.png", "evr.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg[:1000]
    P.save(fig, tmp_path / "again.png")  # suffix is replaced, not doubled
    assert (tmp_path / "again.png").read_bytes() == png  # reproducible bytes
    assert (tmp_path / "again.svg").read_bytes() == svg
