"""Graphless tensor formats: safetensors, npz, and one state dict across formats
(readers/safetensors.py, readers/npz.py, readers/tensors.py)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import read_model


def _write_safetensors(path, tensors):
    """A safetensors file by hand: data in the given order, the JSON header sorted by name."""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_by_hand_dtypes_and_write_order(tmp_path):
    rng = np.random.default_rng(3)
    f32 = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    f16 = rng.normal(size=(2, 4, 3, 3)).astype(np.float16)
    f64 = rng.normal(size=(3, 2, 1, 1))
    # bf16: the upper 16 bits of float32 values that bf16 holds exactly
    bf = (rng.normal(size=(5, 3, 3, 3)).astype(np.float32).view(np.uint32) & 0xFFFF0000)
    bf32 = bf.view(np.float32)
    bf16_raw = (bf >> 16).astype("<u2").tobytes()
    p = tmp_path / "m.safetensors"
    _write_safetensors(p, {  # write order z, conv10, conv2, a: the header is sorted by name
        "z.weight": ("F32", f32.shape, f32.tobytes()),
        "conv10.weight": ("F16", f16.shape, f16.tobytes()),
        "conv2.weight": ("BF16", bf32.shape, bf16_raw),
        "a.weight": ("F64", f64.shape, f64.tobytes()),
        "a.bias": ("F32", (3,), np.zeros(3, np.float32).tobytes()),
        "steps": ("I64", (1,), np.int64(5).tobytes()),
    })
    m = read_model(p)
    assert m.format == "safetensors" and m.depth_source == "order"
    assert [l.name for l in m.layers] == ["z", "conv10", "conv2", "a"]
    np.testing.assert_array_equal(m.layers[0].weight, f32)
    np.testing.assert_array_equal(m.layers[1].weight, f16.astype(np.float32))
    np.testing.assert_array_equal(m.layers[2].weight, bf32)
    np.testing.assert_array_equal(m.layers[3].weight, f64.astype(np.float32))
    assert [l.conv_depth for l in m.layers] == [0, 1, 2, 3]
    assert m.n_filters_3x3 == 8 + 8 + 15 and m.kernel_counts["1x1"] == 6
    assert not any("sorted" in w for w in m.warnings)


def test_safetensors_bf16_against_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    p = tmp_path / "bf.safetensors"
    save_file({"c.weight": w}, str(p))
    m = read_model(p)
    np.testing.assert_array_equal(m.layers[0].weight, w.float().numpy())


def test_safetensors_reference_writer_order(tmp_path):
    from safetensors.numpy import save_file

    ws = {f"features.{i}.weight": np.full((2, 2, 3, 3), i, np.float32) for i in (0, 2, 10, 12)}
    p = tmp_path / "ref.safetensors"
    save_file(ws, str(p))  # lays the data out sorted by name: 0, 10, 12, 2
    m = read_model(p)
    assert [l.name for l in m.layers] == ["features.0", "features.2", "features.10",
                                          "features.12"]
    assert [float(l.weight[0, 0, 0, 0]) for l in m.layers] == [0, 2, 10, 12]
    assert any("numeric-aware" in w for w in m.warnings)


def test_safetensors_truncated_and_corrupt(tmp_path):
    p = tmp_path / "m.safetensors"
    w = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    _write_safetensors(p, {"c.weight": ("F32", w.shape, w.tobytes())})
    data = p.read_bytes()
    for cut in (len(data) - 7, 20):
        t = tmp_path / f"cut{cut}.safetensors"
        t.write_bytes(data[:cut])
        with pytest.raises(ReadError) as e:
            read_model(t, format="safetensors")
        assert str(t) in str(e.value) and "truncated" in str(e.value)
    bad = tmp_path / "bad.safetensors"
    _write_safetensors(bad, {"c.weight": ("F32", (2, 2, 3, 4), w.tobytes())})
    with pytest.raises(ReadError, match="shape and dtype need"):
        read_model(bad)


@pytest.mark.zoo
def test_silero_safetensors_has_no_2d_convs(zoo_path):
    from safetensors import safe_open

    path = zoo_path("silero-vad-safetensors")
    with safe_open(str(path), framework="np") as f:
        conv1d = {k[: -len(".weight")] for k in f.keys()  # noqa: SIM118 - safe_open has keys(), no __iter__
                  if k.endswith(".weight") and f.get_slice(k).get_shape().__len__() == 3}
    m = read_model(path)
    assert m.format == "safetensors" and m.layers == [] and m.n_filters_3x3 == 0
    assert {s.name for s in m.skipped} == conv1d and len(conv1d) == 6
    assert all(s.op == "Conv1d" for s in m.skipped)
    assert "no 2-D convolution layers found" in m.warnings
    assert m.skipped[0].name == "stft_conv"  # write order, not the sorted header


def test_npz_unnamed_arrays_and_object_refused(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 1, 3, 3)), rng.normal(size=(6, 3, 5, 5)).astype(np.float32)
    p = tmp_path / "plain.npz"
    np.savez(p, a, np.arange(4), b, rng.normal(size=(2, 6)))  # arr_0 .. arr_3
    m = read_model(p)
    assert [l.name for l in m.layers] == ["arr_0", "arr_2"]
    np.testing.assert_array_equal(m.layers[0].weight, a.astype(np.float32))
    np.testing.assert_array_equal(m.layers[1].weight, b)
    assert m.op_counts == {"Conv2d": 2, "Linear": 1}

    obj = tmp_path / "obj.npz"
    np.savez(obj, w=np.ones((2, 2, 3, 3), np.float32), meta=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ReadError, match="refusing to unpickle"):
        read_model(obj)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ReadError) as e:
        read_model(trunc, format="npz")
    assert str(trunc) in str(e.value)


# ---- one state dict, four formats ---------------------------------------------------------


def _net():
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),                # 0
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),      # 2: grouped
        nn.Conv2d(8, 16, 1), nn.ReLU(),                          # 4
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),   # 6: depthwise
        nn.Conv2d(16, 8, 5, padding=2), nn.ReLU(),               # 8
        nn.Conv2d(8, 4, 3, padding=1),                           # 10
    ).eval()


def test_cross_format_same_filters_and_depths(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    net = _net()
    sd = net.state_dict()
    convs = [(i, m) for i, m in enumerate(net) if isinstance(m, torch.nn.Conv2d)]
    ref3 = np.concatenate([m.weight.detach().numpy().reshape(-1, 9) for _, m in convs
                           if m.kernel_size == (3, 3)])
    paths = {"torch": tmp_path / "net.pt", "safetensors": tmp_path / "net.safetensors",
             "npz": tmp_path / "net.npz"}
    torch.save(sd, paths["torch"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(paths["safetensors"]))
    np.savez(paths["npz"], **{k: v.numpy() for k, v in sd.items()})
    models = {fmt: read_model(p) for fmt, p in paths.items()}
    for fmt, m in models.items():
        assert m.format == fmt
        assert [l.name for l in m.layers] == [str(i) for i, _ in convs], fmt
        for l, (_, mod) in zip(m.layers, convs):
            np.testing.assert_array_equal(l.weight, mod.weight.detach().numpy())
        np.testing.assert_array_equal(m.filters_3x3(), ref3)
        assert [l.conv_depth for l in m.layers] == [0, 1, 2, 3, 4, 5]
        # groups: the depthwise conv is inferred, the grouped one is not knowable
        assert [l.groups for l in m.layers] == [1, 1, 1, 16, 1, 1]
        assert m.n_filters_3x3 == 8 * 3 + 8 * 4 + 16 + 4 * 8 == len(ref3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cross_format_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("filterdb.readers.onnx", reason="the ONNX reader is not there yet")
    net = _net()
    pt = tmp_path / "net.pt"
    torch.save(net.state_dict(), pt)
    onnx_path = tmp_path / "net.onnx"
    try:
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(onnx_path), dynamo=False,
                          do_constant_folding=False, opset_version=17)
    except Exception as e:
        pytest.skip(f"torch.onnx.export impossible here: {type(e).__name__}: {e}")
    a, b = read_model(pt), read_model(onnx_path)
    assert b.format == "onnx" and b.depth_source == "graph"
    assert len(a.layers) == len(b.layers) == 6
    np.testing.assert_array_equal(a.filters_3x3(), b.filters_3x3())
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.weight, lb.weight)
    # a chain: the graph depth order equals the tensor order
    assert [l.conv_depth for l in a.layers] == [l.conv_depth for l in b.layers]
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [l.groups for l in b.layers] == [m.groups for m in convs] == [1, 2, 1, 16, 1, 1]
