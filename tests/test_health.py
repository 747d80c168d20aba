"""Layer health (method.md section 5) against independent computations from the definitions:
numpy SVD for the variance entropy, the threshold formula typed in by hand, explicit loops."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import _oracles as O
from filterdb.health import (
    COLUMNS,
    HealthThresholds,
    assess,
    layer_metrics,
    model_health,
    random_baseline,
)
from filterdb.health.baseline import fans, init_weight
from filterdb.kernels import health as K
from filterdb.kernels.randomness import simulate_iid_entropy, simulated_threshold
from filterdb.readers.base import ConvLayer, Model

TOL = 1e-9


# --- references written from the definitions --------------------------------------------

ref_H = O.variance_entropy
ref_S = O.sparsity
ref_TH = O.randomness_threshold
ref_orth = O.orthogonality
ref_clean = O.variance_entropy_clean


def same(a, b, tol=TOL):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= tol


def layer(w, name="conv", depth=0.0):
    return ConvLayer(name, "Conv", np.asarray(w, dtype=np.float32), conv_depth_norm=depth)


# --- real zoo layers, weights loaded without filterdb's readers --------------------------

def _torch_convs(path):
    torch = pytest.importorskip("torch")
    sd = torch.load(path, weights_only=True, map_location="cpu")
    return [(k, v.numpy()) for k, v in sd.items() if v.ndim == 4]


def _onnx_convs(path):
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:  # this export keeps its weights in Constant nodes
        if n.op_type == "Constant":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return [(n.name, inits[n.input[1]]) for n in g.node if n.op_type == "Conv"]


@pytest.mark.zoo
@pytest.mark.parametrize("model_id,loader", [("digit-recognizer", _torch_convs),
                                             ("mtcnn-onet", _torch_convs),
                                             ("ppocr-mobile-v2-cls", _onnx_convs)])
def test_real_layers_match_definitions(zoo_path, model_id, loader):
    path = zoo_path(model_id)
    convs = loader(path)
    assert convs
    # the kernels on the directly loaded weights
    for name, w in convs:
        kh, kw = w.shape[2:]
        W = w.reshape(-1, kh * kw)
        assert same(K.orthogonality(w), ref_orth(w)), name
        if kh * kw == 1:
            continue
        assert same(K.variance_entropy(W), ref_H(W)), name
        assert same(K.sparsity(W), ref_S(W)), name
        assert same(K.variance_entropy_clean(W), ref_clean(W)), name
        m = K.metrics_from_moments(*_moments(W))  # the streaming path on the same layer
        assert same(m["variance_entropy"], ref_H(W)), name
        assert same(m["sparsity"], ref_S(W)), name
        assert same(m["variance_entropy_clean"], ref_clean(W)), name
    # the model-level table read through filterdb.read_model: the same layers in order
    from filterdb import read_model

    df, summary = model_health(read_model(path))
    assert len(df) == len(convs)
    for (_name, w), (_, row) in zip(convs, df.iterrows()):
        kh, kw = w.shape[2:]
        W = w.reshape(-1, kh * kw).astype(np.float32)
        assert row["n"] == W.shape[0] and row["kernel"] == f"{kh}x{kw}"
        assert same(row["orthogonality"], ref_orth(w))
        if (kh, kw) == (3, 3):
            assert same(row["variance_entropy"], ref_H(W))
            assert same(row["sparsity"], ref_S(W))
            assert same(row["threshold"], ref_TH(W.shape[0]))
            assert same(row["variance_entropy_norm"], ref_H(W) / ref_TH(W.shape[0]))
            assert row["random_paper"] == (ref_H(W) >= ref_TH(W.shape[0]) - 0.02)
            assert row["sparse"] == (ref_S(W) >= 0.14)
            assert row["low_diversity"] == (ref_H(W) < 0.5)
        elif (kh, kw) == (1, 1):
            assert math.isnan(row["variance_entropy"]) and not row["assessed"]
            assert not row[["random", "low_diversity", "sparse", "degenerated"]].any()
        else:
            assert same(row["variance_entropy"], ref_H(W))
    assert summary["n_layers"] == len(convs)
    assert summary["n_degenerated"] == int(df.loc[df["assessed"], "degenerated"].sum())


# --- known cases --------------------------------------------------------------------------

def test_all_zero_layer():
    w = np.zeros((8, 4, 3, 3), np.float32)
    W = w.reshape(-1, 9)
    assert K.sparsity(W) == 1.0
    assert K.variance_entropy(W) == 0.0
    assert math.isnan(K.variance_entropy_clean(W))
    r = layer_metrics(layer(w))
    assert r["sparsity"] == 1.0 and r["variance_entropy"] == 0.0
    assert r["low_diversity"] and r["sparse"] and r["degenerated"] and not r["random"]
    # zero rows stay zero: diagonal terms |0 - 1| = 1 each, off-diagonal 0
    assert same(r["orthogonality"], 1 - 8 / (8 * 7))
    assert same(r["orthogonality"], ref_orth(w))


def test_identical_filters_have_zero_entropy():
    rng = np.random.default_rng(1)
    f = rng.standard_normal(9).astype(np.float32)
    W = np.tile(f, (500, 1))
    assert K.variance_entropy(W) == 0.0
    assert ref_H(W) == 0.0
    # identical output channels: every pair has cosine 1, orthogonality 0
    w = np.tile(rng.standard_normal((1, 3, 3, 3)).astype(np.float32), (6, 1, 1, 1))
    assert same(K.orthogonality(w), 0.0, 1e-6)


def test_iid_gaussian_filters_look_random():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 64, 3, 3))
    W = w.reshape(-1, 9)
    H = K.variance_entropy(W)
    assert same(H, ref_H(W))
    assert H / ref_TH(4096) > 0.995
    r = layer_metrics(layer(w))
    assert r["random"] and r["degenerated"] and not r["sparse"]


def test_half_zeroed_filters():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((200, 9))
    W[::2] = 0.0
    assert K.sparsity(W) == 0.5 == ref_S(W)
    # the clean entropy is the entropy of the non-zero half alone
    assert same(K.variance_entropy_clean(W), ref_H(W[1::2]))
    assert same(K.variance_entropy(W), ref_H(W))


def test_orthogonal_rows():
    rng = np.random.default_rng(4)
    Q, _ = np.linalg.qr(rng.standard_normal((18, 8)))  # 8 orthonormal columns of length 18
    w = (Q.T * rng.uniform(0.5, 3, (8, 1))).reshape(8, 2, 3, 3)  # any row scale
    assert same(K.orthogonality(w), 1.0)
    assert same(K.orthogonality(w), ref_orth(w))
    assert math.isnan(K.orthogonality(w[:1]))


@pytest.mark.parametrize("n", [2, 3, 5, 9, 10, 57, 1000])
def test_entropy_matches_svd_for_many_shapes(n):
    rng = np.random.default_rng(n)
    W = rng.standard_normal((n, 9)) * rng.uniform(0.1, 3, 9) + rng.standard_normal(9)
    assert same(K.variance_entropy(W), ref_H(W))
    assert 0 <= K.variance_entropy(W) <= math.log10(9) + 1e-12
    # scale invariance of H, S and orthogonality
    assert same(K.variance_entropy(W * 1e-4), K.variance_entropy(W))
    assert K.sparsity(W * 7.0) == K.sparsity(W)


def test_tiny_layers():
    assert K.variance_entropy(np.ones((1, 9))) == 0.0
    assert math.isnan(K.variance_entropy(np.empty((0, 9))))
    assert math.isnan(K.sparsity(np.empty((0, 9))))
    # n = 2: H is 0 for any weights and TH(2) < 0: no entropy flags, H/TH undefined
    r = layer_metrics(layer(np.random.default_rng(5).standard_normal((2, 1, 3, 3))))
    assert r["variance_entropy"] == 0.0 and r["threshold"] < 0
    assert math.isnan(r["variance_entropy_norm"]) and not r["assessed"]
    assert not (r["random"] or r["low_diversity"] or r["degenerated"])


def test_one_by_one_not_applicable():
    r = layer_metrics(layer(np.random.default_rng(6).standard_normal((16, 8, 1, 1))))
    for k in ("sparsity", "variance_entropy", "threshold", "variance_entropy_norm",
              "variance_entropy_clean"):
        assert math.isnan(r[k]), k
    assert not (r["random"] or r["low_diversity"] or r["sparse"] or r["degenerated"])
    assert not r["assessed"] and 0 < r["orthogonality"] <= 1


def test_nonfinite_layer_gets_nan_and_no_flags():
    w = np.random.default_rng(7).standard_normal((8, 4, 3, 3))
    w[0, 0, 0, 0] = np.nan
    r = layer_metrics(layer(w))
    assert math.isnan(r["variance_entropy"]) and math.isnan(r["orthogonality"])
    assert not r["degenerated"] and not r["assessed"]


def test_randomness_threshold_formula():
    ns = np.array([1, 2, 3, 9, 64, 4096, 10 ** 7])
    th = K.randomness_threshold(ns)
    for n, t in zip(ns, th):
        assert same(t, ref_TH(int(n)), 1e-12)
    assert K.randomness_threshold(2) < 0 < K.randomness_threshold(3)
    assert abs(ref_TH(10 ** 9) - (1.2618047 - 0.31050834)) < 1e-6


def test_sparse_count():
    W = np.array([[0.5, 0, 0], [0.001, -0.002, 0], [0.02, 0, 0], [-0.0099, 0, 0.0099]])
    assert K.sparse_count(W, 0.01) == 2
    assert K.sparse_count(W, 0.5) == 3  # |0.5| < 0.5 is false
    assert K.sparsity(W, eps=0.02) == 2 / 4 == ref_S(W, 0.02)


# --- flags at the threshold edges ---------------------------------------------------------

def flags(H, S, n=100, k=3, t=None):
    """The assessment of one layer of ``n`` k x k filters under the paper's rule."""
    t = t or HealthThresholds(rule="paper")
    return assess(n, k, k, S, H, t).iloc[0]


