"""Truncated and byte-flipped copies of the new formats' fixtures (model file and companion
weight files): every read ends in a model or a ReadError naming the file, never another
exception, and never the generic "corrupt or unsupported" wrapper that marks a reader bug."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from filterdb.errors import ReadError
from filterdb.readers import read_model

FIX = Path(__file__).parent / "fixtures"
# (folder, file to damage, what to read: a file in the folder or the folder itself)
CASES = [
    ("tfjs/graph_u16", "model.json", "model.json"),
    ("tfjs/graph_u16", "group1-shard2of3.bin", "model.json"),
    ("tfjs/layers_u8", "model.json", "model.json"),
    ("tfjs/bare", "weights_manifest.json", "weights_manifest.json"),
    ("ncnn", "net_fp16.ncnn.param", "net_fp16.ncnn.param"),
    ("ncnn", "net_fp16.ncnn.bin", "net_fp16.ncnn.param"),
    ("openvino", "int8.xml", "int8.xml"),
    ("openvino", "net_fp16.bin", "net_fp16.xml"),
    ("paddle", "net.pdmodel", "net.pdmodel"),
    ("paddle", "net.pdiparams", "net.pdmodel"),
    ("paddle/pir", "net.json", "net.json"),
    ("coreml", "net_u8.mlmodel", "net_u8.mlmodel"),
    ("coreml/net_int8.mlpackage", "Data/com.apple.CoreML/model.mlmodel", "."),
    ("coreml/net_int8.mlpackage", "Data/com.apple.CoreML/weights/weight.bin", "."),
    ("savedmodel/keras_net", "saved_model.pb", "."),
    ("savedmodel/keras_net", "variables/variables.index", "."),
    ("huggingface/tiny-resnet-sharded", "model.safetensors.index.json", "."),
]


@pytest.mark.parametrize("folder,damaged,entry", CASES)
def test_damaged_copies(tmp_path, folder, damaged, entry):
    rng = random.Random(f"{folder}/{damaged}")
    for trial in range(6):
        d = tmp_path / f"t{trial}"
        shutil.copytree(FIX / folder, d)
        target = d / damaged
        data = bytearray(target.read_bytes())
        if trial % 2 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
        try:
            read_model(d if entry == "." else d / entry)
        except ReadError as e:
            assert str(d) in str(e) and "corrupt or unsupported" not in str(e)
