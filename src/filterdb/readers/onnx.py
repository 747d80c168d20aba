"""ONNX reader: every 2-D convolution of a ``.onnx`` file, subgraphs included.

Weights are folded from constants: initializers, ``Constant`` nodes and chains of
``Identity`` / ``Cast`` / ``DequantizeLinear`` / ``Reshape`` / ``Transpose`` over them.
``Conv`` (and com.microsoft ``FusedConv``), ``ConvInteger`` and ``QLinearConv`` become
:class:`ConvLayer`; transposed, 1-D and 3-D convolutions and runtime weights are
:class:`Skipped` with the reason. Nodes of ops ONNX does not define (custom domains, or a
TensorFlow op name left in the default domain, as converters such as tf2onnx leave
unconverted ops) are listed in one warning; conv-like ones are also :class:`Skipped`.

Depth (docs/method.md, section 2) is the longest path from the real graph inputs
(graph inputs that are not initializers). A node that holds subgraphs (``If`` / ``Loop`` /
``Scan``) depends on its explicit inputs *and* on the outer-scope values its subgraphs
read. Inside a subgraph, every value coming from outside (the subgraph's formal inputs and
the non-constant outer-scope values) is taken to sit at the depth of the parent's inputs,
``depth(parent) - 1``; a subgraph node's depth is that plus its longest path inside the
subgraph. Parallel branches of an ``If`` thus get the same depths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

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

CONV_OPS = {"Conv", "FusedConv"}  # weight is input 1, float
TRANSPOSED_OPS = {"ConvTranspose", "QLinearConvTranspose"}
RANK_REASON = {3: "1-D convolution, not a 2-D filter", 5: "3-D convolution, not a 2-D filter"}


class _NotConstant(Exception):
    """A weight that cannot be folded to an array; the message says why."""


# --------------------------------------------------------------------------- math


def dequantize(w, scale, zero_point=None, axis: int = 1, block_size: int = 0) -> np.ndarray:
    """``(w - zero_point) * scale`` in float32, per tensor, per ``axis`` or per block.

    ``scale`` / ``zero_point`` are scalars (or size 1) for per-tensor quantization, 1-D of
    length ``w.shape[axis]`` for per-axis, or ``w``'s shape with ``axis`` divided by
    ``block_size`` for blocked quantization (ONNX DequantizeLinear semantics).
    """
    w = np.asarray(w)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros((), np.float32) if zero_point is None else np.asarray(zero_point)
    zp = zp.astype(np.float32)

    def spread(p):
        if p.size == 1:
            return p.reshape(())
        ax = axis % w.ndim
        if block_size:
            return np.repeat(p, block_size, axis=ax)[
                tuple(slice(0, n) if i == ax else slice(None) for i, n in enumerate(w.shape))]
        if p.ndim != 1 or p.shape[0] != w.shape[ax]:
            raise _NotConstant(f"quantization parameter of shape {p.shape} does not fit a "
                               f"weight of shape {w.shape} on axis {axis}")
        shape = [1] * w.ndim
        shape[ax] = -1
        return p.reshape(shape)

    return ((w.astype(np.float32) - spread(zp)) * spread(scale)).astype(np.float32)


def channel_scale(scale, c_out: int) -> np.ndarray | None:
    """A scale applied to a conv output ``(N, C, ...)`` as one factor per output channel
    ``(c_out,)``, or None when its shape does not broadcast that way."""
    s = np.asarray(scale, dtype=np.float32)
    if s.size == 1:
        return np.full(c_out, s.reshape(()), np.float32)
    dims = [d for d in s.shape]
    # right-aligned broadcast against (N, C, H, W): the channel axis is the 3rd from the end
    others = [d for i, d in enumerate(dims) if i != s.ndim - 3]
    if s.ndim >= 3 and dims[-3] == c_out and all(d == 1 for d in others):
        return s.reshape(c_out)
    return None


def sparse_to_dense(values: np.ndarray, indices: np.ndarray, dims) -> np.ndarray:
    """A SparseTensorProto as a dense array (indices flat ``[NNZ]`` or ``[NNZ, rank]``)."""
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim == 2:
        idx = np.ravel_multi_index(tuple(idx.T), tuple(dims))
    dense[idx.reshape(-1)] = values.reshape(-1)
    return dense.reshape(dims)


# ---------------------------------------------------------------------- graph walk


@dataclass(eq=False)
class _Scope:
    """One graph (main or subgraph) and the scope that encloses it."""

    graph: object
    parent: _Scope | None = None
    inits: dict = field(default_factory=dict)
    producers: dict = field(default_factory=dict)
    inputs: set = field(default_factory=set)
    consumers: dict = field(default_factory=dict)

    def __post_init__(self):
        self.inits = {t.name: t for t in self.graph.initializer}
        for t in getattr(self.graph, "sparse_initializer", ()):
            self.inits[t.values.name] = t
        self.inputs = {i.name for i in self.graph.input} - set(self.inits)
        for node in self.graph.node:
            for o in node.output:
                if o:
                    self.producers[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)

    def find(self, name):
        """``(kind, obj, scope)``: kind "init", "node", "input" or None (undefined)."""
        s = self
        while s is not None:
            if name in s.producers:
                return "node", s.producers[name], s
            if name in s.inits:
                return "init", s.inits[name], s
            if name in s.inputs:
                return "input", None, s
            s = s.parent
        return None, None, None


def _subgraphs(node):
    from onnx import AttributeProto  # lazy: start-up time (onnx loads only for ONNX models)

    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.g
        elif a.type == AttributeProto.GRAPHS:
            yield from a.graphs


def _attr(node, name, default=None):
    from onnx import helper  # lazy: start-up time (onnx loads only for ONNX models)

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _tensor_array(t) -> np.ndarray:
    from onnx import (  # lazy: start-up time (onnx loads only for ONNX models)
        SparseTensorProto,
        numpy_helper,
    )

    if isinstance(t, SparseTensorProto):
        return sparse_to_dense(numpy_helper.to_array(t.values), numpy_helper.to_array(t.indices),
                               list(t.dims))
    return numpy_helper.to_array(t)


def _constant_value(node) -> np.ndarray:
    for a in node.attribute:
        if a.name in ("value", "sparse_value"):
            return _tensor_array(a.t if a.name == "value" else a.sparse_tensor)
        if a.name in ("value_float", "value_floats"):
            return np.asarray(a.f if a.name == "value_float" else list(a.floats), np.float32)
        if a.name in ("value_int", "value_ints"):
            return np.asarray(a.i if a.name == "value_int" else list(a.ints), np.int64)
    raise _NotConstant(f"Constant node {node.name or node.output[0]!r} holds no numeric value")


class _Folder:
    """Folds tensor names to constant arrays, memoised per scope."""

    def __init__(self):
        self.memo: dict = {}

    def value(self, name: str, scope: _Scope) -> np.ndarray:
        if not name:
            raise _NotConstant("missing input")
        kind, obj, owner = scope.find(name)
        key = (id(owner), name)
        if key in self.memo:
            return self.memo[key]
        if kind == "init":
            v = _tensor_array(obj)
        elif kind == "node":
            v = self._fold(obj, owner)
        elif kind == "input":
            raise _NotConstant("computed at run time from the graph inputs")
        else:
            raise _NotConstant(f"tensor {name!r} is not defined in the graph")
        self.memo[key] = v
        return v

    def optional(self, node, i: int, scope):
        return self.value(node.input[i], scope) if len(node.input) > i and node.input[i] else None

    def _fold(self, node, scope) -> np.ndarray:
        from onnx import helper  # lazy: start-up time (onnx loads only for ONNX models)

        op = node.op_type
        if op == "Constant":
            return _constant_value(node)
        if op == "Identity":
            return self.value(node.input[0], scope)
        if op == "Cast":
            to = helper.tensor_dtype_to_np_dtype(_attr(node, "to"))
            return self.value(node.input[0], scope).astype(to)
        if op == "DequantizeLinear":
            return dequantize(self.value(node.input[0], scope), self.value(node.input[1], scope),
                              self.optional(node, 2, scope), axis=_attr(node, "axis", 1),
                              block_size=_attr(node, "block_size", 0))
        if op == "Transpose":
            return np.transpose(self.value(node.input[0], scope), _attr(node, "perm"))
        if op == "Reshape":
            x = self.value(node.input[0], scope)
            shape = [x.shape[i] if s == 0 else int(s)
                     for i, s in enumerate(self.value(node.input[1], scope))]
            return x.reshape(shape)
        raise _NotConstant(f"computed by a {op} node the reader does not fold")


def _outer_refs(graph, cache: dict) -> set:
    """Names a (sub)graph reads from enclosing scopes, its nested subgraphs included."""
    key = id(graph)
    if key not in cache:
        defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        used = set()
        for node in graph.node:
            defined.update(node.output)
            used.update(i for i in node.input if i)
            for g in _subgraphs(node):
                used |= _outer_refs(g, cache)
        cache[key] = used - defined
    return cache[key]


def _graph_depths(graph, scope: _Scope, outer_real: set, cache: dict) -> list:
    """Local longest-path depth of each node: ``scope.inputs`` and ``outer_real`` count 0."""
    node_inputs = [list(n.input) + sorted(set().union(*(_outer_refs(g, cache)
                                                        for g in _subgraphs(n))))
                   for n in graph.node]
    node_outputs = [list(n.output) for n in graph.node]
    try:
        return longest_path_depths(node_inputs, node_outputs, scope.inputs | outer_real)
    except ValueError as e:
        raise _NotConstant(str(e)) from None


# ------------------------------------------------------------------------ weights


def _conv_integer_scale(node, scope, folder, c_out) -> np.ndarray | None:
    """The per-output-channel scale a ConvInteger's output is multiplied by, if constant:
    ``ConvInteger -> [Cast] -> Mul(., s)`` with ``s`` constant, or ``s = Mul(runtime, c)``
    with ``c`` constant (dynamic quantization: ``c`` is the weight scale)."""
    out = node.output[0]
    for _ in range(3):  # follow a Cast or two
        nxt = scope.consumers.get(out, [])
        if len(nxt) == 1 and nxt[0].op_type == "Cast":
            out = nxt[0].output[0]
        else:
            break
    for mul in scope.consumers.get(out, []):
        if mul.op_type != "Mul":
            continue
        other = mul.input[1] if mul.input[0] == out else mul.input[0]
        try:
            s = folder.value(other, scope)
        except _NotConstant:
            kind, prod, owner = scope.find(other)
            if kind != "node" or prod.op_type != "Mul":
                continue
            s = None
            for i in prod.input:
                try:
                    s = folder.value(i, owner)
                    break
                except _NotConstant:
                    pass
            if s is None:
                continue
        cs = channel_scale(s, c_out)
        if cs is not None:
            return cs
    return None


def _weight(node, scope, folder, warnings) -> np.ndarray:
    """The float weight of a conv node (raises _NotConstant when it cannot be folded)."""
    op = node.op_type
    if op in CONV_OPS:
        return folder.value(node.input[1], scope)
    if op == "QLinearConv":
        w = folder.value(node.input[3], scope)
        return dequantize(w, folder.value(node.input[4], scope), folder.optional(node, 5, scope),
                          axis=0)
    if op == "ConvInteger":
        w = folder.value(node.input[1], scope)
        w = dequantize(w, np.float32(1), folder.optional(node, 3, scope), axis=0)
        if w.ndim != 4:
            return w
        s = _conv_integer_scale(node, scope, folder, w.shape[0])
        if s is None:
            warnings.append(f"ConvInteger {node.name or node.input[1]!r}: no constant output scale "
                            "found; weights are (w - zero_point), scale unknown")
            return w
        return w * s.reshape(-1, 1, 1, 1)
    raise _NotConstant(f"unsupported op {op}")


# ---------------------------------------------------------------------------- read


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def external_location_problem(base_dir: str, loc: str) -> str | None:
    """Why an external-data ``location`` may not be read (None when it may): it must be a
    relative path of the model's directory without ``..``, and resolve (symbolic links
    followed) to a file inside that directory."""
    if not loc:
        return "no location"
    if "\x00" in loc:
        return "a NUL byte in the location"
    parts = loc.replace("\\", "/").split("/")
    if os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a path with '..'"
    root = os.path.realpath(base_dir)
    target = os.path.realpath(os.path.join(base_dir, loc))
    if os.path.commonpath([root, target]) != root or target == root:
        return "it resolves (through a symbolic link) outside the model's directory"
    return None


def _load(path: str):
    import onnx  # lazy: start-up time (onnx loads only for ONNX models)
    from google.protobuf.message import (
        DecodeError,  # lazy: start-up time (onnx loads only for ONNX models)
    )
    from onnx import (
        external_data_helper as edh,  # lazy: start-up time (onnx loads only for ONNX models)
    )

    with open(path, "rb") as f:
        data = f.read()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ReadError(path, f"corrupt ONNX file: {_first_line(e)}") from None
    del data
    g = model.graph if model.HasField("graph") else None
    if g is None or not (len(g.node) or len(g.input)):
        raise ReadError(path, "not an ONNX model (no graph with nodes or inputs)")
    base_dir = os.path.dirname(os.path.abspath(path))
    for t in edh._get_all_tensors(model):
        if not edh.uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        why = external_location_problem(base_dir, loc)
        if why:
            raise ReadError(path, f"refusing external data {loc!r} of tensor {t.name!r}: {why}; "
                                  "filterdb reads nothing outside the model's directory")
        if not os.path.isfile(os.path.join(base_dir, loc)):
            raise ReadError(path, f"external data file {loc!r} of tensor {t.name!r} not found "
                                  f"in {base_dir}")
        try:
            edh.load_external_data_for_tensor(t, base_dir)
        except Exception as e:  # bad offsets, paths outside base_dir, ...
            raise ReadError(path, f"cannot load external data {loc!r} of tensor {t.name!r}: "
                                  f"{_first_line(e)}") from None
    return model


def _inline_functions(model, warnings: list[str]):
    """The model with its local functions (e.g. ``export_modules_as_functions``) inlined by
    onnx's inliner, so the convs inside them are read like any other."""
    from onnx import inliner  # lazy: start-up time (onnx loads only for ONNX models)

    try:
        return inliner.inline_local_functions(model)
    except Exception as e:  # e.g. a model over protobuf's 2 GB limit
        warnings.append(f"model-local functions could not be inlined ({_first_line(e)}); "
                        "convolutions inside them are not read")
        return model


