"""A minimal protobuf wire-format decoder (no generated code, no schema files).

Readers that parse protobuf containers of frameworks we do not depend on (TensorFlow's
SavedModel, Core ML, ...) decode messages into ``{field number: [values]}`` with
:func:`fields`, and interpret the values themselves from the framework's ``.proto``
definitions. Wire types (protobuf encoding spec): 0 varint, 1 fixed64, 2 length-delimited
(bytes / strings / sub-messages / packed repeated), 5 fixed32; groups (3, 4) are refused.
"""
from __future__ import annotations

import struct

import numpy as np


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(buf, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``."""
    result = shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtoError("varint longer than 10 bytes")


def fields(buf, start: int = 0, end: int | None = None) -> dict[int, list]:
    """Decode one message: ``{field: [value, ...]}``; varints and fixed values as ints,
    length-delimited values as ``memoryview`` slices (decode them further as needed)."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    end = len(mv) if end is None else end
    out: dict[int, list] = {}
    pos = start
    while pos < end:
        key, pos = varint(mv, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            v, pos = varint(mv, pos)
        elif wire == 2:
            n, pos = varint(mv, pos)
            if pos + n > end:
                raise ProtoError(f"field {field}: {n} bytes past the end of the message")
            v = mv[pos:pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise ProtoError("truncated fixed32")
            v = int.from_bytes(mv[pos:pos + 4], "little")
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise ProtoError("truncated fixed64")
            v = int.from_bytes(mv[pos:pos + 8], "little")
            pos += 8
        else:
            raise ProtoError(f"unsupported wire type {wire} (field {field})")
        out.setdefault(field, []).append(v)
    if pos != end:
        raise ProtoError("message runs past its end")
    return out


def one(f: dict, n: int, default=None):
    """The last value of field ``n`` (protobuf's rule for a repeated scalar), or default."""
    v = f.get(n)
    return v[-1] if v else default


def text(v, default: str = "") -> str:
    return bytes(v).decode("utf-8", "replace") if v is not None else default


def sub(f: dict, n: int) -> dict:
    """Field ``n`` as a sub-message (empty if absent)."""
    v = one(f, n)
    return fields(v) if v is not None else {}


def subs(f: dict, n: int) -> list[dict]:
    return [fields(v) for v in f.get(n, [])]


def packed_varints(values: list) -> list[int]:
    """A repeated varint field: packed (bytes) and unpacked entries, in order."""
    out: list[int] = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            pos = 0
            while pos < len(v):
                x, pos = varint(v, pos)
                out.append(x)
    return out


def signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def packed_floats(values: list) -> np.ndarray:
    """A repeated float field (fixed32): packed bytes and unpacked ints, as float32."""
    parts = []
    for v in values:
        if isinstance(v, int):
            parts.append(np.array([struct.unpack("<f", v.to_bytes(4, "little"))[0]], np.float32))
        else:
            if len(v) % 4:
                raise ProtoError("packed floats not a multiple of 4 bytes")
            parts.append(np.frombuffer(v, "<f4").astype(np.float32))
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def map_entries(values: list) -> dict[str, memoryview]:
    """A ``map<string, Message>`` field: ``{key: value bytes}``."""
    out = {}
    for v in values:
        e = fields(v)
        out[text(one(e, 1))] = one(e, 2, memoryview(b""))
    return out


__all__ = [
    "ProtoError",
    "fields",
    "map_entries",
    "one",
    "packed_floats",
    "packed_varints",
    "signed64",
    "sub",
    "subs",
    "text",
    "varint",
]
