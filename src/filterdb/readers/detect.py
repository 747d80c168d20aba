"""Which format a model file is, from its content; the extension is only a hint."""
from __future__ import annotations

import json
import os
import struct
import zipfile

from ..errors import ReadError
from . import protowire
from .base import check_file

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "pytorch_model.bin.index.json")


def is_hf_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, w)) for w in HF_WEIGHTS)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

# format names, one reader module each
ONNX = "onnx"
TFLITE = "tflite"
TORCH = "torch"  # pickled state dicts / checkpoints (zip or legacy)
TORCHSCRIPT = "torchscript"
SAFETENSORS = "safetensors"
NPZ = "npz"
KERAS_H5 = "keras_h5"
KERAS = "keras"  # Keras 3 .keras zip archive
TFJS_GRAPH, TFJS_LAYERS, TFJS_WEIGHTS = "tfjs_graph", "tfjs_layers", "tfjs_weights"
DLIB = "dlib"  # dlib::serialize of a DNN net_type (.dat)
NCNN = "ncnn"  # .param text + .bin
OPENVINO = "openvino"  # IR .xml + .bin
SAVEDMODEL = "savedmodel"  # TensorFlow SavedModel folder (saved_model.pb + variables/)
COREML = "coreml"  # .mlmodel file or .mlpackage folder
PADDLE = "paddle"  # .pdmodel (ProgramDesc) or PIR .json, + .pdiparams
HUGGINGFACE = "huggingface"  # a folder: config.json + model.safetensors / pytorch_model.bin

EXTENSION_HINTS = {
    ".onnx": ONNX,
    ".tflite": TFLITE,
    ".pt": TORCH,
    ".pth": TORCH,
    ".bin": TORCH,
    ".ckpt": TORCH,
    ".jit": TORCHSCRIPT,
    ".safetensors": SAFETENSORS,
    ".npz": NPZ,
    ".h5": KERAS_H5,
    ".hdf5": KERAS_H5,
    ".keras": KERAS,
    ".dat": DLIB,
    ".param": NCNN,
    ".xml": OPENVINO,
    ".mlmodel": COREML,
    ".pdmodel": PADDLE,
}


def _hdf5_at(f, size: int) -> bool:
    # The superblock may sit at 0, 512, 1024, 2048, ... (user block).
    off = 0
    while off + 8 <= size and off <= (1 << 20):
        f.seek(off)
        if f.read(8) == HDF5_SIGNATURE:
            return True
        off = 512 if off == 0 else off * 2
    return False


