"""TensorFlow.js models: a ``model.json`` (graph model or layers model) or a bare
``*weights_manifest.json``, with their binary weight shards.

Formats (TensorFlow.js converter, ``tfjs-converter`` / ``tfjs-layers`` model JSON):

- ``tfjs_graph``: ``{"format": "graph-model", "modelTopology": GraphDef as JSON,
  "weightsManifest": [...]}``. Conv nodes are ``Conv2D``, ``_FusedConv2D`` / ``FusedConv2D``
  (kernel ``[kh, kw, c_in / groups, c_out]``, HWIO) and ``DepthwiseConv2dNative`` /
  ``FusedDepthwiseConv2dNative`` (``[kh, kw, c_in, mult]``); input 1 is the kernel, a ``Const``
  node whose value is the manifest weight of the same name (followed back through
  ``Identity`` / ``Switch`` / ``Enter``). Depth is the longest path over the GraphDef's data
  edges (control inputs ``^x`` ignored, ``NextIteration -> Merge`` back edges of while loops
  dropped, each loop unrolled once) from its ``Placeholder`` nodes. A conv inside a library
  function (``PartitionedCall``, as Keras writes grouped convs) is read at its call's node,
  its kernel followed through the call's arguments. A GraphDef does not record a
  ``Conv2D``'s groups: they are its input's channels (:func:`graph.input_channels`, walked
  back to the convolution that made them) over the kernel's ``c_in / groups``, 1 where
  the channels are not found.
- ``tfjs_layers``: ``{"format": "layers-model", "modelTopology": Keras model config, ...}``;
  the Keras reader's config logic gives classes, groups and the functional-graph depth;
  weights are named ``<layer>/<kind>`` (``kernel``, ``depthwise_kernel``, ...).
- ``tfjs_weights``: a bare manifest, a JSON list of weight groups, the architecture living
  in code: layer classes from the weight names, depth from their order.

Weights: each group ``{"paths": [...], "weights": [{name, shape, dtype, quantization?}]}``;
a group's shards are concatenated in order and its weights follow each other in manifest
order. Stored as float32 / int32 (4 bytes), bool (1), complex64 (8), string (each value a
little-endian uint32 length then its bytes) or quantized: ``quantization.dtype`` float16
(IEEE half) or uint8 / uint16 with ``w = q * scale + min``.

Shards are read only from the model's own folder: absolute paths, URLs, ``..`` and
symlinks leading out of the folder are refused, as are missing shards and shards whose
sizes differ from what the manifest describes.
"""
from __future__ import annotations

import json
import os
import re
import struct

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
    files_sha256,
    read_or_corrupt,
)
from .graph import conv2d_groups, input_channels, longest_path_depths

GRAPH, LAYERS, WEIGHTS = "tfjs_graph", "tfjs_layers", "tfjs_weights"
MAX_JSON = 512 << 20  # refuse model JSON larger than this

CONV_OPS = {"Conv2D", "_FusedConv2D", "FusedConv2D"}
DEPTHWISE_OPS = {"DepthwiseConv2dNative", "FusedDepthwiseConv2dNative",
                 "_FusedDepthwiseConv2dNative"}
SKIPPED_OPS = {
    "Conv2DBackpropInput": "transposed convolution, not 2-D conv filters",
    "Conv3D": "3-D convolution, not 2-D conv filters",
    "Conv3DBackpropInputV2": "transposed 3-D convolution, not 2-D conv filters",
}
PASS_THROUGH = {"Identity": 0, "Switch": 0, "Enter": 0, "RefIdentity": 0, "Snapshot": 0,
                "StopGradient": 0}
MAX_CHAIN = 32

# stored bytes per value; "string" is variable
DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "complex64": 8, "float16": 2,
               "uint8": 1, "uint16": 2, "int8": 1, "int16": 2}
NUMPY = {"float32": "<f4", "int32": "<i4", "bool": "?", "complex64": "<c8", "float16": "<f2",
         "uint8": "u1", "uint16": "<u2", "int8": "i1", "int16": "<i2"}


class _Corrupt(Exception):
    """Internal: the manifest or a shard contradicts itself."""


# ---------------------------------------------------------------------------- pure math


def dequantize(q: np.ndarray, scale: float, minimum: float) -> np.ndarray:
    """TF.js affine quantisation: ``w = q * scale + min`` (float32 result)."""
    return (q.astype(np.float64) * float(scale) + float(minimum)).astype(np.float32)


