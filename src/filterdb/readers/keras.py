"""Keras models: HDF5 files of Keras 2 (format ``keras_h5``: full models and weight-only files)
and Keras 3 ``.keras`` zip archives (format ``keras``: ``config.json`` + ``model.weights.h5``).
Read with h5py; Keras itself is not needed.

HDF5: the weights come from the ``model_weights`` group of a full model (never
``optimizer_weights``, which holds the optimizer's copies of every kernel) or from the root of
a weights-only file. Layer order is the ``layer_names`` attribute, each layer's weights its
``weight_names`` attribute. A file without ``layer_names`` is not a Keras weights file and is
refused (:class:`ReadError` "no Keras weights found"); a Keras file whose layers hold no 2-D
conv is read as a model with no layers (and the usual warning).

.keras (and Keras 3 ``.weights.h5``): a model's layers are the groups
``layers/<snake_case(class)>[_<k>]`` of the weights file, numbered per class in layer order
(``conv2d``, ``conv2d_1``, ...; nested models: ``layers/functional/layers/...``), each with its
variables in ``vars/0, 1, ...`` in the class's creation order, and (newer Keras) the layer's
name in the ``vars`` group's ``name`` attribute. Operations in a functional config
(``x + 3.0``: ``module: keras.src.ops...``) are not layers: no group, no number. Groups the
config does not name (sub-layers of custom layers) are read too, their classes from their
group names. A weights file of a subclassed model (``model.save_weights`` of a
``keras.Model`` subclass) has its layers under their attribute names (``block1/layers/conv2d``,
``fuse``) beside the root's own ``vars``: every weight group but the optimizer's is read.

Layouts (Keras is channels-last) -> ``(c_out, c_in / groups, kh, kw)``:

- ``Conv2D`` kernel ``[kh, kw, c_in / groups, c_out]`` -> transpose; ``groups`` from the config.
- ``DepthwiseConv2D`` kernel ``[kh, kw, c_in, mult]`` -> ``(c_in * mult, 1, kh, kw)`` with
  output channel ``i * mult + m``, ``groups = c_in``.
- ``SeparableConv2D``: its depthwise part as above (layer ``<name>/depthwise``) and its
  pointwise kernel ``[1, 1, c_in * mult, c_out]`` as a separate 1x1 conv (``<name>/pointwise``).
- ``Conv2DTranspose``, ``Conv1D``, ``Conv3D`` (and their variants) are skipped with the reason.

Depth: the longest path in the functional graph of the model config (``inbound_nodes``; the
two parts of a separable conv are two consecutive nodes); a ``Sequential`` config is a chain;
nested models are inlined (their layers ``<model>/<layer>``); the convs of a custom layer
(``<layer>/<attribute>``) sit at its node. Without a config (weights-only file) the layer
order is used (``depth_source = "order"``), layer classes come from the weight or group names
(``kernel`` / ``depthwise_kernel`` / ``pointwise_kernel``, ``conv2d_3``,
``depthwise_conv2d``, ...) and the kernel rank, and ``groups`` is 1.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter

import numpy as np

from ..errors import ReadError
from ._hdf5 import open_checked
from ._zip import open_zip, read_member
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


def _output_names(obj) -> list[str]:
    """Layer names in a config's ``output_layers`` (``[name, node, tensor]`` triples, nested)."""
    if isinstance(obj, list):
        if len(obj) >= 2 and isinstance(obj[0], str) and isinstance(obj[1], int):
            return [obj[0]]
        return [n for v in obj for n in _output_names(v)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _output_names(v)]
    return []


def _is_model(lc: dict) -> bool:
    return lc.get("class_name") in _MODEL_CLASSES and bool(_config_layers(lc)[1])


def flat_configs(cfgs: list[dict], prefix: str = ""):
    """``(qualified name, layer config)`` of every layer, nested models' layers as
    ``<model>/<layer>`` (the models themselves are not yielded)."""
    for lc in cfgs:
        if _is_model(lc):
            yield from flat_configs(_config_layers(lc)[1], prefix + _layer_name(lc) + "/")
        else:
            yield prefix + _layer_name(lc), lc


