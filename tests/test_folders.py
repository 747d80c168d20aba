"""Folders: Hugging Face-style folders written by transformers 5.24
(tests/fixtures/huggingface/make_fixtures.py) against the state dict they were saved from,
folders of models in inspect / check / add, model ids from folder names, and shard paths
that would leave the folder."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from filterdb.cli import main
from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model
from filterdb.readers.folders import expand, model_id

FIX = Path(__file__).parent / "fixtures"
HF = FIX / "huggingface"
HF_DIRS = ["tiny-resnet", "tiny-resnet-sharded", "tiny-resnet-bin"]


@pytest.mark.parametrize("name", HF_DIRS)
def test_hf_folder_against_its_state_dict(name):
    want = np.load(HF / "expected.npz")
    m = read_model(HF / name)
    assert detect_format(HF / name) == m.format == "huggingface"
    assert m.depth_source == "order"
    got = {l.name + ".weight": l.weight for l in m.layers}
    assert sorted(got) == sorted(want.keys())
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert m.n_filters_3x3 == sum(w.shape[0] * w.shape[1] for w in want.values()
                                  if w.shape[2:] == (3, 3))
    assert m.metadata == {"architecture": "ResNetForImageClassification",
                          "x_model_type": "resnet", "task": "Classification",
                          "training_dataset": "imagenet-1k", "x_license": "apache-2.0"}
    # numeric-aware layer order: the stem conv first
    assert m.layers[0].name == "resnet.embedder.embedder.convolution"


def test_sharded_index_paths(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(HF / "tiny-resnet-sharded", d)
    index = d / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    first = next(iter(doc["weight_map"]))
    for bad, why in (("../outside.safetensors", "not a file of the model folder"),
                     ("/etc/passwd", "not a file of the model folder"),
                     ("gone.safetensors", "missing")):
        doc2 = json.loads(json.dumps(doc))
        doc2["weight_map"][first] = bad
        index.write_text(json.dumps(doc2))
        with pytest.raises(ReadError, match=why):
            read_model(d)
    doc2 = json.loads(json.dumps(doc))
    doc2["weight_map"]["not.in.any.shard.weight"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(doc2))
    with pytest.raises(ReadError, match="not in that shard"):
        read_model(d)


def test_model_ids():
    assert model_id("zoo/blazeface/model.json") == "blazeface"
    assert model_id("x/human/models/age.json") == "age"
    assert model_id("a/resnet/model.safetensors.index.json") == "resnet"
    assert model_id("a/resnet/pytorch_model.bin") == "resnet"
    assert model_id("a/net_fp32.ncnn.param") == "net_fp32"
    assert model_id("a/keras_net/saved_model.pb") == "keras_net"
    assert model_id(str(FIX / "savedmodel" / "keras_net")) == "keras_net"
    assert model_id(str(FIX / "coreml" / "net.mlpackage")) == "net"
    assert model_id("a/resnet18.onnx") == "resnet18"


def _tree(tmp_path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(FIX / "tfjs" / "graph_f32", root / "blazeface")
    shutil.copytree(FIX / "ncnn", root / "ncnn", ignore=shutil.ignore_patterns("*.py"))
    shutil.copytree(HF / "tiny-resnet", root / "hf" / "tiny-resnet")
    shutil.copytree(FIX / "savedmodel" / "module_net", root / "tf" / "module_net")
    (root / "notes.txt").write_text("not a model")
    outside = tmp_path / "outside.onnx"
    shutil.copy(FIX / "ncnn" / "net.onnx", outside)
    os.symlink(outside, root / "link.onnx")
    return root


def test_expand_a_folder_of_models(tmp_path):
    root = _tree(tmp_path)
    got = [os.path.relpath(p, root) for p, err in expand([root])]
    assert got == ["blazeface/model.json", "hf/tiny-resnet", "ncnn/net.onnx",
                   "ncnn/net_fp16.ncnn.param", "ncnn/net_fp32.ncnn.param", "tf/module_net"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand([empty]) == [(str(empty), f"{empty}: no model files found in the folder")]


def test_inspect_check_and_add_a_folder(tmp_path, capsys):
    root = _tree(tmp_path)
    assert main(["inspect", "--json", str(root)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["format"] for d in listed] == ["tfjs_graph", "huggingface", "onnx", "ncnn",
                                             "ncnn", "savedmodel"]
    assert main(["check", "--json", str(root / "ncnn")]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert len(checked) == 3 and all(c["summary"] for c in checked)
    db = str(tmp_path / "db")
    assert main(["init", db]) == 0
    assert main(["add", db, str(root)]) == 0
    capsys.readouterr()
    assert main(["ls", db, "--json"]) == 0
    models = {m["model"]: m for m in json.loads(capsys.readouterr().out)}
    # generic file names take their folder's name (ncnn/net.onnx -> ncnn); the two ncnn
    # models share their .param text and differ in their .bin: two models, not one
    assert set(models) == {"blazeface", "tiny-resnet", "ncnn", "net_fp16", "net_fp32",
                           "module_net"}
    assert models["net_fp16"]["sha256"] != models["net_fp32"]["sha256"]
    assert models["tiny-resnet"]["architecture"] == "ResNetForImageClassification"
    assert models["tiny-resnet"]["task"] == "Classification"
    assert models["blazeface"]["filters_3x3"] == read_model(root / "blazeface" / "model.json").n_filters_3x3
    # adding the folder again: every model already there
    assert main(["add", db, str(root)]) == 0
    assert capsys.readouterr().out.count("exists") == 6
