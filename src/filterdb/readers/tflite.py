"""TFLite flatbuffers (``.tflite``): CONV_2D and DEPTHWISE_CONV_2D weights.

Parsed with the generated flatbuffer accessors of the ``tflite`` package (no TensorFlow).
Weights are followed back through DEQUANTIZE (fp16 or int8 constants) and DENSIFY (sparse
constants) ops; quantized constants are dequantized per tensor or per channel, sparse ones
decoded as DENSIFY does. Depth is the longest path over the main subgraph.

Layer names: the converter names a fused op's output tensor by joining the names of all the
ops it fused (up to ~300 characters); a layer is named by the scope of the segment naming
the conv itself (:func:`short_layer_names`, e.g. ``conv2d_5``) and keeps the output tensor's
name as ``full_name``.
"""
from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Sequence

import numpy as np
import tflite as _tflite

from ..errors import ReadError
from .base import (
    DEPTH_GRAPH,
    ConvLayer,
    Model,
    Skipped,
    assign_conv_depths,
    check_file,
    count_ops,
    file_sha256,
)
from .graph import longest_path_depths

IDENTIFIER = b"TFL3"
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
SKIPPED_OPS = {
    "TRANSPOSE_CONV": "transposed convolution, not a 2-D conv filter",
    "CONV_3D": "3-D convolution, not a 2-D conv filter",
    "CONV_3D_TRANSPOSE": "transposed 3-D convolution, not a 2-D conv filter",
}
PASS_THROUGH = ("DEQUANTIZE", "DENSIFY")  # ops on constant weights that we follow back
MAX_CHAIN = 16  # hops when following a weight back through DEQUANTIZE / DENSIFY
MAX_DENSE_ELEMENTS = 1 << 28  # refuse to densify a tensor larger than this (1 GiB of fp32)

# TensorType name -> numpy dtype (little-endian, as stored)
DTYPES = {
    "FLOAT32": "<f4", "FLOAT16": "<f2", "FLOAT64": "<f8", "INT8": "i1", "UINT8": "u1",
    "INT16": "<i2", "UINT16": "<u2", "INT32": "<i4", "UINT32": "<u4", "INT64": "<i8",
    "UINT64": "<u8", "BOOL": "?",
}
DENSE, SPARSE_CSR = 0, 1  # DimensionType


class _Corrupt(Exception):
    """Internal: the flatbuffer contradicts itself or the file size."""


class _NotConstant(Exception):
    """Internal: a weight is computed at run time, not stored."""


# ---------------------------------------------------------------------------- pure math


def dequantize(q: np.ndarray, scale, zero_point, axis: int = 0) -> np.ndarray:
    """``(q - zero_point) * scale`` per tensor (one scale) or per channel along ``axis``."""
    q = np.asarray(q)
    scale = np.asarray(scale, np.float64).ravel()
    zp = np.asarray(zero_point if zero_point is not None else 0, np.float64).ravel()
    if zp.size == 0:
        zp = np.zeros(1)
    if scale.size > 1 or zp.size > 1:
        n = q.shape[axis] if q.ndim else 1
        if scale.size not in (1, n) or zp.size not in (1, n):
            raise _Corrupt(f"{scale.size} scales for {n} channels on axis {axis}")
        shape = [1] * q.ndim
        shape[axis] = n
        scale = np.broadcast_to(scale, (n,)).reshape(shape)
        zp = np.broadcast_to(zp, (n,)).reshape(shape)
    else:
        scale, zp = scale[0], zp[0]
    return ((q.astype(np.float64) - zp) * scale).astype(np.float32)


