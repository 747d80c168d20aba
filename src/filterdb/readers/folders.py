"""Folders: which models a directory holds, what a folder model is called, and which file
identifies it.

- :func:`expand` turns the paths a user gives (``inspect``, ``check``, ``add``) into model
  paths: a file stays itself; a directory that *is* a model (a SavedModel, an
  ``.mlpackage``, a Hugging Face-style folder) is one model; any other directory is walked
  (sorted, recursively) and every file or model folder in it whose format is detected is
  taken. Companion files (weight shards, ``.bin`` / ``.pdiparams`` beside their model) are
  not models and are left out; nothing reached through a symlink leading out of the given
  directory is taken.
- :func:`model_id`: a model's id from its path: the file's stem, except for generic names
  (``model.json``, ``saved_model.pb``, ``model.safetensors``, ``pytorch_model.bin``,
  ``model.ncnn.param``, ...) and folder models, which take their folder's name.
- :func:`identity_file`: the file whose sha256 identifies a model (the path itself for a
  file; ``saved_model.pb``, the Core ML spec, or the Hugging Face weights / index file).
"""
from __future__ import annotations

import os
import re

from ..errors import ReadError
from .detect import HF_WEIGHTS, detect_format, is_hf_folder

GENERIC_STEMS = {"model", "saved_model", "pytorch_model", "tf_model", "flax_model",
                 "model_weights", "weights", "weights_manifest", "inference", "net", "graph",
                 "frozen_inference_graph", "frozen_graph", "checkpoint", "best", "last",
                 "diffusion_pytorch_model", "openvino_model", "model-00001-of-00001"}
# companion files of another model file: never models themselves
COMPANION_EXT = {".pdiparams", ".info"}
MAX_FILES = 100_000


def folder_kind(path: str) -> str | None:
    """The format of a directory that is one model, or None."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "savedmodel"
    if os.path.isfile(os.path.join(path, "Data", "com.apple.CoreML", "model.mlmodel")):
        return "coreml"
    if is_hf_folder(path):
        return "huggingface"
    return None


def model_id(path: str) -> str:
    """A model's id from its path (see the module docstring)."""
    p = os.path.normpath(os.fspath(path))
    base = os.path.basename(p)
    if os.path.isdir(p):
        return re.sub(r"\.mlpackage$", "", base) or base
    stem = os.path.splitext(base)[0] or base
    if stem.endswith(".index"):  # model.safetensors.index.json
        stem = stem[:-len(".index")]
    if os.path.splitext(stem)[1].lower() in (".ncnn", ".safetensors", ".bin", ".weights"):
        stem = os.path.splitext(stem)[0]  # model.ncnn.param, model.safetensors.index.json
    if stem.lower() in GENERIC_STEMS or re.fullmatch(r"(model|pytorch_model)-\d+-of-\d+", stem):
        parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
        if parent in ("com.apple.CoreML",):  # .../x.mlpackage/Data/com.apple.CoreML/model.mlmodel
            up = os.path.abspath(os.path.join(os.path.dirname(p), "..", ".."))
            parent = re.sub(r"\.mlpackage$", "", os.path.basename(up))
        return parent or stem
    return stem


def model_files(path: str) -> list[str]:
    """The files whose bytes, one after another, give the model's ``sha256``
    (:func:`~filterdb.readers.base.files_sha256`): the file itself, or a multi-file
    format's topology and weights (each reader's ``files``)."""
    import importlib

    from . import (
        READER_MODULES,  # lazy: readers/__init__ imports this module before READER_MODULES exists
    )

    p = os.fspath(path)
    try:
        fmt = detect_format(p)
    except ReadError:
        if os.path.isdir(p):
            raise
        return [p]
    module = importlib.import_module(f".{READER_MODULES[fmt]}", __package__)
    if hasattr(module, "files"):
        return module.files(p)
    return [identity_file(p)]


def identity_file(path: str) -> str:
    """The file whose sha256 is the model's ``sha256``."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        return p
    kind = folder_kind(p)
    if kind == "savedmodel":
        return os.path.join(p, "saved_model.pb")
    if kind == "coreml":
        return os.path.join(p, "Data", "com.apple.CoreML", "model.mlmodel")
    if kind == "huggingface":
        for w in HF_WEIGHTS:
            if os.path.isfile(os.path.join(p, w)):
                return os.path.join(p, w)
    raise ReadError(p, "is a directory, not a model file")


def _companions(folder: str, names: list[str]) -> set[str]:
    """Files in ``folder`` that belong to another model file there."""
    out = set()
    stems = {os.path.splitext(n)[0] for n in names}
    for n in names:
        root, ext = os.path.splitext(n)
        if ext.lower() == ".bin" and root in stems and any(
                os.path.splitext(m)[1].lower() in (".param", ".xml") and
                os.path.splitext(m)[0] == root for m in names):
            out.add(n)  # ncnn / OpenVINO weights
        if ext.lower() in COMPANION_EXT:
            out.add(n)
    return out


def expand(paths) -> list[tuple[str, str | None]]:
    """``[(model path, None)]`` for the given paths, directories walked; entries that could
    not be listed come back as ``(path, error text)`` (the caller reports them)."""
    out: list[tuple[str, str | None]] = []
    for given in paths:
        g = os.fspath(given)
        if not os.path.isdir(g) or folder_kind(g):
            out.append((g, None))
            continue
        root = os.path.realpath(g)
        found = []
        n_seen = 0
        for d, dirs, files in os.walk(g, followlinks=False):
            dirs.sort()
            keep = []
            for sub in dirs:
                full = os.path.join(d, sub)
                if os.path.islink(full):
                    continue  # not followed (it may lead out of the folder)
                if folder_kind(full):
                    found.append(full)
                else:
                    keep.append(sub)
            dirs[:] = keep
            skip = _companions(d, files)
            for name in sorted(files):
                n_seen += 1
                if n_seen > MAX_FILES:
                    out.append((g, f"{g}: more than {MAX_FILES} files; give sub-folders"))
                    break
                full = os.path.join(d, name)
                if name in skip or name.startswith("."):
                    continue
                real = os.path.realpath(full)
                if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
                    continue
                try:
                    fmt = detect_format(full)
                except ReadError:
                    continue
                if fmt == "onnx" and not name.lower().endswith(".onnx"):
                    continue  # the ONNX sniff is weak (many text files pass it)
                found.append(full)
        if not found:
            out.append((g, f"{g}: no model files found in the folder"))
        out += [(f, None) for f in sorted(found)]
    return out


__all__ = ["HF_WEIGHTS", "expand", "folder_kind", "identity_file", "is_hf_folder", "model_files", "model_id"]
