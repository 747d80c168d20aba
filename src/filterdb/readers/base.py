"""The one reader interface: a model file becomes a :class:`Model` of :class:`ConvLayer`.

Every reader module exposes ``read(path) -> Model``. Weights are float32 in
PyTorch/ONNX order ``(c_out, c_in / groups, kh, kw)`` (docs/method.md, section 1).
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ReadError

DEPTH_GRAPH = "graph"  # longest path from the real graph inputs
DEPTH_ORDER = "order"  # graphless format: the order of the tensors
DEPTH_CATALOG = "catalog"  # graphless file: the depths of its published graph (zoo catalog)


@dataclass
class ConvLayer:
    """One 2-D convolution: its weight and where it sits in the model."""

    name: str
    op: str
    weight: np.ndarray  # float32 (c_out, c_in / groups, kh, kw)
    groups: int = 1
    graph_depth: int | None = None
    conv_depth: int = 0
    conv_depth_norm: float = 0.0
    full_name: str | None = None  # the stored name when ``name`` is a shortened form of it

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 4:
            raise ValueError(f"conv weight of {self.name} must be 4-D, got shape {w.shape}")
        self.weight = np.ascontiguousarray(w, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.weight.shape)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    @property
    def n_filters(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_filters_3x3(self) -> int:
        return self.n_filters if self.kernel == (3, 3) else 0

    def filters(self) -> np.ndarray:
        """All filters as rows ``(n, kh * kw)`` (row-major flattening of each slice)."""
        return self.weight.reshape(self.n_filters, -1)

    def has_nonfinite(self) -> bool:
        return not bool(np.isfinite(self.weight).all())

    def __repr__(self) -> str:  # shapes, never the weights
        return (f"ConvLayer({self.name!r}, {self.op}, shape {'x'.join(map(str, self.shape))}, "
                f"groups {self.groups}, conv_depth {self.conv_depth} "
                f"({self.conv_depth_norm:.3f}))")


@dataclass
class Skipped:
    """A layer the reader saw but does not turn into 2-D conv filters, and why."""

    name: str
    op: str
    reason: str
    full_name: str | None = None


@dataclass
class Model:
    """A model file's 2-D convolution layers and its per-model facts."""

    path: str
    format: str
    sha256: str
    layers: list[ConvLayer]
    skipped: list[Skipped] = field(default_factory=list)
    depth_source: str = DEPTH_GRAPH
    producer: str | None = None
    producer_version: str | None = None
    opset: int | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # what the file or folder says about the model, as database metadata columns (e.g. a
    # Hugging Face config's architecture); user-given metadata takes precedence
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = [l.name for l in self.layers if l.has_nonfinite()]
        if bad:
            shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
            self.warnings.append(f"{len(bad)} layer(s) hold NaN or Inf weights: {shown}")
        if not self.layers:
            self.warnings.append("no 2-D convolution layers found")

    @property
    def kernel_counts(self) -> dict[str, int]:
        """Filters per kernel shape, e.g. ``{"3x3": 11904, "1x1": 2048}``, largest first."""
        c: Counter = Counter()
        for l in self.layers:
            c[kernel_key(l.kernel)] += l.n_filters
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def n_filters_3x3(self) -> int:
        return sum(l.n_filters_3x3 for l in self.layers)

    @property
    def total_filters(self) -> int:
        """Filters of every kernel shape but 1x1 (the published ``total_filters``)."""
        return sum(l.n_filters for l in self.layers if l.kernel != (1, 1))

    @property
    def share_3x3(self) -> float:
        t = self.total_filters
        return self.n_filters_3x3 / t if t else 0.0

    @property
    def n_conv_depths(self) -> int:
        return len({l.conv_depth for l in self.layers})

    def __repr__(self) -> str:  # sizes, never the weights
        more = f", {len(self.skipped)} skipped" if self.skipped else ""
        warn = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"Model({self.path!r}, format={self.format!r}, {len(self.layers)} conv layers"
                f"{more}, {self.n_filters_3x3:,} 3x3 filters, depth from {self.depth_source}"
                f"{warn})")

    def layers_3x3(self) -> list[ConvLayer]:
        return [l for l in self.layers if l.kernel == (3, 3)]

    def filters_3x3(self) -> np.ndarray:
        """All 3x3 filters of the model as an ``(N, 9)`` float32 array, in layer order."""
        parts = [l.filters() for l in self.layers_3x3()]
        return np.concatenate(parts) if parts else np.empty((0, 9), np.float32)

    def summary(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "producer": self.producer,
            "producer_version": self.producer_version,
            "opset": self.opset,
            "depth_source": self.depth_source,
            "n_layers": len(self.layers),
            "n_conv_depths": self.n_conv_depths,
            "kernel_counts": self.kernel_counts,
            "total_filters": self.total_filters,
            "filters_3x3": self.n_filters_3x3,
            "3x3_filter_share": self.share_3x3,
            "op_counts": dict(sorted(self.op_counts.items())),
            "warnings": list(self.warnings),
        }

    def to_dict(self) -> dict:
        """The JSON form printed by ``filterdb inspect --json``."""
        d = self.summary()
        d["layers"] = [
            {
                "name": l.name,
                "full_name": l.full_name or l.name,
                "op": l.op,
                "shape": list(l.shape),
                "groups": l.groups,
                "kernel": kernel_key(l.kernel),
                "graph_depth": l.graph_depth,
                "conv_depth": l.conv_depth,
                "conv_depth_norm": l.conv_depth_norm,
                "filters": l.n_filters,
                "filters_3x3": l.n_filters_3x3,
                "nonfinite": l.has_nonfinite(),
            }
            for l in self.layers
        ]
        d["skipped"] = [{"name": s.name, "full_name": s.full_name or s.name, "op": s.op,
                         "reason": s.reason} for s in self.skipped]
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d


