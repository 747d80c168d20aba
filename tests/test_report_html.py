"""The HTML report: self-contained, every section / figure / table present, table rows equal
to the DataFrame rows, degenerated rows marked. Parsed with the standard-library parser."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from filterdb import plots as P
from filterdb.report import Report

SECTIONS = ["overview", "pca", "drift", "health"]
FIGURES = ["eigen-images", "evr", "ridge-task", "drift-task", "drift-box", "c0-c1",
           "health-scatter", "health-depth", "first-layer", "health-population"]


def sample_frames(seed=3):
    rng = np.random.default_rng(seed)
    n = 14
    layers = pd.DataFrame({
        "name": [f"block{i}.conv" for i in range(n)],
        "kernel": ["3x3"] * (n - 1) + ["1x1"],
        "n": rng.integers(9, 300_000, n),
        "conv_depth_norm": np.linspace(0, 1, n),
        "sparsity": rng.beta(0.6, 3, n),
        "variance_entropy_norm": rng.normal(0.88, 0.15, n),
        "orthogonality": rng.uniform(0.5, 1, n),
    })
    layers.loc[n - 1, ["sparsity", "variance_entropy_norm"]] = np.nan
    layers["random"] = layers["variance_entropy_norm"] > 1.0
    layers["low_diversity"] = layers["variance_entropy_norm"] < 0.75
    layers["sparse"] = layers["sparsity"] >= 0.14
    layers["degenerated"] = layers["random"] | (layers["low_diversity"] & layers["sparse"])
    layers.loc[[1, 5], "degenerated"] = True  # at least two marked rows
    layers.loc[2, "name"] = 'odd <name> & "quotes"'
    return layers


def sample_report(seed=3) -> tuple[Report, pd.DataFrame]:
    """A report of every figure, built from synthetic arrays."""
    rng = np.random.default_rng(seed)
    layers = sample_frames(seed)
    q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    ev = np.sort(rng.gamma(2.0, 1.0, 9))[::-1]
    evr = ev / ev.sum()
    G = 5
    grid = np.linspace(-3, 3, 80)
    dens = np.exp(-0.5 * (grid[None, None] / rng.uniform(0.5, 1.5, (G, 9, 1))) ** 2)
    names = ["Classification", "Segmentation", "GAN-Generator", "Object Detection", "Style"]
    sizes = rng.integers(100, 2_000_000, G)
    a = rng.gamma(2, 0.05, (G, G))
    M = a + a.T
    np.fill_diagonal(M, 0)
    counts, _, _ = np.histogram2d(*rng.standard_normal((2, 4000)), bins=40, range=[[-3, 3]] * 2)
    bands = pd.DataFrame([dict(depth_bin=b, metric=m, p10=0.1, p25=0.2, p50=0.3, p75=0.4,
                               p90=0.5 + 0.01 * b)
                          for b in range(10)
                          for m in ("sparsity", "variance_entropy_norm", "orthogonality")])

    rep = Report("filterdb report: sample", subtitle="synthetic data for the tests")
    s = rep.section("overview", "Overview", intro="What the database holds.")
    s.add_kv({"models": 12, "filters (3x3)": 1_234_567, "share degenerated": 0.125})
    s.add_text("Filters are **scaled** by their `absolute peak`.\n\n- one\n- two")
    s = rep.section("pca", "Principal components")
    s.add_figure(P.eigen_images(q.T, evr), "eigen-images", caption="Eigen-images")
    s.add_figure(P.cumulative_evr(evr), "evr", caption="EVR", format="svg")
    s.add_figure(P.density_c0_c1(counts, -3, 3), "c0-c1", caption="c0 vs c1")
    s = rep.section("drift", "Drift")
    s.add_figure(P.ridge_plot(grid, dens, names, sizes), "ridge-task", caption="KDE per task")
    s.add_figure(P.drift_heatmap(M, names, sizes), "drift-task", caption="Drift by task")
    s.add_figure(P.drift_boxplot({"task": P.upper_triangle(M)}), "drift-box")
    s = rep.section("health", "Layer health")
    s.add_figure(P.health_scatter(layers), "health-scatter", caption="Degeneration")
    s.add_figure(P.health_by_depth(layers), "health-depth")
    s.add_figure(P.first_layer_filters(rng.standard_normal((16, 3, 3, 3))), "first-layer")
    s.add_figure(P.model_health_vs_population(layers, bands), "health-population")
    s.add_table(layers, "layers", highlight=layers["degenerated"], caption="All layers")
    return rep, layers


class Page(HTMLParser):
    """Collects what the tests look at: ids, attributes, tables."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []  # (tag, attrs dict)
        self.tables = {}  # data-table -> {"head": [...], "rows": [(attrs, [cells])]}
        self._table = None
        self._row = None
        self._cell = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and "data-table" in a:
            self._table = self.tables.setdefault(a["data-table"], {"head": [], "rows": []})
        elif self._table is not None:
            if tag == "thead":
                self._in_head = True
            elif tag == "tbody":
                self._in_head = False
            elif tag == "tr" and not self._in_head:
                self._row = (a, [])
                self._table["rows"].append(self._row)
            elif tag in ("td", "th"):
                self._cell = [a, ""]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            a, text = self._cell
            if self._in_head:
                self._table["head"].append(text)
            else:
                self._row[1].append((a, text))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rep, layers = sample_report()
    path = rep.write(tmp_path_factory.mktemp("report") / "report.html")
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return text, page, layers