def hwio_to_oihw(k: np.ndarray) -> np.ndarray:
    """``[kh, kw, c_in / groups, c_out]`` -> ``(c_out, c_in / groups, kh, kw)``."""
    return np.transpose(k, (3, 2, 0, 1))


def depthwise_to_oihw(k: np.ndarray) -> np.ndarray:
    """``[kh, kw, c_in, mult]`` -> ``(c_in * mult, 1, kh, kw)``, channel ``i * mult + m``."""
    kh, kw, c_in, mult = k.shape
    return np.transpose(k, (2, 3, 0, 1)).reshape(c_in * mult, 1, kh, kw)


def loop_depths(node_in, node_out, graph_inputs: set, back: list) -> list:
    """Longest-path depth (:func:`graph.longest_path_depths`) of a graph with while loops.

    ``back``: ``(node index, [producer names])`` of each loop's ``Merge`` and the
    ``NextIteration`` nodes feeding it, edges left out of ``node_in``. The loop is unrolled
    once: a first pass without the back edges gives each ``NextIteration`` its depth, a
    second pass feeds that depth into its ``Merge`` (so what is computed only inside a loop,
    such as the output list of a ``map``, is reached from the graph input).
    """
    first = longest_path_depths(node_in, node_out, graph_inputs)
    if not any(loop for _, loop in back):
        return first
    depth_of = {outs[0]: d for outs, d in zip(node_out, first) if outs}
    node_in2 = [list(ins) for ins in node_in]
    node_out2 = [list(outs) for outs in node_out]
    inputs2 = set(graph_inputs)
    for j, loop in back:
        for x in loop:
            d = depth_of.get(x)
            if d is None:
                continue
            # a virtual chain of d nodes from a graph input stands for the loop body's depth
            prev = f"\0loop:{x}:0"
            inputs2.add(prev)
            for k in range(1, d + 1):
                node_in2.append([prev])
                prev = f"\0loop:{x}:{k}"
                node_out2.append([prev])
            node_in2[j].append(prev)
    return longest_path_depths(node_in2, node_out2, inputs2)[:len(node_in)]


# ---------------------------------------------------------------------------- detection


def sniff(path: str) -> str | None:
    """Which TF.js form a JSON file is, or None if it is not one."""
    if os.path.getsize(path) > MAX_JSON:
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    return _kind(doc)


def _kind(doc) -> str | None:
    if isinstance(doc, dict) and "weightsManifest" in doc and "modelTopology" in doc:
        fmt = str(doc.get("format") or "")
        topo = doc.get("modelTopology")
        if fmt == "graph-model" or (isinstance(topo, dict) and "node" in topo):
            return GRAPH
        return LAYERS
    if isinstance(doc, dict) and "weightsManifest" in doc:
        return WEIGHTS  # weights only, no topology
    if (isinstance(doc, list) and doc and all(isinstance(g, dict) for g in doc)
            and all("paths" in g and "weights" in g for g in doc)):
        return WEIGHTS
    return None


# ---------------------------------------------------------------------------- weights


def _shard_path(folder: str, rel, path: str) -> str:
    """The shard ``rel`` inside ``folder``; refuses anything that would leave it."""
    if not isinstance(rel, str) or not rel:
        raise ReadError(path, f"weight shard path {rel!r} is not a file name")
    if "\x00" in rel or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", rel) or rel.startswith(("/", "\\")) \
            or os.path.isabs(rel):
        raise ReadError(path, f"weight shard path {rel!r} is absolute or a URL; only files "
                              "beside the model are read")
    parts = re.split(r"[/\\]", rel)
    if ".." in parts:
        raise ReadError(path, f"weight shard path {rel!r} leaves the model's folder")
    full = os.path.join(folder, *parts)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(full)
    if os.path.commonpath([real_folder, real]) != real_folder:
        raise ReadError(path, f"weight shard {rel!r} is a link leading out of the model's folder")
    if not os.path.isfile(real):
        raise ReadError(path, f"weight shard {rel!r} is missing")
    return real


def _n_values(shape) -> int:
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _Corrupt(f"bad shape {shape!r}")
    n = 1
    for s in shape:
        n *= s
    return n


