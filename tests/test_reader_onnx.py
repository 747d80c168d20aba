"""The ONNX reader on the real ONNX zoo, checked against an independent walk of the protobuf."""
from __future__ import annotations

import hashlib
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, numpy_helper

from filterdb.errors import ReadError
from filterdb.readers import onnx as onnx_reader
from filterdb.readers import read_model

ONNX_ZOO = ["ppocrv4-det", "ppocrv4-rec", "ppocr-mobile-v2-cls", "silero-vad-onnx"]


def _subgraphs(node):
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.g
        elif a.type == AttributeProto.GRAPHS:
            yield from a.graphs


def walk_protobuf(path):
    """Independent reference: every node (subgraphs included) and the Conv weights, read
    straight from initializers and Constant nodes (the only weight sources in this zoo)."""
    model = onnx.load(str(path))
    consts, convs, ops = {}, [], []

    def visit(g):
        for t in g.initializer:
            consts[t.name] = numpy_helper.to_array(t)
        for n in g.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        for n in g.node:
            ops.append(n.op_type)
            if n.op_type == "Conv":
                group = [a.i for a in n.attribute if a.name == "group"]
                convs.append((n.name, consts[n.input[1]], group[0] if group else 1))
            for sub in _subgraphs(n):
                visit(sub)

    visit(model.graph)
    return model, convs, Counter(ops)


def reference_depths(model):
    """Longest path from the real inputs, by memoised recursion (main graph, no subgraphs)."""
    g = model.graph
    real = {i.name for i in g.input} - {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    memo = {}

    def value_depth(name):  # None: constant-only
        if name in real:
            return 0
        if name not in producer:
            return None
        return node_depth(producer[name])

    def node_depth(n):
        key = id(n)
        if key not in memo:
            ds = [d for d in (value_depth(i) for i in n.input if i) if d is not None]
            memo[key] = max(ds) + 1 if ds else None
        return memo[key]

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20000))
    try:
        return {n.name: node_depth(n) for n in g.node if n.op_type == "Conv"}
    finally:
        sys.setrecursionlimit(old)


# published counts, the zoo catalog (filterdb.zoo.catalog): (3x3 filters, of them depthwise)
PUBLISHED_3X3 = {"ppocrv4-det": (11904, 336), "ppocrv4-rec": (480, None),
                 "ppocr-mobile-v2-cls": (88, None)}


@pytest.mark.zoo
@pytest.mark.parametrize("model_id", ONNX_ZOO)
def test_zoo_layers_equal_protobuf(model_id, zoo_path):
    path = zoo_path(model_id)
    model, convs, ops = walk_protobuf(path)
    convs_2d = [c for c in convs if c[1].ndim == 4]
    m = onnx_reader.read(path, "onnx")

    assert len(m.layers) == len(convs_2d)
    assert [l.name for l in m.layers] == [c[0] for c in convs_2d]
    for layer, (_, w, group) in zip(m.layers, convs_2d):
        assert layer.weight.dtype == np.float32
        np.testing.assert_array_equal(layer.weight, w.astype(np.float32))
        assert layer.groups == group
    n3 = sum(w.shape[0] * w.shape[1] for _, w, _ in convs_2d if w.shape[2:] == (3, 3))
    assert m.n_filters_3x3 == n3
    assert m.filters_3x3().shape == (n3, 9)

    # model facts
    assert m.op_counts == dict(ops)
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.producer == (model.producer_name or None)
    assert m.opset == [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0]
    assert m.depth_source == "graph"

    if model_id in PUBLISHED_3X3:
        total, depthwise = PUBLISHED_3X3[model_id]
        assert m.n_filters_3x3 == total
        if depthwise is not None:
            dw = sum(l.n_filters for l in m.layers_3x3() if l.groups == l.shape[0] > 1)
            assert dw == depthwise


@pytest.mark.zoo
@pytest.mark.parametrize("model_id", ["ppocrv4-det", "ppocrv4-rec", "ppocr-mobile-v2-cls"])
def test_zoo_depths_equal_reference(model_id, zoo_path):
    path = zoo_path(model_id)
    m = onnx_reader.read(path, "onnx")
    ref = reference_depths(onnx.load(str(path)))
    assert {l.name: l.graph_depth for l in m.layers} == ref
    levels = sorted(set(ref.values()))
    for l in m.layers:
        assert l.conv_depth == levels.index(l.graph_depth)
        assert l.conv_depth_norm == pytest.approx(levels.index(l.graph_depth) / (len(levels) - 1))
    assert m.layers[0].conv_depth == 0 and max(l.conv_depth_norm for l in m.layers) == 1.0