def test_flags_at_edges():
    TH = flags(0.0, 0.0)["threshold"]
    assert same(TH, ref_TH(100))
    assert flags(TH - 0.02, 0.0)["random"]
    assert not flags(np.nextafter(TH - 0.02, -1), 0.0)["random"]
    assert not flags(0.5, 0.14)["low_diversity"]
    assert flags(np.nextafter(0.5, 0), 0.14)["low_diversity"]
    assert flags(0.3, 0.14)["sparse"]
    assert not flags(0.3, np.nextafter(0.14, 0))["sparse"]
    # degenerated = random or (low diversity and sparse)
    assert flags(0.3, 0.14)["degenerated"]
    assert not flags(0.3, 0.13)["degenerated"]
    assert not flags(0.6, 0.9)["degenerated"]
    assert flags(TH, 0.0)["degenerated"]
    # configurable
    assert not flags(TH - 0.02, 0.0, t=HealthThresholds(rule="paper", random_margin=0.01))[
        "random"]
    assert flags(0.3, 0.05, t=HealthThresholds(rule="paper", sparse_S=0.05))["degenerated"]
    # other kernels: low-diversity limit scaled by log10(d) / log10(9)
    lim = 0.5 * math.log10(25) / math.log10(9)
    assert flags(lim - 1e-9, 0.0, k=5)["low_diversity"]
    assert not flags(lim, 0.0, k=5)["low_diversity"]


