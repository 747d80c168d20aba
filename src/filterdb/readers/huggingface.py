"""Hugging Face-style model folders: ``config.json`` plus the weights as ``model.safetensors``,
shards listed in ``model.safetensors.index.json`` (``{"weight_map": {tensor: shard file}}``),
``pytorch_model.bin`` or ``pytorch_model.bin.index.json``.

The weights are read by the safetensors / PyTorch readers (state dicts: order-based depth,
:mod:`filterdb.readers.tensors`); shards in file-name order, each tensor checked to be in the
shard the index names. Shard names must be plain files of the folder (no ``..``, no absolute
paths, no links leading out). ``Model.metadata`` carries what the folder says about the
model, as database columns: ``architecture`` (``config.json`` ``architectures[0]``),
``x_model_type``, and from the model card (``README.md`` YAML front matter) ``task``
(``pipeline_tag``), ``training_dataset`` (``datasets``), ``x_license``, ``x_base_model``.
The model's ``sha256`` is that of its weights file (or of the shard index).
"""
from __future__ import annotations

import json
import os
import re

from ..errors import ReadError
from .base import Model, assign_order_depths, files_sha256
from .folders import HF_WEIGHTS, is_hf_folder

MAX_JSON = 64 << 20
PIPELINE_TASKS = {"image-classification": "Classification", "object-detection": "Object Detection",
                  "image-segmentation": "Segmentation", "depth-estimation": "Depth Estimation",
                  "image-to-image": None, "zero-shot-image-classification": "Classification"}


def _json(path: str, p: str) -> dict:
    if os.path.getsize(path) > MAX_JSON:
        raise ReadError(p, f"{os.path.basename(path)} larger than {MAX_JSON >> 20} MB")
    try:
        with open(path, "rb") as f:
            d = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise ReadError(p, f"{os.path.basename(path)} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ReadError(p, f"{os.path.basename(path)} is not a JSON object")
    return d


def _inside(folder: str, name, p: str) -> str:
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name) \
            or ".." in re.split(r"[/\\]", name):
        raise ReadError(p, f"shard {name!r} is not a file of the model folder")
    full = os.path.join(folder, name)
    real, root = os.path.realpath(full), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        raise ReadError(p, f"shard {name!r} is a link leading out of the model folder")
    if not os.path.isfile(real):
        raise ReadError(p, f"shard {name!r} is missing")
    return real


def card_metadata(text: str) -> dict:
    """The YAML front matter of a model card, the few flat keys used here (no YAML library:
    ``key: value`` and ``key:`` followed by ``- item`` lines)."""
    m = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", text, re.DOTALL)
    if not m:
        return {}
    out: dict = {}
    key = None
    for line in m.group(1).splitlines():
        if re.match(r"^\S[^:]*:", line):
            key, _, v = line.partition(":")
            key, v = key.strip(), v.strip().strip("'\"")
            out[key] = v if v else []
        elif key is not None and re.match(r"^\s*-\s+", line) and isinstance(out.get(key), list):
            out[key].append(re.sub(r"^\s*-\s+", "", line).strip().strip("'\""))
    return out


def folder_metadata(folder: str, config: dict, p: str) -> dict:
    meta: dict = {}
    arch = config.get("architectures")
    if isinstance(arch, list) and arch and isinstance(arch[0], str):
        meta["architecture"] = arch[0]
    if isinstance(config.get("model_type"), str):
        meta["x_model_type"] = config["model_type"]
    card = os.path.join(folder, "README.md")
    if os.path.isfile(card) and os.path.getsize(card) < MAX_JSON:
        real = os.path.realpath(card)
        if os.path.commonpath([real, os.path.realpath(folder)]) == os.path.realpath(folder):
            with open(real, "rb") as f:
                front = card_metadata(f.read().decode("utf-8", "replace"))
            tag = front.get("pipeline_tag")
            if isinstance(tag, str) and PIPELINE_TASKS.get(tag):
                meta["task"] = PIPELINE_TASKS[tag]
            ds = front.get("datasets")
            if ds:
                meta["training_dataset"] = ", ".join(ds) if isinstance(ds, list) else ds
            for k, col in (("license", "x_license"), ("base_model", "x_base_model")):
                v = front.get(k)
                if v:
                    meta[col] = ", ".join(v) if isinstance(v, list) else v
    return meta


def files(path) -> list[str]:
    """The weights file, or the shard index and its shards (what the model's sha256
    covers)."""
    p = os.fspath(path)
    weights = next(w for w in HF_WEIGHTS if os.path.isfile(os.path.join(p, w)))
    ident = _inside(p, weights, p)
    if not weights.endswith(".index.json"):
        return [ident]
    wmap = _json(ident, p).get("weight_map") or {}
    return [ident] + [_inside(p, s, p) for s in sorted(set(wmap.values()), key=str)]


def read(path, fmt: str = "huggingface") -> Model:
    """Read a Hugging Face-style model folder."""
    from . import read_model  # lazy: readers/__init__ imports this module before read_model exists

    p = os.fspath(path)
    if not os.path.isdir(p) or not is_hf_folder(p):
        raise ReadError(p, "not a Hugging Face-style folder (config.json + model weights)")
    config = _json(_inside(p, "config.json", p), p)
    weights = next(w for w in HF_WEIGHTS if os.path.isfile(os.path.join(p, w)))
    ident = _inside(p, weights, p)
    if weights.endswith(".index.json"):
        index = _json(ident, p)
        wmap = index.get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise ReadError(p, f"{weights} has no weight_map")
        shards = sorted(set(wmap.values()), key=lambda s: str(s))
        files = [_inside(p, s, p) for s in shards]
    else:
        files = [ident]
    shard_fmt = "safetensors" if "safetensors" in weights else "torch"
    layers, skipped, warnings, ops = [], [], [], {}
    producer = producer_version = None
    for f, name in zip(files, [os.path.basename(x) for x in files]):
        m = read_model(f, shard_fmt)
        if weights.endswith(".index.json") and shard_fmt == "safetensors":
            from .safetensors import (
                read_header,  # lazy: start-up time (the safetensors reader for such folders only)
            )

            header, _ = read_header(f)
            listed = {t for t, s in wmap.items() if os.path.basename(str(s)) == name}
            absent = sorted(listed - set(header))
            if absent:
                raise ReadError(p, f"tensor {absent[0]!r} is listed in {weights} for {name} "
                                   "but is not in that shard")
        layers += m.layers
        skipped += m.skipped
        warnings += [w for w in m.warnings if w not in warnings and
                     w != "no 2-D convolution layers found"]
        for k, v in m.op_counts.items():
            ops[k] = ops.get(k, 0) + v
        producer, producer_version = m.producer, m.producer_version
    assign_order_depths(layers)
    meta = folder_metadata(p, config, p)
    tv = config.get("transformers_version")
    sha = files_sha256([ident] + (files if ident not in files else []))
    model = Model(path=p, format="huggingface", sha256=sha, layers=layers,
                  skipped=skipped, depth_source="order",
                  producer=f"huggingface ({config.get('model_type') or producer or '?'})",
                  producer_version=str(tv) if tv else producer_version, op_counts=ops,
                  warnings=warnings, metadata=meta)
    return model


__all__ = ["card_metadata", "folder_metadata", "read"]
