"""OpenVINO IR reader: IR written by openvino 2026.4 (tests/fixtures/openvino/make_fixtures.py)
against the ONNX original it was converted from, NNCF-style int8 weights against numpy, and
hostile IR."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "openvino"


@pytest.fixture(scope="module")
def original():
    return read_model(FIX / "net.onnx")


@pytest.mark.parametrize("name", ["net_fp32.xml", "net_fp16.xml"])
def test_same_network_as_the_onnx(name, original):
    m = read_model(FIX / name)
    assert detect_format(FIX / name) == m.format == "openvino"
    assert m.depth_source == "graph"
    assert [l.shape for l in m.layers] == [l.shape for l in original.layers]
    assert [l.groups for l in m.layers] == [l.groups for l in original.layers] == [1, 8, 4, 1, 1]
    assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in original.layers]
    assert m.kernel_counts == original.kernel_counts
    assert m.n_filters_3x3 == original.n_filters_3x3 == 8 * 3 + 8 + 12 * 2
    for a, b in zip(m.layers, original.layers):
        want = b.weight if "fp32" in name else b.weight.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(a.weight, want)
    assert [s.op for s in m.skipped] == ["ConvolutionBackpropData"]
    assert [s.op for s in original.skipped] == ["ConvTranspose"]


def test_int8_decompression_chains():
    m = read_model(FIX / "int8.xml")
    want = np.load(FIX / "int8_expected.npz")
    assert [l.name for l in m.layers] == ["conv_u8", "gconv_i8"]
    assert m.layers[1].groups == 2 and m.layers[1].shape == (6, 3, 3, 3)
    np.testing.assert_allclose(m.layers[0].weight, want["conv_u8"], rtol=1e-6)
    np.testing.assert_allclose(m.layers[1].weight, want["gconv_i8"], rtol=1e-6)
    assert [l.conv_depth for l in m.layers] == [0, 1]


def _copy(tmp_path, name="net_fp32"):
    for ext in (".xml", ".bin"):
        shutil.copy(FIX / (name + ext), tmp_path / (name + ext))
    return tmp_path / (name + ".xml")


def test_missing_or_foreign_bin(tmp_path):
    p = _copy(tmp_path)
    (tmp_path / "net_fp32.bin").unlink()
    with pytest.raises(ReadError, match="net_fp32.bin .*missing"):
        read_model(p)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.bin"
    shutil.copy(FIX / "net_fp32.bin", outside)
    os.symlink(outside, tmp_path / "net_fp32.bin")
    with pytest.raises(ReadError, match="link leading out"):
        read_model(p)


def test_truncated_bin_and_bad_offsets(tmp_path):
    p = _copy(tmp_path)
    b = tmp_path / "net_fp32.bin"
    b.write_bytes(b.read_bytes()[:1000])
    with pytest.raises(ReadError, match="outside the .bin"):
        read_model(p)


def test_refuses_entities(tmp_path):
    p = tmp_path / "bomb.xml"
    p.write_text('<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaa">]><net>&a;</net>')
    with pytest.raises(ReadError, match="DTD or entities"):
        read_model(p)
    q = tmp_path / "other.xml"
    q.write_text('<?xml version="1.0"?><html/>')
    with pytest.raises(ReadError, match="not an OpenVINO IR"):
        read_model(q)
