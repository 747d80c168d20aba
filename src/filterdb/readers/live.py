"""Live objects into the one reader interface: a torch ``nn.Module``, a state dict, a Keras 3
model or an ``onnx.ModelProto`` becomes a :class:`~filterdb.readers.base.Model`
(:func:`to_model`), with the rules of the file readers.

- ``nn.Module``: every submodule whose ``weight`` is a floating 4-D tensor is a 2-D conv
  (``groups`` from the module, so grouped and depthwise convs are exact); transposed convs and
  3-D / 5-D weights are skipped with the reason. Layer names are the module paths
  (``layer1.0.conv1``), as in ``named_modules()``. Depth: the longest path in the
  ``torch.fx.symbolic_trace`` graph of ``forward`` (a conv module's call, or the node reading
  its ``weight``; ``depth_source = "graph"``); when the module cannot be traced (data-dependent
  control flow) or a conv is not called, the module order (``"order"``, with a warning).
  A ``torch.jit.ScriptModule`` uses the TorchScript graph walk of :mod:`.torch`.
- A state dict (a mapping of torch tensors or numpy arrays, or a checkpoint dict holding one):
  the rules of :mod:`.tensors` (order-based depth, inferred depthwise groups).
- A Keras 3 model: written in memory as the ``.keras`` archive Keras itself would save, and
  read by :mod:`.keras` (so the numbers are those of the saved file by construction).
- ``onnx.ModelProto``: read by :mod:`.onnx`; a proto whose tensors still point at external
  data files is refused (nothing outside the object is read).

Torch and Keras are imported only when such an object is passed (the type is recognised by
the module names of its classes first). A live model has no file: ``path`` is the ``name``
given, else the class name, and ``sha256`` hashes the conv layers' names, shapes and weights.
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FilterDBError, ReadError
from .base import (
    DEPTH_GRAPH,
    DEPTH_ORDER,
    ConvLayer,
    Model,
    Skipped,
    assign_conv_depths,
    assign_order_depths,
)
from .tensors import TensorInfo, strip_prefix, tensors_to_model

LIBRARIES = ("torch", "keras", "onnx", "numpy")


def library_of(obj) -> str | None:
    """The library an object's class (or a base class) comes from: ``torch``, ``keras``,
    ``onnx``, or None; from module names only, nothing imported."""
    for cls in type(obj).__mro__:
        top = (cls.__module__ or "").split(".", 1)[0]
        if top in ("torch", "keras", "onnx"):
            return top
    return None


def is_live(obj) -> bool:
    """True for the objects :func:`to_model` takes (not paths)."""
    if isinstance(obj, Model):
        return True
    if isinstance(obj, Mapping):
        return True
    return library_of(obj) is not None


def weights_sha256(layers) -> str:
    """sha256 over each conv layer's name, shape and float32 weights (a live model's id)."""
    h = hashlib.sha256()
    for l in layers:
        h.update(l.name.encode() + b"\0" + str(l.shape).encode() + b"\0")
        h.update(memoryview(np.ascontiguousarray(l.weight).view(np.uint8).reshape(-1)))
    return h.hexdigest()


def to_model(obj, name: str | None = None) -> Model:
    """A :class:`Model` from a live object (see the module docstring). ``name`` becomes the
    model's ``path`` (default: the class name). Anything else is a :class:`FilterDBError`."""
    if isinstance(obj, Model):
        return obj
    label = name or type(obj).__name__
    lib = library_of(obj)
    if isinstance(obj, Mapping):
        return from_state_dict(obj, name or "state_dict")
    if lib == "onnx" and hasattr(obj, "graph") and hasattr(obj, "SerializeToString"):
        return from_onnx(obj, name or (obj.graph.name or "ModelProto"))
    if lib == "torch":
        import torch  # lazy: optional heavy dependency, imported only for a torch object

        if isinstance(obj, torch.nn.Module):
            return from_torch_module(obj, label)
    if lib == "keras":
        import keras  # lazy: optional heavy dependency, imported only for a Keras object

        if isinstance(obj, keras.Model):
            return from_keras(obj, label)
        if isinstance(obj, keras.layers.Layer):
            raise FilterDBError(f"{label}: a single Keras layer; wrap it in a keras.Model")
    raise FilterDBError(f"cannot read a {type(obj).__module__}.{type(obj).__name__}: give a "
                        "model file or folder, a torch nn.Module, a state dict, a Keras model "
                        "or an onnx.ModelProto")


