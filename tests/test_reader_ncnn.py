"""ncnn reader: models written by pnnx 20261020 (tests/fixtures/ncnn/make_fixtures.py)
against the ONNX original of the same network, an int8 layer written here by hand from
ncnn's ModelBin format (no ncnn int8 tool installs here), and hostile files."""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "ncnn"


@pytest.fixture(scope="module")
def original():
    return read_model(FIX / "net.onnx")


@pytest.mark.parametrize("name", ["net_fp32.ncnn.param", "net_fp16.ncnn.param"])
def test_same_network_as_the_onnx(name, original):
    m = read_model(FIX / name)
    assert detect_format(FIX / name) == m.format == "ncnn"
    assert m.depth_source == "graph"
    assert [l.shape for l in m.layers] == [l.shape for l in original.layers]
    assert [l.groups for l in m.layers] == [l.groups for l in original.layers] == [1, 8, 4, 1, 1]
    assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in original.layers]
    assert m.kernel_counts == original.kernel_counts
    assert m.n_filters_3x3 == original.n_filters_3x3
    for a, b in zip(m.layers, original.layers):
        if "fp32" in name:
            np.testing.assert_array_equal(a.weight, b.weight)
        else:  # a float16 neighbour of the original (pnnx: not always the nearest one,
            # and half subnormals, below 2**-14, flushed to zero)
            assert np.all(a.weight == a.weight.astype(np.float16))
            tiny = np.abs(b.weight) < 2.0 ** -14
            err = np.abs(a.weight - b.weight)[~tiny]
            assert np.all(err <= np.abs(b.weight[~tiny]) * 2.0 ** -10)
            assert np.all(a.weight[tiny] == 0)
            half = b.weight.astype(np.float16).astype(np.float32)
            assert (a.weight == half).mean() > 0.99
            assert np.abs(a.weight - b.weight).max() > 0
    assert [s.op for s in m.skipped] == ["Deconvolution"]


def test_int8_by_hand(tmp_path):
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    scales = np.array([10.0, 20.0, 40.0, 80.0], np.float32)
    param = ("7767517\n2 2\nInput in0 0 1 in0\n"
             "Convolution c 1 1 in0 out 0=4 1=3 5=1 6=72 8=1\n")
    data = struct.pack("<I", 0x000D4B38) + q.tobytes()  # 72 bytes: already 4-aligned
    data += np.zeros(4, "<f4").tobytes()  # bias
    data += scales.astype("<f4").tobytes() + np.float32(1).tobytes()  # weight, bottom scales
    (tmp_path / "m.param").write_text(param)
    (tmp_path / "m.bin").write_bytes(data)
    m = read_model(tmp_path / "m.param")
    np.testing.assert_allclose(m.layers[0].weight, q / scales.reshape(4, 1, 1, 1), rtol=1e-6)


def _copy(tmp_path, name="net_fp32.ncnn"):
    for ext in (".param", ".bin"):
        shutil.copy(FIX / (name + ext), tmp_path / (name + ext))
    return tmp_path / (name + ".param")


def test_bin_that_does_not_fit(tmp_path):
    p = _copy(tmp_path)
    b = tmp_path / "net_fp32.ncnn.bin"
    data = b.read_bytes()
    b.write_bytes(data[:-8])
    with pytest.raises(ReadError, match="past the end of the .bin"):
        read_model(p)
    b.write_bytes(data + b"\0" * 8)
    with pytest.raises(ReadError, match="does not belong to this .param"):
        read_model(p)
    b.unlink()
    with pytest.raises(ReadError, match="missing"):
        read_model(p)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.bin"
    outside.write_bytes(data)
    os.symlink(outside, b)
    with pytest.raises(ReadError, match="link leading out"):
        read_model(p)


def test_unknown_weighted_layer_is_refused(tmp_path):
    p = _copy(tmp_path)
    p.write_text(p.read_text().replace("BinaryOp ", "FancyOp  "))
    with pytest.raises(ReadError, match="'FancyOp': its weight layout is not known"):
        read_model(p)