@pytest.mark.zoo
def test_det_transposed_convs_skipped(zoo_path):
    path = zoo_path("ppocrv4-det")
    model = onnx.load(str(path))
    names = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    m = read_model(path)
    assert len(names) == 2
    assert [(s.name, s.op) for s in m.skipped] == [(n, "ConvTranspose") for n in names]
    assert all("transposed" in s.reason for s in m.skipped)


@pytest.mark.zoo
def test_silero_vad_only_1d_convs(zoo_path):
    path = zoo_path("silero-vad-onnx")
    model, convs, ops = walk_protobuf(path)
    assert not model.graph.initializer and not any(n.op_type == "Conv" for n in model.graph.node)
    m = read_model(path)
    assert m.layers == []
    # every Conv sits in an If subgraph and has a 3-D weight: each is reported as skipped
    assert len(convs) == ops["Conv"] == 12 and all(w.ndim == 3 for _, w, _ in convs)
    assert [s.name for s in m.skipped] == [c[0] for c in convs]
    assert all(s.reason == "1-D convolution, not a 2-D filter" for s in m.skipped)
    assert any("no 2-D convolution layers" in w for w in m.warnings)
    assert m.opset == 16 and m.producer == "spox"
    assert m.n_filters_3x3 == 0 and m.filters_3x3().shape == (0, 9)


@pytest.mark.zoo
def test_truncated_onnx_is_read_error(zoo_path, tmp_path):
    data = zoo_path("ppocr-mobile-v2-cls").read_bytes()
    p = tmp_path / "half.onnx"
    p.write_bytes(data[: len(data) // 2])
    for reader in (read_model, lambda q: onnx_reader.read(q, "onnx")):
        with pytest.raises(ReadError) as e:
            reader(p)
        msg = str(e.value)
        assert str(p) in msg and "corrupt ONNX file" in msg and "\n" not in msg


def test_random_bytes_onnx_is_read_error(tmp_path):
    rng = np.random.default_rng(7)
    p = tmp_path / "random.onnx"
    p.write_bytes(rng.bytes(4096))
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert str(p) in str(e.value)
    # a valid first tag before random bytes no longer passes detection (the walk of the
    # top-level fields refuses them), with the file named
    q = tmp_path / "random2.onnx"
    q.write_bytes(b"\x08" + rng.bytes(4096))
    with pytest.raises(ReadError) as e:
        read_model(q)
    assert str(q) in str(e.value) and "named like onnx, but its content is not" in str(e.value)
    # random bytes inside valid top-level fields (ir_version 7, a 4,096-byte graph) pass
    # detection and reach the parser
    r = tmp_path / "random3.onnx"
    r.write_bytes(b"\x08\x07\x3a\x80\x20" + rng.bytes(4096))
    with pytest.raises(ReadError) as e:
        read_model(r)
    assert str(r) in str(e.value) and "ONNX" in str(e.value)


def test_valid_protobuf_without_graph_is_not_onnx(tmp_path):
    p = tmp_path / "nograph.onnx"
    # a ModelProto with ir_version 7 and producer_name "abc", nothing else
    p.write_bytes(b"\x08\x07\x12\x03abc")
    assert onnx.load_model_from_string(p.read_bytes()).producer_name == "abc"
    with pytest.raises(ReadError, match="not an ONNX model"):
        read_model(p)


def test_local_functions_are_inlined(tmp_path):
    """torch's ``export_modules_as_functions`` puts every conv inside model-local functions;
    they read as the same layers (weights, groups, depths) as the plain export."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return x + torch.relu(self.conv(x))

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), Block(), nn.Conv2d(8, 8, 3, groups=8),
                      nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    plain, funcs = tmp_path / "plain.onnx", tmp_path / "funcs.onnx"
    torch.onnx.export(m, (x,), str(plain), dynamo=False)
    torch.onnx.export(m, (x,), str(funcs), dynamo=False, export_modules_as_functions=True)
    assert len(onnx.load(str(funcs)).functions) > 0
    a, b = read_model(funcs), read_model(plain)
    assert len(a.layers) == len(b.layers) == 4 and not a.warnings
    for la, lb, mod in zip(a.layers, b.layers, [m[0], m[1].conv, m[2], m[3]]):
        np.testing.assert_array_equal(la.weight, mod.weight.detach().numpy())
        np.testing.assert_array_equal(la.weight, lb.weight)
        assert la.groups == lb.groups == mod.groups
    assert [l.conv_depth for l in a.layers] == [l.conv_depth for l in b.layers] == [0, 1, 2, 3]
