"""OpenVINO IR (``model.xml`` + ``model.bin``): ``Convolution`` and ``GroupConvolution``.

Read with the standard library's XML parser (documents with a DTD or entities are refused);
OpenVINO itself is not needed. The IR (versions 10 and 11) is ``<net><layers><layer id name
type version>`` with ``<data>`` attributes and ``<input>`` / ``<output>`` ports, and
``<edges><edge from-layer from-port to-layer to-port/>``. A ``Const`` layer's value is
``size`` bytes at ``offset`` of the ``.bin`` beside the ``.xml`` (same stem), of
``element_type`` (f32, f16, bf16, f64, i8, u8, i16, u16, i32, i64, u32, u64; packed 4-bit
u4 / i4) and ``shape``.

- ``Convolution``: input 1 is the weight ``[c_out, c_in, kh, kw]`` (PyTorch order).
- ``GroupConvolution``: ``[groups, c_out / groups, c_in / groups, kh, kw]`` ->
  ``(c_out, c_in / groups, kh, kw)``, ``groups`` from the first dimension.
- Weights are folded through the decompression chains the converter and NNCF write:
  ``Convert`` (f16 / int8 to f32), ``Subtract`` (zero point), ``Multiply`` (scale),
  ``Reshape`` / ``Unsqueeze`` / ``Squeeze`` with constant shapes; anything else computed at
  run time is skipped with the reason.
- ``ConvolutionBackpropData`` / ``GroupConvolutionBackpropData`` (transposed) and 1-D / 3-D
  convolutions are skipped.

Depth: the longest path over the edges from the ``Parameter`` layers.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

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

CONV_OPS = {"Convolution", "GroupConvolution"}
SKIPPED_OPS = {
    "ConvolutionBackpropData": "transposed convolution, not 2-D conv filters",
    "GroupConvolutionBackpropData": "transposed convolution, not 2-D conv filters",
    "DeformableConvolution": "deformable convolution (offsets computed at run time), not read",
    "BinaryConvolution": "binary convolution, not float filters",
}
ELEMENT = {"f32": "<f4", "f16": "<f2", "f64": "<f8", "i8": "i1", "u8": "u1", "i16": "<i2",
           "u16": "<u2", "i32": "<i4", "i64": "<i8", "u32": "<u4", "u64": "<u8",
           "boolean": "u1"}
FOLD = {"Convert", "Subtract", "Multiply", "Add", "Reshape", "Unsqueeze", "Squeeze"}
MAX_XML = 512 << 20
MAX_CHAIN = 16


class _Corrupt(Exception):
    """Internal: the IR contradicts itself or its .bin."""


class _NotConstant(Exception):
    """Internal: a weight is computed at run time."""


# ---------------------------------------------------------------------------- pure math


def group_conv_weight(w: np.ndarray) -> np.ndarray:
    """``[g, c_out / g, c_in / g, kh, kw]`` -> ``(c_out, c_in / g, kh, kw)``."""
    g, o, i, kh, kw = w.shape
    return w.reshape(g * o, i, kh, kw)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 (uint16 bit patterns) -> float32: the upper half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def unpack_4bit(raw: np.ndarray, n: int, signed: bool) -> np.ndarray:
    """Packed nibbles, low nibble first (OpenVINO's u4 / i4 layout)."""
    lo, hi = raw & 0x0F, raw >> 4
    v = np.stack([lo, hi], axis=-1).reshape(-1)[:n].astype(np.int16)
    if signed:
        v = np.where(v >= 8, v - 16, v)
    return v


# ---------------------------------------------------------------------------- the IR


def _shape(s: str | None) -> list[int]:
    if s is None or s.strip() == "":
        return []
    try:
        return [int(x) for x in s.split(",")]
    except ValueError:
        raise _Corrupt(f"bad shape {s!r}") from None


class _IR:
    def __init__(self, root, bin_path: str | None):
        self.layers = {}
        for layer in root.iter("layer"):
            lid = layer.get("id")
            if lid is None or lid in self.layers:
                raise _Corrupt(f"layer id {lid!r} missing or repeated")
            self.layers[lid] = layer
        self.inputs: dict[str, dict[int, tuple[str, str]]] = {}  # to -> port -> (from, port)
        edges = root.find("edges")
        for e in (edges.iter("edge") if edges is not None else []):
            fl, fp, tl, tp = (e.get(k) for k in ("from-layer", "from-port", "to-layer", "to-port"))
            if None in (fl, fp, tl, tp) or fl not in self.layers or tl not in self.layers:
                raise _Corrupt(f"edge {fl}:{fp} -> {tl}:{tp} names a missing layer")
            self.inputs.setdefault(tl, {})[int(tp)] = (fl, fp)
        self.bin_path = bin_path
        self.bin_size = os.path.getsize(bin_path) if bin_path else 0
        self._bin = None

    def input_ports(self, lid: str) -> list[int]:
        """The layer's input port ids in order (from its ``<input>``)."""
        layer = self.layers[lid]
        inp = layer.find("input")
        if inp is None:
            return []
        return [int(p.get("id")) for p in inp.findall("port")]

    def producer(self, lid: str, k: int) -> str:
        """The layer feeding the layer's ``k``-th input port."""
        ports = self.input_ports(lid)
        if k >= len(ports) or ports[k] not in self.inputs.get(lid, {}):
            raise _NotConstant(f"input {k} of layer {lid} is not connected")
        return self.inputs[lid][ports[k]][0]

    def bin(self):
        if self._bin is None:
            if self.bin_path is None:
                raise _Corrupt("the weights file (.bin beside the .xml) is missing")
            with open(self.bin_path, "rb") as f:
                self._bin = f.read()
        return self._bin

    def const(self, lid: str) -> np.ndarray:
        data = self.layers[lid].find("data")
        if data is None:
            raise _Corrupt(f"Const layer {lid} has no data")
        et = data.get("element_type")
        shape = _shape(data.get("shape"))
        try:
            offset, size = int(data.get("offset")), int(data.get("size"))
        except (TypeError, ValueError):
            raise _Corrupt(f"Const layer {lid}: bad offset / size") from None
        if offset < 0 or size < 0 or offset + size > self.bin_size:
            raise _Corrupt(f"Const layer {lid}: bytes {offset}..{offset + size} outside the "
                           f".bin ({self.bin_size} bytes)")
        n = int(np.prod(shape)) if shape else 1
        raw = np.frombuffer(self.bin(), np.uint8, size, offset)
        if et in ("u4", "i4"):
            if size * 2 < n:
                raise _Corrupt(f"Const layer {lid}: {size} bytes for {n} 4-bit values")
            return unpack_4bit(raw, n, et == "i4").reshape(shape)
        if et == "bf16":
            if size != 2 * n:
                raise _Corrupt(f"Const layer {lid}: {size} bytes for {n} bf16 values")
            return bf16_to_f32(raw.view("<u2")).reshape(shape)
        if et not in ELEMENT:
            raise _NotConstant(f"Const of element type {et!r}")
        dt = np.dtype(ELEMENT[et])
        if size != n * dt.itemsize:
            raise _Corrupt(f"Const layer {lid}: {size} bytes for {n} {et} values")
        return raw.view(dt).reshape(shape)

    def value(self, lid: str, hops: int = 0) -> np.ndarray:
        """The constant value of a layer's output, folding decompression chains."""
        if hops > MAX_CHAIN:
            raise _NotConstant("weight chain too long")
        layer = self.layers[lid]
        t = layer.get("type")
        if t == "Const":
            return self.const(lid)
        if t not in FOLD:
            raise _NotConstant(f"computed by a {t} layer at run time")
        a = self.value(self.producer(lid, 0), hops + 1)
        if t == "Convert":
            data = layer.find("data")
            dst = data.get("destination_type") if data is not None else "f32"
            return a.astype(np.float64 if dst == "f64" else np.float32)
        b = self.value(self.producer(lid, 1), hops + 1) if t != "Squeeze" or \
            len(self.input_ports(lid)) > 1 else None
        if t == "Subtract":
            return np.subtract(a, b, dtype=np.float64) if a.dtype.kind != "f" else a - b
        if t == "Multiply":
            return a * b
        if t == "Add":
            return a + b
        if t == "Reshape":
            shape = [int(x) for x in np.asarray(b).ravel()]
            special = (layer.find("data").get("special_zero", "false") == "true"
                       if layer.find("data") is not None else False)
            if special:
                shape = [a.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return a.reshape(shape)
        if t == "Unsqueeze":
            out = a
            for ax in sorted(int(x) % (a.ndim + np.size(b)) for x in np.asarray(b).ravel()):
                out = np.expand_dims(out, ax)
            return out
        if t == "Squeeze":
            return np.squeeze(a) if b is None else np.squeeze(
                a, tuple(int(x) % a.ndim for x in np.asarray(b).ravel()))
        raise _NotConstant(t)


def _bin_beside(path: str) -> str | None:
    """``x.xml`` -> ``x.bin`` in the same folder (not a link leading out of it), or None."""
    return file_beside(path, ".bin", "weights file")


def looks_like_openvino(head: bytes) -> bool:
    h = head.lstrip()
    return h.startswith(b"<?xml") or h.startswith(b"<net")


def _parse_xml(p: str):
    if os.path.getsize(p) > MAX_XML:
        raise ReadError(p, f"IR .xml larger than {MAX_XML >> 20} MB")
    with open(p, "rb") as f:
        text = f.read()
    if re.search(rb"<!DOCTYPE|<!ENTITY", text):
        raise ReadError(p, "XML with a DTD or entities is refused (not an OpenVINO IR)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ReadError(p, f"not well-formed XML ({e})") from None
    if root.tag != "net":
        raise ReadError(p, f"XML whose root is <{root.tag}>, not an OpenVINO IR <net>")
    return root


def _read(p: str) -> Model:
    root = _parse_xml(p)
    ir = _IR(root, _bin_beside(p))
    if ir.bin_path is None and any(l.get("type") == "Const" for l in ir.layers.values()):
        raise ReadError(p, f"weights file {os.path.basename(os.path.splitext(p)[0])}.bin "
                           "(beside the .xml) is missing")
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    conv_ids: list[str] = []
    ops = []
    for lid, layer in ir.layers.items():
        t = layer.get("type", "?")
        ops.append(t)
        name = layer.get("name") or f"layer{lid}"
        if t in SKIPPED_OPS:
            skipped.append(Skipped(name, t, SKIPPED_OPS[t]))
            continue
        if t not in CONV_OPS:
            continue
        try:
            w = ir.value(ir.producer(lid, 1))
        except _NotConstant as e:
            skipped.append(Skipped(name, t, f"weight not stored: {e}"))
            continue
        if w.dtype.kind not in "fiu":
            skipped.append(Skipped(name, t, f"weight of dtype {w.dtype}"))
            continue
        w = w.astype(np.float32)
        want = 4 if t == "Convolution" else 5
        if w.ndim != want:
            skipped.append(Skipped(name, t, f"{w.ndim - 2 - (t != 'Convolution')}-D "
                                            "convolution, not a 2-D filter"))
            continue
        if t == "GroupConvolution":
            layers.append(ConvLayer(name, t, group_conv_weight(w), groups=int(w.shape[0])))
        else:
            layers.append(ConvLayer(name, t, w))
        conv_ids.append(lid)
    ids = [lid for lid, l in ir.layers.items() if l.get("type") != "Parameter"]
    inputs_ = {lid for lid, l in ir.layers.items() if l.get("type") == "Parameter"}
    node_in = [[src for src, _ in ir.inputs.get(lid, {}).values()] for lid in ids]
    try:
        depths = longest_path_depths(node_in, [[lid] for lid in ids], inputs_)
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    at = dict(zip(ids, depths))
    warn = assign_graph_depths(layers, conv_ids, at, "a graph input")
    warnings = [warn] if warn else []
    rt = root.find("rt_info")
    version = None
    if rt is not None:
        v = rt.find("Runtime_version")
        version = v.get("value") if v is not None else None
    sha = files_sha256([p] + ([ir.bin_path] if ir.bin_path else []))
    return Model(path=p, format="openvino", sha256=sha, layers=layers,
                 skipped=skipped, depth_source=DEPTH_GRAPH, producer="openvino",
                 producer_version=version or f"IR v{root.get('version')}",
                 op_counts=count_ops(ops), warnings=warnings)


def files(path) -> list[str]:
    """The ``.xml`` and its ``.bin`` (what the model's sha256 covers)."""
    b = _bin_beside(os.fspath(path))
    return [os.fspath(path)] + ([b] if b else [])


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, ValueError, TypeError, KeyError, AttributeError, IndexError,
                 OverflowError, RecursionError)


def read(path, fmt: str = "openvino") -> Model:
    """Read the 2-D convolutions of an OpenVINO IR ``.xml`` (weights from its ``.bin``)."""
    p = check_file(path)
    return read_or_corrupt(p, _read, "OpenVINO IR", _PARSE_ERRORS)


__all__ = ["bf16_to_f32", "group_conv_weight", "looks_like_openvino", "read", "unpack_4bit"]