def densify(values, shape, traversal_order, block_map, dim_metadata) -> np.ndarray:
    """Decode a TFLite sparse tensor (the DENSIFY op) into its dense array.

    ``values`` are the stored (non-zero) values in traversal order; ``dim_metadata`` holds one
    ``(format, dense_size, segments, indices)`` per traversed dimension (DENSE = 0: the size;
    SPARSE_CSR = 1: CSR segments and indices). Dimensions ``n..n+k-1`` of the traversal
    order are block dimensions; ``block_map[j]`` is the original dimension block ``j`` splits.
    """
    values = np.asarray(values).ravel()
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    order = [int(d) for d in traversal_order] if len(traversal_order) else list(range(n))
    block_map = [int(d) for d in block_map]
    if len(dim_metadata) != len(order) or sorted(order) != list(range(n + len(block_map))):
        raise _Corrupt("sparsity traversal order does not match the tensor rank")
    if any(not 0 <= d < n for d in block_map) or any(s < 0 for s in shape):
        raise _Corrupt("bad sparsity block map")
    n_dense = int(np.prod(shape, dtype=np.float64))
    if n_dense > MAX_DENSE_ELEMENTS or values.size > n_dense:
        raise _Corrupt(f"sparse tensor of shape {shape} with {values.size} values")
    pos = np.zeros(1, np.int64)  # position of each partial path in its level's storage
    coords: list[np.ndarray] = []  # per level: the index of every partial path
    for fmt, size, segments, indices in dim_metadata:
        if fmt == DENSE:
            size = int(size)
            if size < 0 or pos.size * size > n_dense:
                raise _Corrupt("bad dense dimension size in sparsity metadata")
            coords = [np.repeat(c, size) for c in coords] + [np.tile(np.arange(size), pos.size)]
            pos = (pos[:, None] * size + np.arange(size)).ravel()
        elif fmt == SPARSE_CSR:
            seg = np.asarray(segments, np.int64)
            idx = np.asarray(indices, np.int64)
            if pos.size and (pos.max() + 1 >= seg.size):
                raise _Corrupt("CSR segments shorter than the dimension above")
            start, stop = seg[pos], seg[pos + 1]
            counts = stop - start
            if (counts < 0).any() or (pos.size and (start.min() < 0 or stop.max() > idx.size)):
                raise _Corrupt("CSR segments out of range")
            first = np.repeat(start - np.cumsum(counts) + counts, counts)
            child = first + np.arange(int(counts.sum()))
            coords = [np.repeat(c, counts) for c in coords] + [idx[child]]
            pos = child
        else:
            raise _Corrupt(f"unknown sparse dimension format {fmt}")
    if pos.size != values.size:
        raise _Corrupt(f"sparse tensor holds {values.size} values, its metadata {pos.size}")
    level_of = {d: l for l, d in enumerate(order)}
    orig = []
    for d in range(n):
        o = coords[level_of[d]]
        for j, bd in enumerate(block_map):
            if bd == d:
                block_size = int(dim_metadata[level_of[n + j]][1])
                o = o * block_size + coords[level_of[n + j]]
        orig.append(o)
    dense = np.zeros(shape, values.dtype)
    if values.size:
        try:
            flat = np.ravel_multi_index(orig, shape)
        except ValueError:
            raise _Corrupt("sparse index out of the tensor's shape") from None
        dense.reshape(-1)[flat] = values
    return dense


def conv2d_weight(w: np.ndarray) -> np.ndarray:
    """TFLite CONV_2D ``[out, kh, kw, in]`` -> ``(out, in, kh, kw)``."""
    return np.transpose(w, (0, 3, 1, 2))


def depthwise_weight(w: np.ndarray) -> np.ndarray:
    """TFLite DEPTHWISE_CONV_2D ``[1, kh, kw, channels * mult]`` -> ``(channels * mult, 1, kh, kw)``."""
    return np.transpose(w, (3, 0, 1, 2))


# ---------------------------------------------------------------------------- flatbuffer I/O


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _text(b) -> str:
    return b.decode("utf-8", "replace") if b else ""


def _check_len(n: int, elem: int, size: int, what: str) -> int:
    if n < 0 or n * elem > size:
        raise _Corrupt(f"{what} vector of {n} entries does not fit in the file")
    return n


def _np(obj, name: str, size: int):
    """A scalar vector field as numpy (empty when absent); out-of-file vectors raise."""
    if getattr(obj, f"{name}IsNone")():
        return np.zeros(0, np.int64)
    n = getattr(obj, f"{name}Length")()
    _check_len(n, 1, size, name)
    a = getattr(obj, f"{name}AsNumpy")()
    return a if isinstance(a, np.ndarray) else np.zeros(0, np.int64)