class _Weight:
    """One manifest weight inside its group's concatenated shards (decoded on call)."""

    def __init__(self, spec: dict, group: _Group, offset: int):
        self.name = str(spec.get("name"))
        self.shape = tuple(spec.get("shape") or [])
        self.ndim = len(self.shape)
        self.dtype = str(spec.get("dtype", "float32"))
        q = spec.get("quantization")
        self.quant = q if isinstance(q, dict) else None
        self.group = group
        self.offset = offset
        n = _n_values(list(self.shape))
        self.n = n
        if self.dtype == "string" and not self.quant:
            self.nbytes = None  # known after scanning the buffer
        else:
            stored = self.quant.get("dtype") if self.quant else self.dtype
            if stored not in DTYPE_BYTES:
                raise _Corrupt(f"weight {self.name!r}: unknown dtype {stored!r}")
            self.stored = stored
            self.nbytes = n * DTYPE_BYTES[stored]

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float32", "float16")

    def __call__(self) -> np.ndarray:
        buf = self.group.data()
        if self.offset + self.nbytes > len(buf):
            raise _Corrupt(f"weight {self.name!r} runs past the end of its shards")
        raw = np.frombuffer(buf, dtype=NUMPY[self.stored], count=self.n, offset=self.offset)
        if self.quant and self.stored in ("uint8", "uint16", "int8", "int16"):
            if "scale" not in self.quant or "min" not in self.quant:
                raise _Corrupt(f"weight {self.name!r}: {self.stored} quantization without "
                               "scale and min")
            a = dequantize(raw, self.quant["scale"], self.quant["min"])
        else:
            a = raw.astype(np.float32)
        if not self.is_float:
            raise _Corrupt(f"weight {self.name!r} is {self.dtype}, not a float kernel")
        return a.reshape(self.shape)


class _Group:
    """A manifest group: its shards, read (once) only when a weight is needed."""

    def __init__(self, files: list[str], sizes: list[int]):
        self.files = files
        self.size = sum(sizes)
        self._data = None

    def data(self) -> bytes:
        if self._data is None:
            parts = []
            for f in self.files:
                with open(f, "rb") as fh:
                    parts.append(fh.read())
            self._data = b"".join(parts)
            if len(self._data) != self.size:
                raise _Corrupt("a weight shard changed size while being read")
        return self._data


def load_manifest(manifest, folder: str, path: str) -> dict[str, _Weight]:
    """``{weight name: _Weight}`` of a weights manifest, in manifest order, after checking
    every shard path and that the shards hold exactly the bytes the manifest describes."""
    if not isinstance(manifest, list):
        raise _Corrupt("weightsManifest is not a list of groups")
    out: dict[str, _Weight] = {}
    for gi, g in enumerate(manifest):
        if not isinstance(g, dict) or not isinstance(g.get("paths"), list) \
                or not isinstance(g.get("weights"), list):
            raise _Corrupt(f"weight group {gi} has no 'paths' and 'weights' lists")
        files = [_shard_path(folder, rel, path) for rel in g["paths"]]
        sizes = [os.path.getsize(f) for f in files]
        group = _Group(files, sizes)
        offset = 0
        for spec in g["weights"]:
            if not isinstance(spec, dict) or "name" not in spec:
                raise _Corrupt(f"weight group {gi}: an entry without a name")
            w = _Weight(spec, group, offset)
            if w.nbytes is None:  # strings: uint32 length + bytes per value
                buf = group.data()
                o = offset
                for _ in range(w.n):
                    if o + 4 > len(buf):
                        raise _Corrupt(f"string weight {w.name!r} runs past its shards")
                    (k,) = struct.unpack_from("<I", buf, o)
                    o += 4 + k
                w.nbytes = o - offset
            offset += w.nbytes
            if offset > group.size:
                raise ReadError(path, f"weight shards of group {gi} hold {group.size} bytes, "
                                      f"fewer than the manifest's weights need (at least "
                                      f"{offset}): shards missing or truncated")
            if w.name in out:
                raise _Corrupt(f"weight {w.name!r} appears twice in the manifest")
            out[w.name] = w
        if offset != group.size:
            raise ReadError(path, f"weight shards of group {gi} hold {group.size} bytes, but the "
                                  f"manifest's weights need {offset}")
    return out


# ---------------------------------------------------------------------------- graph model


def _attr_str(node: dict, key: str) -> str | None:
    import base64

    v = (node.get("attr") or {}).get(key)
    if isinstance(v, dict) and "s" in v:
        try:
            return base64.b64decode(v["s"]).decode("utf-8", "replace")
        except (ValueError, TypeError):
            return None
    return None


