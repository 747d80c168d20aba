"""PaddlePaddle inference models (``x.pdmodel`` or PIR ``x.json``, + ``x.pdiparams``),
without Paddle.

``.pdmodel`` is a ``ProgramDesc`` protobuf (paddle/fluid/framework/framework.proto),
decoded with :mod:`.protowire`: blocks of ``VarDesc`` (name, type with a ``TensorDesc`` of
data type and dims, persistable) and ``OpDesc`` (type, named input / output variable lists,
attributes). ``.pdiparams`` (``save_combine``) holds the persistable variables of block 0
except ``feed`` / ``fetch``, sorted by name, each a serialised LoDTensor: uint32 version,
uint64 LoD level count and the levels (uint64 byte size + data each), then the tensor:
uint32 version, int32 size of a ``TensorDesc`` protobuf, the ``TensorDesc``, and the raw
little-endian data.

Paddle 3's PIR programs (``x.json``: ``{"base_code": {"magic": "pir"}, "program": {"regions":
[{"blocks": [{"ops": [...]}]}]}}``) are read too: parameter ops ``"p"`` (name in ``A[3]``,
shape in the output's type), ops ``"<dialect>.<name>"`` with inputs ``I`` and outputs ``O`` as
value ids (``{"%": id}``), attributes ``A`` as ``{"N": name, "AT": {"D": value}}``; their
``.pdiparams`` holds the parameters sorted by name, as above.

Convs: ``conv2d``, ``depthwise_conv2d`` and the fused inference forms (``conv2d_fusion``,
``fused_conv2d_add_act``, ``fused_conv2d``); the ``Filter`` is ``(c_out, c_in / groups, kh,
kw)`` (Paddle's filter layout for both data formats), ``groups`` from the attribute.
Transposed and 3-D convs are skipped. Depth: the longest path over the ops of block 0 from
the ``feed`` ops' outputs. Params must fill ``.pdiparams`` exactly; the file beside the
``.pdmodel`` (same stem) is the only other file read.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ReadError
from . import protowire as pw
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

CONV_OPS = {"conv2d", "depthwise_conv2d", "conv2d_fusion", "fused_conv2d_add_act",
            "fused_conv2d"}
SKIPPED_OPS = {
    "conv2d_transpose": "transposed convolution, not 2-D conv filters",
    "depthwise_conv2d_transpose": "transposed convolution, not 2-D conv filters",
    "conv3d": "3-D convolution, not 2-D conv filters",
    "conv3d_transpose": "transposed 3-D convolution, not 2-D conv filters",
    "deformable_conv": "deformable convolution (offsets at run time), not read",
}
# VarType.Type -> numpy
DTYPES = {0: "?", 1: "<i2", 2: "<i4", 3: "<i8", 4: "<f2", 5: "<f4", 6: "<f8", 20: "u1",
          21: "i1"}
BF16 = 22
LOD_TENSOR = 7
FEED_FETCH = {"feed", "fetch"}
MAX_FILE = 2 << 30


class _Corrupt(Exception):
    """Internal: the model and its params disagree."""


def _var_list(entries: list) -> dict[str, list[str]]:
    out = {}
    for v in entries:
        f = pw.fields(v)
        out[pw.text(pw.one(f, 1))] = [pw.text(x) for x in f.get(2, [])]
    return out


def _attrs(entries: list) -> dict[str, dict]:
    return {pw.text(pw.one(f, 1)): f for f in (pw.fields(v) for v in entries)}


def _int_attr(attrs: dict, name: str, default: int) -> int:
    a = attrs.get(name)
    if a is None or 3 not in a:
        return default
    v = pw.one(a, 3)
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_program(buf) -> dict:
    prog = pw.fields(buf)
    blocks = pw.subs(prog, 1)
    if not blocks:
        raise _Corrupt("program without blocks")
    b0 = blocks[0]
    variables = []
    for vf in pw.subs(b0, 3):
        t = pw.sub(vf, 2)
        kind = pw.one(t, 1, 0)
        lt = pw.sub(pw.sub(t, 3), 1)
        variables.append({"name": pw.text(pw.one(vf, 1)), "kind": kind,
                          "persistable": bool(pw.one(vf, 3, 0)),
                          "dtype": pw.one(lt, 1), "dims": [pw.signed64(d) for d in
                                                            pw.packed_varints(lt.get(2, []))]})
    ops = []
    for of in pw.subs(b0, 4):
        ops.append({"type": pw.text(pw.one(of, 3)), "inputs": _var_list(of.get(1, [])),
                    "outputs": _var_list(of.get(2, [])), "attrs": _attrs(of.get(4, []))})
    version = pw.one(pw.sub(prog, 4), 1)
    return {"vars": variables, "ops": ops, "version": version, "n_blocks": len(blocks)}


def _tensor(buf, pos: int) -> tuple[np.ndarray, int]:
    """One LoDTensor of a ``save_combine`` file at ``pos``: (array, next position)."""
    def take(n):
        nonlocal pos
        if n < 0 or pos + n > len(buf):
            raise _Corrupt(f"params end inside a tensor (byte {pos})")
        at = pos
        pos += n
        return at

    at = take(4)
    if int.from_bytes(buf[at:at + 4], "little") != 0:
        raise _Corrupt("unknown LoDTensor version")
    at = take(8)
    for _ in range(int.from_bytes(buf[at:at + 8], "little")):
        a2 = take(8)
        take(int.from_bytes(buf[a2:a2 + 8], "little"))
    at = take(4)
    if int.from_bytes(buf[at:at + 4], "little") != 0:
        raise _Corrupt("unknown tensor version")
    at = take(4)
    n = int.from_bytes(buf[at:at + 4], "little", signed=True)
    at = take(n)
    desc = pw.fields(memoryview(buf)[at:at + n])
    dt = pw.one(desc, 1, 5)
    dims = [pw.signed64(d) for d in pw.packed_varints(desc.get(2, []))]
    count = int(np.prod(dims)) if dims else 1
    if dt == BF16:
        at = take(2 * count)
        a = (np.frombuffer(buf, "<u2", count, at).astype(np.uint32) << 16).view(np.float32)
    elif dt in DTYPES:
        item = np.dtype(DTYPES[dt]).itemsize
        at = take(item * count)
        a = np.frombuffer(buf, DTYPES[dt], count, at)
    else:
        raise _Corrupt(f"tensor data type {dt} is not supported")
    return a.reshape(dims), pos


def read_params(buf, names: list[str]) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name in names:
        out[name], pos = _tensor(buf, pos)
    if pos != len(buf):
        raise _Corrupt(f"params file holds {len(buf)} bytes, the {len(names)} persistable "
                       f"variables take {pos}: it does not belong to this model")
    return out


def _beside(p: str, ext: str) -> str:
    return file_beside(p, ext, "params file",
                       missing="params file {name} (beside the model) is missing")


def looks_like_pir(doc) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("base_code"), dict)
            and doc["base_code"].get("magic") == "pir" and "program" in doc)


def sniff(path: str) -> bool:
    import json

    if os.path.getsize(path) > MAX_FILE:
        return False
    try:
        with open(path, "rb") as f:
            return looks_like_pir(json.loads(f.read()))
    except (ValueError, UnicodeDecodeError, OSError):
        return False


def _pir_attr(op: dict, name: str, default=None):
    for a in op.get("A") or []:
        if isinstance(a, dict) and a.get("N") == name:
            return (a.get("AT") or {}).get("D", default)
    return default


def _pir_ids(v) -> list[str]:
    items = v if isinstance(v, list) else [v]
    return [f"%{x['%']}" for x in items if isinstance(x, dict) and x.get("%")]


def parse_pir(doc: dict) -> dict:
    """A PIR program as the same ``{"vars", "ops"}`` structure :func:`parse_program` gives."""
    try:
        block = doc["program"]["regions"][0]["blocks"][0]
    except (KeyError, IndexError, TypeError):
        raise _Corrupt("PIR program without a first block") from None
    variables, ops = [], []
    for op in block.get("ops") or []:
        if not isinstance(op, dict):
            raise _Corrupt("PIR op is not an object")
        kind = str(op.get("#", ""))
        outs = _pir_ids(op.get("O"))
        if kind == "p":
            a = op.get("A") or []
            name = a[3] if len(a) > 3 and isinstance(a[3], str) else None
            if name is None or not outs:
                raise _Corrupt("PIR parameter op without a name")
            tt = (op.get("O") or {}).get("TT", {}).get("D", [None, []])
            variables.append({"name": name, "kind": LOD_TENSOR, "persistable": True,
                              "dtype": None, "dims": list(tt[1]) if len(tt) > 1 else []})
            ops.append({"type": "parameter", "inputs": {}, "outputs": {"Out": outs},
                        "attrs": {}, "param": name})
            continue
        t = kind.split(".", 1)[-1]
        ins = _pir_ids(op.get("I") or [])
        ops.append({"type": "feed" if t == "data" else t,
                    "inputs": {"Input": ins[:1], "Filter": ins[1:2], "X": ins[2:]},
                    "outputs": {"Output": outs}, "attrs": {}, "groups": _pir_attr(op, "groups", 1)})
    return {"vars": variables, "ops": ops, "version": None, "n_blocks": 1, "pir": True}


def _read(p: str) -> Model:
    if os.path.getsize(p) > MAX_FILE:
        raise ReadError(p, "model file larger than 2 GB")
    with open(p, "rb") as f:
        raw = f.read()
    if raw.lstrip()[:1] == b"{":
        import json

        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ReadError(p, f"not valid JSON ({e})") from None
        if not looks_like_pir(doc):
            raise ReadError(p, "JSON that is not a Paddle PIR program")
        prog = parse_pir(doc)
    else:
        prog = parse_program(raw)
    persist = sorted(v["name"] for v in prog["vars"]
                     if v["persistable"] and v["name"] not in FEED_FETCH
                     and v["kind"] == LOD_TENSOR)
    params_path = _beside(p, ".pdiparams")
    with open(params_path, "rb") as f:
        params = read_params(f.read(), persist)
    for v in prog["vars"]:  # the program's shapes must be the stored ones
        if v["name"] in params and v["dims"] and list(params[v["name"]].shape) != v["dims"] \
                and -1 not in v["dims"]:
            raise _Corrupt(f"parameter {v['name']!r} is {list(params[v['name']].shape)} in the "
                           f"params file but {v['dims']} in the program")
    param_of = {op["outputs"]["Out"][0]: op["param"] for op in prog["ops"]
                if op["type"] == "parameter"}
    layers: list[ConvLayer] = []
    skipped: list[Skipped] = []
    at: list[int] = []
    ops = prog["ops"]
    for i, op in enumerate(ops):
        t = op["type"]
        name = (op["outputs"].get("Output") or op["outputs"].get("Out") or [f"{t}_{i}"])[0]
        if t in SKIPPED_OPS:
            skipped.append(Skipped(name, t, SKIPPED_OPS[t]))
            continue
        if t not in CONV_OPS:
            continue
        filt = (op["inputs"].get("Filter") or [None])[0]
        filt = param_of.get(filt, filt)
        if filt not in params:
            skipped.append(Skipped(name, t, f"filter {filt!r} is not a stored parameter"))
            continue
        w = np.asarray(params[filt])
        if w.ndim != 4:
            skipped.append(Skipped(name, t, f"filter of rank {w.ndim}, not a 2-D conv"))
            continue
        if w.dtype.kind not in "fiu":
            raise _Corrupt(f"filter {filt!r} of dtype {w.dtype}")
        groups = int(op["groups"]) if "groups" in op else _int_attr(op["attrs"], "groups", 1)
        layers.append(ConvLayer(filt, t, w.astype(np.float32),
                                groups=groups))
        at.append(i)
    inputs_ = {x for op in ops if op["type"] == "feed" for v in op["outputs"].values() for x in v}
    nodes = [i for i, op in enumerate(ops) if op["type"] not in FEED_FETCH | {"parameter"}]
    node_in = [[x for v in ops[i]["inputs"].values() for x in v] for i in nodes]
    node_out = [[x for v in ops[i]["outputs"].values() for x in v] for i in nodes]
    try:
        depths = dict(zip(nodes, longest_path_depths(node_in, node_out, inputs_)))
    except ValueError as e:
        raise _Corrupt(str(e)) from None
    warn = assign_graph_depths(layers, at, depths, "a feed")
    warnings = [warn] if warn else []
    if prog["n_blocks"] > 1:
        warnings.append("the program has sub-blocks (control flow), which were not read")
    return Model(path=p, format="paddle", sha256=files_sha256([p, params_path]), layers=layers,
                 skipped=skipped, depth_source=DEPTH_GRAPH, producer="paddlepaddle",
                 producer_version=str(prog["version"]) if prog["version"] else None,
                 op_counts=count_ops(op["type"] for op in ops), warnings=warnings)


def files(path) -> list[str]:
    """The program and its ``.pdiparams`` (what the model's sha256 covers)."""
    return [os.fspath(path), _beside(os.fspath(path), ".pdiparams")]


# what a truncated or malformed file raises while it is parsed
_PARSE_ERRORS = (_Corrupt, pw.ProtoError, ValueError, TypeError, KeyError, IndexError,
                 OverflowError)


def read(path, fmt: str = "paddle") -> Model:
    """Read the 2-D convolutions of a Paddle ``.pdmodel`` or PIR ``.json`` (params from its
    ``.pdiparams``)."""
    p = check_file(path)
    return read_or_corrupt(p, _read, "Paddle model", _PARSE_ERRORS)


__all__ = ["parse_pir", "parse_program", "read", "read_params", "sniff"]