def _weight_input(node) -> str:
    i = 3 if node.op_type == "QLinearConv" else 1
    return node.input[i] if len(node.input) > i else ""


def _layer_name(node, index: int, used: dict) -> str:
    """The node name, else its weight tensor name, else ``{op}_{index}``; made unique."""
    name = node.name or _weight_input(node) or f"{node.op_type}_{index}"
    n = used.get(name, 0)
    used[name] = n + 1
    return name if n == 0 else f"{name}#{n + 1}"


# operator-set domains whose ops onnx.defs knows; ONNX Runtime's contrib domains are known too
# (their ops are not in onnx.defs)
ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.training"}
RUNTIME_DOMAINS = {"com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
                   "com.microsoft.mlfeaturizers", "org.pytorch.aten"}


def is_known_op(op_type: str, domain: str, functions: set = frozenset()) -> bool:
    """Whether an op is standard ONNX (by onnx.defs), an ONNX Runtime contrib op, or a
    function of the model. Anything else was left unconverted by an exporter (tf2onnx leaves
    TensorFlow ops, e.g. ``Conv2D``, in the default or a custom domain)."""
    from onnx import defs  # lazy: start-up time (onnx loads only for ONNX models)

    if (domain, op_type) in functions:
        return True
    if domain in RUNTIME_DOMAINS:
        return True
    if domain in ONNX_DOMAINS:
        return defs.has(op_type, "" if domain == "ai.onnx" else domain)
    return False