def _graph_nodes(model_cls, layer_cfgs, prefix, node_in, node_out, alias, output_layers=None):
    """Append the nodes of one (possibly nested) model; returns its input and output names.

    A nested model is inlined, as in an exported graph: its inputs are aliases of what feeds
    it and its name an alias of its outputs (``alias``), its layers nodes ``<model>/<layer>``.
    A separable conv ``s`` is two nodes, ``s/depthwise`` then ``s``.
    """
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
    for n, lc, inb in zip(names, layer_cfgs, inbound):
        if n in inputs_ and lc.get("class_name") == "InputLayer":
            continue
        inb = [prefix + x for x in inb]
        if _is_model(lc):
            sub_cls, sub = _config_layers(lc)
            sub_in, sub_out = _graph_nodes(sub_cls, sub, f"{prefix}{n}/", node_in, node_out,
                                           alias, (lc.get("config") or {}).get("output_layers"))
            for x in sub_in:
                alias[x] = inb
            alias[prefix + n] = sub_out
            continue
        if lc.get("class_name") in _SEPARABLE:
            node_in.append(inb)
            node_out.append([prefix + n + "/depthwise"])
            inb = [prefix + n + "/depthwise"]
        node_in.append(inb)
        node_out.append([prefix + n])
    outs = [prefix + o for o in _output_names(output_layers)] or [prefix + names[-1]]
    return {prefix + x for x in inputs_}, outs


def _resolve(names: list[str], alias: dict, depth: int = 0) -> list[str]:
    if depth > 50:
        raise ValueError("nested models refer to each other in a cycle")
    out = []
    for x in names:
        out += _resolve(alias[x], alias, depth + 1) if x in alias else [x]
    return out


