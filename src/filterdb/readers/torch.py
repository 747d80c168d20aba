"""PyTorch files: pickled state dicts / checkpoints (format ``torch``) and TorchScript
archives (format ``torchscript``). Needs the ``torch`` extra.

State dicts are loaded with ``torch.load(weights_only=True, map_location="cpu")``: a file
whose unpickling needs arbitrary code is refused (:class:`ReadError`), never executed. The
state dict is found in the loaded object: a dict holding tensors, or under one of the usual
checkpoint keys (``state_dict``, ``model_state_dict``, ``model``, ``net``, ``state``, ...,
possibly nested); ``module.`` prefixes (DataParallel) are stripped from the names. An
optimizer's state (``{"state", "param_groups"}``: momentum buffers, Adam moments) is never
read as weights; a file holding only one is refused ("no model weights here"). Conv-layer
rules (4-D ``*weight`` tensors, the groups heuristic, order-based depth):
:mod:`filterdb.readers.tensors`.

TorchScript: ``torch.jit.load`` (TorchScript code, no pickle code execution) and a walk over
the submodules in module order. A submodule with a 4-D floating ``weight`` parameter is a 2-D
conv; a torch.ao quantized conv keeps its int8 weight in ``_packed_params`` (a
``Conv2dPackedParamsBase``), which is unpacked and dequantized, ``(q - zero_point) * scale``
per tensor or channel. Groups: the module's ``groups`` attribute, else (``torch.jit.trace``
files) the constant ``groups`` argument of its conv call in the graph. ``ConvTranspose*`` and
3-D / 5-D weights are skipped. Depth: the longest path in the inlined TorchScript graph of
``forward`` (each conv call is matched to its module through the ``prim::GetAttr`` chain of
its weight; in-place writes such as ``list.append`` are data flow) when every conv layer is
found there; otherwise the module order (``depth_source = "order"``). A 2-D conv call whose
weight was not read is warned about.
"""
from __future__ import annotations

import re
import warnings as warnings_
import zipfile
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MissingExtraError, ReadError
from ._torchscript import check_torchscript_code
from ._zip import open_zip
from .base import (
    DEPTH_GRAPH,
    DEPTH_ORDER,
    ConvLayer,
    Model,
    Skipped,
    assign_conv_depths,
    assign_order_depths,
    check_file,
    file_sha256,
)
from .graph import longest_path_depths
from .tensors import TensorInfo, strip_prefix, tensors_to_model

# where checkpoints keep the weights, most specific first
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                   "state", "params", "weights", "ema", "model_ema", "module")
# checkpoint entries that hold tensors but are not the model's weights
_NOT_WEIGHTS = ("optimizer", "optimizer_state_dict", "optim", "scheduler", "lr_scheduler",
                "scaler", "amp")


def _import_torch():
    try:
        import torch  # lazy: optional heavy dependency (torch extra)
    except ImportError:
        raise MissingExtraError("torch", "torch", "read PyTorch files") from None
    return torch


def _is_tensor(x) -> bool:
    torch = _import_torch()
    return isinstance(x, torch.Tensor)


def is_optimizer_state(obj) -> bool:
    """A ``torch.optim.Optimizer.state_dict()``: ``{"state": {param index: {...}},
    "param_groups": [...]}`` (momentum buffers, Adam moments): tensors, but not weights."""
    return (isinstance(obj, Mapping) and "param_groups" in obj and "state" in obj
            and isinstance(obj["state"], Mapping) and isinstance(obj["param_groups"], list))