def _node_name(inp: str) -> str:
    """``"^x"`` / ``"x:1"`` -> ``"x"``."""
    return inp.lstrip("^").split(":", 1)[0]


def _read_graph(p: str, doc: dict, weights: dict[str, _Weight], warnings: list[str]):
    topo = doc.get("modelTopology")
    if not isinstance(topo, dict) or not isinstance(topo.get("node", []), list):
        raise _Corrupt("modelTopology is not a GraphDef (no 'node' list)")
    nodes = topo.get("node", [])
    for n in nodes:
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) \
                or not isinstance(n.get("op"), str):
            raise _Corrupt("a GraphDef node without a name or op")
        if not isinstance(n.get("input", []), list):
            raise _Corrupt(f"node {n['name']!r}: 'input' is not a list")
    by_name = {n["name"]: n for n in nodes}
    ops = [n["op"] for n in nodes]
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    conv_index: list[int] = []

    def kernel_of(x: str, local: dict | None = None, args: dict | None = None) -> _Weight:
        """The stored weight behind input ``x`` (of the main graph, or of a function body
        ``local`` whose arguments ``args`` map to the caller's inputs)."""
        for _ in range(MAX_CHAIN):
            name = _node_name(x)
            if local is not None and name in args:
                x, local, args = args[name], None, None
                continue
            if name in weights:
                return weights[name]
            src = (local if local is not None else by_name).get(name)
            if src is None or src["op"] not in PASS_THROUGH:
                raise LookupError(f"kernel {x!r} is computed at run time "
                                  f"({src['op'] if src else 'no such node'}), not stored")
            data = [i for i in src.get("input", []) if not i.startswith("^")]
            if not data:
                raise LookupError(f"kernel {x!r} has no stored value")
            x = data[PASS_THROUGH[src["op"]]]
        raise LookupError(f"kernel chain longer than {MAX_CHAIN}")

    def conv(name: str, n: dict, local=None, args=None):
        op = n["op"]
        ins = [i for i in n.get("input", []) if not i.startswith("^")]
        if len(ins) < 2:
            raise _Corrupt(f"conv node {name!r} has no kernel input")
        try:
            k = kernel_of(ins[1], local, args)
        except LookupError as e:
            return Skipped(name, op, str(e))
        if k.ndim != 4:
            return Skipped(name, op, f"kernel of rank {k.ndim}, not 4")
        a = k()
        if op in DEPTHWISE_OPS:
            return ConvLayer(name, op, depthwise_to_oihw(a), groups=int(a.shape[2]))
        return ConvLayer(name, op, hwio_to_oihw(a))

    functions = {}
    for fn in ((topo.get("library") or {}).get("function") or []):
        if isinstance(fn, dict) and isinstance(fn.get("signature"), dict):
            functions[fn["signature"].get("name")] = fn
    called = set()
    # the data edges of the main graph and of the called functions' bodies (body nodes as
    # "call/node", arguments as the caller's inputs), for the channels of grouped Conv2D
    edges: dict[str, tuple[str, list[str]]] = {}
    for i, n in enumerate(nodes):
        op = n["op"]
        data = [x for x in n.get("input", []) if not x.startswith("^")]
        edges[n["name"]] = (op, [_node_name(x) for x in data])
        if op in SKIPPED_OPS:
            skipped.append(Skipped(n["name"], op, SKIPPED_OPS[op]))
            continue
        fname = (((n.get("attr") or {}).get("f") or {}).get("func") or {}).get("name")
        if fname in functions:  # a function call: its convs sit at the call's node
            called.add(fname)
            fn = functions[fname]
            body = [nd for nd in fn.get("nodeDef") or [] if isinstance(nd, dict)]
            local = {nd.get("name"): nd for nd in body}
            formal = [a.get("name") for a in fn["signature"].get("inputArg") or []]
            args = dict(zip(formal, data))

            def outer(x: str, call=n["name"], args=args, local=local) -> str:
                b = _node_name(x)
                return _node_name(args[b]) if b in args and b not in local else f"{call}/{b}"

            for nd in body:
                if isinstance(nd.get("name"), str) and isinstance(nd.get("op"), str):
                    ins = [x for x in nd.get("input") or [] if isinstance(x, str)
                           and not x.startswith("^")]
                    edges[f"{n['name']}/{nd['name']}"] = (nd["op"], [outer(x) for x in ins])
            rets = list((fn.get("ret") or {}).values())
            if len(rets) == 1 and isinstance(rets[0], str):  # the call's output
                edges[n["name"]] = ("Identity", [outer(rets[0])])
            for nd in body:
                if nd.get("op") in CONV_OPS or nd.get("op") in DEPTHWISE_OPS:
                    item = conv(f"{n['name']}/{nd.get('name')}", nd, local, args)
                    if isinstance(item, ConvLayer):
                        layers.append(item)
                        conv_index.append(i)
                    else:
                        skipped.append(item)
                elif nd.get("op") in SKIPPED_OPS:
                    skipped.append(Skipped(f"{n['name']}/{nd.get('name')}", nd["op"],
                                           SKIPPED_OPS[nd["op"]]))
            continue
        if op not in CONV_OPS and op not in DEPTHWISE_OPS:
            continue
        item = conv(n["name"], n)
        if isinstance(item, ConvLayer):
            layers.append(item)
            conv_index.append(i)
        else:
            skipped.append(item)
    known = {layer.name: layer.shape[0] for layer in layers}
    for layer in layers:  # a conv's node in ``edges`` has the layer's name
        ins = edges.get(layer.name, ("", []))[1]
        if layer.op in CONV_OPS and ins:
            layer.groups = conv2d_groups(input_channels(ins[0], edges.get, known),
                                         layer.shape[1])
    for fname, fn in functions.items():
        if fname in called:
            continue
        for nd in fn.get("nodeDef") or []:
            if isinstance(nd, dict) and nd.get("op") in CONV_OPS | DEPTHWISE_OPS:
                skipped.append(Skipped(f"{fname}/{nd.get('name')}", nd["op"],
                                       "inside a library function not called from the main "
                                       "graph (or called from another function), not read"))
    if any(s.reason.startswith("inside a library") for s in skipped):
        warnings.append("some 2-D convs inside GraphDef library functions were not read")
    # (Placeholder nodes are the graph inputs, at depth 0, not nodes of the path)
    inputs_ = {n["name"] for n in nodes if n["op"] == "Placeholder"}
    node_in, node_out, back, at = [], [], [], {}
    for i, n in enumerate(nodes):
        if n["op"] == "Placeholder":
            continue
        ins = [_node_name(x) for x in n.get("input", []) if not x.startswith("^")]
        if n["op"] == "Merge":
            loop = [x for x in ins if (by_name.get(x) or {}).get("op") == "NextIteration"]
            ins = [x for x in ins if x not in loop]
            back.append((len(node_in), loop))
        at[i] = len(node_in)
        node_in.append(ins)
        node_out.append([n["name"]])
    try:
        found = loop_depths(node_in, node_out, inputs_, back)
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    depths = {i: found[j] for i, j in at.items()}
    unreached = 0
    for layer, i in zip(layers, conv_index):
        layer.graph_depth = depths[i]
        if layer.graph_depth is None:
            unreached += 1
            layer.graph_depth = 1
    if unreached:
        warnings.append(f"{unreached} conv(s) not reached from a graph input; depth set to 1")
    assign_conv_depths(layers)
    return layers, skipped, count_ops(ops)


