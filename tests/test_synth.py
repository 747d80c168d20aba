"""The synthetic published-shape database: counts from docs/method.md section 6,
shapes and filters checked against the stored rows by hand."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import _oracles as O
from filterdb.store import open_database
from filterdb.synth import build_synthetic, shapes, split_capped, split_exact, width_stats

# docs/method.md, section 6 (typed in from the spec, not from filterdb.synth)
TASKS = {"Classification": 555, "Segmentation": 28, "GAN-Generator": 24, "Object Detection": 16,
         "GAN-Discriminator": 7, "Style Transfer": 5, "Super Resolution": 4, "Face Detection": 4,
         "Depth Estimation": 2, "Face Recognition": 1, "Auto-Encoder": 1}
VCS = {"natural": 557, "handwriting": 36, "faces": 16, "medical xray": 9, "art": 5,
       "medical ct": 4, "seismic": 4, "medical mri": 3, "depth": 2, "map": 2, "astronomy": 2,
       "fractals": 2, "textures": 2, "thermal": 1, "cars": 1, "plants": 1}
N = 200_000


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "db"
    r = build_synthetic(path, N, seed=3)
    assert r["added"] == 647
    return path


def test_published_shape(synth_db):
    with open_database(synth_db) as db:
        assert db.n_models == 647 and db.n_layers == 21_436 and db.n_filters == N
        m = db.models()
        assert m.task.value_counts().to_dict() == TASKS
        assert m.visual_category.value_counts().to_dict() == VCS
        lay = db.layers()
        # every layer is a 3x3 conv whose filters are c_out * c_in / groups
        assert (lay.kh == 3).all() and (lay.kw == 3).all()
        assert (lay.filter_count == lay.c_out * (lay.c_in // lay.groups)).all()
        assert (lay.c_in % lay.groups == 0).all()
        assert int(lay.filter_count.sum()) == N
        # contiguous ids, per model in layer order
        s = lay.sort_values("filter_start")
        assert (s.filter_start.to_numpy() == np.concatenate(
            [[0], np.cumsum(s.filter_count.to_numpy())[:-1]])).all()
        # depth: conv_depth / (number of depths - 1), spread over [0, 1]
        g = lay.groupby("model_id")
        last = g.conv_depth.transform("max")
        want = np.where(last > 0, lay.conv_depth / last.where(last > 0, 1), 0.0)
        assert np.allclose(lay.conv_depth_norm, want)
        assert (m.depth == g.conv_depth.nunique().to_numpy()).all()
        hist = np.histogram(lay.conv_depth_norm, bins=10, range=(0, 1))[0]
        assert (hist > 500).all()
        assert 5 < g.size().median() < 60 and g.size().max() > 100
        assert db.verify() == []


def test_filters_look_trained_with_sparse_and_random_layers(synth_db):
    with open_database(synth_db) as db:
        lay = db.layers("filter_count >= 50")
        ent, sparse = [], []
        for r in lay.itertuples():
            w = db.layer_filters(r.layer_id).astype(np.float64)
            assert zlib.crc32(w.astype("<f4").tobytes()) == r.checksum
            t = 0.01 * np.abs(w).max()
            sparse.append(np.mean(np.all(np.abs(w) < t, axis=1)))
            ent.append(O.variance_entropy(w))
        ent, sparse = np.array(ent), np.array(sparse)
        # mostly structured (low variance entropy), some white (near log10 9), some sparse
        assert np.median(ent) < 0.85
        assert np.mean(ent > 0.9) > 0.01
        assert 0.02 < np.mean(sparse > 0.2) < 0.15


def test_rerun_completes_and_split_exact(synth_db):
    assert build_synthetic(synth_db, N, seed=3)["added"] == 0
    with open_database(synth_db) as db:
        assert db.n_models == 647 and db.n_filters == N
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.random(int(rng.integers(1, 50)))
        total = int(rng.integers(len(w), 10_000))
        n = split_exact(w, total, minimum=1)
        assert n.sum() == total and n.min() >= 1
        assert np.all(np.abs(n - 1 - w / w.sum() * (total - len(w))) < 1)


def test_widths_like_real_networks_at_the_published_size():
    """At the published size the layers are as wide as real networks' (ResNet-50's 3x3
    convs give a filter-weighted mean c_out of 408: typed in by hand below), not wider."""
    resnet50 = [(64, 64)] * 3 + [(128, 128)] * 4 + [(256, 256)] * 6 + [(512, 512)] * 3
    n = np.array([ci * co for ci, co in resnet50])
    assert round(float(np.sum(n * [co for _, co in resnet50]) / n.sum())) == 408
    total = 1_464_797_156
    sh = shapes(total)
    assert len(sh) == 21_436
    filters = sh[:, 0] * sh[:, 1]
    assert int(filters.sum()) == total and (filters >= 1).all()
    mean_c_out = float(np.sum(sh[:, 0] * filters) / filters.sum())
    assert 300 < mean_c_out < 600 and sh[:, 0].max() <= 2048
    assert filters.max() <= 1.01 * (1 << 20)
    w = width_stats(total)
    assert w["weighted_mean_c_out"] == pytest.approx(mean_c_out)
    assert w["max_c_out"] == sh[:, 0].max()
    # the earlier generator is kept, and is far wider
    legacy = width_stats(total, widths="legacy")
    assert legacy["weighted_mean_c_out"] > 700 and legacy["max_c_out"] > 5000


def test_split_capped():
    rng = np.random.default_rng(1)
    w = rng.lognormal(0, 2, 300)
    n = split_capped(w, 50_000, cap=400)
    assert n.sum() == 50_000 and n.max() <= 400 and n.min() >= 1
    # below the cap, parts keep the order of their weights
    free = n < 400
    assert np.all(np.diff(n[free][np.argsort(w[free])]) >= -1)
    with pytest.raises(ValueError):
        split_capped(w, 300 * 400 + 1, cap=400)