def _foreign_warning(foreign: list[tuple[str, str]]) -> str:
    from collections import Counter

    c = Counter(f"{d}::{o}" if d else o for d, o in foreign)
    shown = ", ".join(f"{k} x{v}" for k, v in c.most_common(8)) + (" ..." if len(c) > 8 else "")
    domains = sorted({d or "(default)" for d, _ in foreign})
    return (f"{len(foreign)} node(s) of {len(c)} op type(s) unknown to ONNX, in domain(s) "
            f"{', '.join(domains)}: {shown}; a converter left them unconverted, and their "
            "weights (convolutions among them) are not read")


def read(path, fmt: str = "onnx") -> Model:
    """Read an ONNX model file (external data from the file's directory) into a Model."""
    p = check_file(path)
    return read_proto(_load(p), p, file_sha256(p), fmt)


def read_proto(model, p: str, sha256: str, fmt: str = "onnx") -> Model:
    """A loaded ``onnx.ModelProto`` (external data already in place) into a Model named ``p``
    (:mod:`filterdb.readers.live` passes in-memory protos here)."""
    warnings: list[str] = []
    if len(model.functions):
        model = _inline_functions(model, warnings)
    folder = _Folder()
    refs_cache: dict = {}
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    ops: list[str] = []
    used_names: dict = {}
    unplaced: list[str] = []
    foreign: list[tuple[str, str]] = []  # (domain, op type) of nodes ONNX does not define
    functions = {(f.domain, f.name) for f in model.functions}
    counter = [0]

    def walk(graph, parent_scope, offset, outer_real):
        """offset: absolute depth of local depth 0 (None: the graph runs on constants only)."""
        scope = _Scope(graph, parent_scope)
        try:
            local = _graph_depths(graph, scope, outer_real, refs_cache)
        except _NotConstant as e:
            raise ReadError(p, f"invalid ONNX graph: {e}") from None
        real_here = set(outer_real) | scope.inputs
        real_here |= {o for n, d in zip(graph.node, local) if d is not None for o in n.output if o}
        for node, d in zip(graph.node, local):
            index = counter[0]
            counter[0] += 1
            ops.append(node.op_type)
            depth = None if (d is None or offset is None) else offset + d
            op = node.op_type
            if not is_known_op(op, node.domain, functions):
                foreign.append((node.domain, op))
                if "conv" in op.lower():
                    skipped.append(Skipped(_layer_name(node, index, used_names),
                                           f"{node.domain}::{op}" if node.domain else op,
                                           "an op unknown to ONNX (left unconverted), "
                                           "its weights are not read"))
            elif op in TRANSPOSED_OPS:
                skipped.append(Skipped(_layer_name(node, index, used_names), op,
                                       "transposed convolution, not a 2-D conv filter"))
            elif op in CONV_OPS or op in ("ConvInteger", "QLinearConv"):
                name = _layer_name(node, index, used_names)
                try:
                    w = _weight(node, scope, folder, warnings)
                except _NotConstant as e:
                    skipped.append(Skipped(name, op, f"weight is not a constant: {e}"))
                else:
                    if w.ndim != 4:
                        why = RANK_REASON.get(w.ndim, f"weight of rank {w.ndim}, not a 2-D conv")
                        skipped.append(Skipped(name, op, why))
                    else:
                        layer = ConvLayer(name, op, w, groups=int(_attr(node, "group", 1)))
                        if depth is None:
                            unplaced.append(name)
                            depth = 0
                        layer.graph_depth = depth
                        layers.append(layer)
            for g in _subgraphs(node):
                sub_offset = offset + d - 1 if (offset is not None and d is not None) else None
                walk(g, scope, sub_offset, real_here)

    walk(model.graph, None, 0, set())
    if unplaced:
        warnings.append(f"{len(unplaced)} conv layer(s) not reachable from a graph input "
                        f"(depth set to 0): {', '.join(unplaced[:5])}")
    if foreign:
        warnings.append(_foreign_warning(foreign))
    assign_conv_depths(layers)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return Model(
        path=p,
        format=fmt or "onnx",
        sha256=sha256,
        layers=layers,
        skipped=skipped,
        depth_source=DEPTH_GRAPH,
        producer=model.producer_name or None,
        producer_version=model.producer_version or None,
        opset=int(opset) if opset is not None else None,
        op_counts=count_ops(ops),
        warnings=warnings,
    )