def graph_depths(model_cls: str | None, layer_cfgs: list[dict]) -> dict[str, int | None] | None:
    """``{node name: graph depth}`` from a model config, or None when it has no graph.
    Nested models are inlined: their layers are nodes ``<model>/<layer>``."""
    if not layer_cfgs:
        return None
    node_in: list[list[str]] = []
    node_out: list[list[str]] = []
    alias: dict[str, list[str]] = {}
    inputs_, _ = _graph_nodes(model_cls, layer_cfgs, "", node_in, node_out, alias)
    node_in = [_resolve(ins, alias) for ins in node_in]
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
           warnings: list[str], sha256: str | None = None) -> Model:
    """entries: (layer name, class or None, {kind: _Var}) in layer order; ``sha256`` given
    for a live model (:mod:`filterdb.readers.live`), else the file's."""
    model_cls, cfgs = _config_layers(config)
    by_name = dict(flat_configs(cfgs))
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    node_of: dict[str, str] = {}  # conv layer name -> graph node name
    guessed: Counter = Counter()
    for lname, cls, kinds in entries:
        lc = by_name.get(lname, {})
        guess = _guess_class(kinds)  # decisive for Keras 2 depthwise / separable weights
        cls = (cls or lc.get("class_name") or (guess if "depthwise_kernel" in kinds else None)
               or _group_class(lname) or guess)
        guessed[cls] += 1
        conv, skip = layer_parts(lname, cls, kinds, lc.get("config") or {})
        for c in conv:
            node_of[c.name] = lname + "/depthwise" if c.name.endswith("/depthwise") else lname
        layers += conv
        skipped += skip
    op_counts = (dict(Counter(lc.get("class_name", "?") for _, lc in flat_configs(cfgs)))
                 if cfgs else dict(guessed))
    depth_source = DEPTH_ORDER
    depths = None
    try:
        depths = graph_depths(model_cls, cfgs)
    except ValueError as e:
        warnings.append(f"model config graph unusable ({e}); conv depth follows the layer order")
    if depths:  # a custom layer's sub-layer ``owner/attr`` sits at its owner's node
        for c, node in node_of.items():
            while node not in depths and "/" in node:
                node = node.rsplit("/", 1)[0]
            node_of[c] = node
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
    return Model(path=path, format=fmt, sha256=sha256 or file_sha256(path), layers=layers,
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
            for prefix, kinds in subs.items():  # class from the config, else from the names
                sub = prefix[len(lname) + 1:] if prefix.startswith(lname + "/") else prefix
                entries.append((f"{lname}/{sub}", None, kinds))
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
    import h5py  # lazy: start-up time (h5py only for HDF5 Keras files)

    f = open_checked(p, p, "HDF5 file")  # refuses external storage/links, VDS, plugins
    with f:
        root = f.get("model_weights", f)
        # Keras 3 saving_lib writes the saved object's own variables at the root's "vars"
        # (its layers at "layers/...", or, for a subclassed model, at its attribute names)
        if "layer_names" not in root.attrs and isinstance(f.get("vars"), h5py.Group):
            try:
                return _read_keras3_weights(p, fmt, f)
            except OSError as e:
                raise ReadError(p, f"corrupt or truncated HDF5 file ({e})") from None
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


# ---- Keras 3 .keras and .weights.h5 ---------------------------------------------------------

# variable order of each class in a Keras 3 weights file
_VAR_KINDS = {c: ("kernel", "bias") for c in _CONV2D | set(_SKIP)}
_VAR_KINDS.update({c: ("depthwise_kernel", "bias") for c in _DEPTHWISE})
_VAR_KINDS.update({c: ("depthwise_kernel", "pointwise_kernel", "bias") for c in _SEPARABLE})


def snake_case(class_name: str) -> str:
    """The automatic name Keras 3 gives a class: ``DepthwiseConv2D`` -> ``depthwise_conv2d``."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# layer class from a weights-file group name without its counter (``conv2d_3`` -> Conv2D)
_CLASS_OF_GROUP = {snake_case(c): c for c in sorted(_CONV2D | _DEPTHWISE | _SEPARABLE | set(_SKIP))}


def _group_class(path: str) -> str | None:
    base = re.sub(r"_\d+$", "", path.rsplit("/", 1)[-1])
    return _CLASS_OF_GROUP.get(base)


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _vars_groups(f) -> dict:
    """``{layer group path: its vars group}`` of every layer in a Keras 3 weights file."""
    import h5py  # lazy: start-up time (h5py only for HDF5 Keras files)

    out = {}

    def visit(name, obj):
        if name.endswith("/vars") and isinstance(obj, h5py.Group):
            out[name[:-len("/vars")]] = obj

    f.visititems(visit)
    return out


def _ordered_vars(vars_group) -> list:
    return [vars_group[k] for k in sorted((k for k in vars_group if k.isdigit()), key=int)]


def is_operation(lc: dict) -> bool:
    """A Keras 3 functional config entry that is an operation, not a layer (``x + 3.0``,
    ``x * y`` on symbolic tensors: ``module: keras.src.ops.numpy``). Operations are not in
    ``model.layers``, so they have no weights group and take no number in the per-class
    group names (``add``, ``add_1``, ... count only ``Add`` layers)."""
    module = str(lc.get("module") or "")
    return module.startswith(("keras.src.ops", "keras.ops"))


def _flat_layers(groups: dict, cfgs: list[dict], prefix: str = "layers/", qual: str = ""):
    """(weights-file group path, qualified name, layer config) of every layer, nested models
    flattened (their layers named ``<model>/<layer>``, as in :func:`flat_configs`).

    Keras 3 stores a model's layers, in layer order, at ``<prefix><snake_case(class)>``, then
    ``..._1``, ``..._2`` for the next layers of the same class; newer versions also name the
    layer in its ``vars`` group's ``name`` attribute, which is used when present.
    """
    named = {}
    for path, vg in groups.items():
        rest = path[len(prefix):]
        if path.startswith(prefix) and rest and "/" not in rest and "name" in vg.attrs:
            named[_decode(vg.attrs["name"])] = path
    used: Counter = Counter()
    for lc in cfgs:
        name = _layer_name(lc)
        if is_operation(lc):  # not a layer: no weights, no place in the layer numbering
            continue
        base = snake_case(lc.get("class_name", ""))
        k = used[base]
        used[base] += 1
        path = named.get(name)
        if path is None:
            path = prefix + (base if k == 0 else f"{base}_{k}")
            other = groups[path].attrs.get("name") if path in groups else None
            if other is not None and _decode(other) != name:
                continue  # that group is another layer's (by its name): this one has none
        if _is_model(lc):
            yield from _flat_layers(groups, _config_layers(lc)[1], f"{path}/layers/",
                                    f"{qual}{name}/")
        else:
            yield path, qual + name, lc


def _entry(name: str, cls: str, vars_group, warnings: list[str]):
    """(layer name, class, {kind: _Var}) of one Keras 3 layer from its numbered variables."""
    ordered = _ordered_vars(vars_group)
    kinds_order = _VAR_KINDS.get(cls)
    if kinds_order is not None:
        return name, cls, {k: _Var(ds) for k, ds in zip(kinds_order, ordered)}
    if cls in _SKIP or not ordered or ordered[0].ndim < 2:
        return name, cls, {}
    kinds = {"kernel": _Var(ordered[0])}
    guess = _guess_class(kinds)
    if guess == "Conv2D":
        warnings.append(f"layer {name!r} of unknown class {cls!r} read as a Conv2D")
    return name, guess, kinds


def _keras3_entries(f, cfgs: list[dict], warnings: list[str]) -> list:
    """Entries of the config's layers, then of any weight group the config does not name
    (sub-layers of custom layers, weights-only files), nothing dropped. A custom layer's
    sub-layer is named ``<owner>/<attribute>`` (:func:`_build` puts it at its owner's node)."""
    groups = _vars_groups(f)
    entries, owner = [], {}
    for path, name, lc in _flat_layers(groups, cfgs):
        vg = groups.get(path)
        if vg is None:
            continue
        if path in owner:  # never two layers from one group, never one dropped silently
            warnings.append(f"config layers {owner[path]!r} and {name!r} map to one weight "
                            f"group {path!r}; read once, as {owner[path]!r}")
            continue
        owner[path] = name
        entries.append((path, _entry(name, lc.get("class_name", "?"), vg, warnings)))
    # the model's layers only (``optimizer/vars`` holds the optimizer's copies of kernels):
    # under ``layers/``, or (a subclassed model) under its attribute names
    rest = [p for p in sorted(groups, key=_natural_key)
            if p not in owner and p != "optimizer" and not p.startswith("optimizer/")
            and any(ds.ndim >= 3 for ds in _ordered_vars(groups[p]))]
    if rest and cfgs:
        warnings.append(f"{len(rest)} weight group(s) not named by the model config (e.g. "
                        f"{rest[0]!r}) read with classes from their names")
    after: dict = {}  # owner path (None: no owner) -> its sub-layers' entries
    for p in rest:
        up = next((q for q in sorted(owner, key=len, reverse=True) if p.startswith(q + "/")), None)
        name = owner[up] + p[len(up):] if up else p.removeprefix("layers/")
        auto = _decode(groups[p].attrs.get("name", ""))  # e.g. "depthwise_conv2d_1"
        cls = _group_class(p) or _group_class(str(auto)) or "?"
        after.setdefault(up, []).append(_entry(name, cls, groups[p], warnings))
    out = []
    for path, e in entries:  # each owner's sub-layers right after it
        out += [e] + after.get(path, [])
    return out + after.get(None, [])


def read_keras(p: str, fmt: str, source=None, sha256: str | None = None) -> Model:
    """A ``.keras`` archive: the file ``p``, or ``source`` (a file object, named ``p``: a live
    model written in memory by :mod:`filterdb.readers.live`)."""
    try:  # sizes, names and the zip-bomb ratio checked before anything is decompressed
        with open_zip(p, ".keras archive", source=source) as z:
            names = z.namelist()
            config = json.loads(read_member(z, "config.json", p, ".keras archive"))
            meta = (json.loads(read_member(z, "metadata.json", p, ".keras archive"))
                    if "metadata.json" in names else {})
            wname = next((n for n in names if n.endswith("model.weights.h5")), None)
            if wname is None:
                raise ReadError(p, "no model.weights.h5 in the .keras archive")
            data = read_member(z, wname, p, ".keras archive")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise ReadError(p, f"corrupt or truncated .keras archive ({type(e).__name__}: {e})") \
            from None
    f = open_checked(io.BytesIO(data), p, f"{wname} in the .keras archive")
    _, cfgs = _config_layers(config)
    warnings: list[str] = []
    with f:
        entries = _keras3_entries(f, cfgs, warnings)
        version = meta.get("keras_version") or config.get("keras_version")
        return _build(p, fmt, entries, config, version, meta.get("backend"), warnings, sha256)


def _read_keras3_weights(p: str, fmt: str, f) -> Model:
    """A Keras 3 weights-only file (``model.save_weights('x.weights.h5')``): no config, and
    HDF5 keeps no creation order, so the layer order (and the order-based conv depth) follows
    the group names."""
    warnings = ["Keras 3 weights-only file: no model config, so layer classes come from the "
                "group names and conv depth from their order"]
    return _build(p, fmt, _keras3_entries(f, [], warnings), None, "3", None, warnings)


def read(path, fmt: str = "keras_h5") -> Model:
    p = check_file(path)
    if fmt == "keras":
        return read_keras(p, fmt)
    return read_h5(p, fmt)
