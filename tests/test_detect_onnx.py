"""ONNX detection walks the ModelProto's top-level fields (readers/detect.py): real ONNX
files (onnx's own writer) are found, also truncated ones (their reader reports it), and
files whose first byte merely looks like a protobuf tag are not ONNX."""
from __future__ import annotations

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers.detect import ONNX, detect_format

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(**kw):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(g, **kw)


def test_real_onnx_files_are_detected(tmp_path):
    m = _model(producer_name="filterdb-test", doc_string="a doc")
    helper.set_model_props(m, {"k": "v", "k2": "v2"})
    p = tmp_path / "m.bin"  # no telling suffix: found by its bytes
    p.write_bytes(m.SerializeToString())
    assert detect_format(p) == ONNX
    q = tmp_path / "cut.bin"  # cut inside the graph: still ONNX, so its reader says why
    q.write_bytes(m.SerializeToString()[:200])
    assert detect_format(q) == ONNX
    # a model without ir_version: the first field is another ModelProto field
    m2 = _model(producer_name="p")
    m2.ClearField("ir_version")
    r = tmp_path / "noir.bin"
    r.write_bytes(m2.SerializeToString())
    assert r.read_bytes()[0] == 0x12 and detect_format(r) == ONNX


@pytest.mark.parametrize("text", [b'"name": "not a model"\n' * 3, b"2023-12-03 a log line\n" * 9,
                                  b"B" + b"x" * 300, b"*" * 80, b":" + bytes(range(1, 60)),
                                  b'"short', b"\x08\xff\xff\x03rest"])
def test_text_that_starts_like_a_tag_is_not_onnx(tmp_path, text):
    p = tmp_path / "f.bin"
    p.write_bytes(text)
    with pytest.raises(ReadError) as e:
        detect_format(p)
    assert "f.bin" in str(e.value)
