"""Keras models: HDF5 files of Keras 2 (format ``keras_h5``: full models and weight-only files)
and Keras 3 ``.keras`` zip archives (format ``keras``: ``config.json`` + ``model.weights.h5``).
Read with h5py; Keras itself is not needed.

HDF5: the weights come from the ``model_weights`` group of a full model (never
``optimizer_weights``, which holds the optimizer's copies of every kernel) or from the root of
a weights-only file. Layer order is the ``layer_names`` attribute, each layer's weights its
``weight_names`` attribute. A file without ``layer_names`` is not a Keras weights file and is
refused (:class:`ReadError` "no Keras weights found"); a Keras file whose layers hold no 2-D
conv is read as a model with no layers (and the usual warning).

.keras: layer ``<name>``'s variables are ``layers/<name>/vars/0, 1, ...`` in the weights file
(nested models: ``layers/<model>/layers/<name>/vars``), in the layer class's creation order.

Layouts (Keras is channels-last) -> ``(c_out, c_in / groups, kh, kw)``:

- ``Conv2D`` kernel ``[kh, kw, c_in / groups, c_out]`` -> transpose; ``groups`` from the config.
- ``DepthwiseConv2D`` kernel ``[kh, kw, c_in, mult]`` -> ``(c_in * mult, 1, kh, kw)`` with
  output channel ``i * mult + m``, ``groups = c_in``.
- ``SeparableConv2D``: its depthwise part as above (layer ``<name>/depthwise``) and its
  pointwise kernel ``[1, 1, c_in * mult, c_out]`` as a separate 1x1 conv (``<name>/pointwise``).
- ``Conv2DTranspose``, ``Conv1D``, ``Conv3D`` (and their variants) are skipped with the reason.

Depth: the longest path in the functional graph of the model config (``inbound_nodes``; the
two parts of a separable conv are two consecutive nodes); a ``Sequential`` config is a chain.
Without a config (weights-only file) the layer order is used (``depth_source = "order"``),
layer classes come from the weight names (``kernel`` / ``depthwise_kernel`` /
``pointwise_kernel`` and the kernel rank) and ``groups`` is 1: a ``Conv2DTranspose`` cannot be
told from a ``Conv2D`` there. A nested model (several sub-layers' weights under one layer group)
gives layers named ``<model>/<sub-layer>`` with classes from their weight names.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import Counter

import numpy as np

from ..errors import ReadError
from .base import (DEPTH_GRAPH, DEPTH_ORDER, ConvLayer, Model, Skipped, assign_conv_depths,
                   assign_order_depths, check_file, file_sha256)
from .graph import longest_path_depths

_CONV2D = {"Conv2D", "Convolution2D"}
_DEPTHWISE = {"DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv2D", "SeparableConvolution2D"}
_SKIP = {
    "Conv2DTranspose": "transposed convolution, not 2-D conv filters",
    "Convolution2DTranspose": "transposed convolution, not 2-D conv filters",
    "Deconvolution2D": "transposed convolution, not 2-D conv filters",
    "Conv3DTranspose": "transposed 3-D convolution, not 2-D conv filters",
    "Conv1DTranspose": "transposed 1-D convolution, not 2-D conv filters",
    "Conv1D": "a 1-D convolution, not 2-D conv filters",
    "Convolution1D": "a 1-D convolution, not 2-D conv filters",
    "SeparableConv1D": "a 1-D convolution, not 2-D conv filters",
    "DepthwiseConv1D": "a 1-D convolution, not 2-D conv filters",
    "Conv3D": "a 3-D convolution, not 2-D conv filters",
    "Convolution3D": "a 3-D convolution, not 2-D conv filters",
    "ConvLSTM2D": "a convolutional LSTM (recurrent gates), not plain 2-D conv filters",
}
_MODEL_CLASSES = {"Model", "Functional", "Sequential"}


# ---- layouts (pure) ------------------------------------------------------------------------


def conv2d_kernel(k: np.ndarray) -> np.ndarray:
    """Keras ``[kh, kw, c_in / groups, c_out]`` -> ``(c_out, c_in / groups, kh, kw)``."""
    return np.transpose(k, (3, 2, 0, 1))


def depthwise_kernel(k: np.ndarray) -> np.ndarray:
    """Keras ``[kh, kw, c_in, mult]`` -> ``(c_in * mult, 1, kh, kw)``, channel ``i * mult + m``."""
    kh, kw, c_in, mult = k.shape
    return np.transpose(k, (2, 3, 0, 1)).reshape(c_in * mult, 1, kh, kw)


# ---- config --------------------------------------------------------------------------------


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return [_decode(x) for x in v.tolist()]
    return v


def _config_layers(config: dict | None) -> tuple[str | None, list[dict]]:
    """(model class name, layer configs) of a model config (Keras 2 or 3)."""
    if not isinstance(config, dict):
        return None, []
    cls = config.get("class_name")
    inner = config.get("config")
    if isinstance(inner, list):  # Keras <= 2.2 Sequential: the config is the layer list
        return cls, inner
    if isinstance(inner, dict):
        return cls, list(inner.get("layers") or [])
    return cls, []


def _layer_name(lc: dict) -> str:
    return lc.get("name") or (lc.get("config") or {}).get("name") or ""


def _history_names(obj, out: list) -> None:
    """Inbound layer names in Keras 3 ``inbound_nodes`` (``keras_history`` entries)."""
    if isinstance(obj, dict):
        cfg = obj.get("config")
        if isinstance(cfg, dict) and "keras_history" in cfg:
            out.append(cfg["keras_history"][0])
        elif "keras_history" in obj:
            out.append(obj["keras_history"][0])
        else:
            for v in obj.values():
                _history_names(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _history_names(v, out)


def _inbound(lc: dict) -> list[str]:
    """Names of the layers feeding a layer (Keras 2 nested lists or Keras 3 dicts)."""
    names: list[str] = []
    for node in lc.get("inbound_nodes") or []:
        if isinstance(node, dict):  # Keras 3
            _history_names(node, names)
        elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            if node and isinstance(node[0], str):
                node = [node]
            for inb in node:
                if isinstance(inb, list) and inb and isinstance(inb[0], str):
                    names.append(inb[0])
    return names


def graph_depths(model_cls: str | None, layer_cfgs: list[dict]) -> dict[str, int | None] | None:
    """``{node name: graph depth}`` from a model config, or None when it has no graph.
    A separable conv ``s`` is two nodes, ``s/depthwise`` then ``s``."""
    if not layer_cfgs:
        return None
    names = [_layer_name(lc) for lc in layer_cfgs]
    inputs_ = {n for n, lc in zip(names, layer_cfgs) if lc.get("class_name") == "InputLayer"}
    inbound = [_inbound(lc) for lc in layer_cfgs]
    if model_cls == "Sequential" or not any(inbound):
        # a chain; a virtual input feeds the first layer
        inbound, prev = [], "__input__"
        for n in names:
            inbound.append([prev])
            prev = n
        inputs_ = inputs_ | {"__input__"}
    node_in, node_out = [], []
    for n, lc, inb in zip(names, layer_cfgs, inbound):
        if n in inputs_ and lc.get("class_name") == "InputLayer":
            continue
        if lc.get("class_name") in _SEPARABLE:
            node_in.append(inb)
            node_out.append([n + "/depthwise"])
            inb = [n + "/depthwise"]
        node_in.append(inb)
        node_out.append([n])
    depths = longest_path_depths(node_in, node_out, inputs_)
    return {outs[0]: d for outs, d in zip(node_out, depths)}


# ---- layers --------------------------------------------------------------------------------


def _guess_class(kinds: dict[str, np.ndarray]) -> str:
    """Layer class from its weight names when there is no config."""
    if "depthwise_kernel" in kinds:
        return "SeparableConv2D" if "pointwise_kernel" in kinds else "DepthwiseConv2D"
    k = kinds.get("kernel")
    if k is None:
        return "Other"
    return {2: "Dense", 3: "Conv1D", 4: "Conv2D", 5: "Conv3D"}.get(k.ndim, "Other")


def layer_parts(name: str, cls: str, kinds: dict, cfg: dict) -> tuple[list[ConvLayer], list[Skipped]]:
    """The conv layers (or the skip) of one Keras layer from its named weights."""
    if cls in _SKIP:
        return [], [Skipped(name, cls, _SKIP[cls])]
    if cls in _CONV2D and "kernel" in kinds and kinds["kernel"].ndim == 4:
        groups = int(cfg.get("groups", 1) or 1)
        return [ConvLayer(name, cls, conv2d_kernel(kinds["kernel"]()), groups=groups)], []
    if cls in _DEPTHWISE:
        k = kinds.get("depthwise_kernel", kinds.get("kernel"))
        if k is not None and k.ndim == 4:
            return [ConvLayer(name, cls, depthwise_kernel(k()), groups=int(k.shape[2]))], []
    if cls in _SEPARABLE and "depthwise_kernel" in kinds and "pointwise_kernel" in kinds:
        dk, pk = kinds["depthwise_kernel"], kinds["pointwise_kernel"]
        return [ConvLayer(f"{name}/depthwise", cls, depthwise_kernel(dk()),
                          groups=int(dk.shape[2])),
                ConvLayer(f"{name}/pointwise", cls, conv2d_kernel(pk()))], []
    if cls in _CONV2D | _DEPTHWISE | _SEPARABLE:
        return [], [Skipped(name, cls, f"unexpected weights {sorted(kinds)}")]
    return [], []


class _Var:
    """A lazily read HDF5 dataset (shape known, data read on call)."""

    def __init__(self, ds):
        self.ds = ds
        self.shape = tuple(ds.shape)
        self.ndim = len(self.shape)

    def __call__(self) -> np.ndarray:
        a = self.ds[()]
        if a.dtype.kind != "f":
            raise ValueError(f"non-float kernel {self.ds.name} ({a.dtype})")
        return np.asarray(a, dtype=np.float32)


def _weight_kind(weight_name: str) -> str:
    """``conv2d_1_1/kernel:0`` -> ``kernel``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _build(path: str, fmt: str, entries, config: dict | None, producer_version, backend,
           warnings: list[str]) -> Model:
    """entries: (layer name, class or None, {kind: _Var}) in layer order."""
    model_cls, cfgs = _config_layers(config)
    by_name = {_layer_name(lc): lc for lc in cfgs}
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    node_of: dict[str, str] = {}  # conv layer name -> graph node name
    guessed: Counter = Counter()
    for lname, cls, kinds in entries:
        lc = by_name.get(lname, {})
        cls = cls or lc.get("class_name") or _guess_class(kinds)
        guessed[cls] += 1
        conv, skip = layer_parts(lname, cls, kinds, lc.get("config") or {})
        for c in conv:
            node_of[c.name] = lname + "/depthwise" if c.name.endswith("/depthwise") else lname
        layers += conv
        skipped += skip
    op_counts = dict(Counter(lc.get("class_name", "?") for lc in cfgs)) if cfgs else dict(guessed)
    depth_source = DEPTH_ORDER
    depths = None
    try:
        depths = graph_depths(model_cls, cfgs)
    except ValueError as e:
        warnings.append(f"model config graph unusable ({e}); conv depth follows the layer order")
    if layers and depths and all(depths.get(node_of[l.name]) is not None for l in layers):
        for l in layers:
            l.graph_depth = depths[node_of[l.name]]
        assign_conv_depths(layers)
        depth_source = DEPTH_GRAPH
    else:
        if layers and depths:
            warnings.append("some conv layers are not in the model config graph; "
                            "conv depth follows the layer order")
        assign_order_depths(layers)
    producer = "keras" if not backend else f"keras ({backend})"
    return Model(path=path, format=fmt, sha256=file_sha256(path), layers=layers,
                 skipped=skipped, depth_source=depth_source, producer=producer,
                 producer_version=producer_version, op_counts=op_counts, warnings=warnings)