class _File:
    """Accessors over one mapped TFLite file, with bounds checks."""

    def __init__(self, buf):
        self.buf = buf
        self.size = len(buf)
        self.model = _tflite.Model.GetRootAs(buf, 0)
        self.op_names = _names(_tflite.BuiltinOperator)
        self.type_names = _names(_tflite.TensorType)
        m = self.model
        self.n_buffers = _check_len(m.BuffersLength(), 4, self.size, "buffers")
        n_codes = _check_len(m.OperatorCodesLength(), 4, self.size, "operator codes")
        self.codes = [self._code_name(m.OperatorCodes(i)) for i in range(n_codes)]
        self.n_subgraphs = _check_len(m.SubgraphsLength(), 4, self.size, "subgraphs")

    def _code_name(self, oc) -> tuple[str, bool]:
        code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
        if code == _tflite.BuiltinOperator.CUSTOM:
            return _text(oc.CustomCode()) or "CUSTOM", True
        return self.op_names.get(code, f"BUILTIN_{code}"), False

    def buffer_bytes(self, index: int):
        if not 0 <= index < self.n_buffers:
            raise _Corrupt(f"buffer index {index} out of range")
        b = self.model.Buffers(index)
        off, size = int(b.Offset()), int(b.Size())
        if off > 1:  # stored after the flatbuffer (models over 2 GB)
            if off + size > self.size:
                raise _Corrupt(f"buffer {index} at offset {off} + {size} lies past the file end")
            return np.frombuffer(self.buf, np.uint8, size, off)
        if b.DataIsNone():
            return np.zeros(0, np.uint8)
        return _np(b, "Data", self.size).view(np.uint8)