# ---------------------------------------------------------------------------- layers / weights


def _kind_of(weight_name: str) -> tuple[str, str]:
    """``model/conv2d_1/kernel:0`` -> (``model/conv2d_1``, ``kernel``)."""
    w = weight_name.split(":", 1)[0]
    if "/" not in w:
        return w, w
    prefix, kind = w.rsplit("/", 1)
    return prefix, kind


def _entries(weights: dict[str, _Weight], cfg_names: list[str], warnings: list[str],
             bare: bool) -> list:
    """(layer name, None, {kind: _Weight}) per layer: config order first, then the rest in
    manifest order. In a bare manifest a 4-D float weight of an unknown kind is read as a
    conv kernel (``depthwise_kernel`` if its name says depthwise)."""
    bare_of = {}
    for q in cfg_names:
        bare_of.setdefault(q.rsplit("/", 1)[-1], q)
    groups: dict[str, dict] = {}
    guessed = 0
    for name, w in weights.items():
        prefix, kind = _kind_of(name)
        if prefix not in cfg_names:
            last = prefix.rsplit("/", 1)[-1]
            prefix = bare_of.get(last, prefix)
        if bare and kind not in ("kernel", "depthwise_kernel", "pointwise_kernel") \
                and w.ndim == 4 and w.is_float:
            kind = "depthwise_kernel" if "depthwise" in name.lower() else "kernel"
            prefix = name.split(":", 1)[0]
            guessed += 1
        groups.setdefault(prefix, {})[kind] = w
    if guessed:
        warnings.append(f"{guessed} 4-D weight(s) with no kernel name read as conv kernels "
                        "[kh, kw, in, out] (depthwise when named so)")
    order = [q for q in cfg_names if q in groups] + [g for g in groups if g not in cfg_names]
    return [(g, None, groups[g]) for g in order]