# ---- Keras 2 HDF5 --------------------------------------------------------------------------


def _h5_entries(root, path: str) -> list:
    names = _decode(root.attrs["layer_names"])
    entries = []
    for lname in names:
        if lname not in root:
            raise ReadError(path, f"corrupt Keras file: layer group {lname!r} is missing")
        g = root[lname]
        wnames = _decode(g.attrs.get("weight_names", []))
        if isinstance(wnames, str):
            wnames = [wnames]
        # a nested model stores several sub-layers' weights under one layer group
        subs: dict[str, dict] = {}
        for wn in wnames:
            if wn not in g:
                raise ReadError(path, f"corrupt Keras file: weight {lname}/{wn} is missing")
            prefix = wn.rsplit("/", 1)[0] if "/" in wn else ""
            subs.setdefault(prefix, {})[_weight_kind(wn)] = _Var(g[wn])
        if len(subs) <= 1:
            entries.append((lname, None, next(iter(subs.values()), {})))
        else:
            for prefix, kinds in subs.items():
                entries.append((f"{lname}/{prefix}", _guess_class(kinds), kinds))
    return entries


def _json_attr(attrs, key):
    v = attrs.get(key)
    if v is None:
        return None
    try:
        return json.loads(_decode(v))
    except (ValueError, TypeError):
        return None