class _Graph:
    """One subgraph: tensors, operators, producers."""

    def __init__(self, f: _File, index: int):
        self.f = f
        sg = f.model.Subgraphs(index)
        self.sg = sg
        size = f.size
        self.n_tensors = _check_len(sg.TensorsLength(), 4, size, "tensors")
        n_ops = _check_len(sg.OperatorsLength(), 4, size, "operators")
        self.ops = []  # (name, is_custom, inputs, outputs, Operator)
        for i in range(n_ops):
            op = sg.Operators(i)
            code = int(op.OpcodeIndex())
            if not 0 <= code < len(f.codes):
                raise _Corrupt(f"operator {i} has opcode index {code} of {len(f.codes)}")
            name, custom = f.codes[code]
            ins = [int(t) for t in _np(op, "Inputs", size)]
            outs = [int(t) for t in _np(op, "Outputs", size)]
            for t in ins + outs:
                if t >= self.n_tensors or t < -1:
                    raise _Corrupt(f"operator {i} refers to tensor {t} of {self.n_tensors}")
            self.ops.append((name, custom, ins, outs, op))
        self.inputs = [int(t) for t in _np(sg, "Inputs", size)]
        self.producer = {}
        for i, (_, _, _, outs, _) in enumerate(self.ops):
            for t in outs:
                if t >= 0:
                    self.producer[t] = i
        self._tensors = {}

    def tensor(self, t: int):
        if not 0 <= t < self.n_tensors:
            raise _Corrupt(f"tensor index {t} out of range")
        if t not in self._tensors:
            self._tensors[t] = self.sg.Tensors(t)
        return self._tensors[t]

    def name(self, t: int) -> str:
        return _text(self.tensor(t).Name())

    def shape(self, t: int) -> list[int]:
        return [int(s) for s in _np(self.tensor(t), "Shape", self.f.size)]

    def type_name(self, t: int) -> str:
        return self.f.type_names.get(int(self.tensor(t).Type()), f"TYPE_{self.tensor(t).Type()}")

    def is_constant(self, t: int) -> bool:
        return t not in self.producer and self.f.buffer_bytes(int(self.tensor(t).Buffer())).size > 0

    def value(self, t: int, hops: int = 0) -> np.ndarray:
        """The float32 value of a constant tensor, followed back through DEQUANTIZE / DENSIFY."""
        if hops > MAX_CHAIN:
            raise _Corrupt("weight chain too long (cycle?)")
        if t in self.producer:
            name, _, ins, _, _ = self.ops[self.producer[t]]
            if name not in PASS_THROUGH or not ins or ins[0] < 0:
                raise _NotConstant(f"computed by {name}")
            return self.value(ins[0], hops + 1)
        return self._stored(t)

    def _stored(self, t: int) -> np.ndarray:
        tensor = self.tensor(t)
        tname = self.type_name(t)
        if tname not in DTYPES:
            raise _NotConstant(f"unsupported weight type {tname}")
        dtype = np.dtype(DTYPES[tname])
        raw = self.f.buffer_bytes(int(tensor.Buffer()))
        if raw.size == 0:
            raise _NotConstant("no stored data")
        if raw.size % dtype.itemsize:
            raise _Corrupt(f"tensor {self.name(t)!r}: {raw.size} bytes is no whole number of {tname}")
        data = raw.view(dtype) if raw.ctypes.data % dtype.alignment == 0 else \
            np.frombuffer(raw.tobytes(), dtype)
        shape = self.shape(t)
        sparsity = tensor.Sparsity()
        if sparsity is not None:
            data = densify(data, shape, *self._sparsity(sparsity))
        else:
            if int(np.prod(shape, dtype=np.float64)) != data.size:
                raise _Corrupt(f"tensor {self.name(t)!r} of shape {shape} holds {data.size} values")
            data = data.reshape(shape)
        q = tensor.Quantization()
        if dtype.kind in "iu" and q is not None and not q.ScaleIsNone():
            scale = _np(q, "Scale", self.f.size)
            zp = _np(q, "ZeroPoint", self.f.size)
            axis = int(q.QuantizedDimension())
            if scale.size > 1 and not 0 <= axis < data.ndim:
                raise _Corrupt(f"quantized dimension {axis} of a rank-{data.ndim} tensor")
            return dequantize(data, scale, zp, axis)
        if dtype.kind != "f":
            raise _NotConstant(f"{tname} weight without quantization parameters")
        return data.astype(np.float32)

    def _sparsity(self, sp):
        size = self.f.size
        order = _np(sp, "TraversalOrder", size)
        block_map = _np(sp, "BlockMap", size)
        n_dims = _check_len(sp.DimMetadataLength(), 4, size, "dim metadata")
        dims = []
        for i in range(n_dims):
            dm = sp.DimMetadata(i)
            seg = self._index_vector(dm.ArraySegmentsType(), dm.ArraySegments())
            idx = self._index_vector(dm.ArrayIndicesType(), dm.ArrayIndices())
            dims.append((int(dm.Format()), int(dm.DenseSize()), seg, idx))
        return order, block_map, dims

    def _index_vector(self, kind: int, table) -> np.ndarray:
        if table is None or kind == 0:
            return np.zeros(0, np.int64)
        cls = {1: _tflite.Int32Vector, 2: _tflite.Uint16Vector,
               3: _tflite.Uint8Vector}.get(int(kind))
        if cls is None:
            raise _Corrupt(f"unknown sparse index vector type {kind}")
        v = cls()
        v.Init(table.Bytes, table.Pos)
        return _np(v, "Values", self.f.size).astype(np.int64)

    def depthwise_multiplier(self, op) -> int:
        if op.BuiltinOptionsType() != _tflite.BuiltinOptions.DepthwiseConv2DOptions:
            return 0
        table = op.BuiltinOptions()
        if table is None:
            return 0
        opts = _tflite.DepthwiseConv2DOptions()
        opts.Init(table.Bytes, table.Pos)
        return int(opts.DepthMultiplier())


# ---------------------------------------------------------------------------- reading


def _conv_layer(g: _Graph, i: int, name: str) -> ConvLayer | Skipped:
    op_name, _, ins, outs, op = g.ops[i]
    if len(ins) < 2 or ins[1] < 0:
        return Skipped(name, op_name, "no weight input")
    try:
        w = g.value(ins[1])
    except _NotConstant as e:
        return Skipped(name, op_name, f"weight is not a stored constant ({e})")
    if w.ndim != 4:
        return Skipped(name, op_name, f"weight of rank {w.ndim}, expected 4")
    in_shape = g.shape(ins[0]) if ins[0] >= 0 else []
    in_ch = in_shape[-1] if len(in_shape) == 4 and in_shape[-1] > 0 else 0
    if op_name == "CONV_2D":
        weight = conv2d_weight(w)
        w_in = weight.shape[1]
        groups = in_ch // w_in if in_ch and w_in and in_ch != w_in and in_ch % w_in == 0 else 1
    else:
        if w.shape[0] != 1:
            return Skipped(name, op_name, f"depthwise weight of shape {list(w.shape)}")
        weight = depthwise_weight(w)
        c_out = weight.shape[0]
        if in_ch and c_out % in_ch == 0:
            groups = in_ch
        else:
            mult = g.depthwise_multiplier(op)
            groups = c_out // mult if mult > 0 and c_out % mult == 0 else c_out
    return ConvLayer(name=name, op=op_name, weight=weight, groups=int(groups))