def _zip_kind(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except UnicodeDecodeError:
        raise ReadError(path, "corrupt zip archive: a member name is flagged UTF-8 but is not "
                              "valid UTF-8") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return None
    base = {n.split("/", 1)[-1] if "/" in n else n for n in names}
    if "config.json" in names and any(n.endswith("model.weights.h5") for n in names):
        return KERAS
    if any(n.endswith("data.pkl") for n in names):
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return TORCHSCRIPT
        return TORCH
    if names and all(n.endswith(".npy") for n in names):
        return NPZ
    if "data.pkl" in base:
        return TORCH
    return None


def _safetensors_header(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or 8 + n > size:
        return False
    return head[8:9] == b"{"


# ModelProto's top-level fields (onnx.proto3) by wire type: varint (ir_version,
# model_version) and length-delimited (names, doc string, graph, opsets, metadata, training
# info, functions, configuration)
_ONNX_VARINT = frozenset((1, 5))
_ONNX_LEN = frozenset((2, 3, 4, 6, 7, 8, 14, 20, 25, 26))
_ONNX_MAX_FIELDS = 4096


def _varint_at(f) -> int | None:
    """The protobuf varint at ``f``'s position (:func:`.protowire.varint`), ``f`` left just
    after it; None if it is cut off by the end of the file or longer than 10 bytes."""
    pos = f.tell()
    try:
        v, used = protowire.varint(f.read(10), 0)
    except protowire.ProtoError:
        return None
    f.seek(pos + used)
    return v


def _looks_like_onnx(f, size: int) -> bool:
    """Whether ``f`` (at 0) walks as an ONNX ModelProto: every top-level field a field of
    ModelProto with its wire type, ``ir_version`` plausible (1-100), length-delimited
    fields skipped by their length. A walk that runs off the end after a whole valid first
    field is still ONNX (a truncated file: its reader says so); a first byte that merely
    looks like a tag (text starting with ``"`` or ``2``) is not."""
    fields = 0
    while fields < _ONNX_MAX_FIELDS and f.tell() < size:
        tag = _varint_at(f)
        if tag is None:
            return fields > 0
        field, wire = tag >> 3, tag & 7
        if wire == 0 and field in _ONNX_VARINT:
            v = _varint_at(f)
            if v is None:
                return fields > 0
            if field == 1 and not 1 <= v <= 100:
                return False
        elif wire == 2 and field in _ONNX_LEN:
            n = _varint_at(f)
            if n is None or f.tell() + n > size:
                return fields > 0
            f.seek(n, 1)
        else:
            return False
        fields += 1
    return fields > 0


def detect_format(path) -> str:
    """The format name of ``path``, from its bytes. Raises ReadError when unknown."""
    if os.path.isdir(os.fspath(path)):
        d = os.fspath(path)
        if os.path.isfile(os.path.join(d, "saved_model.pb")):
            return SAVEDMODEL
        if os.path.isfile(os.path.join(d, "Data", "com.apple.CoreML", "model.mlmodel")):
            return COREML
        if is_hf_folder(d):
            return HUGGINGFACE
    p = check_file(path)
    # protobuf files whose first bytes look like an ONNX file's: known by their names
    if os.path.basename(p) == "saved_model.pb":
        return SAVEDMODEL
    if p.lower().endswith(".mlmodel"):
        return COREML
    if p.lower().endswith(".pdmodel"):
        return PADDLE
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        head = f.read(64)
        if head[4:8] == b"TFL3":
            return TFLITE
        if head.startswith(ZIP_SIGNATURE):
            kind = _zip_kind(p)
            if kind is None:
                raise ReadError(p, "zip archive that is neither a PyTorch, Keras 3 nor npz file")
            return kind
        if _hdf5_at(f, size):
            return KERAS_H5
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return TORCH  # legacy (non-zip) torch.save pickle
        if _safetensors_header(head, size):
            f.seek(8)
            (n,) = struct.unpack("<Q", head[:8])
            if n <= 100 << 20:
                try:
                    json.loads(f.read(n))
                    return SAFETENSORS
                except (ValueError, UnicodeDecodeError):
                    pass
        from .dlib import (
            looks_like_dlib,  # lazy: start-up time (a format's module loads only to sniff it)
        )

        if looks_like_dlib(head):
            return DLIB
        f.seek(0)
        if _looks_like_onnx(f, size):
            return ONNX
        if head.lstrip()[:1] in (b"{", b"["):  # JSON: a TF.js model or weights manifest
            from .tfjs import (
                sniff,  # lazy: start-up time (a format's module loads only to sniff it)
            )

            kind = sniff(p)
            if kind is not None:
                return kind
            from .paddle import (
                sniff as paddle_sniff,  # lazy: start-up time (a format's module loads only to sniff it)
            )

            if paddle_sniff(p):
                return PADDLE
        from .ncnn import (
            looks_like_ncnn,  # lazy: start-up time (a format's module loads only to sniff it)
        )
        from .openvino import (
            looks_like_openvino,  # lazy: start-up time (a format's module loads only to sniff it)
        )

        if looks_like_ncnn(head):
            return NCNN
        if looks_like_openvino(head):
            return OPENVINO
    hint = EXTENSION_HINTS.get(os.path.splitext(p)[1].lower())
    why = f" (named like {hint}, but its content is not)" if hint else ""
    raise ReadError(p, f"unknown model format{why}")
