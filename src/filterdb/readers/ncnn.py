"""ncnn models (``x.param`` + ``x.bin``): ``Convolution`` and ``ConvolutionDepthWise``.

Implemented from ncnn's formats (src/net.cpp, paramdict.cpp, modelbin.cpp and each layer's
``load_param`` / ``load_model``); ncnn itself is not needed.

``.param`` (text): the magic ``7767517``, ``layer_count blob_count``, then one line per layer
``type name n_bottoms n_tops bottoms... tops... key=value...``; an integer key ``k`` holds an
int or a float (a value with ``.`` or ``e``), an array is ``-23300 - k=n,v1,...,vn``.

``.bin``: every layer's weights in layer order, each as its ``load_model`` reads them: a
*tagged* blob (4-byte tag: ``0`` raw float32; ``0x01306B47`` float16; ``0x000D4B38`` int8;
``0x0002C056`` float32; another non-zero tag: 256 float32 then one uint8 index per value; the
float16 / int8 / index payloads padded to 4 bytes) or a *raw* float32 blob. Convolutions:
tagged weight ``weight_data_size`` (param 6) in ``(num_output, c_in / group, kh, kw)``
order (``num_output`` 0, ``kernel_w`` 1, ``kernel_h`` 11, ``group`` 7), raw bias
(``bias_term`` 5), then, for int8 (``int8_scale_term`` 8), raw weight scales (per output
channel; depthwise: per group, or one) and more scales; int8 weights are ``q / scale``.
``dynamic_weight`` (19) convs take their weight from a blob at run time and are skipped; so
are deconvolutions and 1-D / 3-D convolutions (their bytes are consumed). A layer type with
weights this reader does not know is refused (the offsets after it would be guesses), and
the layers' weights must fill the ``.bin`` exactly.

Depth: the longest path over the blobs from the ``Input`` layers.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ReadError
from .base import (
    DEPTH_GRAPH,
    ConvLayer,
    Model,
    Skipped,
    assign_graph_depths,
    check_file,
    count_ops,
    file_beside,
    files_sha256,
    read_or_corrupt,
)
from .graph import longest_path_depths

MAGIC = "7767517"
TAG_F16, TAG_INT8, TAG_F32 = 0x01306B47, 0x000D4B38, 0x0002C056
MAX_PARAM = 64 << 20

CONV = {"Convolution", "ConvolutionDepthWise"}
# conv-like layers: (bias key, dynamic-weight key) and why they are skipped
CONV_LIKE = {
    "Convolution": (5, 19, None), "ConvolutionDepthWise": (5, 19, None),
    "Convolution1D": (5, 19, "1-D convolution, not 2-D conv filters"),
    "ConvolutionDepthWise1D": (5, 19, "1-D convolution, not 2-D conv filters"),
    "Convolution3D": (5, None, "3-D convolution, not 2-D conv filters"),
    "ConvolutionDepthWise3D": (5, None, "3-D convolution, not 2-D conv filters"),
    "Deconvolution": (5, 28, "transposed convolution, not 2-D conv filters"),
    "DeconvolutionDepthWise": (5, 28, "transposed convolution, not 2-D conv filters"),
    "Deconvolution1D": (5, 28, "transposed 1-D convolution, not 2-D conv filters"),
    "DeconvolutionDepthWise1D": (5, 28, "transposed 1-D convolution, not 2-D conv filters"),
    "Deconvolution3D": (5, None, "transposed 3-D convolution, not 2-D conv filters"),
    "DeconvolutionDepthWise3D": (5, None, "transposed 3-D convolution, not 2-D conv filters"),
    "DeformableConv2D": (5, None, "deformable convolution (offsets at run time), not read"),
}
# layers that load nothing from the .bin
NO_WEIGHTS = frozenset([
    "Input", "Split", "Concat", "Eltwise", "ReLU", "ReLU6", "Sigmoid", "TanH", "Softmax",
    "Pooling", "Pooling1D", "Pooling3D", "Flatten", "Reshape", "Permute", "Crop", "Interp",
    "BinaryOp", "UnaryOp", "Clip", "HardSigmoid", "HardSwish", "Swish", "Mish", "GELU", "ELU",
    "SELU", "Dropout", "Noop", "Slice", "ShuffleChannel", "PixelShuffle", "Reorg", "AbsVal", "Exp",
    "Log", "Power", "Threshold", "ExpandDims", "Squeeze", "Reduction", "ArgMax", "Cast", "Packing",
    "Tile", "CumulativeSum", "CopyTo", "Fold", "Unfold", "GridSample", "Einsum", "MatMul",
    "DeepCopy", "Erf", "Shrink", "Spp", "PriorBox", "DetectionOutput", "Proposal", "ROIPooling",
    "ROIAlign", "PSROIPooling", "Yolov3DetectionOutput", "YoloDetectionOutput", "Flip", "LRN",
    "MVN", "StatisticsPooling", "Softplus", "Diag", "Celu", "Sin", "Cos", "Bnll"
])


class _Corrupt(Exception):
    """Internal: the files contradict each other."""


# ---------------------------------------------------------------------------- .param


def _value(v: str):
    if any(c in v for c in ".eE") and not v.lstrip("-").isdigit():
        return float(v)
    return int(v)


def parse_params(tokens: list[str]) -> dict[int, object]:
    """``k=v`` tokens -> ``{k: int | float | list}`` (arrays under their own key)."""
    out: dict[int, object] = {}
    for t in tokens:
        k, sep, v = t.partition("=")
        if not sep:
            raise _Corrupt(f"parameter {t!r} is not key=value")
        k = int(k)
        if k <= -23300:
            items = v.split(",")
            n = int(items[0])
            if n != len(items) - 1:
                raise _Corrupt(f"array parameter {t!r} announces {n} values")
            out[-23300 - k] = [_value(x) for x in items[1:]]
        else:
            out[k] = _value(v)
    return out


def parse_param_file(text: str) -> list[dict]:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if not lines or lines[0] != MAGIC:
        raise _Corrupt(f"first line is not the ncnn magic {MAGIC}")
    if len(lines) < 2:
        raise _Corrupt("no layer and blob counts")
    n_layers, _n_blobs = (int(x) for x in lines[1].split()[:2])
    if n_layers != len(lines) - 2:
        raise _Corrupt(f"{n_layers} layers announced, {len(lines) - 2} lines")
    layers = []
    for line in lines[2:]:
        t = line.split()
        if len(t) < 4:
            raise _Corrupt(f"layer line {line[:60]!r} too short")
        kind, name, nb, nt = t[0], t[1], int(t[2]), int(t[3])
        if nb < 0 or nt < 0 or 4 + nb + nt > len(t):
            raise _Corrupt(f"layer {name!r}: {nb} bottoms and {nt} tops not on its line")
        bottoms, tops = t[4:4 + nb], t[4 + nb:4 + nb + nt]
        layers.append({"type": kind, "name": name, "bottoms": bottoms, "tops": tops,
                       "params": parse_params(t[4 + nb + nt:])})
    return layers


# ---------------------------------------------------------------------------- .bin


def _align4(n: int) -> int:
    return (n + 3) & ~3


class Bin:
    """Sequential reader of the ``.bin``: tagged and raw blobs as ncnn's ModelBin reads them."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> int:
        if n < 0 or self.pos + n > len(self.data):
            raise _Corrupt(f"weights run past the end of the .bin ({len(self.data)} bytes) at "
                           f"byte {self.pos}")
        at = self.pos
        self.pos += n
        return at

    def raw(self, n: int) -> np.ndarray:
        at = self._take(4 * n)
        return np.frombuffer(self.data, "<f4", n, at)

    def tagged(self, n: int) -> tuple[np.ndarray, str]:
        """(values, storage): float32 values, or int8 values (``storage == "int8"``)."""
        at = self._take(4)
        tag = int.from_bytes(self.data[at:at + 4], "little")
        if tag == TAG_F16:
            at = self._take(_align4(2 * n))
            return np.frombuffer(self.data, "<f2", n, at).astype(np.float32), "float16"
        if tag == TAG_INT8:
            at = self._take(_align4(n))
            return np.frombuffer(self.data, "i1", n, at), "int8"
        if tag == TAG_F32 or tag == 0:
            return self.raw(n).astype(np.float32), "float32"
        table = self.raw(256)
        at = self._take(_align4(n))
        idx = np.frombuffer(self.data, "u1", n, at)
        return table[idx].astype(np.float32), "table"