# ---- state dicts ----------------------------------------------------------------------------


def _array_items(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            out.append((f"{prefix}{k}", v))
        elif isinstance(v, Mapping):
            out += _array_items(v, f"{prefix}{k}.")
    return out


def from_state_dict(sd: Mapping, label: str = "state_dict") -> Model:
    """A state dict (or checkpoint dict) of torch tensors or numpy arrays."""
    warnings: list[str] = []
    torch_values = any(library_of(v) == "torch" for v in _leaves(sd))
    if torch_values:
        from . import torch as tr  # lazy: torch is imported here only: a torch object was passed

        items, key = tr.find_state_dict(sd)
        if key:
            warnings.append(f"weights taken from the checkpoint entry {key!r}")
        infos = [TensorInfo(strip_prefix(n), tuple(t.shape),
                            t.is_floating_point() or t.is_quantized, (lambda t=t: tr._to_numpy(t)))
                 for n, t in items]
        producer = "pytorch"
    else:
        items = _array_items(sd)
        infos = [TensorInfo(strip_prefix(n), tuple(a.shape), a.dtype.kind == "f",
                            (lambda a=a: np.asarray(a, np.float32)))
                 for n, a in items]
        producer = "numpy"
    if not infos:
        raise FilterDBError(f"{label}: no tensors or arrays in the mapping")
    m = tensors_to_model(infos, path=label, fmt="state_dict", sha256="", producer=producer,
                         warnings=warnings)
    m.sha256 = weights_sha256(m.layers)
    return m


def _leaves(d: Mapping, depth: int = 0):
    for v in d.values():
        if isinstance(v, Mapping) and depth < 5:
            yield from _leaves(v, depth + 1)
        else:
            yield v


# ---- torch modules --------------------------------------------------------------------------


def _fx_depths(module) -> dict[str, int | None]:
    """``{module path: graph depth}`` of the conv calls in the ``torch.fx`` trace of
    ``forward``: a ``call_module`` node, or (functional convs) the node consuming
    ``<path>.weight``. A module called more than once keeps its shallowest call."""
    import torch.fx  # lazy: optional heavy dependency, a torch module was passed

    from .graph import longest_path_depths  # lazy: heavy, imported for such objects only

    gm = torch.fx.symbolic_trace(module)
    inputs_ = {n.name for n in gm.graph.nodes if n.op == "placeholder"}
    nodes = [n for n in gm.graph.nodes if n.op != "placeholder"]  # inputs at depth 0
    ins = [[a.name for a in n.all_input_nodes] for n in nodes]
    outs = [[n.name] for n in nodes]
    depths = longest_path_depths(ins, outs, inputs_)
    out: dict[str, int | None] = {}

    def put(path, d):
        if d is not None and (out.get(path) is None or d < out[path]):
            out[path] = d
        else:
            out.setdefault(path, d)

    for n, d in zip(nodes, depths):
        if n.op == "call_module":
            put(str(n.target), d)
        for a in n.all_input_nodes:
            if a.op == "get_attr" and str(a.target).endswith(".weight"):
                put(str(a.target)[: -len(".weight")], d)
    return out


def from_torch_module(module, label: str) -> Model:
    import torch  # lazy: optional heavy dependency, a torch module was passed

    from . import torch as tr  # lazy: heavy, imported for such objects only

    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    ops: Counter = Counter()
    for path, sub in module.named_modules():
        w = getattr(sub, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor) and hasattr(sub, "groups"):
            try:  # quantized convs (torch.ao.nn.quantized) give their weight by a method
                w = w()
            except Exception:  # not a weight accessor after all
                w = None
        lazy = isinstance(w, torch.nn.parameter.UninitializedParameter)
        if not isinstance(w, torch.Tensor) or lazy:
            if lazy:
                skipped.append(Skipped(path, type(sub).__name__, "lazy module not initialised "
                                       "(run a forward pass first)"))
            continue
        op = type(sub).__name__
        if w.ndim == 2:
            ops[op] += 1
        if w.ndim not in (3, 4, 5) or not (w.is_floating_point() or w.is_quantized):
            continue
        ops[op] += 1
        name = path or op
        if isinstance(sub, torch.nn.modules.conv._ConvTransposeNd) or "Transpose" in op:
            skipped.append(Skipped(name, op, "transposed convolution, not 2-D conv filters "
                                             f"(shape {tuple(w.shape)})"))
            continue
        if w.ndim != 4:
            kind = "1-D" if w.ndim == 3 else "3-D"
            skipped.append(Skipped(name, op, f"{w.ndim}-D weight: a {kind} convolution, not "
                                             f"2-D conv filters (shape {tuple(w.shape)})"))
            continue
        layers.append(ConvLayer(name, op, tr._to_numpy(w), groups=int(getattr(sub, "groups", 1))))
    warnings: list[str] = []
    depth_source = DEPTH_ORDER
    if layers:
        scripted = isinstance(module, torch.jit.ScriptModule)
        try:
            depths = tr._graph_depths(module)[0] if scripted else _fx_depths(module)
        except Exception as e:  # untraceable forward: fall back to the order
            depths = {}
            how = "TorchScript graph not walkable" if scripted else "torch.fx cannot trace it"
            why = str(e).splitlines()[0][:120] if str(e).strip() else ""
            warnings.append(f"{how} ({type(e).__name__}: {why}); "
                            "conv depth follows the module order")
        if depths and all(depths.get(l.name) is not None for l in layers):
            for l in layers:
                l.graph_depth = depths[l.name]
            assign_conv_depths(layers)
            depth_source = DEPTH_GRAPH
        else:
            if depths:
                warnings.append("not every conv module is called in forward; conv depth "
                                "follows the module order")
            assign_order_depths(layers)
    return Model(path=label, format="torch_module", sha256=weights_sha256(layers), layers=layers,
                 skipped=skipped, depth_source=depth_source, producer="pytorch",
                 producer_version=str(torch.__version__), op_counts=dict(ops), warnings=warnings)


# ---- Keras ----------------------------------------------------------------------------------


def _keras_archive(model) -> bytes:
    """The ``.keras`` archive of a model, written by Keras into memory (a temporary
    directory if this Keras cannot write to a file object)."""
    bio = io.BytesIO()
    try:
        from keras.src.saving import (
            saving_lib,  # lazy: optional dependency, a Keras model was passed
        )

        saving_lib.save_model(model, bio)
        return bio.getvalue()
    except (ImportError, AttributeError, TypeError):
        import os  # heavy: imported for such objects only
        import tempfile  # heavy: imported for such objects only

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "model.keras")
            model.save(p)
            with open(p, "rb") as f:
                return f.read()