def kernel_key(kernel: Sequence[int]) -> str:
    return f"{int(kernel[0])}x{int(kernel[1])}"


def assign_conv_depths(layers: Sequence[ConvLayer]) -> None:
    """Set ``conv_depth`` / ``conv_depth_norm`` from each layer's ``graph_depth``.

    conv_depth is the index of the layer's graph depth among the sorted distinct graph
    depths that hold a conv; parallel convs share it. A single conv depth gives 0.
    """
    depths = sorted({l.graph_depth for l in layers if l.graph_depth is not None})
    index = {d: i for i, d in enumerate(depths)}
    last = max(len(depths) - 1, 1)
    for l in layers:
        if l.graph_depth is None:
            raise ValueError(f"layer {l.name} has no graph depth")
        l.conv_depth = index[l.graph_depth]
        l.conv_depth_norm = l.conv_depth / last if len(depths) > 1 else 0.0


def assign_graph_depths(layers: Sequence[ConvLayer], keys, depth_of: dict,
                        source: str) -> str | None:
    """Set each layer's ``graph_depth`` from ``depth_of[key]`` (its graph node's depth; the
    layers and ``keys`` in step), then its conv depths (:func:`assign_conv_depths`). A conv
    not reached from ``source`` (the graph's inputs) gets depth 1; returns the warning that
    says how many, or None."""
    unreached = 0
    for layer, key in zip(layers, keys):
        layer.graph_depth = depth_of.get(key)
        if layer.graph_depth is None:
            unreached += 1
            layer.graph_depth = 1
    assign_conv_depths(layers)
    if unreached:
        return f"{unreached} conv(s) not reached from {source}; depth set to 1"
    return None


def assign_order_depths(layers: Sequence[ConvLayer]) -> None:
    """Graphless formats: the order of the tensors is the best available depth."""
    for i, l in enumerate(layers):
        l.graph_depth = i
    assign_conv_depths(layers)


def file_sha256(path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(paths: Sequence, bufsize: int = 1 << 20) -> str:
    """sha256 of the files' bytes one after another: a model made of several files (a
    topology and its weights) is identified by all of them; one file gives its
    :func:`file_sha256`."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(bufsize):
                h.update(chunk)
    return h.hexdigest()


def count_ops(ops: Iterable[str]) -> dict[str, int]:
    return dict(Counter(ops))


def check_file(path) -> str:
    """Refuse what is not a readable, non-empty regular file; return the path as str."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ReadError(p, "no such file")
    if os.path.isdir(p):
        raise ReadError(p, "is a directory, not a model file")
    if os.path.getsize(p) == 0:
        raise ReadError(p, "empty file")
    return p


def file_beside(path, ext: str, what: str, missing: str | None = None) -> str | None:
    """The real path of ``path``'s companion with extension ``ext`` (``x.param`` ->
    ``x.bin``), refused when it is a link leading out of the model's folder or not a file.
    A missing companion is ``None``, or the one-line error ``missing`` when given."""
    b = os.path.splitext(os.fspath(path))[0] + ext
    name = os.path.basename(b)
    if not os.path.exists(b):
        if missing is None:
            return None
        raise ReadError(path, missing.format(name=name))
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    real = os.path.realpath(b)
    if os.path.commonpath([folder, real]) != folder:
        raise ReadError(path, f"{what} {name} is a link leading out of the model's folder")
    if not os.path.isfile(real):
        raise ReadError(path, f"{what} {name} is not a file")
    return real


def read_or_corrupt(p: str, read, what: str, errors: tuple, *args):
    """``read(p, *args)``, its :class:`~filterdb.errors.ReadError` passed on and any of
    ``errors`` (a truncated or malformed file met while parsing) turned into one line,
    ``corrupt <what>: <reason>``."""
    try:
        return read(p, *args)
    except ReadError:
        raise
    except errors as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ReadError(p, f"corrupt {what}: {msg}") from None
