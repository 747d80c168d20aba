"""dlib DNN files (``.dat``): ``dlib::serialize`` of a ``net_type`` (dlib/dnn).

Implemented from dlib's serialisation format (dlib/serialize.h, dnn/core.h, dnn/layers.h,
dnn/input.h, cuda/tensor.h); dlib itself is not needed.

Primitives: an integer is one byte ``size | 0x80 if negative`` then ``size`` little-endian
magnitude bytes; a string its length (integer) then its bytes; a bool the character ``'0'``
or ``'1'``; a float / double a ``float_details`` (mantissa and exponent integers, value
``mantissa * 2 ** exponent``); a tensor version ``2``, ``num_samples, k, nr, nc`` then
``num_samples * k * nr * nc`` little-endian float32; an alias tensor version ``1`` and its
four dimensions.

Layout: ``add_loss_layer`` writes its version (1), the loss details, then its subnetwork;
every wrapper writes its version and then its subnetwork first (``add_layer`` 2,
``add_tag_layer`` / ``add_skip_layer`` 1), so the file begins with the wrappers' versions,
outermost first, down to the innermost one (``add_layer`` 3 or ``add_tag_layer`` 2), which
writes the input layer. What each ``add_layer`` writes after its subnetwork follows in input
-> output order: the layer's details (a version string such as ``con_4`` then its fields),
three bools and three tensors (the bottom one: two tensors, a third and an integer).

``con_`` details: the parameter tensor (filters then biases), ``num_filters, nr, nc,
stride_y, stride_x, padding_y, padding_x``, the ``filters`` and ``biases`` alias tensors,
four doubles, then (``con_5`` / ``con_6``) one / two bools. Its filters are the first
``num_filters * k * nr * nc`` parameters in ``(num_filters, k, nr, nc)`` order, which is
PyTorch's ``(c_out, c_in, kh, kw)``; dlib has no grouped convolution. ``cont_``
(transposed) is skipped. Layer names follow dlib's own numbering (``layer<i>`` as
``net_type``'s ``operator<<`` prints it, the loss layer being 0).

Depth: dlib does not store tag ids (template parameters), so which tag an ``add_prev`` or
``skip`` refers to is not in the file: conv depth follows the layer order
(``depth_source = "order"``). In a network whose convs lie on one chain (dlib's face ResNet,
the MMOD detector) this is the graph's order too.
"""
from __future__ import annotations

import mmap
import struct

import numpy as np

from ..errors import ReadError
from .base import (
    DEPTH_ORDER,
    ConvLayer,
    Model,
    Skipped,
    assign_order_depths,
    check_file,
    count_ops,
    file_sha256,
)

MAX_STRING = 1 << 16  # layer names and versions are short


class _Corrupt(Exception):
    """Internal: the stream is not what dlib writes."""


# ---------------------------------------------------------------------------- primitives


