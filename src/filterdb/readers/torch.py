"""PyTorch files: pickled state dicts / checkpoints (format ``torch``) and TorchScript
archives (format ``torchscript``). Needs the ``torch`` extra.

State dicts are loaded with ``torch.load(weights_only=True, map_location="cpu")``: a file
whose unpickling needs arbitrary code is refused (:class:`ReadError`), never executed. The
state dict is found in the loaded object: a dict holding tensors, or under one of the usual
checkpoint keys (``state_dict``, ``model_state_dict``, ``model``, ``net``, ``state``, ...,
possibly nested); ``module.`` prefixes (DataParallel) are stripped from the names. Conv-layer
rules (4-D ``*weight`` tensors, the groups heuristic, order-based depth):
:mod:`filterdb.readers.tensors`.

TorchScript: ``torch.jit.load`` (TorchScript code, no pickle code execution) and a walk over
the submodules in module order. A submodule with a 4-D floating ``weight`` parameter is a 2-D
conv, with its ``groups`` attribute when it has one; ``ConvTranspose*`` and 3-D / 5-D weights
are skipped. Depth: the longest path in the inlined TorchScript graph of ``forward`` (each conv
call is matched to its module through the ``prim::GetAttr`` chain of its weight) when every
conv layer is found there; otherwise the module order (``depth_source = "order"``).
"""
from __future__ import annotations

import re
import warnings as warnings_
import zipfile
from collections import Counter
from typing import Any, Mapping

import numpy as np

from ..errors import MissingExtraError, ReadError
from .base import (DEPTH_GRAPH, DEPTH_ORDER, ConvLayer, Model, Skipped, assign_conv_depths,
                   assign_order_depths, check_file, file_sha256)
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
        import torch
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


def _torch_load(p: str):
    torch = _import_torch()
    import pickle

    mmap = zipfile.is_zipfile(p)  # mmap works for zip-format files only
    try:
        return torch.load(p, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
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


def _graph_depths(module) -> dict[str, int | None]:
    """``{module path: graph depth}`` of every conv call in the inlined ``forward`` graph,
    keyed by the attribute path of the call's weight (``a.b.conv1``)."""
    graph = module.inlined_graph
    g_inputs = list(graph.inputs())
    self_val = g_inputs[0] if g_inputs else None
    real_inputs = {v.debugName() for v in g_inputs[1:]}
    # attribute path of every prim::GetAttr output, from self
    attr_path: dict[str, str] = {}
    node_ins: list[list[str]] = []
    node_outs: list[list[str]] = []
    convs: list[tuple[int, str]] = []

    def walk(block, owner_inputs):
        for n in block.nodes():
            kind = n.kind()
            ins = [v.debugName() for v in n.inputs()]
            outs = [v.debugName() for v in n.outputs()]
            if kind == "prim::GetAttr":
                src = n.input()
                base = "" if self_val is not None and src.unique() == self_val.unique() \
                    else attr_path.get(src.debugName())
                if base is not None:
                    attr_path[outs[0]] = f"{base}.{n.s('name')}" if base else n.s("name")
                ins = []  # module attributes are constants, not data
            extra = []
            for b in n.blocks():
                # block parameters come from the owner's inputs; the owner consumes the
                # block's returns
                node_ins.append(ins)
                node_outs.append([v.debugName() for v in b.paramNode().outputs()])
                walk(b, ins)
                extra += [v.debugName() for v in b.returnNode().inputs()]
            idx = len(node_ins)
            node_ins.append(ins + extra)
            node_outs.append(outs)
            if kind in ("aten::conv2d", "aten::_convolution", "aten::convolution",
                        "aten::conv_transpose2d", "aten::conv1d", "aten::conv3d"):
                w = n.inputsAt(1).debugName()
                if w in attr_path:
                    convs.append((idx, attr_path[w]))

    walk(graph.block() if hasattr(graph, "block") else graph, [])
    depths = longest_path_depths(node_ins, node_outs, real_inputs)
    out: dict[str, int | None] = {}
    for idx, path in convs:
        mod_path = path.rsplit(".", 1)[0] if "." in path else ""
        d = depths[idx]  # a module called more than once: its first (shallowest) call
        if out.get(mod_path) is None or (d is not None and d < out[mod_path]):
            out[mod_path] = d
    return out


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
    for name, sub in m.named_modules():
        orig = getattr(sub, "original_name", type(sub).__name__)
        params = dict(sub.named_parameters(recurse=False))
        w = params.get("weight")
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
            groups = int(getattr(sub, "groups"))
        except (AttributeError, RuntimeError, TypeError, ValueError):
            groups = 1
        layers.append(ConvLayer(name, op, _to_numpy(w), groups=groups))
    warnings = []
    depth_source = DEPTH_ORDER
    if layers:
        try:
            depths = _graph_depths(m)
        except Exception as e:  # noqa: BLE001 - TorchScript graphs vary; fall back to order
            depths = {}
            warnings.append(f"TorchScript graph not walkable ({type(e).__name__}); "
                            "conv depth follows the module order")
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
    if fmt == "torchscript":
        return read_torchscript(p, fmt)
    return read_state_dict(p, fmt)