def _tensor_items(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """All tensors of a nested mapping, with dotted names, in insertion order; optimizer
    states (by key or by structure) are left out."""
    out = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if _is_tensor(v):
            out.append((name, v))
        elif isinstance(v, Mapping) and str(k) not in _NOT_WEIGHTS and not is_optimizer_state(v):
            out += _tensor_items(v, name + ".")
    return out


def _has_optimizer_state(obj, depth: int = 0) -> bool:
    if not isinstance(obj, Mapping) or depth > 4:
        return False
    if is_optimizer_state(obj):
        return True
    return any((str(k) in _NOT_WEIGHTS and isinstance(v, Mapping))
               or _has_optimizer_state(v, depth + 1) for k, v in obj.items())


def find_state_dict(obj, depth: int = 0) -> tuple[list[tuple[str, Any]], str | None]:
    """The (name, tensor) pairs of the state dict inside a loaded object, and the checkpoint
    key path it was found under (None for a plain state dict). An optimizer state is never
    taken for weights."""
    if not isinstance(obj, Mapping) or depth > 4 or is_optimizer_state(obj):
        return [], None
    if any(_is_tensor(v) for v in obj.values()):
        return _tensor_items(obj), None
    for key in STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            items, sub = find_state_dict(obj[key], depth + 1)
            if items:
                return items, key if sub is None else f"{key}/{sub}"
    return _tensor_items(obj), None


def _to_numpy(t) -> np.ndarray:
    torch = _import_torch()
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    return t.to(torch.float32).cpu().numpy()


def _pickle_protocol(p: str) -> int | None:
    """The protocol of the file's (first) pickle: its PROTO opcode, if any."""
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                head = z.open(name).read(2) if name else b""
        else:
            with open(p, "rb") as f:
                head = f.read(2)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _torch_load(p: str):
    torch = _import_torch()
    import pickle

    mmap = zipfile.is_zipfile(p)  # mmap works for zip-format files only
    try:
        with warnings_.catch_warnings():
            # torch's note that a protocol other than 2 "might not be supported" is not for
            # the user: an unsupported instruction fails the load (a ReadError below)
            warnings_.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        op = re.search(r"Unsupported operand (\d+)", msg)
        if op:
            proto = _pickle_protocol(p)
            what = f"pickle protocol {proto}" if proto else "this pickle"
            raise ReadError(p, f"{what} uses an instruction (opcode {op.group(1)}) that torch's "
                               "safe weights-only loader does not support; re-save it with "
                               "torch.save's default protocol (filterdb never runs pickle "
                               "code)") from None
        if "Weights only load failed" in msg or "GLOBAL" in msg:
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            what = f"it references {m.group(1)}" if m else "not a plain tensor container"
            if m and (m.group(1).startswith("torch.nn.") or m.group(1).startswith("__main__.")):
                what += "; a pickled module: save its state_dict() instead"
            raise ReadError(p, f"refusing to unpickle: the file needs arbitrary code ({what}); "
                               "filterdb never runs code from model files") from None
        raise ReadError(p, f"corrupt PyTorch file (unpickling failed: {msg.splitlines()[0]})") \
            from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReadError(p, f"corrupt or truncated PyTorch file ({first})") from None


def read_state_dict(p: str, fmt: str) -> Model:
    _import_torch()  # a clear MissingExtraError without torch
    obj = _torch_load(p)
    items, key = find_state_dict(obj)
    warnings = []
    if not items and _has_optimizer_state(obj):
        raise ReadError(p, "no model weights here: the file holds an optimizer state "
                           "(torch.optim state_dict: momentum buffers / moments), not a "
                           "model's weights")
    if not items:
        warnings.append("no tensors found in the file")
    if key:
        warnings.append(f"weights taken from the checkpoint entry {key!r}")
    infos = [TensorInfo(strip_prefix(n), tuple(t.shape), t.is_floating_point() or t.is_quantized,
                        (lambda t=t: _to_numpy(t)))
             for n, t in items]
    # the file does not record which torch wrote it: no producer version
    return tensors_to_model(infos, path=p, fmt=fmt, sha256=file_sha256(p), producer="pytorch",
                            producer_version=None, warnings=warnings)


# ---- TorchScript -------------------------------------------------------------------------


def _module_kind(orig: str, weight_ndim: int) -> tuple[str, str | None]:
    """(op name, skip reason or None) of a TorchScript submodule holding a weight."""
    if "Transpose" in orig:
        return orig, "transposed convolution, not 2-D conv filters"
    if weight_ndim == 3:
        return orig, "3-D weight: a 1-D convolution, not 2-D conv filters"
    if weight_ndim == 5:
        return orig, "5-D weight: a 3-D convolution, not 2-D conv filters"
    return orig, None


_CONV_KINDS = ("aten::conv2d", "aten::_convolution", "aten::convolution",
               "aten::conv_transpose2d", "aten::conv1d", "aten::conv3d")
# where the ``groups`` argument sits in each aten conv call
_GROUPS_ARG = {"aten::conv2d": 6, "aten::conv1d": 6, "aten::conv3d": 6, "aten::_convolution": 8,
               "aten::convolution": 8}


def _is_conv_call(kind: str) -> bool:
    # quantized::conv2d, quantized::conv2d_relu, quantized::conv2d_add_relu, ...: input 1 is
    # the packed weight
    return kind in _CONV_KINDS or kind.startswith("quantized::conv")


_WRITES_CACHE: dict[str, tuple[int, ...]] = {}


def _written_args(node) -> tuple[int, ...]:
    """Indices of the arguments a node writes in place (alias annotation ``(a!)`` in its
    schema): ``aten::append(t[](a!) self, t el)``, ``aten::relu_(Tensor(a!) self)``, ..."""
    try:
        schema = node.schema()
    except RuntimeError:
        return ()
    if schema == "(no schema)":
        return ()
    if schema not in _WRITES_CACHE:
        torch = _import_torch()
        try:
            fs = torch._C.parse_schema(schema)
            _WRITES_CACHE[schema] = tuple(
                i for i, a in enumerate(fs.arguments)
                if a.alias_info is not None and a.alias_info.is_write)
        except RuntimeError:
            _WRITES_CACHE[schema] = ()
    return _WRITES_CACHE[schema]


def _const_int(value) -> int | None:
    if value.node().kind() != "prim::Constant":
        return None
    try:
        v = value.toIValue()
    except RuntimeError:
        return None
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _graph_depths(module) -> tuple[dict[str, int | None], dict[str, int], list[str | None]]:
    """``({module path: graph depth}, {module path: groups}, [module path of every 2-D conv
    call, None where its weight is computed])`` of every conv call in the
    inlined ``forward`` graph, keyed by the attribute path of the call's weight (``a.b.conv1``;
    for quantized convs the packed weight ``a.b.conv1._packed_params``). Groups are read
    where the call passes them as a constant (``torch.jit.trace`` files keep no ``groups``
    attribute on the modules).

    In-place writes are data flow: a value an op writes (its schema marks the argument
    ``(a!)``: ``aten::append`` to a list, ``aten::relu_``, ...) gets a new version produced by
    that op, and later readers of the value depend on it. DenseNet's features list, built
    with ``append`` and read by ``torch.cat``, is followed this way."""
    graph = module.inlined_graph
    g_inputs = list(graph.inputs())
    self_val = g_inputs[0] if g_inputs else None
    real_inputs = {v.debugName() for v in g_inputs[1:]}
    # attribute path of every prim::GetAttr output, from self
    attr_path: dict[str, str] = {}
    node_ins: list[list[str]] = []
    node_outs: list[list[str]] = []
    convs: list[tuple[int, str, int | None]] = []
    version: dict[str, str] = {}  # value -> its latest in-place-written version
    calls_2d: list[str | None] = []  # weight path of every 2-D conv call (None: computed)

    def walk(block):
        for n in block.nodes():
            kind = n.kind()
            raw = [v.debugName() for v in n.inputs()]
            ins = [version.get(v, v) for v in raw]
            outs = [v.debugName() for v in n.outputs()]
            if kind == "prim::GetAttr":
                src = n.input()
                base = "" if self_val is not None and src.unique() == self_val.unique() \
                    else attr_path.get(src.debugName())
                if base is not None:
                    attr_path[outs[0]] = f"{base}.{n.s('name')}" if base else n.s("name")
                ins = []  # module attributes are constants, not data
            extra = []
            blocks = list(n.blocks())
            before = dict(version) if blocks else version
            changed: dict[str, list[str]] = {}
            for b in blocks:
                # block parameters come from the owner's inputs; the owner consumes the
                # block's returns and what the block wrote in place
                version.clear()
                version.update(before)
                node_ins.append(ins)
                node_outs.append([v.debugName() for v in b.paramNode().outputs()])
                walk(b)
                extra += [version.get(v.debugName(), v.debugName())
                          for v in b.returnNode().inputs()]
                for v, ver in version.items():
                    if before.get(v) != ver:
                        changed.setdefault(v, []).append(ver)
            if blocks:
                version.clear()
                version.update(before)
            for vers in changed.values():
                extra += vers
            idx = len(node_ins)
            written = [raw[i] for i in _written_args(n) if i < len(raw)] + list(changed)
            for v in dict.fromkeys(written):
                version[v] = f"{v}@{idx}"
                outs = outs + [version[v]]
            node_ins.append(ins + extra)
            node_outs.append(outs)
            if _is_conv_call(kind):
                w = n.inputsAt(1).debugName()
                if kind == "aten::conv2d" or kind.startswith("quantized::conv2d"):
                    calls_2d.append(attr_path.get(w))
                if w in attr_path:
                    gi = _GROUPS_ARG.get(kind)
                    groups = _const_int(n.inputsAt(gi)) if gi is not None and gi < len(raw) \
                        else None
                    convs.append((idx, attr_path[w], groups))

    walk(graph.block() if hasattr(graph, "block") else graph)
    depths = longest_path_depths(node_ins, node_outs, real_inputs)
    out: dict[str, int | None] = {}
    groups_of: dict[str, int] = {}
    for idx, path, groups in convs:
        mod_path = path.rsplit(".", 1)[0] if "." in path else ""
        d = depths[idx]  # a module called more than once: its first (shallowest) call
        if out.get(mod_path) is None or (d is not None and d < out[mod_path]):
            out[mod_path] = d
        if groups is not None:
            groups_of.setdefault(mod_path, groups)
    called = [None if p is None else (p.rsplit(".", 1)[0] if "." in p else "") for p in calls_2d]
    return out, groups_of, called


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """``(q - zero_point) * scale`` of an affine-quantised tensor: per tensor (scalars) or per
    channel (1-D ``scale`` / ``zero_point`` along ``axis``), as float32."""
    q = np.asarray(q)
    scale = np.asarray(scale, np.float64)
    zp = np.asarray(zero_point, np.float64)
    if axis is not None and scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q.astype(np.float64) - zp) * scale).astype(np.float32)


