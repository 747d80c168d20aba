"""Paddle reader: inference models written by paddlepaddle 3.3.1
(tests/fixtures/paddle/make_fixtures.py; legacy ProgramDesc and PIR JSON) of the same network
as the ONNX original beside them (PyTorch weights copied into Paddle), and broken files."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "paddle"


@pytest.fixture(scope="module")
def original():
    return read_model(FIX / "net.onnx")


@pytest.mark.parametrize("rel", ["net.pdmodel", "pir/net.json"])
def test_same_network_as_the_onnx(rel, original):
    m = read_model(FIX / rel)
    assert detect_format(FIX / rel) == m.format == "paddle"
    assert m.depth_source == "graph"
    assert [l.shape for l in m.layers] == [l.shape for l in original.layers]
    assert [l.groups for l in m.layers] == [l.groups for l in original.layers] == [1, 8, 4, 1, 1]
    assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in original.layers]
    assert m.kernel_counts == original.kernel_counts
    for a, b in zip(m.layers, original.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
    assert [s.op for s in m.skipped] == ["conv2d_transpose"]
    assert m.layers[0].name == "conv2d_0.w_0"


@pytest.mark.parametrize("rel", ["net.pdmodel", "pir/net.json"])
def test_params_that_do_not_fit(tmp_path, rel):
    src = (FIX / rel).parent
    d = tmp_path / "m"
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("pir", "*.onnx", "*.py"))
    model = d / Path(rel).name
    params = d / "net.pdiparams"
    data = params.read_bytes()
    params.write_bytes(data[:-4])
    with pytest.raises(ReadError, match="params end inside a tensor"):
        read_model(model)
    params.write_bytes(data + b"\0" * 4)
    with pytest.raises(ReadError, match="does not belong to this model"):
        read_model(model)
    params.unlink()
    with pytest.raises(ReadError, match="net.pdiparams .*missing"):
        read_model(model)
    outside = tmp_path / "outside.pdiparams"
    outside.write_bytes(data)
    os.symlink(outside, params)
    with pytest.raises(ReadError, match="link leading out"):
        read_model(model)
