"""SavedModel reader: SavedModels written by TensorFlow 2.21
(tests/fixtures/savedmodel/make_fixtures.py): the Keras network against its .h5 original
(same weights), a plain tf.Module against the kernels it was made with, and broken folders."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "savedmodel"
H5 = Path(__file__).parent / "fixtures" / "tfjs" / "net.h5"


@pytest.mark.parametrize("given", ["folder", "pb"])
def test_keras_savedmodel_against_the_h5(given):
    p = FIX / "keras_net" if given == "folder" else FIX / "keras_net" / "saved_model.pb"
    assert detect_format(p) == "savedmodel"
    m, h = read_model(p), read_model(H5)
    assert m.format == "savedmodel" and m.depth_source == "graph"
    assert [l.shape for l in m.layers] == [l.shape for l in h.layers]
    assert m.kernel_counts == h.kernel_counts and m.n_filters_3x3 == h.n_filters_3x3
    for a, b in zip(m.layers, h.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
    assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in h.layers]
    # depthwise groups from the kernel; the grouped Conv2D's from its input's channels
    assert [l.groups for l in m.layers] == [l.groups for l in h.layers] == [1, 8, 1, 16, 1, 1, 2]
    assert m.layers[0].name == "model/c1/Conv2D"


def test_tf_module_savedmodel():
    m = read_model(FIX / "module_net")
    want = np.load(FIX / "module_net_expected.npz")
    assert [l.op for l in m.layers] == ["Conv2D", "DepthwiseConv2dNative", "Conv2D"]
    np.testing.assert_array_equal(m.layers[0].weight, np.transpose(want["k1"], (3, 2, 0, 1)))
    k2 = want["dwk"]  # [kh, kw, c_in, mult] -> channel i * mult + m
    np.testing.assert_array_equal(m.layers[1].weight,
                                  np.transpose(k2, (2, 3, 0, 1)).reshape(8, 1, 3, 3))
    assert m.layers[1].groups == 4
    np.testing.assert_array_equal(m.layers[2].weight, np.transpose(want["k3"], (3, 2, 0, 1)))
    assert [l.conv_depth for l in m.layers] == [0, 1, 2]


def test_broken_folders(tmp_path):
    d = tmp_path / "sm"
    shutil.copytree(FIX / "module_net", d)
    data = next((d / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ReadError, match="outside its data shard"):
        read_model(d)
    data.unlink()
    with pytest.raises(ReadError, match="missing from the SavedModel folder"):
        read_model(d)
    outside = tmp_path / "elsewhere.data"
    shutil.copy(next((FIX / "module_net" / "variables").glob("variables.data-*")), outside)
    os.symlink(outside, data)
    with pytest.raises(ReadError, match="link leading out"):
        read_model(d)
    (d / "variables" / "variables.index").write_bytes(b"\0" * 64)
    with pytest.raises(ReadError, match="not a table"):
        read_model(d)
