"""The report means what it shows (issue 20): findings with the numbers of the sections
below them, one drift colour scale, models per group, a small-group warning, Holm-corrected
p-values, figures saved as SVG, figures for the most degenerated models only.

Synthetic models only (no zoo): two tasks of three models each and a tiny third task."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.report.database_report import build_report
from filterdb.store import init_database


def _model(name, weights, seed):
    layers = [ConvLayer(f"{name}.conv{i}", "Conv", w) for i, w in enumerate(weights)]
    assign_order_depths(layers)
    return Model(path=f"/synthetic/{name}.npz", format="npz",
                 sha256=f"{name}-{seed}".ljust(64, "0"), layers=layers)


def population():
    rng = np.random.default_rng(3)
    out = []
    for _t, (task, cat, tilt) in enumerate((("Classification", "natural", 1.0),
                                           ("Segmentation", "medical ct", 0.3))):
        basis = rng.standard_normal((3, 9))
        for k in range(3):
            def smooth(c_out, c_in, tilt=tilt, basis=basis):
                coef = rng.standard_normal((c_out * c_in, 3)) * [3.0, tilt, 0.3]
                return (coef @ basis).reshape(c_out, c_in, 3, 3).astype(np.float32)
            ws = [smooth(16, 3), smooth(24, 16), smooth(24, 24)]
            if k == 2:  # one random-like layer: a degenerated model
                ws[1] = rng.uniform(-1, 1, (24, 16, 3, 3)).astype(np.float32)
            out.append((_model(f"{task[:3].lower()}-{k}", ws, k),
                        {"task": task, "visual_category": cat, "architecture": f"arch{k}"}))
    tiny = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)  # 4 filters
    out.append((_model("tiny", [tiny], 9), {"task": "Style Transfer", "visual_category": "art",
                                            "architecture": "arch0"}))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meaning")
    db = init_database(tmp / "db")
    try:
        for m, meta in population():
            db.add_model(m, meta)
    finally:
        db.close()
    figs = tmp / "figures"
    res = build_report(tmp / "db", tmp / "report.html", columns=("task", "architecture"),
                       ridge_columns=("task",), keep_figures=True, quiet=True,
                       figures_dir=figs, model_figures=1)
    return res, (tmp / "report.html").read_text(encoding="utf-8"), figs


def holm_by_hand(p):
    """Holm's step-down adjustment written out (Holm 1979)."""
    p = list(p)
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (m - rank) * p[i]))
        adj[i] = run
    return adj


def test_drift_maps_share_one_colour_scale(report):
    res, text, _ = report
    top = max(np.max(np.asarray(d["matrix"])[~np.eye(len(d["labels"]), dtype=bool)])
              for d in res.data["drift"].values())
    for col in res.data["drift"]:
        fig = res.figures[f"drift-{col}".replace("_", "-")]
        assert fig.axes[0].images[0].norm.vmax == pytest.approx(top, rel=1e-12)
        assert fig.axes[1].get_ylabel() == "drift D (nats)"
    assert f"to {top:.3g} nats" in text  # the value tables say the same scale


def test_models_per_group_and_small_group_warning(report):
    res, text, _ = report
    d = res.data["drift"]["task"]
    want = {"Classification": 3, "Segmentation": 3, "Style Transfer": 1}
    assert dict(zip(d["labels"], d["models"])) == want
    sizes = dict(zip(d["labels"], d["sizes"]))
    assert sizes["Style Transfer"] == 4 and sizes["Classification"] == 3 * (48 + 384 + 576)
    assert d["unit"] == "nats"
    assert re.search(r"<strong>Small groups:</strong> Style Transfer \(4 filters\)", text)


def test_noise_p_values_holm_corrected(report):
    res, text, _ = report
    pairs = res.data["noise"]["task"]["pairs"]
    assert np.allclose(pairs["p_holm"], holm_by_hand(pairs["p_value"]), rtol=0, atol=1e-15)
    assert all(h >= p for h, p in zip(pairs["p_holm"], pairs["p_value"]))
    import inspect

    from filterdb.analysis import noise_floor

    assert res.data["noise"]["task"]["n_permutations"] == \
        inspect.signature(noise_floor).parameters["n_permutations"].default


def test_findings_hold_the_numbers_below(report):
    res, text, _ = report
    f = " ".join(res.data["findings"])
    assert "7 models in 1 format(s) (npz 7)" in f
    verdicts = [v.split(":")[0] for v in res.data["health_models"]["verdict"]]
    for kind in set(verdicts):
        assert f"{verdicts.count(kind)} {kind}" in f
    evr = res.data["pca"]["explained_variance_ratio"]
    assert ", ".join(f"{v:.3f}" for v in evr[:3]) in f and "paper: 0.398, 0.183, 0.117" in f
    med = np.median(np.asarray(res.data["drift"]["task"]["matrix"])[np.triu_indices(3, 1)])
    assert f"task {med:.3g} (paper about 0.11)" in f
    assert text.index('id="findings"') < text.index('id="summary"')


def test_figures_saved_as_svg(report):
    res, text, figs = report
    pngs = set(re.findall(r'<img data-figure="([^"]+)"', text))
    saved = {p.stem for p in figs.glob("*.svg")}
    assert saved == pngs | {"health-scatter"}
    for p in figs.glob("*.svg"):
        assert ET.parse(p).getroot().tag.endswith("svg"), p.name


def test_figures_for_the_most_degenerated_models_only(report):
    res, text, _ = report
    shown = {m.group(1) for m in re.finditer(r'data-figure="(m-[^"]+)-population"', text)}
    assert len(shown) == 1
    hm = res.data["health_models"]
    share = dict(zip(hm["model"], hm["share_degenerated"]))
    assert share[shown.pop()[2:]] == max(v for v in share.values() if v == v)
    # every model still has its table
    assert all(f'data-table="m-{m}-layers"' in text for m in hm["model"])


def test_scatter_points_say_what_they_are(report):
    _, text, _ = report
    svg = re.search(r'<figure id="fig-health-scatter".*?</figure>', text, re.S).group(0)
    titles = re.findall(r"<circle [^>]*><title>([^<]+)</title>", svg)
    assert any(t.startswith("cla-2 · cla-2.conv1: ") and "random" in t for t in titles)
    assert "low diversity: H &lt; 0.5" in svg and "sparse: S ≥ 0.14" in svg
