"""Core ML models: ``.mlmodel`` (NeuralNetwork) and ``.mlpackage`` (ML Program), without
coremltools.

Decoded with :mod:`.protowire` from Core ML's ``Model.proto``, ``NeuralNetwork.proto`` and
``MIL.proto`` (field numbers of the public specification, coremltools/mlmodel/format).

- NeuralNetwork (``Model.neuralNetwork`` 500, ``neuralNetworkClassifier`` 403,
  ``neuralNetworkRegressor`` 303; pipelines 200-202 walked): ``convolution`` layers (100)
  with ``isDeconvolution`` false; weights ``(outputChannels, kernelChannels, kh, kw)`` =
  PyTorch order, ``nGroups``; stored as ``floatValue``, ``float16Value``, or ``rawValue`` /
  ``int8RawValue`` with 8-bit linear (``scale * q + bias`` per output channel) or
  look-up-table quantisation. Depth over the layers' input / output blob names from the
  model description's inputs. Convs inside ``loop`` / ``branch`` layers are skipped.
- ML Program (``Model.mlProgram`` 502, in ``<x>.mlpackage/Data/com.apple.CoreML/
  model.mlmodel``): ``conv`` ops; ``weight`` is a ``const`` (inline value, or a blob in
  ``weights/weight.bin``: storage format v2, a 64-byte metadata record at the value's
  offset: sentinel ``0xDEADBEEF``, data type, size, data offset) or a
  ``constexpr_affine_dequantize`` (``(q - zero_point) * scale``); layout
  ``[c_out, c_in / groups, kh, kw]``, ``groups`` from its const input. Depth over the ops
  from the function's inputs. Blob paths must stay inside the package.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ReadError
from . import protowire as pw
from .base import (
    DEPTH_GRAPH,
    ConvLayer,
    Model,
    Skipped,
    assign_conv_depths,
    check_file,
    count_ops,
    files_sha256,
    read_or_corrupt,
)
from .graph import longest_path_depths

MAX_FILE = 2 << 30
BLOB_SENTINEL = 0xDEADBEEF
BLOB_DTYPES = {1: "<f2", 2: "<f4", 3: "u1", 4: "i1", 6: "<i2", 7: "<u2", 14: "<i4", 15: "<u4"}
BLOB_BF16 = 5
MIL_DTYPES = {10: "<f2", 11: "<f4", 12: "<f8", 21: "i1", 22: "<i2", 23: "<i4", 24: "<i8",
              31: "u1", 32: "<u2", 33: "<u4", 34: "<u8"}
NN_TYPES = {500: "neuralNetwork", 403: "neuralNetworkClassifier", 303: "neuralNetworkRegressor"}
PIPELINES = (200, 201, 202)
# NeuralNetworkLayer fields holding other networks
NESTED = {605: "branch", 615: "loop"}
NN_LAYER_NAMES = {100: "convolution", 120: "pooling", 130: "activation", 140: "innerProduct",
                  150: "embedding", 160: "batchnorm", 165: "mvn", 170: "l2normalize",
                  175: "softmax", 180: "lrn", 190: "crop", 200: "padding", 210: "upsample",
                  211: "resizeBilinear", 212: "cropResize", 220: "unary", 230: "add",
                  231: "multiply", 240: "average", 245: "scale", 250: "bias", 260: "max",
                  261: "min", 270: "dot", 280: "reduce", 290: "loadConstant", 300: "reshape",
                  301: "flatten", 310: "permute", 320: "concat", 330: "split",
                  1471: "convolution3d"}


class _Corrupt(Exception):
    """Internal: the model contradicts itself."""


# ---------------------------------------------------------------------------- NeuralNetwork


def weight_values(wp: dict, n: int, c_out: int) -> tuple[np.ndarray, str]:
    """The ``n`` float values of a ``WeightParams`` and how they were stored."""
    if wp.get(1):
        a = pw.packed_floats(wp[1])
        kind = "float32"
    elif pw.one(wp, 2) is not None:
        a = np.frombuffer(pw.one(wp, 2), "<f2").astype(np.float32)
        kind = "float16"
    else:
        raw = pw.one(wp, 30)
        signed = raw is None
        raw = pw.one(wp, 31) if raw is None else raw
        if raw is None:
            raise _Corrupt("weights with no values")
        q = pw.sub(wp, 40)
        bits = pw.one(q, 1, 8)
        if bits != 8:
            raise LookupError(f"{bits}-bit quantised weights are not supported")
        v = np.frombuffer(raw, "i1" if signed else "u1").astype(np.float64)
        if len(v) != n:
            raise _Corrupt(f"{len(v)} quantised values for {n} weights")
        if 101 in q:
            lin = pw.sub(q, 101)
            scale, bias = pw.packed_floats(lin.get(1, [])), pw.packed_floats(lin.get(2, []))
            per = n // c_out if c_out else n
            scale = np.repeat(scale, per) if scale.size == c_out and c_out > 1 else scale
            bias = np.repeat(bias, per) if bias.size == c_out and c_out > 1 else bias
            if bias.size == 0:
                bias = np.zeros(1)
            a = (v * scale + bias).astype(np.float32)
            kind = "int8 linear"
        elif 102 in q:
            table = pw.packed_floats(pw.sub(q, 102).get(1, []))
            if v.size and v.max() >= table.size:
                raise _Corrupt("look-up index past the table")
            a = table[v.astype(np.int64)]
            kind = "look-up table"
        else:
            raise _Corrupt("raw weights without quantisation parameters")
    if a.size != n:
        raise _Corrupt(f"{a.size} weights for {n} values")
    return a, kind


def _nn_layers(net: dict, prefix: str, out_layers, skipped, nodes):
    for lf in pw.subs(net, 1):
        name = prefix + pw.text(pw.one(lf, 1))
        ins = [pw.text(x) for x in lf.get(2, [])]
        outs = [pw.text(x) for x in lf.get(3, [])]
        kind = next((k for k in lf if k >= 100), None)
        nodes.append((name, kind, ins, outs))
        if kind in NESTED:
            sub = pw.fields(pw.one(lf, kind))
            has_conv = []
            for f in (1, 2, 3, 4):
                if f in sub:
                    probe = []
                    _nn_layers(pw.fields(pw.one(sub, f)), name + "/", [], [], probe)
                    has_conv += [p for p in probe if p[1] == 100]
            for p in has_conv:
                skipped.append(Skipped(p[0], "convolution",
                                       f"inside a {NESTED[kind]} layer's network, not read"))
            continue
        if kind == 100:
            out_layers.append((name, pw.fields(pw.one(lf, 100)), len(nodes) - 1))
        elif kind == 1471:
            skipped.append(Skipped(name, "convolution3d", "3-D convolution, not 2-D filters"))


def _conv_weight(name: str, c: dict):
    c_out = pw.one(c, 1, 0)
    k_ch = pw.one(c, 2, 0)
    groups = pw.one(c, 10, 1) or 1
    ks = pw.packed_varints(c.get(20, [])) or [3, 3]
    if pw.one(c, 60, 0):
        return "transposed convolution, not 2-D conv filters"
    kh, kw = (ks + ks)[:2]
    n = c_out * k_ch * kh * kw
    try:
        a, _ = weight_values(pw.sub(c, 90), n, c_out)
    except LookupError as e:
        return str(e)
    return a.reshape(c_out, k_ch, kh, kw), groups


def _read_nn(p: str, model: dict, warnings: list) -> tuple:
    nets = []

    def collect(m: dict, prefix: str):
        for field in NN_TYPES:
            if field in m:
                nets.append((prefix, pw.fields(pw.one(m, field))))
        for field in PIPELINES:
            if field in m:
                pipe = pw.fields(pw.one(m, field))
                if field != 202:
                    pipe = pw.sub(pipe, 1)  # PipelineClassifier / Regressor: pipeline = 1
                for i, sub in enumerate(pipe.get(1, [])):
                    collect(pw.fields(sub), f"{prefix}model{i}/")

    collect(model, "")
    desc = pw.sub(model, 2)
    inputs_ = {pw.text(pw.one(f, 1)) for f in pw.subs(desc, 1)}
    layers, skipped, ops, conv_depth = [], [], [], []
    for prefix, net in nets:
        convs, nodes = [], []
        _nn_layers(net, prefix, convs, skipped, nodes)
        ops += [NN_LAYER_NAMES.get(k, f"layer{k}") for _, k, _, _ in nodes]
        try:
            depths = longest_path_depths([n[2] for n in nodes], [n[3] for n in nodes], inputs_)
        except ValueError as e:
            raise _Corrupt(str(e)) from None
        for name, c, i in convs:
            got = _conv_weight(name, c)
            if isinstance(got, str):
                skipped.append(Skipped(name, "convolution", got))
                continue
            w, groups = got
            layers.append(ConvLayer(name, "convolution", w, groups=groups))
            conv_depth.append(depths[i])
        if len(nets) > 1:
            inputs_ |= {o for n in nodes for o in n[3]}
    return layers, skipped, conv_depth, ops


# ---------------------------------------------------------------------------- ML Program


def _value_type_shape(vt: dict) -> tuple[int | None, list[int]]:
    tt = pw.sub(vt, 1)
    dims = []
    for d in pw.subs(tt, 3):
        if 1 not in d:
            raise _Corrupt("weight of unknown shape")
        dims.append(pw.one(pw.sub(d, 1), 1, 0))
    return pw.one(tt, 1), dims


class _Blobs:
    def __init__(self, base: str, root: str, path: str):
        self.base, self.root, self.path = base, root, path
        self.files: dict[str, bytes] = {}

    def read(self, name: str, offset: int) -> np.ndarray:
        if not name.startswith("@model_path/"):
            raise ReadError(self.path, f"weight blob {name!r} is not inside the package")
        rel = name[len("@model_path/"):]
        parts = rel.replace("\\", "/").split("/")
        if ".." in parts or rel.startswith("/"):
            raise ReadError(self.path, f"weight blob {name!r} leaves the package")
        full = os.path.join(self.base, *parts)
        real, real_root = os.path.realpath(full), os.path.realpath(self.root)
        if os.path.commonpath([real, real_root]) != real_root:
            raise ReadError(self.path, f"weight blob {name!r} is a link leading out of the package")
        if not os.path.isfile(real):
            raise ReadError(self.path, f"weight blob {rel} is missing")
        if real not in self.files:
            with open(real, "rb") as f:
                self.files[real] = f.read()
        buf = self.files[real]
        if offset < 0 or offset + 64 > len(buf):
            raise _Corrupt(f"blob metadata at {offset} outside {rel}")
        sentinel, dt = (int.from_bytes(buf[offset + i:offset + i + 4], "little") for i in (0, 4))
        size = int.from_bytes(buf[offset + 8:offset + 16], "little")
        data = int.from_bytes(buf[offset + 16:offset + 24], "little")
        if sentinel != BLOB_SENTINEL:
            raise _Corrupt(f"no blob at offset {offset} of {rel}")
        if data + size > len(buf):
            raise _Corrupt(f"blob data {data}+{size} outside {rel}")
        if dt == BLOB_BF16:
            raw = np.frombuffer(buf, "<u2", size // 2, data)
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if dt not in BLOB_DTYPES:
            raise LookupError(f"blob data type {dt} (sub-byte or float8) is not supported")
        return np.frombuffer(buf, BLOB_DTYPES[dt], size // np.dtype(BLOB_DTYPES[dt]).itemsize, data)


def _immediate(v: dict, dtype: int | None) -> np.ndarray:
    tv = pw.sub(pw.sub(v, 3), 1)
    if 1 in tv:
        return pw.packed_floats(pw.sub(tv, 1).get(1, []))
    if 2 in tv:
        vals = pw.packed_varints(pw.sub(tv, 2).get(1, []))
        return np.array([x - (1 << 64) if x >= 1 << 63 else x for x in vals], np.int64)
    if 5 in tv:
        vals = pw.packed_varints(pw.sub(tv, 5).get(1, []))
        return np.array([pw.signed64(x) for x in vals], np.int64)
    if 7 in tv and dtype in MIL_DTYPES:
        raw = pw.one(pw.sub(tv, 7), 1, b"")
        return np.frombuffer(raw, MIL_DTYPES[dtype])
    raise LookupError("immediate value of an unsupported kind")


def _read_program(p: str, model: dict, blobs: _Blobs | None, warnings: list) -> tuple:
    prog = pw.sub(model, 502)
    funcs = pw.map_entries(prog.get(2, []))
    if not funcs:
        raise _Corrupt("ML Program without functions")
    fn = pw.fields(funcs.get("main") or next(iter(funcs.values())))
    opset = pw.text(pw.one(fn, 2))
    blocks = pw.map_entries(fn.get(3, []))
    block = pw.fields(blocks.get(opset) or next(iter(blocks.values())))
    inputs_ = {pw.text(pw.one(f, 1)) for f in pw.subs(fn, 1)}
    ops = []
    for of in pw.subs(block, 3):
        args = {}
        for k, v in pw.map_entries(of.get(2, [])).items():
            bindings = pw.subs(pw.fields(v), 1)
            args[k] = [pw.text(pw.one(b, 1)) if 1 in b else pw.fields(pw.one(b, 2))
                       for b in bindings]
        outs = [(pw.text(pw.one(o, 1)), pw.sub(o, 2)) for o in pw.subs(of, 3)]
        attrs = pw.map_entries(of.get(5, []))
        ops.append({"type": pw.text(pw.one(of, 1)), "args": args, "outs": outs,
                    "attrs": attrs, "nested": bool(of.get(4))})
    producer = {o[0]: i for i, op in enumerate(ops) for o in op["outs"]}

    def value(v: dict, what: str) -> np.ndarray:
        """A ``Value``: an immediate tensor or a blob, shaped by its type."""
        dtype, shape = _value_type_shape(pw.sub(v, 2))
        if 5 in v:
            if blobs is None:
                raise LookupError("blob weights outside a .mlpackage")
            bf = pw.sub(v, 5)
            a = blobs.read(pw.text(pw.one(bf, 1)), pw.one(bf, 2, 0))
        else:
            a = _immediate(v, dtype)
        n = int(np.prod(shape)) if shape else 1
        if a.size != n:
            raise _Corrupt(f"{what}: {a.size} values for shape {shape}")
        return a.reshape(shape)

    def const(name_or_value, hops=0) -> np.ndarray:
        if isinstance(name_or_value, dict):  # an inline Value
            return value(name_or_value, "inline value")
        i = producer.get(name_or_value)
        if i is None or hops > 8:
            raise LookupError(f"{name_or_value!r} is not a constant")
        op = ops[i]
        if op["type"] == "const":
            return value(pw.fields(op["attrs"]["val"]), f"const {name_or_value!r}")
        if op["type"] == "constexpr_affine_dequantize":
            get = {k: const(op["args"][k][0] if k in op["args"] else
                            pw.fields(op["attrs"][k]), hops + 1)
                   for k in ("quantized_data", "zero_point", "scale")}
            axis_v = op["args"].get("axis", [None])[0]
            axis = int(const(axis_v if axis_v is not None else pw.fields(op["attrs"]["axis"]),
                             hops + 1).ravel()[0])
            q = get["quantized_data"].astype(np.float64)
            shape = [1] * q.ndim
            shape[axis] = -1
            zp = get["zero_point"].astype(np.float64)
            sc = get["scale"].astype(np.float64)
            zp = zp.reshape(shape) if zp.size > 1 else zp
            sc = sc.reshape(shape) if sc.size > 1 else sc
            return ((q - zp) * sc).astype(np.float32)
        raise LookupError(f"weight computed by a {op['type']} op")

    layers, skipped, depth_idx = [], [], []
    for i, op in enumerate(ops):
        if op["type"] in ("conv_transpose",):
            skipped.append(Skipped(op["outs"][0][0], op["type"], "transposed convolution"))
        if op["nested"] and op["type"] in ("cond", "while_loop"):
            skipped.append(Skipped(op["outs"][0][0] if op["outs"] else op["type"], op["type"],
                                   "nested blocks (control flow) not read"))
        if op["type"] != "conv":
            continue
        name = op["outs"][0][0] if op["outs"] else f"conv{i}"
        try:
            w = np.asarray(const(op["args"]["weight"][0]), np.float32)
            g = op["args"].get("groups")
            groups = int(const(g[0]).ravel()[0]) if g else 1
        except LookupError as e:
            skipped.append(Skipped(name, "conv", str(e)))
            continue
        if w.ndim != 4:
            skipped.append(Skipped(name, "conv", f"{w.ndim - 2}-D convolution, not 2-D filters"))
            continue
        layers.append(ConvLayer(name, "conv", w, groups=groups))
        depth_idx.append(i)
    node_in = [[a for v in op["args"].values() for a in v if isinstance(a, str)] for op in ops]
    try:
        depths = longest_path_depths(node_in, [[o[0] for o in op["outs"]] for op in ops],
                                     inputs_)
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    return layers, skipped, [depths[i] for i in depth_idx], [op["type"] for op in ops]


# ---------------------------------------------------------------------------- entry point


def package_spec(path: str) -> str | None:
    """The ``model.mlmodel`` of an ``.mlpackage`` folder, or None."""
    spec = os.path.join(path, "Data", "com.apple.CoreML", "model.mlmodel")
    return spec if os.path.isdir(path) and os.path.isfile(spec) else None


def _read(p: str) -> Model:
    root = None
    spec = p
    if os.path.isdir(p):
        spec = package_spec(p)
        if spec is None:
            raise ReadError(p, "folder is not an .mlpackage (no Data/com.apple.CoreML/model.mlmodel)")
        root = p
    else:
        up = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(p))))
        if os.path.basename(p) == "model.mlmodel" and package_spec(up):
            root = up
    real_root = os.path.realpath(root) if root else None
    if real_root and os.path.commonpath([os.path.realpath(spec), real_root]) != real_root:
        raise ReadError(p, "model.mlmodel is a link leading out of the package")
    if os.path.getsize(spec) > MAX_FILE:
        raise ReadError(p, "Core ML spec larger than 2 GB")
    with open(spec, "rb") as f:
        model = pw.fields(f.read())
    version = pw.one(model, 1)
    warnings: list[str] = []
    if 502 in model:
        blobs = _Blobs(os.path.dirname(spec), root, p) if root else None
        layers, skipped, depths, ops = _read_program(p, model, blobs, warnings)
        kind = "mlprogram"
    elif any(k in model for k in NN_TYPES) or any(k in model for k in PIPELINES):
        layers, skipped, depths, ops = _read_nn(p, model, warnings)
        kind = "neuralnetwork"
    else:
        raise ReadError(p, "Core ML model that is neither a neural network nor an ML Program")
    unreached = 0
    for l, d in zip(layers, depths):
        l.graph_depth = d
        if d is None:
            unreached += 1
            l.graph_depth = 1
    if unreached:
        warnings.append(f"{unreached} conv(s) not reached from a model input; depth set to 1")
    assign_conv_depths(layers)
    return Model(path=p, format="coreml", sha256=files_sha256(files(p)), layers=layers,
                 skipped=skipped, depth_source=DEPTH_GRAPH, producer=f"coreml {kind}",
                 producer_version=f"specification {version}", op_counts=count_ops(ops),
                 warnings=warnings)


def files(path) -> list[str]:
    """The spec and, in a package, its weight files (what the model's sha256 covers)."""
    p = os.fspath(path)
    root = p if os.path.isdir(p) else None
    if root is None and os.path.basename(p) == "model.mlmodel":
        up = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(p))))
        root = up if package_spec(up) else None
    if root is None:
        return [p]
    spec = package_spec(root)
    wdir = os.path.join(os.path.dirname(spec), "weights")
    real_root = os.path.realpath(root)
    extra = []
    if os.path.isdir(wdir):
        for name in sorted(os.listdir(wdir)):
            f = os.path.join(wdir, name)
            if os.path.isfile(f) and os.path.commonpath([os.path.realpath(f), real_root]) == real_root:
                extra.append(f)
    return [spec] + extra


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, pw.ProtoError, ValueError, TypeError, KeyError, IndexError,
                 OverflowError, RecursionError)


def read(path, fmt: str = "coreml") -> Model:
    """Read a Core ML ``.mlmodel`` file or ``.mlpackage`` folder."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        p = check_file(p)
    return read_or_corrupt(p, _read, "Core ML model", _PARSE_ERRORS)


__all__ = ["package_spec", "read", "weight_values"]