def _get(p: dict, k: int, default=0):
    v = p.get(k, default)
    if isinstance(v, list):
        raise _Corrupt(f"parameter {k} is an array")
    return v


def _load_layer(layer: dict, b: Bin):
    """Consume one layer's weights; returns (weight, groups) for a 2-D conv, a skip reason,
    or None."""
    kind, p = layer["type"], layer["params"]
    if kind in CONV_LIKE:
        bias_key, dyn_key, reason = CONV_LIKE[kind]
        if dyn_key is not None and _get(p, dyn_key):
            return "weight given at run time (dynamic_weight), not stored"
        num_output, size = int(_get(p, 0)), int(_get(p, 6))
        group = int(_get(p, 7, 1)) if "DepthWise" in kind else 1
        w, storage = b.tagged(size)
        if _get(p, bias_key):
            b.raw(num_output)
        int8 = int(_get(p, 8)) if kind in CONV else 0
        scales = None
        if int8:
            if kind == "Convolution":
                scales = b.raw(num_output)
            elif int8 in (1, 101):
                scales = b.raw(group)
            elif int8 in (2, 102):
                scales = b.raw(1)
            if kind == "Convolution" or int8 in (1, 101, 2, 102):
                b.raw(1)  # bottom blob scale
            if int8 > 100:
                b.raw(1)  # top blob scale
        if reason:
            return reason
        kw = int(_get(p, 1))
        kh = int(_get(p, 11, kw))
        if num_output <= 0 or kh <= 0 or kw <= 0 or size % (num_output * kh * kw):
            raise _Corrupt(f"layer {layer['name']!r}: weight_data_size {size} is not a "
                           f"multiple of {num_output} x {kh} x {kw}")
        w = w.reshape(num_output, size // (num_output * kh * kw), kh, kw)
        if storage == "int8":
            if scales is None:
                raise _Corrupt(f"layer {layer['name']!r}: int8 weights without scales")
            s = np.asarray(scales, np.float64)
            if s.size == group and group > 1:
                s = np.repeat(s, num_output // group)
            elif s.size not in (1, num_output):
                raise _Corrupt(f"layer {layer['name']!r}: {s.size} int8 scales")
            s = s.reshape(-1, 1, 1, 1) if s.size > 1 else s.reshape(1, 1, 1, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.where(s != 0, w / s, 0.0)
        return w.astype(np.float32), group
    if kind == "InnerProduct":
        num_output, size = int(_get(p, 0)), int(_get(p, 2))
        b.tagged(size)
        if _get(p, 1):
            b.raw(num_output)
        if _get(p, 8):
            b.raw(num_output)
            b.raw(1)
    elif kind == "BatchNorm":
        for _ in range(4):
            b.raw(int(_get(p, 0)))
    elif kind == "Bias":
        b.raw(int(_get(p, 0)))
    elif kind == "Scale":
        n = int(_get(p, 0))
        if n != -233:
            b.raw(n)
            if _get(p, 1):
                b.raw(n)
    elif kind in ("PReLU", "Normalize"):
        b.raw(int(_get(p, 0 if kind == "PReLU" else 3)))
    elif kind in ("InstanceNorm", "GroupNorm", "LayerNorm", "RMSNorm"):
        n = int(_get(p, 1 if kind == "GroupNorm" else 0))
        if _get(p, 3 if kind == "GroupNorm" else 2, 1):
            b.raw(n)
            if kind != "RMSNorm":
                b.raw(n)
    elif kind == "MemoryData":
        dims = [int(_get(p, k)) for k in (0, 1, 11, 2)]
        n = int(np.prod([d for d in dims if d])) if any(dims) else 0
        if n:
            if int(_get(p, 21, 1)) == 1:
                b.raw(n)
            else:
                b.tagged(n)
    elif kind == "Embed":
        b.tagged(int(_get(p, 3)))
        if _get(p, 2):
            b.raw(int(_get(p, 0)))
        if _get(p, 18):
            b.raw(1)
    elif kind == "Padding":
        if _get(p, 6):
            b.raw(int(_get(p, 6)))
    elif kind not in NO_WEIGHTS:
        raise _Corrupt(f"layer {layer['name']!r} of type {kind!r}: its weight layout is not "
                       "known to this reader, so no offset after it can be trusted")
    return None


# ---------------------------------------------------------------------------- model


def looks_like_ncnn(head: bytes) -> bool:
    return head.lstrip()[:8].split(b"\n")[0].strip() == MAGIC.encode()


def _bin_beside(p: str) -> str:
    return file_beside(p, ".bin", "weights file",
                       missing="weights file {name} (beside the .param) is missing")


def _read(p: str) -> Model:
    if os.path.getsize(p) > MAX_PARAM:
        raise ReadError(p, f".param larger than {MAX_PARAM >> 20} MB")
    with open(p, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    net = parse_param_file(text)
    bin_path = _bin_beside(p)
    with open(bin_path, "rb") as f:
        b = Bin(f.read())
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    at: list[int] = []
    for i, layer in enumerate(net):
        got = _load_layer(layer, b)
        if isinstance(got, str):
            skipped.append(Skipped(layer["name"], layer["type"], got))
        elif got is not None:
            w, group = got
            layers.append(ConvLayer(layer["name"], layer["type"], w, groups=group))
            at.append(i)
    if b.pos != len(b.data):
        raise ReadError(p, f"the layers' weights take {b.pos} bytes, but the .bin holds "
                           f"{len(b.data)}: the .bin does not belong to this .param")
    nodes = [i for i, l in enumerate(net) if l["type"] != "Input"]
    inputs_ = {t for l in net if l["type"] == "Input" for t in l["tops"]}
    try:
        depths = longest_path_depths([net[i]["bottoms"] for i in nodes],
                                     [net[i]["tops"] for i in nodes], inputs_)
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    depth_of = dict(zip(nodes, depths))
    warn = assign_graph_depths(layers, at, depth_of, "an Input layer")
    warnings = [warn] if warn else []
    return Model(path=p, format="ncnn", sha256=files_sha256([p, bin_path]), layers=layers, skipped=skipped,
                 depth_source=DEPTH_GRAPH, producer="ncnn", producer_version=None,
                 op_counts=count_ops(l["type"] for l in net), warnings=warnings)


def files(path) -> list[str]:
    """The ``.param`` and its ``.bin`` (what the model's sha256 covers)."""
    return [os.fspath(path), _bin_beside(os.fspath(path))]


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, ValueError, TypeError, KeyError, IndexError, OverflowError)


def read(path, fmt: str = "ncnn") -> Model:
    """Read the 2-D convolutions of an ncnn ``.param`` (weights from its ``.bin``)."""
    p = check_file(path)
    return read_or_corrupt(p, _read, "ncnn model", _PARSE_ERRORS)


__all__ = ["Bin", "looks_like_ncnn", "parse_param_file", "parse_params", "read"]
