"""Core ML reader: models written by coremltools 9.0 (tests/fixtures/coreml/make_fixtures.py)
from the same traced PyTorch network as the ONNX original beside them: NeuralNetwork float32 /
float16 / 8-bit, ML Program float32 / int8, and packages whose blobs leave the folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "coreml"
FILES = ["net.mlmodel", "net_fp16.mlmodel", "net_u8.mlmodel", "net.mlpackage",
         "net_int8.mlpackage"]


@pytest.fixture(scope="module")
def original():
    return read_model(FIX / "net.onnx")


@pytest.mark.parametrize("name", FILES)
def test_same_network_as_the_onnx(name, original):
    m = read_model(FIX / name)
    assert detect_format(FIX / name) == m.format == "coreml"
    assert m.depth_source == "graph"
    assert [l.shape for l in m.layers] == [l.shape for l in original.layers]
    assert [l.groups for l in m.layers] == [l.groups for l in original.layers] == [1, 8, 4, 1, 1]
    assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in original.layers]
    assert m.kernel_counts == original.kernel_counts
    assert [s.reason.startswith("transposed") for s in m.skipped] == [True]
    for a, b in zip(m.layers, original.layers):
        if name in ("net.mlmodel", "net.mlpackage"):
            np.testing.assert_array_equal(a.weight, b.weight)
        elif name == "net_fp16.mlmodel":
            np.testing.assert_array_equal(a.weight, b.weight.astype(np.float16).astype(np.float32))
        else:  # 8-bit per output channel: within half a step of the original
            w = b.weight.reshape(b.shape[0], -1)
            step = 2 * np.abs(w).max(axis=1) / 254
            err = np.abs(a.weight - b.weight).reshape(b.shape[0], -1).max(axis=1)
            assert np.all(err <= step / 2 * 1.01) and err.max() > 0


def test_spec_inside_the_package_reads_the_same(original):
    spec = FIX / "net.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel"
    m = read_model(spec)
    np.testing.assert_array_equal(m.layers[0].weight, original.layers[0].weight)


def test_blob_outside_the_package(tmp_path):
    pkg = tmp_path / "net.mlpackage"
    shutil.copytree(FIX / "net.mlpackage", pkg)
    spec = pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"
    data = spec.read_bytes()
    evil = data.replace(b"@model_path/weights/weight.bin", b"@model_path/../../../weight.bi")
    assert evil != data and len(evil) == len(data)
    spec.write_bytes(evil)
    with pytest.raises(ReadError, match="leaves the package"):
        read_model(pkg)
    spec.write_bytes(data)
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(ReadError, match="weight.bin is missing"):
        read_model(pkg)


def test_truncated_mlmodel(tmp_path):
    p = tmp_path / "t.mlmodel"
    p.write_bytes((FIX / "net.mlmodel").read_bytes()[:5000])
    with pytest.raises(ReadError, match="corrupt Core ML model"):
        read_model(p)