def read_h5(p: str, fmt: str) -> Model:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ReadError(p, f"corrupt or truncated HDF5 file ({e})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ReadError(p, "no Keras weights found (no 'layer_names' attribute in "
                               f"{'model_weights' if root is not f else 'the root group'})")
        try:
            entries = _h5_entries(root, p)
            config = _json_attr(f.attrs, "model_config")
            version = _decode(f.attrs.get("keras_version") or root.attrs.get("keras_version"))
            backend = _decode(f.attrs.get("backend") or root.attrs.get("backend"))
            return _build(p, fmt, entries, config, version, backend, [])
        except OSError as e:  # a truncated file fails on the first read of a dataset
            raise ReadError(p, f"corrupt or truncated HDF5 file ({e})") from None


# ---- Keras 3 .keras ------------------------------------------------------------------------

# variable order of each class in a Keras 3 weights file
_VAR_KINDS = {c: ("kernel", "bias") for c in _CONV2D | set(_SKIP)}
_VAR_KINDS.update({c: ("depthwise_kernel", "bias") for c in _DEPTHWISE})
_VAR_KINDS.update({c: ("depthwise_kernel", "pointwise_kernel", "bias") for c in _SEPARABLE})


def _flat_layers(cfgs: list[dict], prefix: str = "layers/"):
    """(weights-file group path, layer config) of every layer, nested models flattened."""
    for lc in cfgs:
        name = _layer_name(lc)
        if lc.get("class_name") in _MODEL_CLASSES:
            _, sub = _config_layers(lc)
            yield from _flat_layers(sub, f"{prefix}{name}/layers/")
        else:
            yield f"{prefix}{name}", lc


def read_keras(p: str, fmt: str) -> Model:
    import h5py

    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
            wname = next((n for n in names if n.endswith("model.weights.h5")), None)
            if wname is None:
                raise ReadError(p, "no model.weights.h5 in the .keras archive")
            data = z.read(wname)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise ReadError(p, f"corrupt or truncated .keras archive ({type(e).__name__}: {e})") \
            from None
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except OSError as e:
        raise ReadError(p, f"corrupt model.weights.h5 in the .keras archive ({e})") from None
    model_cls, cfgs = _config_layers(config)
    warnings: list[str] = []
    with f:
        entries = []
        for gpath, lc in _flat_layers(cfgs):
            cls = lc.get("class_name", "?")
            vpath = gpath + "/vars"
            if vpath not in f:
                continue
            vars_ = f[vpath]
            ordered = [vars_[k] for k in sorted(vars_.keys(), key=lambda s: int(s))
                       if k.isdigit()]
            kinds_order = _VAR_KINDS.get(cls)
            if kinds_order is None:
                if cls in _SKIP or not ordered:
                    kinds = {}
                else:
                    kinds = {"kernel": _Var(ordered[0])} if ordered[0].ndim >= 2 else {}
                    cls = _guess_class(kinds) if kinds else cls
                    if cls == "Conv2D":
                        warnings.append(f"layer {_layer_name(lc)!r} of unknown class "
                                        f"{lc.get('class_name')!r} read as a Conv2D")
            else:
                kinds = {k: _Var(ds) for k, ds in zip(kinds_order, ordered)}
            entries.append((_layer_name(lc), cls, kinds))
        version = meta.get("keras_version") or config.get("keras_version")
        return _build(p, fmt, entries, config, version, meta.get("backend"), warnings)


def read(path, fmt: str = "keras_h5") -> Model:
    p = check_file(path)
    if fmt == "keras":
        return read_keras(p, fmt)
    return read_h5(p, fmt)