def _read_layers(p: str, doc: dict, weights, warnings: list[str]) -> Model:
    from . import (
        keras as _keras,  # lazy: start-up time (the Keras reader for a tfjs Layers model only)
    )

    topo = doc.get("modelTopology")
    if not isinstance(topo, dict):
        raise _Corrupt("modelTopology is not a Keras model config")
    version = topo.get("keras_version")
    backend = topo.get("backend")
    config = topo.get("model_config", topo)
    if not isinstance(config, dict):
        raise _Corrupt("modelTopology.model_config is not a Keras model config")
    _, cfgs = _keras._config_layers(config)
    names = [q for q, _ in _keras.flat_configs(cfgs)]
    entries = _entries(weights, names, warnings, bare=False)
    m = _keras._build(p, LAYERS, entries, config, version, backend, warnings)
    m.sha256 = files_sha256(files(p))
    m.producer = f"tensorflowjs ({m.producer})"
    return m


# ---------------------------------------------------------------------------- entry point


def _producer(doc) -> tuple[str, str | None]:
    if not isinstance(doc, dict):
        return "tensorflowjs", None
    parts = [str(doc[k]) for k in ("convertedBy", "generatedBy") if doc.get(k)]
    return "tensorflowjs", "; ".join(parts) or None


def _read(p: str, fmt: str | None) -> Model:
    if os.path.getsize(p) > MAX_JSON:
        raise ReadError(p, f"TF.js model JSON larger than {MAX_JSON >> 20} MB")
    with open(p, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ReadError(p, f"not valid JSON ({e})") from None
    kind = _kind(doc)
    if kind is None:
        raise ReadError(p, "JSON that is not a TF.js model or weights manifest")
    folder = os.path.dirname(os.path.abspath(p))
    manifest = doc if isinstance(doc, list) else doc.get("weightsManifest")
    warnings: list[str] = []
    weights = load_manifest(manifest, folder, p)
    if kind == LAYERS:
        return _read_layers(p, doc, weights, warnings)
    producer, version = _producer(doc)
    if kind == GRAPH:
        layers, skipped, ops = _read_graph(p, doc, weights, warnings)
        depth_source = DEPTH_GRAPH
    else:
        from . import (
            keras as _keras,  # lazy: start-up time (the Keras reader for a tfjs Layers model only)
        )

        entries = _entries(weights, [], warnings, bare=True)
        m = _keras._build(p, WEIGHTS, entries, None, None, None, warnings)
        m.sha256 = files_sha256(files(p))
        m.producer, m.producer_version = producer, version
        m.warnings.insert(0, "bare weights manifest: no topology, so layer classes come from "
                             "the weight names and conv depth from their order")
        return m
    return Model(path=p, format=kind, sha256=files_sha256(files(p)), layers=layers, skipped=skipped,
                 depth_source=depth_source, producer=producer, producer_version=version,
                 op_counts=ops, warnings=warnings)


def files(path) -> list[str]:
    """The model JSON and its shards in manifest order (what its sha256 covers)."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        doc = json.loads(f.read())
    manifest = doc if isinstance(doc, list) else doc.get("weightsManifest")
    folder = os.path.dirname(os.path.abspath(p))
    return [p] + [_shard_path(folder, rel, p) for g in manifest or [] for rel in g.get("paths", [])]


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, ValueError, TypeError, KeyError, AttributeError, OverflowError,
                 RecursionError, struct.error)


def read(path, fmt: str | None = None) -> Model:
    """Read the 2-D convolutions of a TF.js model JSON or weights manifest."""
    p = check_file(path)
    return read_or_corrupt(p, _read, "TF.js model", _PARSE_ERRORS, fmt)


__all__ = ["depthwise_to_oihw", "dequantize", "hwio_to_oihw", "load_manifest", "read", "sniff"]