def _quantized_numpy(t) -> np.ndarray:
    torch = _import_torch()
    qs = t.qscheme()
    q = t.int_repr().cpu().numpy()
    if qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return dequantize(q, t.q_scale(), t.q_zero_point())
    if qs in (torch.per_channel_affine, torch.per_channel_symmetric,
              torch.per_channel_affine_float_qparams):
        return dequantize(q, t.q_per_channel_scales().numpy(),
                          t.q_per_channel_zero_points().numpy(), t.q_per_channel_axis())
    return t.dequantize().to(torch.float32).cpu().numpy()


def _packed_conv(sub):
    """``(weight, groups)`` of a quantized conv module (its ``_packed_params`` torchbind
    object, ``Conv{2,3}dPackedParamsBase``), else None."""
    torch = _import_torch()
    try:
        pp = sub._packed_params
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(pp, torch.ScriptObject):
        return None
    try:
        qname = pp._type().qualified_name()
    except (AttributeError, RuntimeError):
        return None
    if "Conv" not in qname or "PackedParams" not in qname or not pp._has_method("unpack"):
        return None
    w = pp.unpack()[0]
    groups = None
    if pp._has_method("groups"):
        try:
            groups = int(pp.groups())
        except (RuntimeError, TypeError, ValueError):
            groups = None
    return w, groups


