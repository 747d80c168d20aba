"""The sample report in headless Chromium: loads without console errors, every section and
figure is present, decoded and visible, the table sorts on a header click; a screenshot is
saved in the test's tmp dir. Skipped when chromium is not installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from test_report_html import FIGURES, SECTIONS, sample_report

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (shutil.which(n) for n in
                             ("chromium", "chromium-browser", "google-chrome", "chrome")) if p),
                None)
SKIP = "chromium not installed: apt-get install chromium chromium-driver"

# Runs in the page after load: checks the figures and sections, clicks table headers, and
# writes the findings as JSON into <pre id="test-results"> for --dump-dom.
PROBE = """
<script>
window.addEventListener("load", function () {
  var res = { figures: {}, sections: [], sorts: {} };
  document.querySelectorAll("img[data-figure]").forEach(function (im) {
    var r = im.getBoundingClientRect(), s = getComputedStyle(im);
    res.figures[im.getAttribute("data-figure")] = {
      complete: im.complete, naturalWidth: im.naturalWidth, naturalHeight: im.naturalHeight,
      width: r.width, height: r.height,
      visible: s.display !== "none" && s.visibility !== "hidden" && s.opacity !== "0" };
  });
  document.querySelectorAll("main > section").forEach(function (sec) {
    var r = sec.getBoundingClientRect();
    res.sections.push({ id: sec.id, height: r.height,
                        title: sec.querySelector("h2").textContent });
  });
  res.tocTargets = Array.prototype.map.call(document.querySelectorAll("nav.toc a"),
    function (a) { return !!document.getElementById(a.getAttribute("href").slice(1)); });
  var table = document.querySelector('table[data-table="layers"]');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function column(name) {
    var i = heads.findIndex(function (h) { return h.getAttribute("data-col") === name; });
    return Array.prototype.map.call(table.tBodies[0].rows,
      function (tr) { var c = tr.cells[i], v = c.getAttribute("data-value");
                      return v === null ? c.textContent.trim() : v; });
  }
  ["sparsity", "n", "name"].forEach(function (name) {
    var th = heads.find(function (h) { return h.getAttribute("data-col") === name; });
    th.click();
    var asc = column(name), ariaAsc = th.getAttribute("aria-sort");
    th.click();
    res.sorts[name] = { asc: asc, desc: column(name), aria: [ariaAsc, th.getAttribute("aria-sort")],
                        classes: Array.prototype.map.call(table.tBodies[0].rows,
                          function (tr) { var c = tr.cells[0], v = c.getAttribute("data-value");
                                          return [v === null ? c.textContent.trim() : v,
                                                  tr.className]; }) };
  });
  var pre = document.createElement("pre");
  pre.id = "test-results";
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(args, tmp_path, timeout=90):
    """Run headless chromium offline; return (stdout, console lines of stderr)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr",
           "--v=0", *args]
    env = dict(os.environ, HOME=str(tmp_path))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    console = [l for l in p.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    return p.stdout, console


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip(SKIP)
    tmp = tmp_path_factory.mktemp("browser")
    rep, layers = sample_report()
    path = rep.write(tmp / "report.html")
    probe = tmp / "report-probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    return tmp, path, probe, layers


def test_console_errors_are_detected(page):
    """The console check itself can fail: a page with an error is caught."""
    tmp = page[0]
    bad = tmp / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script>"
                   "</body></html>")
    _, console = chromium(["--dump-dom", bad.as_uri()], tmp)
    assert any("Uncaught" in l for l in console), console


def test_report_in_chromium(page):
    tmp, _, probe, layers = page
    dom, console = chromium(["--dump-dom", probe.as_uri()], tmp)
    assert console == [], "console messages:\n" + "\n".join(console)
    m = re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<")
                     .replace("&gt;", ">").replace("&amp;", "&"))
    assert [s["id"] for s in res["sections"]] == SECTIONS
    assert all(s["height"] > 50 for s in res["sections"])
    assert res["tocTargets"] == [True] * len(SECTIONS)
    assert sorted(res["figures"]) == sorted(FIGURES)
    for fid, f in res["figures"].items():
        assert f["complete"] and f["naturalWidth"] > 50 and f["naturalHeight"] > 50, fid
        assert f["visible"] and f["width"] > 50 and f["height"] > 50, fid
        assert f["width"] <= 1120, fid  # fits the page width

    # sorting, checked against pandas
    sp = res["sorts"]["sparsity"]
    assert sp["aria"] == ["ascending", "descending"]
    want = layers["sparsity"].to_numpy()
    finite = np.sort(want[np.isfinite(want)])
    got_asc = [float(v) for v in sp["asc"] if v != ""]
    np.testing.assert_array_equal(got_asc, finite)
    assert sp["asc"][-1] == "" and sp["desc"][-1] == ""  # missing values last both ways
    np.testing.assert_array_equal([float(v) for v in sp["desc"] if v != ""], finite[::-1])
    n = res["sorts"]["n"]
    assert [int(v) for v in n["asc"]] == sorted(layers["n"].tolist())  # numeric, not text
    names = res["sorts"]["name"]["asc"]
    def natural(s):  # text in natural order: "block3" before "block10", case ignored
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())]
    assert names == sorted(layers["name"], key=natural)
    # the highlight follows its row
    degenerated = dict(zip(layers["name"], layers["degenerated"]))
    for name, cls in res["sorts"]["name"]["classes"]:
        assert ("degenerated" in cls.split()) == bool(degenerated[name])


def test_screenshot(page):
    tmp, path, _, _ = page
    shot = tmp / "report.png"
    _, console = chromium([f"--screenshot={shot}", "--window-size=1280,4000",
                           "--hide-scrollbars", path.as_uri()], tmp)
    assert console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (1280, 4000)
    # not blank: the page has content of more than one colour
    from matplotlib.image import imread

    img = imread(shot)
    assert img[..., :3].std() > 0.05
    print(f"screenshot: {shot}")
