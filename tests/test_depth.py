"""Graph depth and weight folding of the ONNX reader on small graphs built with onnx.helper.

Every expected depth is derived by hand in the comments (docs/method.md, section 2:
the longest path in nodes from a real input; conv_depth indexes the distinct conv depths).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from filterdb.errors import ReadError
from filterdb.readers import read_model
from filterdb.readers.onnx import read

RNG = np.random.default_rng(1234)
F = TensorProto.FLOAT


def W(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def Q(*shape, dtype=np.int8):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, size=shape).astype(dtype)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx", opset=21, **save_kw):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="hand", producer_version="1.0")
    p = tmp_path / name
    onnx.save_model(m, str(p), **save_kw)
    return p


def conv(name, x, w, y, **attrs):
    return helper.make_node("Conv", [x, w], [y], name=name, **attrs)


def by_name(model):
    return {l.name: l for l in model.layers}


def depths(model):
    return {l.name: (l.graph_depth, l.conv_depth, l.conv_depth_norm) for l in model.layers}


X = vi("x", [1, 2, 8, 8])


def test_chain_with_residual(tmp_path):
    wa, wb, wc = W(2, 2, 3, 3), W(2, 2, 3, 3), W(2, 2, 1, 1)
    nodes = [conv("A", "x", "wa", "a"),                           # x(0) -> A: 1
             helper.make_node("Relu", ["a"], ["r"], name="relu"),  # 2
             conv("B", "r", "wb", "b"),                           # 3
             helper.make_node("Add", ["b", "a"], ["s"]),          # max(3, 1) + 1 = 4
             conv("C", "s", "wc", "y")]                           # 5
    p = save(tmp_path, nodes, [X], [vi("y", None)], [init("wa", wa), init("wb", wb), init("wc", wc)])
    m = read(p, "onnx")
    # conv depths {1, 3, 5} -> indices 0, 1, 2 -> norms 0, 0.5, 1
    assert depths(m) == {"A": (1, 0, 0.0), "B": (3, 1, 0.5), "C": (5, 2, 1.0)}
    np.testing.assert_array_equal(by_name(m)["B"].weight, wb)
    assert m.op_counts == {"Conv": 3, "Relu": 1, "Add": 1}
    assert (m.producer, m.producer_version, m.opset, m.depth_source) == ("hand", "1.0", 21, "graph")
    assert m.kernel_counts == {"3x3": 8, "1x1": 4} and m.total_filters == 8


def test_parallel_branches_share_depth(tmp_path):
    ws = {k: W(2, 2, 3, 3) for k in "ABC"}
    ws["D"] = W(2, 6, 3, 3)
    nodes = [conv("A", "x", "wA", "a"),                                   # 1
             conv("B", "x", "wB", "b"),                                   # 1 (parallel to A)
             helper.make_node("Relu", ["x"], ["r"]),                      # 1
             conv("C", "r", "wC", "c"),                                   # 2
             helper.make_node("Concat", ["a", "b", "c"], ["cat"], axis=1),  # max(1, 1, 2) + 1 = 3
             conv("D", "cat", "wD", "y")]                                 # 4
    p = save(tmp_path, nodes, [X], [vi("y", None)], [init("w" + k, v) for k, v in ws.items()])
    m = read(p, "onnx")
    # conv depths {1, 2, 4}: A, B -> 0; C -> 1; D -> 2; norms 0, 0, 0.5, 1
    assert depths(m) == {"A": (1, 0, 0.0), "B": (1, 0, 0.0), "C": (2, 1, 0.5), "D": (4, 2, 1.0)}
    assert m.n_conv_depths == 3


def test_single_conv(tmp_path):
    w = W(3, 2, 3, 3)
    p = save(tmp_path, [conv("only", "x", "w", "y")], [X], [vi("y", None)], [init("w", w)])
    m = read(p, "onnx")
    # one conv depth: conv_depth 0 and norm 0 (not 0 / 0)
    assert depths(m) == {"only": (1, 0, 0.0)}
    assert m.n_filters_3x3 == 6
    np.testing.assert_array_equal(m.filters_3x3(), w.reshape(6, 9))


def test_conv_after_non_conv_ops_and_initializer_listed_as_input(tmp_path):
    w1, w2 = W(2, 2, 3, 3), W(2, 2, 3, 3)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),              # 1
             helper.make_node("Sigmoid", ["r"], ["s"]),           # 2
             conv("late", "s", "w1", "y1"),                      # 3
             # the weight reaches this conv through three Identity nodes on an initializer
             # that is *also* listed as a graph input (IR < 4 style). It is not a real input,
             # so the Identity nodes are constant-only and the conv sits at depth 1, not 4.
             helper.make_node("Identity", ["w2"], ["i1"]),
             helper.make_node("Identity", ["i1"], ["i2"]),
             helper.make_node("Identity", ["i2"], ["i3"]),
             conv("early", "x", "i3", "y2")]                      # 1
    p = save(tmp_path, nodes, [X, vi("w2", [2, 2, 3, 3])], [vi("y1", None), vi("y2", None)],
             [init("w1", w1), init("w2", w2)])
    m = read(p, "onnx")
    # conv depths {1, 3}: early 0, late 1
    assert depths(m) == {"late": (3, 1, 1.0), "early": (1, 0, 0.0)}
    np.testing.assert_array_equal(by_name(m)["early"].weight, w2)


def test_conv_inside_if_subgraph(tmp_path):
    wa, wt, wt2, we, wz = (W(2, 2, 3, 3) for _ in range(5))
    then_g = helper.make_graph(
        [conv("T", "a", "wt", "t"),                    # outer a (real) -> local 1
         helper.make_node("Relu", ["t"], ["tr"]),      # local 2
         helper.make_node("Constant", [], ["wt2"], value=init("wt2", wt2)),  # constant: none
         conv("T2", "tr", "wt2", "t2")],               # local 3
        "then", [], [vi("t2", None)])                  # wt: initializer of the OUTER scope
    else_g = helper.make_graph(
        [conv("E", "a", "we", "e")],                   # local 1; we: subgraph initializer
        "else", [], [vi("e", None)], initializer=[init("we", we)])
    nodes = [conv("A", "x", "wa", "a"),                # 1
             # If: explicit input c (0) and the outer value a its branches read (1) -> 2.
             # Its subgraphs start at the parent's input depth 2 - 1 = 1, so a subgraph node
             # at local depth k has depth 1 + k: T 2, T2 4, E 2.
             helper.make_node("If", ["c"], ["o"], name="if", then_branch=then_g,
                              else_branch=else_g),
             conv("Z", "o", "wz", "y")]                # 3
    p = save(tmp_path, nodes, [X, vi("c", [], TensorProto.BOOL)], [vi("y", None)],
             [init("wa", wa), init("wt", wt), init("wz", wz)])
    m = read(p, "onnx")
    # conv depths {1, 2, 3, 4}: A 0, T/E 1, Z 2, T2 3; norm = index / 3
    assert depths(m) == {"A": (1, 0, 0.0), "T": (2, 1, 1 / 3), "E": (2, 1, 1 / 3),
                         "Z": (3, 2, 2 / 3), "T2": (4, 3, 1.0)}
    got = by_name(m)
    for name, w in {"A": wa, "T": wt, "T2": wt2, "E": we, "Z": wz}.items():
        np.testing.assert_array_equal(got[name].weight, w)
    # op counts include the subgraph nodes
    assert m.op_counts == {"Conv": 5, "If": 1, "Relu": 1, "Constant": 1}


def test_conv_inside_loop_body(tmp_path):
    wa, wl = W(2, 2, 3, 3), W(2, 2, 3, 3)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),  # local 1
         conv("L", "v", "wl", "v_out")],                           # formal input v (0) -> local 1
        "body", [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL),
                 vi("v", None)],
        [vi("cond_out", [], TensorProto.BOOL), vi("v_out", None)],
        initializer=[init("wl", wl)])
    nodes = [conv("A", "x", "wa", "a"),                                    # 1
             helper.make_node("Loop", ["n", "", "a"], ["res"], body=body),  # max(n 0, a 1) + 1 = 2
             conv("B", "res", "wa", "y")]                                  # 3
    # body starts at 2 - 1 = 1: L is 1 + 1 = 2
    p = save(tmp_path, nodes, [X, vi("n", [], TensorProto.INT64)], [vi("y", None)], [init("wa", wa)])
    m = read(p, "onnx")
    assert depths(m) == {"A": (1, 0, 0.0), "L": (2, 1, 0.5), "B": (3, 2, 1.0)}
    np.testing.assert_array_equal(by_name(m)["L"].weight, wl)


def test_weight_paths_constant_cast_dequantize(tmp_path):
    wc = W(4, 2, 3, 3)
    w16 = W(4, 2, 3, 3, dtype=np.float16)
    q0, s0, z0 = Q(4, 2, 3, 3), np.array([0.5, 0.25, 0.125, 2.0], np.float32), Q(4)
    qt, st, zt = Q(4, 2, 3, 3, dtype=np.uint8), np.float32(0.037), np.uint8(128)
    q1, s1, z1 = Q(4, 2, 3, 3), np.array([0.01, 0.3], np.float32), Q(2)
    qc, sc = Q(4, 2, 3, 3), np.float32(0.0123)
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=init("wc", wc)),
        conv("const", "x", "wc", "y1"),
        helper.make_node("Cast", ["w16"], ["w16f"], to=F),
        conv("cast16", "x", "w16f", "y2"),
        conv("fp16", "x", "w16", "y3"),
        # per output channel: axis=0 given explicitly
        helper.make_node("Constant", [], ["q0"], value=init("q0", q0)),
        helper.make_node("DequantizeLinear", ["q0", "s0", "z0"], ["d0"], axis=0),
        conv("dq_axis0", "x", "d0", "y4"),
        # per tensor, uint8
        helper.make_node("DequantizeLinear", ["qt", "st", "zt"], ["dt"]),
        conv("dq_tensor", "x", "dt", "y5"),
        # per channel with the default axis (1): along c_in
        helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
        conv("dq_axis1", "x", "d1", "y6"),
        # Constant -> DequantizeLinear (no zero point) -> Cast fp16 -> Cast fp32 -> Conv
        helper.make_node("Constant", [], ["qc"], value=init("qc", qc)),
        helper.make_node("DequantizeLinear", ["qc", "sc"], ["dc"]),
        helper.make_node("Cast", ["dc"], ["dc16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["dc16"], ["dc32"], to=F),
        conv("chain", "x", "dc32", "y7"),
    ]
    inits = [init("w16", w16), init("s0", s0), init("z0", z0), init("qt", qt), init("st", st),
             init("zt", zt), init("q1", q1), init("s1", s1), init("z1", z1), init("sc", sc)]
    p = save(tmp_path, nodes, [X], [vi(f"y{i}", None) for i in range(1, 8)], inits)
    m = read(p, "onnx")
    f64 = np.float64
    expected = {
        "const": wc,
        "cast16": w16.astype(np.float32),
        "fp16": w16.astype(np.float32),
        "dq_axis0": (q0.astype(f64) - z0[:, None, None, None]) * s0[:, None, None, None],
        "dq_tensor": (qt.astype(f64) - f64(zt)) * f64(st),
        "dq_axis1": (q1.astype(f64) - z1[None, :, None, None]) * s1[None, :, None, None],
        "chain": (qc.astype(f64) * f64(sc)).astype(np.float16),
    }
    got = by_name(m)
    assert list(got) == list(expected)
    for name, w in expected.items():
        # (q - z) is exact and q * s of two float32 values is exact in float64: one rounding
        np.testing.assert_array_equal(got[name].weight, np.asarray(w).astype(np.float32), name)
        assert got[name].weight.dtype == np.float32
    # the dequantization chains are constant-only: every conv is at depth 1
    assert {l.graph_depth for l in m.layers} == {1} and {l.conv_depth for l in m.layers} == {0}


def test_conv_integer_and_qlinear_conv(tmp_path):
    U8 = TensorProto.UINT8
    w1, z1 = Q(4, 2, 3, 3, dtype=np.uint8), Q(4, dtype=np.uint8)
    s1 = np.array([0.5, 0.02, 0.75, 1.5], np.float32).reshape(1, 4, 1, 1)
    w2, z2 = Q(4, 2, 3, 3), np.int8(-3)
    w3, z3, ws3 = Q(4, 2, 3, 3), np.int8(5), np.float32(0.004)
    wq, sq, zq = Q(4, 2, 3, 3), np.array([0.1, 0.2, 0.3, 0.4], np.float32), Q(4)
    nodes = [
        # static: ConvInteger -> Cast -> Mul(per-channel constant x_scale * w_scale)
        helper.make_node("ConvInteger", ["xq", "w1", "xz", "z1"], ["c1"], name="ci_static"),
        helper.make_node("Cast", ["c1"], ["c1f"], to=F),
        helper.make_node("Mul", ["c1f", "s1"], ["y1"]),
        # no scale anywhere: (w - zero_point) and a warning
        helper.make_node("ConvInteger", ["xq", "w2", "", "z2"], ["y2"], name="ci_noscale"),
        # dynamic quantization: the scale is x_scale (run time) * w_scale (constant)
        helper.make_node("Mul", ["x_scale", "ws3"], ["comb"]),
        helper.make_node("ConvInteger", ["xq", "w3", "xz", "z3"], ["c3"], name="ci_dynamic"),
        helper.make_node("Cast", ["c3"], ["c3f"], to=F),
        helper.make_node("Mul", ["comb", "c3f"], ["y3"]),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "wq", "sq", "zq", "ys", "xz"], ["y4"],
                         name="qlinear"),
    ]
    inits = [init("w1", w1), init("z1", z1), init("s1", s1), init("xz", np.uint8(128)),
             init("w2", w2), init("z2", z2), init("w3", w3), init("z3", z3), init("ws3", ws3),
             init("wq", wq), init("sq", sq), init("zq", zq), init("xs", np.float32(0.02)),
             init("ys", np.float32(0.05))]
    p = save(tmp_path, nodes, [vi("xq", [1, 2, 8, 8], U8), vi("x_scale", [], F)],
             [vi(f"y{i}", None) for i in range(1, 5)], inits, opset=13)
    m = read(p, "onnx")
    f64, col = np.float64, (slice(None), None, None, None)
    expected = {
        "ci_static": (w1.astype(f64) - z1[col]) * s1.reshape(4)[col],
        "ci_noscale": w2.astype(f64) - z2,
        "ci_dynamic": (w3.astype(f64) - z3) * f64(ws3),
        "qlinear": (wq.astype(f64) - zq[col]) * sq[col],
    }
    got = by_name(m)
    assert list(got) == list(expected)
    for name, w in expected.items():
        np.testing.assert_array_equal(got[name].weight, w.astype(np.float32), name)
    assert [l.op for l in m.layers] == ["ConvInteger"] * 3 + ["QLinearConv"]
    assert sum("ci_noscale" in w and "scale" in w for w in m.warnings) == 1
    assert not any("ci_static" in w or "ci_dynamic" in w for w in m.warnings)
    assert {l.graph_depth for l in m.layers} == {1}


def test_skipped_convs_and_layer_names(tmp_path):
    x1, x3 = vi("x1", [1, 2, 16]), vi("x3", [1, 2, 4, 8, 8])
    w = W(4, 2, 3, 3)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["y1"], name="up"),
        helper.make_node("Conv", ["x1", "w1d"], ["y2"], name="c1d"),
        helper.make_node("Conv", ["x3", "w3d"], ["y3"], name="c3d"),
        helper.make_node("Conv", ["x", "wdyn"], ["y4"], name="runtime"),     # weight is an input
        helper.make_node("Relu", ["wdyn"], ["wr"]),
        helper.make_node("Conv", ["x", "wr"], ["y5"], name="runtime2"),      # computed from it
        helper.make_node("Conv", ["x", "kernel"], ["y6"]),                   # no node name
    ]
    inits = [init("wt", W(2, 4, 3, 3)), init("w1d", W(4, 2, 3)), init("w3d", W(4, 2, 3, 3, 3)),
             init("kernel", w)]
    p = save(tmp_path, nodes, [X, x1, x3, vi("wdyn", [4, 2, 3, 3])],
             [vi(f"y{i}", None) for i in range(1, 7)], inits)
    m = read(p, "onnx")
    reasons = {s.name: (s.op, s.reason) for s in m.skipped}
    assert reasons["up"] == ("ConvTranspose", "transposed convolution, not a 2-D conv filter")
    assert reasons["c1d"] == ("Conv", "1-D convolution, not a 2-D filter")
    assert reasons["c3d"] == ("Conv", "3-D convolution, not a 2-D filter")
    assert "not a constant" in reasons["runtime"][1] and "run time" in reasons["runtime"][1]
    assert "not a constant" in reasons["runtime2"][1] and "Relu" in reasons["runtime2"][1]
    assert len(m.skipped) == 5
    # the unnamed conv is named after its weight tensor
    assert [l.name for l in m.layers] == ["kernel"]
    np.testing.assert_array_equal(m.layers[0].weight, w)


def test_only_skipped_convs_warns(tmp_path):
    p = save(tmp_path, [helper.make_node("Conv", ["x1", "w"], ["y"], name="c")],
             [vi("x1", [1, 2, 16])], [vi("y", None)], [init("w", W(4, 2, 3))])
    m = read_model(p)
    assert m.layers == [] and [s.reason for s in m.skipped] == ["1-D convolution, not a 2-D filter"]
    assert any("no 2-D convolution layers" in w for w in m.warnings)


def test_grouped_and_depthwise(tmp_path):
    x4 = vi("x", [1, 4, 8, 8])
    wg, wd, w5, w1 = W(4, 2, 3, 3), W(4, 1, 3, 3), W(4, 4, 5, 5), W(8, 4, 1, 1)
    nodes = [conv("grouped", "x", "wg", "g", group=2),     # 1
             conv("depthwise", "g", "wd", "d", group=4),   # 2
             conv("five", "d", "w5", "f"),                # 3
             conv("point", "f", "w1", "y")]               # 4
    p = save(tmp_path, nodes, [x4], [vi("y", None)],
             [init("wg", wg), init("wd", wd), init("w5", w5), init("w1", w1)])
    m = read(p, "onnx")
    got = by_name(m)
    assert (got["grouped"].groups, got["grouped"].n_filters) == (2, 8)      # 4 * 4/2
    assert (got["depthwise"].groups, got["depthwise"].n_filters) == (4, 4)  # 4 * 4/4
    assert got["point"].groups == 1
    assert m.n_filters_3x3 == 12
    assert m.kernel_counts == {"1x1": 32, "5x5": 16, "3x3": 12}
    assert m.total_filters == 28
    # depths 1..4 -> norms 0, 1/3, 2/3, 1
    assert [l.conv_depth_norm for l in m.layers] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(m.filters_3x3(), np.concatenate([wg.reshape(8, 9),
                                                                   wd.reshape(4, 9)]))


def test_external_data(tmp_path):
    wa, wb = W(8, 2, 3, 3), W(4, 8, 3, 3)
    nodes = [helper.make_node("Constant", [], ["wa"], value=init("wa", wa)),
             conv("A", "x", "wa", "a"), conv("B", "a", "wb", "y")]
    d = tmp_path / "ext"
    d.mkdir()
    p = save(d, nodes, [X], [vi("y", None)], [init("wb", wb)], save_as_external_data=True,
             all_tensors_to_one_file=True, location="weights.bin", size_threshold=0,
             convert_attribute=True)
    # independently: the file really keeps both tensors outside the protobuf
    raw = onnx.load(str(p), load_external_data=False)
    assert raw.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert raw.graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    assert (d / "weights.bin").stat().st_size >= (wa.size + wb.size) * 4

    m = read_model(p)
    np.testing.assert_array_equal(by_name(m)["A"].weight, wa)
    np.testing.assert_array_equal(by_name(m)["B"].weight, wb)
    assert depths(m) == {"A": (1, 0, 0.0), "B": (2, 1, 1.0)}

    (d / "weights.bin").unlink()
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert str(p) in str(e.value) and "weights.bin" in str(e.value)