# the op part of a TensorFlow name, per TFLite op (optionally numbered: ``Conv2D1``,
# ``depthwise_1``, ``Conv2D_dequantize``)
_OP_PART = {
    "CONV_2D": re.compile(r"^(Conv2D|convolution|separable_conv2d|BiasAdd)(_?\d+)?"
                          r"(_dequantize)?$", re.I),
    "DEPTHWISE_CONV_2D": re.compile(r"^(depthwise|DepthwiseConv2dNative)(_?\d+)?"
                                    r"(_dequantize)?$", re.I),
}
_ANY_CONV_PART = re.compile(r"^(Conv2D|convolution|separable_conv2d|depthwise|conv2d_transpose|"
                            r"DepthwiseConv2dNative|Conv2DBackpropInput|Conv3D)(_?\d+)?"
                            r"(_dequantize)?$", re.I)


def _conv_segment(names: Sequence[str], op: str) -> list[str] | None:
    """The components of the segment naming the conv itself in fused tensor names
    (``a/b/relu/Relu6;a/b/bn/FusedBatchNormV3;a/b/conv2d/Conv2D``): the last ``;`` segment
    whose op part fits the TFLite op (``Conv2D`` for CONV_2D, ``depthwise`` for
    DEPTHWISE_CONV_2D), searched in the output name first, then the weight's."""
    pat = _OP_PART.get(op, _ANY_CONV_PART)
    for full in names:
        for seg in reversed(full.split(";")):
            parts = seg.split("/")
            if len(parts) > 1 and pat.match(parts[-1]):
                return parts
    return None