class Stream:
    """Sequential reader of dlib's serialised primitives over a bytes-like buffer."""

    def __init__(self, buf, pos: int = 0):
        self.buf = buf
        self.pos = pos
        self.size = len(buf)

    def _take(self, n: int):
        if n < 0 or self.pos + n > self.size:
            raise _Corrupt(f"truncated at byte {self.pos} (wanted {n} more)")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        head = self._take(1)[0]
        size = head & 0x0F
        if size == 0 or size > 8 or head & 0x70:
            raise _Corrupt(f"bad integer header 0x{head:02x} at byte {self.pos - 1}")
        v = int.from_bytes(self._take(size), "little")
        return -v if head & 0x80 else v

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= MAX_STRING:
            raise _Corrupt(f"string of length {n} at byte {self.pos}")
        return bytes(self._take(n)).decode("latin-1")

    def bool(self) -> bool:
        c = self._take(1)[0]
        if c not in (0x30, 0x31):
            raise _Corrupt(f"bad bool 0x{c:02x} at byte {self.pos - 1}")
        return c == 0x31

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if abs(exponent) > 2000:
            return float("inf") if mantissa else 0.0
        return float(mantissa) * 2.0 ** exponent

    def tensor_shape(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 2:
            raise _Corrupt(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        if any(s < 0 for s in shape):
            raise _Corrupt(f"negative tensor dimension {shape}")
        return shape

    def tensor(self):
        """``(shape, offset of the float32 data)``; the data is skipped."""
        shape = self.tensor_shape()
        n = shape[0] * shape[1] * shape[2] * shape[3]
        off = self.pos
        self._take(4 * n)
        return shape, off

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise _Corrupt(f"alias tensor version {version} at byte {self.pos}, expected 1")
        return tuple(self.int() for _ in range(4))

    def floats(self, offset: int, n: int) -> np.ndarray:
        return np.frombuffer(self.buf, "<f4", n, offset).astype(np.float32)


# ---------------------------------------------------------------------------- layer details


def _conv_like(s: Stream, version: str) -> dict:
    params, off = s.tensor()
    num_filters = s.int()
    nr, nc, sy, sx, py, px = (s.int() for _ in range(6))
    filters = s.alias()
    s.alias()  # biases
    for _ in range(4):
        s.float()
    if version in ("con_5", "con_6", "cont_2"):
        s.bool()  # use_bias
    if version == "con_6":
        s.bool()  # use_relu
    n = filters[0] * filters[1] * filters[2] * filters[3]
    if n > params[0] * params[1] * params[2] * params[3]:
        raise _Corrupt(f"{version}: filters {filters} larger than its parameters {params}")
    if filters[2:] != (nr, nc) and version.startswith("con_"):
        raise _Corrupt(f"{version}: filters {filters} are not {nr}x{nc}")
    return {"filters": filters, "offset": off, "num_filters": num_filters,
            "stride": (sy, sx), "padding": (py, px)}


def _bn(s: Stream, version: str) -> dict:
    s.tensor()  # params
    s.alias()
    s.alias()  # gamma, beta
    for _ in range(4):
        s.tensor()  # means, invstds, running means, running variances
    s.int()
    s.int()  # num_updates, running_stats_window_size
    for _ in range(5):
        s.float()  # 4 multipliers, eps
    return {}


def _affine(s: Stream, version: str) -> dict:
    s.tensor()
    s.alias()
    s.alias()
    s.int()  # mode
    if version == "affine_2":
        s.bool()  # disabled
    return {}


def _fc(s: Stream, version: str) -> dict:
    s.int()
    s.int()  # num_outputs, num_inputs
    s.tensor()
    s.alias()
    s.alias()
    s.int()  # bias mode
    for _ in range(4):
        s.float()
    if version == "fc_3":
        s.bool()
    return {}


def _pool(s: Stream, version: str) -> dict:
    for _ in range(6):
        s.int()
    return {}


def _nothing(s: Stream, version: str) -> dict:
    return {}


def _one_float(s: Stream, version: str) -> dict:
    s.float()
    return {}


def _one_bool(s: Stream, version: str) -> dict:
    s.bool()
    return {}


def _prelu(s: Stream, version: str) -> dict:
    s.tensor()
    s.float()
    return {}


def _dropout(s: Stream, version: str) -> dict:
    s.float()
    s.tensor()
    return {}


def _concat(s: Stream, version: str) -> dict:
    s.int()
    return {}


# version string -> its fields' reader
DETAILS = {
    "con_4": _conv_like, "con_5": _conv_like, "con_6": _conv_like,
    "cont_1": _conv_like, "cont_2": _conv_like,
    "bn_con2": _bn, "bn_fc2": _bn,
    "affine_": _affine, "affine_2": _affine,
    "fc_2": _fc, "fc_3": _fc,
    "max_pool_2": _pool, "avg_pool_2": _pool,
    "relu_": _nothing, "relu_2": _one_bool,
    "add_prev_": _nothing, "mult_prev_": _nothing, "sig_": _nothing, "htan_": _nothing,
    "softmax_": _nothing, "softmax_all_": _nothing, "mish_": _nothing, "gelu_": _nothing,
    "silu_": _nothing,
    "prelu_": _prelu, "leaky_relu_": _one_float, "elu_": _one_float,
    "clipped_relu_": _one_float, "l2normalize_": _one_float, "multiply_": _one_float,
    "dropout_": _dropout, "concat_": _concat,
}


def _input(s: Stream) -> str:
    name = s.string()
    if name in ("input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pair",
                "input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        for _ in range(3):
            s.float()  # mean of each colour
        if name == "input_rgb_image_sized" or name == "input_rgb_image_pyramid2":
            s.int()
            s.int()
    elif name == "input_grayscale_image_pyramid":
        s.int()
        s.int()
    elif name in ("input<matrix>", "input<array2d>", "input<array<matrix>>"):
        pass
    else:
        raise _Corrupt(f"unsupported dlib input layer {name!r}")
    return name


# ---------------------------------------------------------------------------- the network


def looks_like_dlib(head: bytes) -> bool:
    """A ``dlib::serialize``-d network: version 1 of ``add_loss_layer``, then a string
    ``loss_...``."""
    return (len(head) >= 10 and head[:2] == b"\x01\x01" and head[2] == 0x01
            and head[4:9] == b"loss_")


def _find_input(buf, start: int) -> int:
    """Offset of the input layer's name (its length integer) after the wrappers."""
    i = start
    while True:
        i = buf.find(b"input", i)
        if i < 0:
            break
        if i >= 4 and buf[i - 2] == 0x01 and 5 <= buf[i - 1] <= 64 \
                and buf[i - 4] == 0x01 and buf[i - 3] in (2, 3):
            return i - 2
        i += 1
    raise _Corrupt("no input layer found after the network's wrappers")


def _wrappers_before(buf, end: int, start: int) -> list[int]:
    """The wrapper versions ``01 0v`` just before ``end`` (innermost last)."""
    out = []
    i = end
    while i - 2 >= start and buf[i - 2] == 0x01 and buf[i - 1] in (1, 2, 3):
        out.append(buf[i - 1])
        i -= 2
    return out[::-1]


def parse(buf) -> dict:
    """The network's layers in input -> output order:
    ``{"loss": str, "input": str, "layers": [(dlib index or None, version, fields)]}``."""
    s = Stream(buf)
    if s.int() != 1:
        raise _Corrupt("not a dlib network (add_loss_layer version is not 1)")
    loss = s.string()
    if not loss.startswith("loss_"):
        raise _Corrupt(f"not a dlib network (loss layer {loss!r})")
    at = _find_input(buf, s.pos)
    wrappers = _wrappers_before(buf, at, s.pos)
    s.pos = at
    inp = _input(s)
    bottom = wrappers[-1] if wrappers else 3
    records = []

    def details():
        version = s.string()
        reader = DETAILS.get(version)
        if reader is None:
            raise _Corrupt(f"unsupported dlib layer {version!r} at byte {s.pos}")
        return version, reader(s, version)

    if bottom == 3:  # add_layer over the input
        records.append(details())
        for _ in range(3):
            s.bool()
        for _ in range(3):
            s.tensor()
        s.int()  # sample expansion factor
    else:  # add_tag_layer over the input
        s.tensor()
        s.tensor()
        s.bool()
        s.int()
    while s.pos < s.size:
        records.append(details())
        for _ in range(3):
            s.bool()
        for _ in range(3):
            s.tensor()
    # dlib's numbering: loss 0, wrappers 1..n outermost first; add_layers are the 2s and 3s
    # (the innermost wrapper is an add_layer if 3, a tag if 2)
    idx = [i + 1 for i, v in enumerate(wrappers[:-1]) if v == 2]
    idx = (idx + [len(wrappers)] if bottom == 3 else idx)[::-1]
    if len(idx) != len(records):
        idx = [None] * len(records)
    return {"loss": loss, "input": inp, "n_wrappers": len(wrappers),
            "layers": [(i, v, f) for i, (v, f) in zip(idx, records)]}


def _read(p: str, buf) -> Model:
    net = parse(buf)
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    ops = [net["loss"], net["input"]]
    for k, (i, version, f) in enumerate(net["layers"]):
        kind = version.rstrip("0123456789").rstrip("_") if version[-1].isdigit() else \
            version.rstrip("_")
        ops.append(kind)
        name = f"layer<{i}> {kind}" if i is not None else f"{kind}#{k}"
        if kind == "cont":
            skipped.append(Skipped(name, kind, "transposed convolution, not 2-D conv filters"))
        elif kind == "con":
            shape = f["filters"]
            n = shape[0] * shape[1] * shape[2] * shape[3]
            w = Stream(buf).floats(f["offset"], n).reshape(shape)
            layers.append(ConvLayer(name, "con", w))
    if not any(i is not None for i, _, _ in net["layers"]):
        warnings = ["dlib layer numbering not recovered from the wrappers; layers named by kind"]
    else:
        warnings = []
    assign_order_depths(layers)
    model = Model(path=p, format="dlib", sha256=file_sha256(p), layers=layers, skipped=skipped,
                  depth_source=DEPTH_ORDER, producer="dlib", producer_version=None,
                  op_counts=count_ops(ops), warnings=warnings)
    return model


def read(path, fmt: str = "dlib") -> Model:
    """Read the ``con_`` layers of a dlib DNN file."""
    p = check_file(path)
    with open(p, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError) as e:
            raise ReadError(p, f"cannot map file ({e})") from None
    try:
        if not looks_like_dlib(bytes(buf[:16])):
            raise ReadError(p, "not a dlib DNN file (no add_loss_layer / loss_ header; a "
                               "shape predictor or other dlib object is not a CNN)")
        return _read(p, buf)
    except ReadError:
        raise
    except (_Corrupt, ValueError, IndexError, struct.error, OverflowError) as e:
        raise ReadError(p, f"corrupt dlib file: {e}") from None
    finally:
        try:
            buf.close()
        except BufferError:
            pass


__all__ = ["Stream", "looks_like_dlib", "parse", "read"]