def test_layer_flags_from_constructed_weights():
    # half the filters zero, the other half identical: S = 0.5, H = rank-1 entropy = 0
    w = np.zeros((10, 10, 3, 3), np.float32)
    w.reshape(-1, 9)[1::2] = np.arange(1, 10, dtype=np.float32)
    r = layer_metrics(layer(w))
    assert r["sparsity"] == 0.5 and same(r["variance_entropy"], 0.0)
    assert r["sparse"] and r["low_diversity"] and r["degenerated"]
    # the same layer with eps 0 has no sparse filter (|w| < 0 never holds)
    r0 = layer_metrics(layer(w), HealthThresholds(sparsity_eps=0.0))
    assert r0["sparsity"] == 0.0 and not r0["sparse"]


# --- streamed moments equal the direct functions -----------------------------------------

def _moments(W, eps=0.01):
    W = np.asarray(W, dtype=np.float64)
    t = eps * np.abs(W).max()
    sp = (np.abs(W) < t).all(axis=1) if t > 0 else np.ones(len(W), bool)
    return (len(W), W.sum(0), W.T @ W, int(sp.sum()), W[sp].sum(0), W[sp].T @ W[sp])


def test_moments_equal_direct():
    rng = np.random.default_rng(8)
    layers = [rng.standard_normal((n, 9)) * rng.uniform(0.05, 1, 9) for n in (3, 10, 77, 4096)]
    z = rng.standard_normal((300, 9)) * 0.1
    z[:100] *= 1e-4  # a third sparse
    layers += [z, np.zeros((5, 9)), np.ones((1, 9))]
    layers = [W.astype(np.float32).astype(np.float64) for W in layers]  # as stored
    mom = [_moments(W) for W in layers]
    for W, m in zip(layers, mom):
        out = K.metrics_from_moments(m[0], m[1], m[2], m[3], m[4], m[5])
        assert same(out["variance_entropy"], ref_H(W))
        assert same(out["sparsity"], ref_S(W))
        assert same(out["variance_entropy_clean"], ref_clean(W))
    # batched over layers, then the assessment
    n = np.array([m[0] for m in mom])
    out = K.metrics_from_moments(n, np.stack([m[1] for m in mom]), np.stack([m[2] for m in mom]),
                                 np.array([m[3] for m in mom]), np.stack([m[4] for m in mom]),
                                 np.stack([m[5] for m in mom]))
    df = assess(n, 3, 3, out["sparsity"], out["variance_entropy"]).assign(
        sparsity=out["sparsity"], variance_entropy=out["variance_entropy"],
        variance_entropy_clean=out["variance_entropy_clean"])
    for (W, (_, row)) in zip(layers, df.iterrows()):
        direct = layer_metrics(layer(W.reshape(len(W), 1, 3, 3)))
        for k in ("sparsity", "variance_entropy", "threshold", "variance_entropy_norm",
                  "variance_entropy_clean"):
            assert same(float(row[k]), float(direct[k])), k
        for f in ("random", "low_diversity", "sparse", "degenerated"):
            assert bool(row[f]) == direct[f], f


