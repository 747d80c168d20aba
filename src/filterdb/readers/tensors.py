"""Graphless formats (state dicts, safetensors, npz): a named tensor list becomes conv layers.

A state dict has no graph, so the kind of a tensor is read from its rank and name:

- a floating 4-D tensor is a 2-D conv weight ``(c_out, c_in / groups, kh, kw)``;
- a floating 3-D / 5-D tensor is a 1-D / 3-D conv weight: skipped, with the reason;
- a floating 2-D tensor is a linear weight: counted as ``Linear`` in ``op_counts``, not skipped.

Which tensors are weights: when any tensor of rank 2 to 5 has a name ending in ``weight``
(PyTorch naming), only those count; otherwise (e.g. ``arr_0`` in an npz) every floating tensor
of rank 2 to 5 does.

Groups cannot be read from a state dict. The heuristic: ``groups = 1``, except a weight of shape
``(c, 1, kh, kw)`` whose previous conv has ``c`` outputs, which is recorded as depthwise
(``groups = c``) and reported in ``Model.warnings`` ("groups inferred ..."). The filters are the
same either way; only the recorded ``groups`` differs.

Depth: the tensors' stored order (:func:`~filterdb.readers.base.assign_order_depths`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .base import DEPTH_ORDER, ConvLayer, Model, Skipped, assign_order_depths

_KIND = {2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}
_SKIP_REASON = {
    3: "3-D weight: a 1-D convolution, not 2-D conv filters",
    5: "5-D weight: a 3-D convolution, not 2-D conv filters",
}


@dataclass
class TensorInfo:
    """One stored tensor: its name, shape, whether it is floating point, and how to load it
    (as a float32 array; called only for the tensors that become conv layers)."""

    name: str
    shape: tuple[int, ...]
    is_float: bool
    load: Callable[[], np.ndarray]


def strip_prefix(name: str, prefixes: Sequence[str] = ("module.",)) -> str:
    """``module.features.0.weight`` -> ``features.0.weight`` (DataParallel / DDP wrappers)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if name.startswith(p) and len(name) > len(p):
                name, changed = name[len(p):], True
    return name


def layer_name(tensor_name: str) -> str:
    """The layer a weight belongs to: ``conv1.weight`` -> ``conv1``."""
    for suffix in (".weight", "/weight", "_weight"):
        if tensor_name.endswith(suffix) and len(tensor_name) > len(suffix):
            return tensor_name[: -len(suffix)]
    return tensor_name


def infer_groups(shapes: Sequence[tuple[int, int, int, int]]) -> tuple[list[int], int]:
    """Groups of a sequence of 4-D conv weight shapes, by the depthwise heuristic of the module
    docstring. Returns the groups and how many were inferred (> 1)."""
    groups, n_inferred, prev_out = [], 0, None
    for c_out, c_in_g, _, _ in shapes:
        g = 1
        if c_in_g == 1 and c_out > 1 and prev_out == c_out:
            g, n_inferred = c_out, n_inferred + 1
        groups.append(g)
        prev_out = c_out
    return groups, n_inferred


def tensors_to_model(infos: Iterable[TensorInfo], *, path: str, fmt: str, sha256: str,
                     producer: str | None = None, producer_version: str | None = None,
                     warnings: Sequence[str] = ()) -> Model:
    """A :class:`Model` from tensors in stored order (see the module docstring for the rules)."""
    infos = [t for t in infos if t.is_float and len(t.shape) in _KIND]
    named = any(t.name.endswith("weight") for t in infos)
    weights = [t for t in infos if t.name.endswith("weight")] if named else infos
    ops: Counter = Counter()
    convs: list[TensorInfo] = []
    skipped: list[Skipped] = []
    for t in weights:
        nd = len(t.shape)
        ops[_KIND[nd]] += 1
        if nd == 4:
            convs.append(t)
        elif nd in _SKIP_REASON:
            skipped.append(Skipped(layer_name(t.name), _KIND[nd],
                                   f"{_SKIP_REASON[nd]} (shape {tuple(t.shape)})"))
    shapes = [tuple(int(s) for s in t.shape) for t in convs]
    groups, n_inferred = infer_groups(shapes)
    layers = [ConvLayer(layer_name(t.name), "Conv2d", t.load(), groups=g)
              for t, g in zip(convs, groups)]
    assign_order_depths(layers)
    warns = list(warnings)
    if n_inferred:
        warns.append(f"groups inferred: {n_inferred} weight(s) of shape (c, 1, kh, kw) after a "
                     "conv with c outputs recorded as depthwise (groups=c); a state dict does "
                     "not store groups")
    return Model(path=path, format=fmt, sha256=sha256, layers=layers, skipped=skipped,
                 depth_source=DEPTH_ORDER, producer=producer, producer_version=producer_version,
                 op_counts=dict(ops), warnings=warns)