def short_layer_names(entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """Readable names of a model's conv ops from ``(TFLite op, output tensor name, weight
    tensor name)``; the converter names a fused op's output by joining every fused op's name
    (up to 300 characters). The name is the scope of the segment naming the conv itself
    (:func:`_conv_segment`) without its op part (``model_1/model/conv2d_5/Conv2D`` ->
    ``conv2d_5``; a Keras separable conv's parts ``sep/depthwise`` and ``sep/pointwise``),
    then the leading scopes all names share (``model_1/model/``) are dropped; duplicates get
    ``#2``, ``#3``. A name with no such segment is kept whole (its last segment if fused)."""
    scopes: list[list[str] | None] = []
    for op, out, weight in entries:
        parts = _conv_segment([n for n in (out, weight) if n], op)
        if parts is None:
            scopes.append(None)
            continue
        last = parts[-1]
        parts = parts[:-1]
        if len(parts) > 1 and re.match(r"^separable_conv2d(_?\d+)?$", parts[-1], re.I):
            parts = parts[:-1] + ["depthwise"]  # sep/separable_conv2d/depthwise
        elif re.match(r"^separable_conv2d(_?\d+)?(_dequantize)?$", last, re.I):
            parts = parts + ["pointwise"]  # sep/separable_conv2d
        scopes.append(parts)
    scoped = [p for p in scopes if p]
    common = 0
    if scoped:
        shortest = min(len(p) for p in scoped)
        while (common < shortest - 1
               and all(p[common] == scoped[0][common] for p in scoped)
               and all(len(p) - common > 1 or p[-1] in ("depthwise", "pointwise") and
                       len(p) - common > 2 for p in scoped)):
            common += 1
    out_names, seen = [], {}
    for (_op, out, weight), parts in zip(entries, scopes):
        if parts:
            name = "/".join(parts[common:])
        else:
            base = out or weight
            name = base.split(";")[-1] if ";" in base else base
        out_names.append(_unique(name, seen) if name else name)
    return out_names


def _unique(name: str, seen: dict) -> str:
    if name not in seen:
        seen[name] = 1
        return name
    seen[name] += 1
    return f"{name}#{seen[name]}"


def _read(path: str, buf) -> Model:
    if len(buf) < 8 or bytes(buf[4:8]) != IDENTIFIER:
        raise ReadError(path, "not a TFLite flatbuffer (no TFL3 identifier)")
    root = struct.unpack_from("<I", buf, 0)[0]
    if not 8 <= root < len(buf):
        raise _Corrupt(f"root table offset {root} outside the file")
    f = _File(buf)
    if f.n_subgraphs == 0:
        raise _Corrupt("no subgraphs")
    ops = []
    graphs = [_Graph(f, s) for s in range(f.n_subgraphs)]
    for g in graphs:
        ops.extend(name for name, *_ in g.ops)
    main = graphs[0]
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    warnings: list[str] = []
    conv_nodes = []
    found = []  # (subgraph, op index, full name, output name, weight name)
    for s, g in enumerate(graphs):
        for i, (op_name, custom, ins, outs, _) in enumerate(g.ops):
            if not (custom or op_name in CONV_OPS or op_name in SKIPPED_OPS):
                continue
            out = g.name(outs[0]) if outs and outs[0] >= 0 else ""
            weight = g.name(ins[1]) if len(ins) > 1 and ins[1] >= 0 else ""
            found.append((s, i, out or weight or f"subgraph{s}/op{i}", out, weight))
    shorts = short_layer_names([(graphs[s].ops[i][0], out, weight)
                                for s, i, _, out, weight in found])
    for (s, i, full, _, _), name in zip(found, shorts):
        g = graphs[s]
        op_name, custom = g.ops[i][0], g.ops[i][1]
        if custom:
            item = Skipped(name, op_name, f"custom op '{op_name}': not a builtin, not read")
        elif op_name in SKIPPED_OPS:
            item = Skipped(name, op_name, SKIPPED_OPS[op_name])
        elif s != 0:
            item = Skipped(name, op_name, f"in subgraph {s} (not the main graph), not read")
        else:
            item = _conv_layer(g, i, name)
        item.full_name = full
        if isinstance(item, ConvLayer):
            layers.append(item)
            conv_nodes.append((item, i))
        else:
            skipped.append(item)
    if any(s.reason.startswith("in subgraph") for s in skipped):
        warnings.append("2-D convs inside control-flow subgraphs were not read")
    # Depth: longest path over the main subgraph from its non-constant inputs.
    real_inputs = {str(t) for t in main.inputs if 0 <= t < main.n_tensors and not main.is_constant(t)}
    try:
        depths = longest_path_depths(
            [[str(t) for t in ins if t >= 0] for _, _, ins, _, _ in main.ops],
            [[str(t) for t in outs if t >= 0] for _, _, _, outs, _ in main.ops],
            real_inputs,
        )
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    unreached = []
    for layer, i in conv_nodes:
        layer.graph_depth = depths[i]
        if layer.graph_depth is None:
            unreached.append(layer.name)
            layer.graph_depth = 1
    if unreached:
        warnings.append(f"{len(unreached)} conv(s) not reached from a graph input; depth set to 1")
    assign_conv_depths(layers)
    m = f.model
    version = int(m.Version())
    desc = _text(m.Description())
    model = Model(
        path=path,
        format="tflite",
        sha256=file_sha256(path),
        layers=layers,
        skipped=skipped,
        depth_source=DEPTH_GRAPH,
        producer="tflite",
        producer_version=f"{version} ({desc})" if desc else str(version),
        opset=None,
        op_counts=count_ops(ops),
    )
    model.warnings.extend(warnings)
    return model


def read(path, fmt: str = "tflite") -> Model:
    """Read the 2-D convolutions of a TFLite model file."""
    p = check_file(path)
    with open(p, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError) as e:
            raise ReadError(p, f"cannot map file ({e})") from None
    try:
        return _read(p, buf)
    except ReadError:
        raise
    except (_Corrupt, struct.error, IndexError, ValueError, TypeError, KeyError,
            OverflowError, UnicodeDecodeError, RecursionError, AttributeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ReadError(p, f"corrupt TFLite file: {msg}") from None
    finally:
        try:
            buf.close()
        except BufferError:  # a numpy view is still alive; the mapping closes with it
            pass


__all__ = ["read", "densify", "dequantize", "conv2d_weight", "depthwise_weight"]