# --- simulated thresholds and random initialisations -------------------------------------

def test_simulated_threshold_reproduces_published_curve_for_large_n():
    # the published TH(n) is a fitted curve: within 0.004 of the i.i.d. mean for n >= 256,
    # and below it for small n (0.1255 vs about 0.25 at n = 3)
    for n in (256, 1024, 4096, 65536):
        assert abs(simulated_threshold(n, 9) - ref_TH(n)) < 0.004, n
    for n in (3, 8, 32):
        assert simulated_threshold(n, 9) > ref_TH(n)
    assert simulated_threshold(40, 25) == simulated_threshold(40, 25)  # deterministic


@pytest.mark.parametrize("n,d", [(6, 25), (50, 25), (300, 3)])
def test_simulated_threshold_against_direct_draws(n, d):
    # Bartlett / direct simulation vs Gaussian matrices measured with the SVD reference
    rng = np.random.default_rng([99, n, d])
    direct = np.array([ref_H(rng.standard_normal((n, d))) for _ in range(200)])
    sim = simulate_iid_entropy(n, d)
    se = math.sqrt(direct.var() / 200 + sim.var() / sim.size)
    assert abs(direct.mean() - sim.mean()) < 4 * se + 1e-3
    assert simulated_threshold(n, d) == pytest.approx(sim.mean(), abs=1e-12)


