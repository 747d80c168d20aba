"""safetensors files, parsed directly (no torch): 8-byte little-endian header length, a JSON
header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian tensor bytes.

Tensor order (for the order-based depth): many writers sort the JSON header by name, which
would put ``conv10`` before ``conv2``; the data block keeps the write order, so tensors are
ordered by their ``data_offsets``. The reference ``safetensors`` writer itself sorts the data by
(dtype alignment, name): when the data order is exactly that, the model order is lost and a
numeric-aware name sort is used instead, with a warning (:func:`tensor_order`). Conv-layer rules:
:mod:`filterdb.readers.tensors`.
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from ..errors import ReadError
from .base import check_file, file_sha256
from .tensors import TensorInfo, tensors_to_model

# safetensors dtype -> (numpy dtype or None for bf16, floating?)
_DTYPES = {
    "F64": ("<f8", True), "F32": ("<f4", True), "F16": ("<f2", True), "BF16": ("<u2", True),
    "I64": ("<i8", False), "I32": ("<i4", False), "I16": ("<i2", False), "I8": ("i1", False),
    "U64": ("<u8", False), "U32": ("<u4", False), "U16": ("<u2", False), "U8": ("u1", False),
    "BOOL": ("?", False),
}
_FLOAT8 = {"F8_E4M3", "F8_E5M2", "F8_E4M3FN", "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0"}
_MAX_HEADER = 100 << 20


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the upper half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_header(path: str) -> tuple[dict, int]:
    """The JSON header and the offset where the data block starts. Validates offsets."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ReadError(path, "truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise ReadError(path, f"truncated or corrupt safetensors file (header of {n} bytes, "
                                  f"file of {size})")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise ReadError(path, f"corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ReadError(path, "corrupt safetensors header (not a JSON object)")
    start = 8 + n
    data_len = size - start
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            b, e = (int(x) for x in t["data_offsets"])
            shape = [int(s) for s in t["shape"]]
            dtype = t["dtype"]
        except (KeyError, TypeError, ValueError):
            raise ReadError(path, f"corrupt safetensors header entry {name!r}") from None
        if not 0 <= b <= e or any(d < 0 for d in shape):
            raise ReadError(path, f"corrupt safetensors header entry {name!r} (data_offsets "
                                  f"[{b}, {e}], shape {shape})")
        if e > data_len:
            raise ReadError(path, f"truncated safetensors file: tensor {name!r} ends at byte "
                                  f"{start + e}, the file has {size}")
        if dtype in _DTYPES:
            need = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype][0]).itemsize
            if e - b != need:
                raise ReadError(path, f"corrupt safetensors file: tensor {name!r} holds {e - b} "
                                      f"bytes, its shape and dtype need {need}")
    return header, start


def _loader(path: str, start: int, t: dict):
    def load() -> np.ndarray:
        b, e = t["data_offsets"]
        np_dtype = _DTYPES[t["dtype"]][0]
        with open(path, "rb") as f:
            f.seek(start + b)
            buf = f.read(e - b)
        raw = np.frombuffer(buf, dtype=np_dtype).reshape(t["shape"])
        if t["dtype"] == "BF16":
            return bf16_to_f32(raw)
        return raw.astype(np.float32)

    return load


def natural_key(name: str) -> tuple:
    """``features.10.weight`` sorts after ``features.2.weight``."""
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name))


def _itemsize(dtype: str) -> int:
    return np.dtype(_DTYPES[dtype][0]).itemsize if dtype in _DTYPES else 1


def tensor_order(entries: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], list[str]]:
    """Header entries in write order (by ``data_offsets``). The reference writer
    (``safetensors.numpy/torch.save_file``) lays the data out sorted by (alignment, name),
    which loses the model order: when the data order is exactly that sort, the names are
    ordered numeric-aware instead (``conv2`` before ``conv10``) and a warning says so."""
    by_offset = sorted(entries, key=lambda kv: (int(kv[1]["data_offsets"][0]), kv[0]))
    writer_sorted = sorted(entries, key=lambda kv: (-_itemsize(kv[1]["dtype"]), kv[0]))
    if len(entries) > 1 and [k for k, _ in by_offset] == [k for k, _ in writer_sorted]:
        natural = sorted(entries, key=lambda kv: natural_key(kv[0]))
        if [k for k, _ in natural] != [k for k, _ in by_offset]:
            return natural, ["tensors are stored sorted by name (the file does not keep the "
                             "model order): order taken from a numeric-aware sort of the names"]
    return by_offset, []


def read(path, fmt: str = "safetensors"):
    p = check_file(path)
    header, start = read_header(p)
    meta = header.get("__metadata__") or {}
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    entries, warnings = tensor_order(entries)
    infos = []
    for name, t in entries:
        dtype = t["dtype"]
        if dtype in _FLOAT8 and len(t["shape"]) == 4:
            warnings.append(f"tensor {name!r} has dtype {dtype} (float8), not read")
        is_float = dtype in _DTYPES and _DTYPES[dtype][1]
        infos.append(TensorInfo(name, tuple(t["shape"]), is_float, _loader(p, start, t)))
    producer = meta.get("format") if isinstance(meta, dict) else None
    return tensors_to_model(infos, path=p, fmt=fmt, sha256=file_sha256(p),
                            producer=producer, warnings=warnings)