def read_torchscript(p: str, fmt: str) -> Model:
    torch = _import_torch()
    try:
        with warnings_.catch_warnings():
            warnings_.simplefilter("ignore", DeprecationWarning)  # jit.load is deprecated
            m = torch.jit.load(p, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReadError(p, f"corrupt or unsupported TorchScript archive ({first})") from None
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    ops: Counter = Counter()
    attr_groups: dict[str, int | None] = {}
    n_quantized = 0
    for name, sub in m.named_modules():
        orig = getattr(sub, "original_name", type(sub).__name__)
        params = dict(sub.named_parameters(recurse=False))
        w = params.get("weight")
        packed_groups = None
        if w is None:
            packed = _packed_conv(sub)  # torch.ao quantized convs keep no weight parameter
            if packed is not None:
                w, packed_groups = packed
        if w is None or not (w.is_floating_point() or w.is_quantized) or w.ndim not in (3, 4, 5):
            if w is not None and w.ndim == 2:
                ops[orig] += 1
            continue
        ops[orig] += 1
        op, reason = _module_kind(orig, w.ndim)
        if reason:
            skipped.append(Skipped(name, op, f"{reason} (shape {tuple(w.shape)})"))
            continue
        try:
            groups = int(sub.groups)
        except (AttributeError, RuntimeError, TypeError, ValueError):
            groups = packed_groups
        attr_groups[name] = groups
        n_quantized += bool(w.is_quantized)
        layers.append(ConvLayer(name, op, _quantized_numpy(w) if w.is_quantized
                                else _to_numpy(w), groups=groups or 1))
    warnings = []
    if n_quantized:
        warnings.append(f"{n_quantized} quantized conv layer(s): weights dequantized, "
                        "(q - zero_point) * scale")
    depth_source = DEPTH_ORDER
    try:
        depths, call_groups, called = _graph_depths(m)
    except Exception as e:  # TorchScript graphs vary; fall back to order
        depths, call_groups, called = {}, {}, []
        if layers:
            warnings.append(f"TorchScript graph not walkable ({type(e).__name__}); "
                            "conv depth follows the module order")
    seen = {l.name for l in layers} | {s.name for s in skipped}
    unread = [c for c in called if c is None or c not in seen]
    if unread:  # never a silent "no conv layers" for convs the forward graph does run
        shown = ", ".join(sorted({c or "(computed weight)" for c in unread})[:5])
        warnings.append(f"{len(unread)} 2-D conv call(s) in the forward graph whose weights "
                        f"were not read: {shown}")
    if layers:
        unknown = []
        for l in layers:
            if attr_groups.get(l.name) is None:
                if l.name in call_groups:
                    l.groups = call_groups[l.name]
                else:
                    unknown.append(l.name)
        if unknown:
            warnings.append(f"groups unknown for {len(unknown)} conv layer(s) (no groups "
                            "attribute, no constant in the graph): recorded as 1")
        if depths and all(depths.get(l.name) is not None for l in layers):
            for l in layers:
                l.graph_depth = depths[l.name]
            assign_conv_depths(layers)
            depth_source = DEPTH_GRAPH
        else:
            if depths:
                warnings.append("not every conv module is called in the forward graph; "
                                "conv depth follows the module order")
            assign_order_depths(layers)
    return Model(path=p, format=fmt, sha256=file_sha256(p), layers=layers, skipped=skipped,
                 depth_source=depth_source, producer="torchscript",
                 producer_version=None, op_counts=dict(ops), warnings=warnings)


def read(path, fmt: str = "torch") -> Model:
    p = check_file(path)
    if zipfile.is_zipfile(p):  # zip bombs, hostile member names: refused before torch reads
        with open_zip(p, "TorchScript archive" if fmt == "torchscript" else "PyTorch archive") \
                as z:
            if fmt == "torchscript":  # code that torch.jit.load would run on other files
                check_torchscript_code(p, z)
    if fmt == "torchscript":
        return read_torchscript(p, fmt)
    return read_state_dict(p, fmt)