def test_self_contained(built):
    text, page, _ = built
    for tag, a in page.tags:
        for attr in ("src", "href"):
            v = a.get(attr)
            if v is not None:
                assert not re.match(r"^\s*(https?:|//|file:)", v, re.I), (tag, attr, v[:80])
                if attr == "src":
                    assert v.startswith("data:"), (tag, v[:80])
                else:
                    assert v.startswith("#"), (tag, v)
        assert tag != "link", "no external stylesheet / font links"
        if tag == "script":
            assert "src" not in a
    assert "@import" not in text and "url(" not in text
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text


def test_sections_figures_and_toc(built):
    _, page, _ = built
    ids = [a.get("id") for _, a in page.tags if a.get("id")]
    sections = [a["id"] for t, a in page.tags if t == "section"]
    assert sections == SECTIONS
    toc = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    assert toc[:len(SECTIONS)] == [f"#{s}" for s in SECTIONS]
    assert len(ids) == len(set(ids)), "ids are unique"
    imgs = {a["data-figure"]: a for t, a in page.tags if t == "img" and "data-figure" in a}
    assert sorted(imgs) == sorted(FIGURES)
    for fid, a in imgs.items():
        head, b64 = a["src"].split(",", 1)
        data = base64.b64decode(b64)
        if fid == "evr":
            assert head == "data:image/svg+xml;base64" and b"<svg" in data[:2000]
        else:
            assert head == "data:image/png;base64" and data[:8] == b"\x89PNG\r\n\x1a\n"
            w = int.from_bytes(data[16:20], "big")
            assert int(a["width"]) == round(w * 100 / 150)  # shown at 100 px per inch
        assert a["alt"]


def test_table_rows_equal_dataframe(built):
    _, page, layers = built
    t = page.tables["layers"]
    assert t["head"] == list(layers.columns)
    assert len(t["rows"]) == len(layers)
    for (attrs, cells), (_, row) in zip(t["rows"], layers.iterrows()):
        assert ("degenerated" in attrs.get("class", "").split()) == bool(row["degenerated"])
        assert len(cells) == len(layers.columns)
        for (a, text), col in zip(cells, layers.columns):
            v = row[col]
            raw = a.get("data-value", text)  # left out when it is the shown text
            if isinstance(v, (bool, np.bool_)):
                assert raw == ("true" if v else "false") and text == ("yes" if v else "no")
            elif isinstance(v, (int, np.integer)):
                assert int(raw) == v and text == f"{v:,}"
            elif isinstance(v, float):
                if np.isnan(v):
                    assert raw == "" and text == "–"
                else:
                    assert float(raw) == v  # full precision for sorting
                    assert text == f"{v:.4g}"
            else:
                assert raw == v and text == v  # escaped on the page, intact when parsed
    classes = [a.get("class", "") for t_, a in page.tags if a.get("data-table") == "layers"]
    assert "sortable" in classes[0].split()
    n_marked = sum("degenerated" in a.get("class", "") for a, _ in t["rows"])
    assert n_marked == int(layers["degenerated"].sum()) >= 2


def test_text_kv_and_escaping(built):
    text, page, _ = built
    assert "<strong>scaled</strong>" in text and "<code>absolute peak</code>" in text
    assert "<ul><li>one</li><li>two</li></ul>" in text
    assert 'odd &lt;name&gt; &amp; &quot;quotes&quot;' in text
    assert "<th scope=\"row\">filters (3x3)</th><td>1,234,567</td>" in text


def test_bad_ids_and_masks():
    rep = Report("x")
    s = rep.section("a", "A")
    with pytest.raises(ValueError, match="duplicate section"):
        rep.section("a", "again")
    with pytest.raises(ValueError, match="id must start"):
        rep.section("1 bad", "B")
    df = pd.DataFrame({"v": [1.0, 2.0]})
    with pytest.raises(ValueError, match="3 values for 2 rows"):
        s.add_table(df, "t", highlight=[True, False, True])
    s.add_table(df, "t2", highlight=[False, True], max_rows=1)
    assert "first 1 of 2 rows" in rep.html()
    with pytest.raises(ValueError, match="duplicate table"):
        s.add_table(df, "t2")
