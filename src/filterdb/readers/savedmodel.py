"""TensorFlow SavedModel folders (``saved_model.pb`` + ``variables/``): 2-D conv kernels
and graph depth, without TensorFlow.

``saved_model.pb`` is a ``SavedModel`` protobuf (tensorflow/core/protobuf/saved_model.proto,
meta_graph.proto, saved_object_graph.proto; framework/graph.proto, function.proto,
node_def.proto, attr_value.proto, tensor.proto), decoded here with a wire-format decoder
(:mod:`.protowire`). The weights live in a *tensor bundle* (tensor_bundle.proto):
``variables/variables.index`` is a LevelDB-format table (uncompressed blocks of prefix-
compressed keys with restart points, an index block and a 48-byte footer ending in the magic
``0xdb4775248b80fb57``) mapping checkpoint keys to ``BundleEntryProto`` (dtype, shape,
shard, offset, size), the data raw little-endian in ``variables.data-SSSSS-of-NNNNN``.

Graph: the first meta graph's ``GraphDef`` with its function library inlined from the
serving signature's call (or every call in the main graph): a call node
(``StatefulPartitionedCall`` / ``PartitionedCall`` with attr ``f``) is replaced by its
function's body, arguments bound to the call's inputs and outputs to the body's ``ret``.
Convs are ``Conv2D``, ``DepthwiseConv2dNative`` (and the fused forms); the kernel is
followed through ``Identity`` / ``ReadVariableOp`` to a variable handle of the main graph
or a ``Const``. A TF2 variable handle is matched to its checkpoint key through the
concrete function's ``bound_inputs`` (node ids of the ``SavedObjectGraph``) and the
checkpoint's own object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``, same node ids); a TF1
variable's key is its name. Depth is the longest path from the signature inputs
(``Placeholder`` nodes). Kernel layouts as in TF.js / Keras (HWIO; depthwise
``[kh, kw, c_in, mult]``). Convs inside ``While`` / ``If`` bodies are reported as skipped.
A ``Conv2D``'s groups are its input's channels over the kernel's ``c_in / groups``
(:func:`graph.input_channels` over the inlined graph; 1 where the channels are not found).

Only files inside the SavedModel folder are read.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import ReadError
from . import protowire as pw
from .base import (
    DEPTH_GRAPH,
    ConvLayer,
    Model,
    Skipped,
    assign_graph_depths,
    check_file,
    count_ops,
    files_sha256,
    read_or_corrupt,
)
from .graph import conv2d_groups, input_channels, longest_path_depths
from .tfjs import depthwise_to_oihw, hwio_to_oihw

CONV_OPS = {"Conv2D", "_FusedConv2D", "FusedConv2D"}
DEPTHWISE_OPS = {"DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
SKIPPED_OPS = {
    "Conv2DBackpropInput": "transposed convolution, not 2-D conv filters",
    "Conv3D": "3-D convolution, not 2-D conv filters",
    "Conv3DBackpropInputV2": "transposed 3-D convolution, not 2-D conv filters",
}
CALL_OPS = {"StatefulPartitionedCall", "PartitionedCall"}
CONTROL_FLOW = {"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase"}
PASS_THROUGH = {"Identity", "ReadVariableOp", "IdentityN", "Snapshot"}
VARIABLE_OPS = {"VarHandleOp", "VariableV2", "Variable"}
MAX_INLINE = 64  # nested call depth
MAX_PB = 2 << 30
TABLE_MAGIC = 0xDB4775248B80FB57
# tensorflow DataType -> numpy (little-endian)
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
          17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
DT_BFLOAT16, DT_STRING = 14, 7


class _Corrupt(Exception):
    """Internal: the SavedModel contradicts itself."""


# ---------------------------------------------------------------------------- tensor bundle


def _block(buf, offset: int, size: int):
    if offset < 0 or size < 0 or offset + size + 5 > len(buf):
        raise _Corrupt(f"table block {offset}+{size} outside the index file")
    if buf[offset + size] != 0:
        raise _Corrupt("compressed table blocks are not supported (Snappy)")
    return memoryview(buf)[offset:offset + size]


def _block_entries(block):
    """(key, value) of a LevelDB block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise _Corrupt("table block shorter than its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise _Corrupt("table block restart array larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = pw.varint(block, pos)
        non_shared, pos = pw.varint(block, pos)
        vlen, pos = pw.varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise _Corrupt("bad table entry")
        key = key[:shared] + bytes(block[pos:pos + non_shared])
        pos += non_shared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_table(buf) -> dict[bytes, memoryview]:
    """All key / value pairs of a LevelDB-format table file (uncompressed)."""
    if len(buf) < 48 or int.from_bytes(buf[-8:], "little") != TABLE_MAGIC:
        raise _Corrupt("variables.index is not a table (no magic in its footer)")
    footer = memoryview(buf)[-48:]
    _, pos = pw.varint(footer, 0)
    _, pos = pw.varint(footer, pos)  # metaindex handle
    ioff, pos = pw.varint(footer, pos)
    isize, pos = pw.varint(footer, pos)
    out = {}
    for _, handle in _block_entries(_block(buf, ioff, isize)):
        off, p = pw.varint(handle, 0)
        size, _ = pw.varint(handle, p)
        for k, v in _block_entries(_block(buf, off, size)):
            out[k] = v
    return out


def _shape(f: dict) -> list[int]:
    if pw.one(f, 3):
        raise _Corrupt("tensor of unknown rank")
    return [pw.signed64(pw.one(d, 1, 0)) for d in pw.subs(f, 2)]


class Bundle:
    """A tensor bundle: ``{checkpoint key: entry}`` and the tensors, read on demand."""

    def __init__(self, folder: str, path: str):
        self.folder = folder
        index = _inside(folder, os.path.join("variables", "variables.index"), path)
        with open(index, "rb") as f:
            self.table = read_table(f.read())
        header = pw.fields(self.table.get(b"", b""))
        self.num_shards = pw.one(header, 1, 1)
        if pw.one(header, 2, 0) != 0:
            raise _Corrupt("big-endian tensor bundles are not supported")
        self.path = path
        self._shards: dict[int, bytes] = {}

    def entry(self, key: str) -> dict | None:
        v = self.table.get(key.encode())
        return pw.fields(v) if v is not None else None

    def _shard(self, i: int):
        if i not in self._shards:
            if not 0 <= i < self.num_shards:
                raise _Corrupt(f"shard {i} of {self.num_shards}")
            name = os.path.join("variables", f"variables.data-{i:05d}-of-{self.num_shards:05d}")
            with open(_inside(self.folder, name, self.path), "rb") as f:
                self._shards[i] = f.read()
        return self._shards[i]

    def raw(self, e: dict):
        data = self._shard(pw.one(e, 3, 0))
        off, size = pw.one(e, 4, 0), pw.one(e, 5, 0)
        if off + size > len(data):
            raise _Corrupt(f"tensor bytes {off}+{size} outside its data shard")
        return memoryview(data)[off:off + size]

    def tensor(self, key: str) -> np.ndarray:
        e = self.entry(key)
        if e is None:
            raise _Corrupt(f"checkpoint key {key!r} not in the bundle")
        if e.get(7):
            raise _Corrupt(f"sliced (partitioned) variable {key!r} is not supported")
        dt = pw.one(e, 1, 0)
        shape = _shape(pw.sub(e, 2))
        n = int(np.prod(shape)) if shape else 1
        raw = self.raw(e)
        if dt == DT_BFLOAT16:
            a = (np.frombuffer(raw, "<u2", n).astype(np.uint32) << 16).view(np.float32)
        elif dt in DTYPES:
            if len(raw) != n * np.dtype(DTYPES[dt]).itemsize:
                raise _Corrupt(f"{key!r}: {len(raw)} bytes for shape {shape}")
            a = np.frombuffer(raw, DTYPES[dt], n)
        else:
            raise _Corrupt(f"{key!r}: dtype {dt} is not a numeric tensor")
        return a.reshape(shape)

    def string_scalar(self, key: str) -> bytes | None:
        e = self.entry(key)
        if e is None or pw.one(e, 1, 0) != DT_STRING:
            return None
        raw = self.raw(e)
        n, pos = pw.varint(raw, 0)
        pos += 4  # checksum of the lengths
        return bytes(raw[pos:pos + n])


def _inside(folder: str, rel: str, path: str) -> str:
    full = os.path.join(folder, rel)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(full)
    if os.path.commonpath([real_folder, real]) != real_folder:
        raise ReadError(path, f"{rel} is a link leading out of the SavedModel folder")
    if not os.path.isfile(real):
        raise ReadError(path, f"{rel} is missing from the SavedModel folder")
    return real


# ---------------------------------------------------------------------------- graph


def _node(f: dict) -> dict:
    attrs = pw.map_entries(f.get(5, []))
    return {"name": pw.text(pw.one(f, 1)), "op": pw.text(pw.one(f, 2)),
            "input": [pw.text(x) for x in f.get(3, [])], "attr": attrs}


def _attr_func(node: dict, key: str = "f") -> str | None:
    v = node["attr"].get(key)
    if v is None:
        return None
    a = pw.fields(v)
    func = pw.one(a, 10)
    return pw.text(pw.one(pw.fields(func), 1)) if func is not None else None


def _tensor_proto(t: dict) -> np.ndarray:
    dt = pw.one(t, 1, 0)
    shape = _shape(pw.sub(t, 2))
    n = int(np.prod(shape)) if shape else 1
    content = pw.one(t, 4)
    if dt not in DTYPES:
        raise _Corrupt(f"Const of dtype {dt}")
    if content is not None:
        a = np.frombuffer(content, DTYPES[dt])
    elif dt == 1:
        a = pw.packed_floats(t.get(5, []))
    elif dt == 19:
        a = np.array(pw.packed_varints(t.get(13, [])), np.uint16).view(np.float16)
    else:
        raise _Corrupt("Const without tensor_content")
    if a.size == 1 and n > 1:
        a = np.full(n, a[0], a.dtype)
    if a.size != n:
        raise _Corrupt(f"Const holds {a.size} values for shape {shape}")
    return a.reshape(shape)


def _ref(inp: str) -> tuple[str, int | str]:
    """``"^x"`` -> control; ``"x"`` / ``"x:1"`` (main graph) / ``"x:out:1"`` (functions)."""
    parts = inp.split(":")
    if len(parts) == 1:
        return parts[0], 0
    if len(parts) == 2:
        return parts[0], int(parts[1]) if parts[1].isdigit() else parts[1]
    return parts[0], int(parts[2]) if parts[2].isdigit() else 0


class _Flat:
    """The main graph with calls inlined: nodes ``{name: node}``, resolvable references."""

    def __init__(self, functions: dict[str, dict]):
        self.functions = functions
        self.nodes: dict[str, dict] = {}
        self.alias: dict[tuple[str, int], str] = {}  # (call node, output k) -> producer
        self.arg: dict[str, str] = {}  # inlined arg name -> outer producer
        self.skipped_control = 0

    def resolve(self, name: str, k=0, hops: int = 0) -> str:
        while hops < 10000:
            hops += 1
            if name in self.arg:
                name = self.arg[name]
                continue
            if (name, k) in self.alias:
                name = self.alias[(name, k)]
                k = 0
                continue
            return name
        raise _Corrupt("reference cycle while inlining")

    def add(self, nodes: list[dict], prefix: str, args: dict[str, str], depth: int = 0):
        if depth > MAX_INLINE:
            raise _Corrupt(f"functions call each other more than {MAX_INLINE} deep")
        local = {n["name"] for n in nodes}

        def name_of(inp: str) -> str | None:
            if inp.startswith("^"):
                return None
            base, k = _ref(inp)
            if base in args and base not in local:
                return args[base]
            if base in local:
                return prefix + base + ("" if k in (0, "output") else f"\0{k}")
            return prefix + base

        for n in nodes:
            full = prefix + n["name"]
            ins = [x for x in (name_of(i) for i in n["input"]) if x is not None]
            fname = _attr_func(n) if n["op"] in CALL_OPS else None
            if fname in self.functions:
                fn = self.functions[fname]
                inner_args = {}
                for a, x in zip(fn["args"], ins):
                    inner_args[a] = x
                self.add(fn["nodes"], full + "/", inner_args, depth + 1)
                for k, out in enumerate(fn["outputs"]):
                    src = fn["ret"].get(out)
                    if src is None:
                        continue
                    base, kk = _ref(src)
                    target = (full + "/" + base
                              + ("" if kk in (0, "output") else f"\0{kk}"))
                    self.alias[(full, k)] = target
                    if k == 0:
                        self.arg[full] = target
                    self.arg[f"{full}\0{k}"] = target
                continue
            self.nodes[full] = {"name": full, "op": n["op"], "input": ins, "attr": n["attr"],
                                "short": n["name"], "func": fname}


def _function(f: dict) -> tuple[str, dict]:
    sig = pw.sub(f, 1)
    name = pw.text(pw.one(sig, 1))
    args = [pw.text(pw.one(a, 1)) for a in pw.subs(sig, 2)]
    outputs = [pw.text(pw.one(a, 1)) for a in pw.subs(sig, 3)]
    ret = {}
    for v in f.get(4, []):
        e = pw.fields(v)
        ret[pw.text(pw.one(e, 1))] = pw.text(pw.one(e, 2))
    return name, {"args": args, "outputs": outputs, "ret": ret,
                  "nodes": [_node(pw.fields(x)) for x in f.get(3, [])]}


# ---------------------------------------------------------------------------- reading


def _checkpoint_keys(bundle: Bundle) -> dict[int, str]:
    """Object graph node id -> checkpoint key of its VARIABLE_VALUE attribute."""
    raw = bundle.string_scalar("_CHECKPOINTABLE_OBJECT_GRAPH")
    if raw is None:
        return {}
    out = {}
    for i, node in enumerate(pw.subs(pw.fields(raw), 1)):
        for a in pw.subs(node, 2):
            if pw.text(pw.one(a, 1)) == "VARIABLE_VALUE":
                out[i] = pw.text(pw.one(a, 3))
    return out


def folder_of(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _read(p: str) -> Model:
    folder = folder_of(p)
    pb = _inside(folder, "saved_model.pb", p)
    if os.path.getsize(pb) > MAX_PB:
        raise ReadError(p, "saved_model.pb larger than 2 GB")
    with open(pb, "rb") as f:
        sm = pw.fields(f.read())
    metas = sm.get(2, [])
    if not metas:
        raise ReadError(p, "SavedModel without a meta graph")
    meta = pw.fields(metas[0])
    graph = pw.sub(meta, 2)
    info = pw.sub(meta, 1)
    tf_version = pw.text(pw.one(info, 5)) or None
    functions = dict(_function(pw.fields(x)) for x in pw.sub(graph, 2).get(1, []))
    main = [_node(pw.fields(x)) for x in graph.get(1, [])]
    main_by = {n["name"]: n for n in main}
    # the serving signature's outputs name the main-graph call(s) to inline
    sigs = pw.map_entries(meta.get(5, []))
    sig = sigs.get("serving_default") or (next(iter(sigs.values())) if sigs else None)
    keep = None
    if sig is not None:
        s = pw.fields(sig)
        outs = [pw.text(pw.one(pw.fields(v), 1)) for v in pw.map_entries(s.get(2, [])).values()]
        ins = [pw.text(pw.one(pw.fields(v), 1)) for v in pw.map_entries(s.get(1, [])).values()]
        keep = {_ref(x)[0] for x in outs}
        graph_inputs = {_ref(x)[0] for x in ins}
    else:
        graph_inputs = {n["name"] for n in main if n["op"] == "Placeholder"}
    # main graph: drop the saver's calls; keep the signature's calls (or all calls)
    chosen = [n for n in main if not (n["op"] in CALL_OPS and keep and n["name"] not in keep)
              and "saver_filename" not in n["input"]]
    flat = _Flat(functions)
    flat.add(chosen, "", {})
    # TF2: a main-graph variable handle -> object node id (bound inputs of the calls)
    og = pw.sub(meta, 7)
    bound = {}
    for k, v in pw.map_entries(og.get(2, [])).items():
        bound[k] = pw.packed_varints(pw.fields(v).get(2, []))
    var_object: dict[str, int] = {}
    for n in chosen:
        fname = _attr_func(n) if n["op"] in CALL_OPS else None
        if fname in functions and fname in bound and bound[fname]:
            b = bound[fname]
            ins = [i for i in n["input"] if not i.startswith("^")]
            for name, obj in zip(ins[len(ins) - len(b):], b):
                var_object.setdefault(_ref(name)[0], obj)
    bundle = None
    try:
        bundle = Bundle(folder, p)
    except ReadError:
        if any(n["op"] in VARIABLE_OPS for n in main):
            raise
    keys = _checkpoint_keys(bundle) if bundle is not None else {}

    def kernel(node: dict) -> np.ndarray:
        if len(node["input"]) < 2:
            raise _Corrupt(f"conv {node['name']!r} has no kernel input")
        x = flat.resolve(node["input"][1])
        for _ in range(64):
            src = flat.nodes.get(x) or main_by.get(x)
            if src is None:
                raise LookupError(f"kernel comes from {x!r}, which is not in the graph")
            op = src["op"]
            if op == "Const":
                v = src["attr"].get("value")
                return _tensor_proto(pw.fields(pw.one(pw.fields(v), 8)))
            if op in VARIABLE_OPS:
                if bundle is None:
                    raise ReadError(p, "variables/ (the tensor bundle) is missing")
                key = keys.get(var_object.get(x, -1))
                if key is None:
                    shared = src["attr"].get("shared_name")
                    name = pw.text(pw.one(pw.fields(shared), 2)) if shared is not None else x
                    key = name if bundle.entry(name) is not None else x
                return bundle.tensor(key)
            if op in PASS_THROUGH and src["input"]:
                x = flat.resolve(src["input"][0])
                continue
            raise LookupError(f"kernel is computed at run time by {op}")
        raise LookupError("kernel chain too long")

    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    conv_nodes: list[str] = []
    names: dict[str, int] = {}
    for name, n in flat.nodes.items():
        op = n["op"]
        if op in SKIPPED_OPS:
            skipped.append(Skipped(name, op, SKIPPED_OPS[op]))
        if op not in CONV_OPS and op not in DEPTHWISE_OPS:
            continue
        try:
            k = np.asarray(kernel(n), np.float32)
        except LookupError as e:
            skipped.append(Skipped(name, op, str(e)))
            continue
        if k.ndim != 4:
            skipped.append(Skipped(name, op, f"kernel of rank {k.ndim}"))
            continue
        if op in DEPTHWISE_OPS:
            layer = ConvLayer(name, op, depthwise_to_oihw(k), groups=int(k.shape[2]))
        else:
            layer = ConvLayer(name, op, hwio_to_oihw(k))
        layers.append(layer)
        conv_nodes.append(name)
    _conv2d_groups(flat, layers, conv_nodes)
    warnings = []
    in_cf = 0
    for n in flat.nodes.values():
        if n["op"] in CONTROL_FLOW:
            for key in ("body", "then_branch", "else_branch", "cond"):
                fn = _attr_func(n, key)
                if fn in functions and any(x["op"] in CONV_OPS | DEPTHWISE_OPS
                                           for x in functions[fn]["nodes"]):
                    in_cf += 1
                    skipped.append(Skipped(f"{n['name']}/{fn}", n["op"],
                                           "convs inside a control-flow function, not read"))
    if in_cf:
        warnings.append("2-D convs inside While / If functions were not read")
    ids = [k for k, n in flat.nodes.items() if k not in graph_inputs]
    try:
        depths = longest_path_depths([[flat.resolve(i) for i in flat.nodes[k]["input"]]
                                      for k in ids], [[k] for k in ids], graph_inputs)
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    at = dict(zip(ids, depths))
    warn = assign_graph_depths(layers, conv_nodes, at, "a signature input")
    if warn:
        warnings.append(warn)
    for l in layers:  # readable names: drop the inlining prefixes of call nodes
        short = re.sub(r"(^|/)(StatefulPartitionedCall|PartitionedCall)(_\d+)?(?=/)", "", l.name)
        short = short.lstrip("/") or l.name
        names[short] = names.get(short, 0) + 1
        l.name = short if names[short] == 1 else f"{short}#{names[short]}"
    return Model(path=p, format="savedmodel", sha256=files_sha256(files(p)), layers=layers,
                 skipped=skipped, depth_source=DEPTH_GRAPH, producer="tensorflow",
                 producer_version=tf_version,
                 op_counts=count_ops(n["op"] for n in flat.nodes.values()), warnings=warnings)


def _conv2d_groups(flat: _Flat, layers: list[ConvLayer], conv_nodes: list[str]) -> None:
    """``groups`` of each ``Conv2D``: its input's channels (walked back through the inlined
    graph to a convolution read, :func:`graph.input_channels`) over its kernel's
    ``c_in / groups``; 1 where they cannot be found."""
    known = {c: l.shape[0] for l, c in zip(layers, conv_nodes)}

    def producer(x: str):
        n = flat.nodes.get(x)
        return None if n is None else (n["op"], [flat.resolve(i) for i in n["input"]])

    for layer, c in zip(layers, conv_nodes):
        ins = flat.nodes[c]["input"]
        if layer.op in CONV_OPS and ins:
            ch = input_channels(flat.resolve(ins[0]), producer, known)
            layer.groups = conv2d_groups(ch, layer.shape[1])


def files(path) -> list[str]:
    """``saved_model.pb``, ``variables/variables.index`` and the data shards (what the
    model's sha256 covers), those present."""
    folder = folder_of(os.fspath(path))
    out = [_inside(folder, "saved_model.pb", os.fspath(path))]
    var = os.path.join(folder, "variables")
    if os.path.isdir(var):
        for name in sorted(os.listdir(var)):
            if name == "variables.index" or name.startswith("variables.data-"):
                out.append(_inside(folder, os.path.join("variables", name), os.fspath(path)))
    return out


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, pw.ProtoError, ValueError, TypeError, KeyError, IndexError,
                 OverflowError, RecursionError)


def read(path, fmt: str = "savedmodel") -> Model:
    """Read a SavedModel folder (or its ``saved_model.pb``)."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        p = check_file(p)
    return read_or_corrupt(p, _read, "SavedModel", _PARSE_ERRORS)


__all__ = ["Bundle", "read", "read_table"]