def from_keras(model, label: str) -> Model:
    from . import keras as kr  # lazy: heavy, imported for such objects only

    data = _keras_archive(model)
    m = kr.read_keras(label, "keras", source=io.BytesIO(data),
                      sha256=hashlib.sha256(data).hexdigest())
    m.format = "keras_model"
    m.sha256 = weights_sha256(m.layers)  # the archive holds a timestamp: hash the weights
    return m


# ---- ONNX -----------------------------------------------------------------------------------


def from_onnx(proto, label: str) -> Model:
    from onnx import external_data_helper as edh  # lazy: heavy, imported for such objects only

    from . import onnx as ox  # lazy: heavy, imported for such objects only

    if not (len(proto.graph.node) or len(proto.graph.input)):
        raise ReadError(label, "not an ONNX model (no graph with nodes or inputs)")
    for t in edh._get_all_tensors(proto):
        if edh.uses_external_data(t):
            raise ReadError(label, f"tensor {t.name!r} points at an external data file; load "
                                   "it with onnx.load(path) (load_external_data=True) first")
    try:
        sha = hashlib.sha256(proto.SerializeToString()).hexdigest()
    except Exception:  # over protobuf's 2 GB limit: hash the weights instead
        sha = ""
    m = ox.read_proto(proto, label, sha, "onnx_proto")
    if not sha:
        m.sha256 = weights_sha256(m.layers)
    return m


__all__ = ["to_model", "is_live", "library_of", "from_torch_module", "from_state_dict",
           "from_keras", "from_onnx", "weights_sha256"]
