"""Readers: one module per format behind one interface, ``read_model(path) -> Model``."""
from __future__ import annotations

import importlib
import os

from ..errors import FilterDBError, ReadError
from .base import ConvLayer, Model, Skipped, assign_conv_depths, assign_order_depths
from .detect import detect_format
from .find import expand_inputs, find_models

# format name -> module under filterdb.readers implementing read(path) -> Model
READER_MODULES = {
    "onnx": "onnx",
    "tflite": "tflite",
    "torch": "torch",
    "torchscript": "torch",
    "safetensors": "safetensors",
    "npz": "npz",
    "keras_h5": "keras",
    "keras": "keras",
    "tfjs_graph": "tfjs",
    "tfjs_layers": "tfjs",
    "tfjs_weights": "tfjs",
    "dlib": "dlib",
    "ncnn": "ncnn",
    "openvino": "openvino",
    "savedmodel": "savedmodel",
    "coreml": "coreml",
    "paddle": "paddle",
    "huggingface": "huggingface",
}


def read_model(path, format: str | None = None) -> Model:
    """Read a model file into its 2-D convolution layers.

    The format is detected from the content unless given. Any failure is a
    :class:`ReadError` naming the file and the reason. A live object (torch ``nn.Module``,
    state dict, Keras model, ``onnx.ModelProto``) is read by :mod:`filterdb.readers.live`.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        from .live import to_model as live_model  # lazy: start-up time: live objects only

        return live_model(path)
    fmt = format or detect_format(path)
    if fmt not in READER_MODULES:
        raise ReadError(path, f"unknown format {fmt!r}; known: {', '.join(sorted(READER_MODULES))}")
    module = importlib.import_module(f".{READER_MODULES[fmt]}", __name__)
    try:
        return module.read(path, fmt)
    except FilterDBError:
        raise
    except MemoryError:
        raise ReadError(path, "out of memory while reading") from None
    except Exception as e:  # a reader bug or a corrupt file the parser did not catch
        raise ReadError(path, f"corrupt or unsupported {fmt} file ({type(e).__name__}: {e})") from e


__all__ = ["ConvLayer", "Model", "Skipped", "read_model", "detect_format",
           "assign_conv_depths", "assign_order_depths", "find_models", "expand_inputs",
           "to_model"]


def to_model(obj, name: str | None = None) -> Model:
    """A :class:`Model` from a path or a live object (torch ``nn.Module``, state dict, Keras
    model, ``onnx.ModelProto``): see :mod:`filterdb.readers.live`."""
    if isinstance(obj, (str, bytes, os.PathLike)):
        return read_model(obj)
    from .live import to_model as live_model  # lazy: start-up time: live objects only

    return live_model(obj, name)