def test_other_kernel_threshold_used():
    w = np.random.default_rng(9).standard_normal((32, 16, 5, 5))
    r = layer_metrics(layer(w))
    assert r["threshold"] == simulated_threshold(512, 25)
    assert same(r["variance_entropy"], ref_H(w.reshape(-1, 25)))
    assert r["random"]  # i.i.d. filters reach the i.i.d. mean


def test_initialisers_from_definitions():
    shape = (64, 32, 3, 3)
    fan_in, fan_out = 32 * 9, 64 * 9
    assert fans(shape) == (fan_in, fan_out)
    rng = np.random.default_rng
    ku = init_weight("kaiming_uniform", shape, rng(0))
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / fan_in)
    assert same(bound, 1 / math.sqrt(fan_in), 1e-15)
    assert np.abs(ku).max() <= bound and np.abs(ku).max() > 0.99 * bound
    kn = init_weight("kaiming_normal", shape, rng(0))
    assert abs(kn.std() / math.sqrt(2 / fan_in) - 1) < 0.02
    xu = init_weight("xavier_uniform", shape, rng(0))
    xb = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(xu).max() <= xb and np.abs(xu).max() > 0.99 * xb
    assert abs(init_weight("normal", shape, rng(0)).std() / 0.01 - 1) < 0.02


def test_random_baseline():
    rng = np.random.default_rng(10)
    layers = [ConvLayer("a", "Conv", rng.standard_normal((16, 3, 3, 3)) * 0.1),
              ConvLayer("b", "Conv", rng.standard_normal((64, 16, 3, 3)) * 0.1),
              ConvLayer("c", "Conv", rng.standard_normal((32, 64, 1, 1)) * 0.1)]
    model = Model("x.npz", "npz", "0" * 64, layers)
    base = random_baseline(model, seed=3)
    assert list(base["name"]) == [n for n in "abc" for _ in range(4)]
    assert set(base["init"]) == {"kaiming_uniform", "kaiming_normal", "xavier_uniform", "normal"}
    # direct recomputation of one row: layer b, kaiming_uniform, seed [3, 1]
    w = init_weight("kaiming_uniform", (64, 16, 3, 3), np.random.default_rng([3, 1]))
    row = base[(base["name"] == "b") & (base["init"] == "kaiming_uniform")].iloc[0]
    assert same(row["variance_entropy"], ref_H(w.reshape(-1, 9)))
    assert same(row["orthogonality"], ref_orth(w))
    assert row["random"]  # a freshly initialised large layer looks random
    # scale invariance: uniform inits coincide, so do normal ones (same seed, other scale)
    for a, b in (("kaiming_uniform", "xavier_uniform"), ("kaiming_normal", "normal")):
        x = base[base["init"] == a].reset_index(drop=True)
        y = base[base["init"] == b].reset_index(drop=True)
        for k in ("sparsity", "variance_entropy", "variance_entropy_norm", "orthogonality"):
            np.testing.assert_allclose(x[k], y[k], atol=1e-6, equal_nan=True)


# --- model summary ------------------------------------------------------------------------

def _graded_layer(rng, c_out, c_in, decay):
    # anisotropic filters: H well below the random threshold, no sparse filter
    z = rng.standard_normal((c_out * c_in, 9)) * decay ** np.arange(9) + 0.0
    return z.reshape(c_out, c_in, 3, 3)


def test_model_summary_and_verdict():
    rng = np.random.default_rng(11)
    good = [_graded_layer(rng, 16, 8, 0.8) for _ in range(4)]
    for w in good:  # not flagged, by the definitions
        W = w.reshape(-1, 9)
        assert ref_H(W) < ref_TH(len(W)) - 0.02 and ref_H(W) >= 0.5 and ref_S(W) < 0.14
    zero = np.zeros((16, 8, 3, 3))
    rand = rng.standard_normal((64, 64, 3, 3))

    def model(ws):
        ls = [ConvLayer(f"l{i}", "Conv", w, conv_depth=i, conv_depth_norm=i / max(len(ws) - 1, 1))
              for i, w in enumerate(ws)]
        return Model("m.npz", "npz", "0" * 64, ls)

    df, s = model_health(model(good))
    assert s["n_degenerated"] == 0 and s["verdict_class"] == "good start"
    assert s["verdict"] == ("good start: none of the 4 assessed layers is degenerated "
                            "(random-like, or sparse and low-diversity).")
    df, s = model_health(model(good + [zero]))  # 1 of 5 = 0.2: caution
    assert s["n_degenerated"] == 1 and s["share_degenerated"] == 0.2
    assert s["verdict"] == ("caution: 1 of 5 assessed layers (20%, at most the 20% limit of a "
                            "poor start) is degenerated: 0 random-like, 1 both sparse and "
                            "low-diversity.")
    assert s["worst_layers"][0]["name"] == "l4"
    assert s["worst_layers"][0]["label"] == "sparse and low-diversity (S 1.000, H 0.000)"
    df, s = model_health(model(good[:3] + [rand, zero]))  # 2 of 5: poor
    assert s["verdict"] == ("poor start: 2 of 5 assessed layers (40%, more than the 20% "
                            "limit) are degenerated: 1 random-like, 1 both sparse and "
                            "low-diversity.")
    # degenerated first, by closeness to random (p_random): the random layer, then the zeros
    assert [w["name"] for w in s["worst_layers"][:2]] == ["l3", "l4"]
    assert s["worst_layers"][0]["label"].startswith("random-like (p ")
    r = df.iloc[3]
    assert s["worst_layers"][0]["reason"] == (
        f"random-like: H {r['variance_entropy']:.3f}, random layers of n=4096 give "
        f"{r['random_mean']:.3f} +- {r['random_sd']:.3f} (p {r['p_random']:.2f} >= 0.05)")
    assert list(df.columns) == list(COLUMNS)
    # then the others by p_random, then H / mean H of random layers, descending
    rest = df[~df["degenerated"]]
    key = pd.DataFrame({"p": rest["p_random"], "h": rest["variance_entropy"] / rest["random_mean"]})
    key = key.sort_values(["p", "h"], ascending=False)
    assert [w["name"] for w in s["worst_layers"][2:]] == list(rest.loc[key.index, "name"])
    assert all(w["label"].startswith("closest to random") for w in s["worst_layers"][2:])
    _, s = model_health(Model("e.npz", "npz", "0" * 64, []))
    assert s["n_layers"] == 0 and s["verdict"].startswith("not assessed")


def test_orthogonality_large_layer_is_fast():
    import time

    w = np.random.default_rng(12).standard_normal((2048, 512, 3, 3)).astype(np.float32)
    t0 = time.perf_counter()
    o = K.orthogonality(w)
    assert time.perf_counter() - t0 < 10
    # i.i.d. rows in 4608 dims: mean |cos| ~ sqrt(2 / (pi * 4608))
    assert abs((1 - o) - math.sqrt(2 / (math.pi * 4608))) < 1e-3


def test_orthogonality_blockwise_equals_full_gram(monkeypatch):
    """Very wide layers use a blocked Gram (bounded memory): same value as the full one."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(700, 3, 3, 3))
    w[5] = 0.0  # a zero row stays zero
    R = w.reshape(700, -1)
    norms = np.linalg.norm(R, axis=1, keepdims=True)
    R = np.divide(R, norms, out=np.zeros_like(R), where=norms > 0)
    ref = 1 - np.abs(R @ R.T - np.eye(700)).sum() / (700 * 699)
    monkeypatch.setattr(K, "GRAM_BLOCK_ELEMENTS", 700 * 9)  # blocks of 9 rows
    assert K.orthogonality(w) == pytest.approx(ref, abs=1e-12)
