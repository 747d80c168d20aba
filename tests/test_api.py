"""The in-memory API (issue 18): filterdb.check / inspect on live torch modules, state dicts,
Keras models and ONNX protos; folders and many inputs on the CLI; short reprs; start-up
imports. Health numbers are checked against torchconvquality (the paper authors' library)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import filterdb
from filterdb.cli import main

SRC = str(Path(filterdb.__file__).resolve().parents[1])


# ---- fixtures written with onnx.helper ------------------------------------------------------


def structured(c_out, c_in, rng, spread=(1, .7, .5, .35, .25, .15, .1, .07, .05)):
    """3x3 filters of a 'trained-like' layer: a few dominant directions (not random, not
    sparse), as in method.md's typical H / TH ~ 0.9 or below."""
    basis = np.linalg.qr(rng.standard_normal((9, 9)))[0]
    coef = rng.standard_normal((c_out * c_in, 9)) * np.asarray(spread)
    return (coef @ basis.T).reshape(c_out, c_in, 3, 3).astype(np.float32)


def onnx_chain(path, weights, groups=None):
    """A chain of Conv nodes with the given (c_out, c_in / g, 3, 3) weights."""
    groups = groups or [1] * len(weights)
    nodes, inits, x = [], [], "x"
    for i, (w, g) in enumerate(zip(weights, groups)):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], name=f"conv{i}",
                                      group=g, pads=[1, 1, 1, 1]))
        x = f"y{i}"
    c_in = weights[0].shape[1] * groups[0]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, c_in, 8, 8])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="hand")
    onnx.save_model(m, str(path))
    return path


@pytest.fixture()
def three_models(tmp_path):
    """A folder of three models: two trained-like, one still at its random initialisation."""
    rng = np.random.default_rng(0)
    d = tmp_path / "models"
    (d / "nested").mkdir(parents=True)
    onnx_chain(d / "good_a.onnx", [structured(16, 4, rng), structured(16, 16, rng)])
    onnx_chain(d / "nested" / "good_b.onnx", [structured(8, 4, rng), structured(16, 8, rng)])
    onnx_chain(d / "random.onnx", [rng.standard_normal((16, 4, 3, 3)).astype(np.float32),
                                   rng.standard_normal((16, 16, 3, 3)).astype(np.float32)])
    (d / "notes.txt").write_text("not a model")
    return d


# ---- torch modules against torchconvquality --------------------------------------------------


def _torch_nets():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)  # depthwise
            self.pw = nn.Conv2d(c, 2 * c, 1)  # 1x1: not measured by torchconvquality
            self.grouped = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=4)

        def forward(self, x):
            return self.grouped(self.pw(self.dw(self.conv1(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.layer1 = nn.Sequential(Block(8), nn.ReLU(), nn.Sequential(Block(16)))
            self.heads = nn.ModuleList([nn.Conv2d(32, 4, 5, padding=2), nn.Conv2d(32, 4, 3)])
            self.up = nn.ConvTranspose2d(4, 4, 3)

        def forward(self, x):
            x = self.layer1(self.stem(x))
            return self.up(self.heads[0](x)) + self.heads[1](x).mean()

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # sparse filters (single 3x3 slices zeroed, no all-zero output row)
        w = net.layer1[0].conv1.weight
        mask = torch.rand(w.shape[:2]) < 0.3
        w[mask] = 0
        net.layer1[2][0].grouped.weight[:, :, 1:, :] *= 0.001
    return torch, net


def _compare_to_tcq(res, module, orthogonality=True):
    import torchconvquality as tcq

    want = tcq.measure_quality(module)
    assert want, "torchconvquality found no layers"
    got = res.layers.set_index("name")
    for name, q in want.items():
        r = got.loc[name]
        assert r["n"] == q["n"]
        assert r["sparsity"] == pytest.approx(q["sparsity"], rel=1e-7)  # theirs is float32
        assert r["variance_entropy"] == pytest.approx(q["variance_entropy"], rel=2e-5, abs=2e-6)
        assert r["variance_entropy_norm"] == pytest.approx(float(q["variance_entropy_norm"]),
                                                           rel=2e-5, abs=2e-6)
        assert r["variance_entropy_clean"] == pytest.approx(q["variance_entropy_clean"],
                                                            rel=2e-5, abs=2e-6)
        if orthogonality:
            assert r["orthogonality"] == pytest.approx(q["orthogonality"], rel=1e-5, abs=1e-6)
    return want


def test_torch_module_equals_torchconvquality():
    torch, net = _torch_nets()
    res = filterdb.check(net)
    want = _compare_to_tcq(res, net)
    # every 3x3 nn.Conv2d torchconvquality measures, by module path, and the other kernels too
    names = list(res.layers["name"])
    assert set(want) == {n for n, k in zip(names, res.layers["kernel"]) if k == "3x3"}
    assert "layer1.2.0.grouped" in names and "layer1.0.pw" in names and "heads.0" in names
    by = {l.name: l for l in res.model.layers}
    assert by["layer1.0.dw"].groups == 8 and by["layer1.0.grouped"].groups == 4
    assert res.layers.set_index("name").loc["layer1.0.conv1", "sparsity"] > 0.2
    assert [s.name for s in res.model.skipped] == ["up"]
    # depth from the torch.fx trace: stem, then the chain of each block, heads in parallel
    assert res.model.depth_source == "graph"
    d = {l.name: l.conv_depth for l in res.model.layers}
    assert d["stem"] == 0 and d["layer1.0.conv1"] == 1 and d["layer1.2.0.grouped"] == 8
    assert d["heads.0"] == d["heads.1"] == 9
    assert res.verdict == res.summary["verdict"] and isinstance(res.reasons, list)


def test_state_dict_equals_torchconvquality_and_module():
    torch, net = _torch_nets()
    res = filterdb.check(net.state_dict())
    _compare_to_tcq(res, net)
    live = filterdb.check(net).layers.set_index("name")
    sd = res.layers.set_index("name")
    common = [n for n in live.index if n in sd.index]
    assert len(common) == len(live)
    cols = ["n", "sparsity", "variance_entropy", "variance_entropy_clean", "orthogonality"]
    np.testing.assert_array_equal(sd.loc[common, cols].to_numpy(),  # NaN == NaN (1x1)
                                  live.loc[common, cols].to_numpy())
    assert res.model.depth_source == "order"  # a state dict has no graph


def test_zero_rows_compare_without_orthogonality():
    torch, _ = _torch_nets()
    conv = torch.nn.Conv2d(6, 12, 3)
    with torch.no_grad():
        conv.weight[:4] = 0  # whole output rows: orthogonality conventions differ (method.md)
    m = torch.nn.Sequential(conv)
    _compare_to_tcq(filterdb.check(m), m, orthogonality=False)


def test_untraceable_module_falls_back_to_order():
    torch, _ = _torch_nets()

    class Dyn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3)
            self.b = torch.nn.Conv2d(4, 4, 3)

        def forward(self, x):
            x = self.a(x)
            return self.b(x) if x.sum() > 0 else x  # data-dependent: fx cannot trace it

    m = filterdb.read_model(Dyn())
    assert m.depth_source == "order" and [l.conv_depth for l in m.layers] == [0, 1]
    assert any("torch.fx" in w for w in m.warnings)


def test_scripted_module_uses_torchscript_graph():
    torch, _ = _torch_nets()
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3, groups=2))
    m = filterdb.read_model(torch.jit.script(seq))
    assert m.depth_source == "graph" and [l.name for l in m.layers] == ["0", "1"]
    assert m.layers[1].groups == 2


def test_db_add_live_module(tmp_path):
    torch, net = _torch_nets()
    with filterdb.open(tmp_path / "db", mode="w", create=True) as db:
        r = db.add(net, meta={"model": "mynet", "task": "Classification"})
        again = db.add(net)  # same weights: the same sha256
        models = db.models()
        layers = db.layers()
    assert r.status == "added" and again.status == "exists"
    assert models["model"].tolist() == ["mynet"]
    n3 = sum(l.n_filters for l in filterdb.read_model(net).layers if l.kernel == (3, 3))
    assert int(models["filters_3x3"].iloc[0]) == n3
    assert "layer1.0.dw" in set(layers["name"])


# ---- ONNX protos, files, folders ---------------------------------------------------------------


def test_onnx_proto_equals_file(three_models):
    p = three_models / "good_a.onnx"
    a = filterdb.check(onnx.load(str(p))).to_dict()
    b = filterdb.check(p).to_dict()
    assert a["layers"] == b["layers"] and a["summary"] == b["summary"]


def test_onnx_proto_with_external_data_refused(tmp_path):
    rng = np.random.default_rng(1)
    p = onnx_chain(tmp_path / "m.onnx", [structured(16, 4, rng)])
    m = onnx.load(str(p))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    proto = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    with pytest.raises(filterdb.ReadError, match="external data"):
        filterdb.check(proto)


def test_check_json_equals_cli(capsys, three_models):
    p = three_models / "good_a.onnx"
    assert main(["check", "--json", str(p)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == filterdb.check(p).to_dict()
    assert json.loads(filterdb.check(p).to_json()) == cli


def test_check_folder_three_models(three_models):
    res = filterdb.check(three_models)
    assert len(res) == 3 and not res.failed
    labels = {Path(r.path).name: r.label for r in res}
    assert labels == {"good_a.onnx": "good start", "good_b.onnx": "good start",
                      "random.onnx": "poor start"}
    bad = next(r for r in res if r.path.endswith("random.onnx"))
    assert bad.summary["n_degenerated"] == bad.summary["n_assessed"] == 2
    assert all("random" in r for r in bad.reasons)
    frame = res.frame()
    assert list(frame.columns[:6]) == ["name", "format", "layers", "assessed", "degenerated",
                                       "verdict"]
    assert frame["degenerated"].tolist() == [0, 0, 2] or sorted(frame["degenerated"]) == [0, 0, 2]
    assert "<table>" in res._repr_html_() and "poor start" in bad._repr_html_()


def test_cli_many_inputs_bad_file_fails_alone(capsys, three_models, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 40)
    rc = main(["check", str(three_models), str(bad)])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = [l for l in out.splitlines() if ".onnx" in l]
    assert len(lines) == 4 and "FAILED" in lines[-1] and "poor start" in out
    assert str(bad) in err and "1 of 4 models failed" in err
    rc = main(["check", "--json", str(three_models), str(bad)])
    objs = json.loads(capsys.readouterr().out)
    assert rc == 2 and len(objs) == 4 and set(objs[-1]) == {"path", "error"}
    assert [o["summary"]["n_assessed"] for o in objs[:3]] == [2, 2, 2]
    assert main(["check", "--csv", "--layers", str(three_models)]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("model,name,op") and len(csv) == 1 + 6
    assert main(["inspect", "--csv", str(three_models)]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert len(csv) == 4 and csv[0].startswith("name,format,layers")


def test_add_folder(capsys, three_models, tmp_path):
    assert main(["add", str(tmp_path / "db"), str(three_models)]) == 0
    capsys.readouterr()
    with filterdb.open(tmp_path / "db") as db:
        assert sorted(db.models()["model"]) == ["good_a", "good_b", "random"]


def test_find_models_skips_other_files(three_models):
    from filterdb.readers import find_models

    found = find_models(three_models)
    assert sorted(Path(p).name for p in found) == ["good_a.onnx", "good_b.onnx", "random.onnx"]
    assert found == sorted(found)  # sorted by path


# ---- reprs and discoverability ------------------------------------------------------------------


def test_short_reprs(three_models):
    m = filterdb.read_model(three_models / "good_a.onnx")
    assert len(repr(m)) < 200 and "2 conv layers" in repr(m)
    assert "array" not in repr(m.layers[0]) and "16x4x3x3" in repr(m.layers[0])
    r = filterdb.check(m)
    assert len(repr(r)) < 300 and len(repr(filterdb.inspect(m))) < 300
    assert list(filterdb.inspect(m).frame()["name"]) == ["conv0", "conv1"]
    from filterdb.kernels.pca import pca_from_moments

    X = np.random.default_rng(0).standard_normal((50, 9))
    p = pca_from_moments(len(X), X.sum(0), X.T @ X)
    assert len(repr(p)) < 120 and p.frame().shape == (9, 12)


def test_import_is_lazy_and_help_lists_the_api():
    code = textwrap.dedent("""
        import sys, pydoc
        import filterdb
        heavy = [m for m in ("pandas", "torch", "matplotlib", "numba", "onnx") if m in sys.modules]
        text = pydoc.render_doc(filterdb, renderer=pydoc.plaintext)
        print(heavy, all(n in text for n in ("check", "inspect", "open", "analysis", "health")),
              callable(filterdb.check), filterdb.health.__name__, filterdb.analysis.__name__)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert r.stdout.split() == ["[]", "True", "True", "filterdb.health", "filterdb.analysis"], r


# ---- start-up: no torch or matplotlib for --help and ONNX / TFLite files -----------------------

_WRAP = textwrap.dedent("""
    import io, contextlib, json, sys
    from filterdb.cli import main
    out = []
    for cmd in json.loads(sys.argv[1]):  # one process: modules accumulate, so none may load
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(cmd)
            except SystemExit as e:
                rc = e.code
        out.append([rc, sorted(m for m in ("torch", "matplotlib", "keras", "tensorflow")
                               if m in sys.modules)])
    print(json.dumps(out))
""")


def _cli_modules(*cmds):
    """``[exit code, heavy modules loaded so far]`` after each CLI command, in one process."""
    r = subprocess.run([sys.executable, "-c", _WRAP, json.dumps([list(map(str, c)) for c in cmds])],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC},
                       timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_startup_imports_neither_torch_nor_matplotlib(three_models, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_reader_tflite import T, build_tflite

    data = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(build_tflite([T("x", [1, 8, 8, 4]), T("w", [2, 3, 3, 4], data=data),
                                  T("y", [1, 6, 6, 2])], [("CONV_2D", [0, 1], [2])], [0], [2]))
    onnx_file = three_models / "good_a.onnx"
    torch = pytest.importorskip("torch")
    pt = tmp_path / "m.pt"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, pt)
    got = _cli_modules(["--help"], ["check", onnx_file], ["inspect", onnx_file],
                       ["check", "--json", tfl], ["inspect", tfl], ["check", three_models],
                       ["inspect", pt])
    assert got[:6] == [[0, []]] * 6, got
    assert got[6] == [0, ["torch"]]  # the probe sees torch once a torch file is read


# ---- Keras model objects: the same numbers as the .keras file they save ----------------------

_KERAS = textwrap.dedent("""
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "torch"
    sys.path.insert(0, sys.argv[2])
    import _keras_models as km
    import filterdb
    out = {}
    for name in ("mixed", "custom"):
        m = getattr(km, name)()
        live = filterdb.check(m, name=name)
        path = os.path.join(sys.argv[1], name + ".keras")
        m.save(path)
        saved = filterdb.check(path)
        out[name] = {"live": live.to_dict(), "file": saved.to_dict(),
                     "live_inspect": filterdb.inspect(m).to_dict(),
                     "file_inspect": filterdb.inspect(path).to_dict()}
    print(json.dumps(out))
""")


def test_keras_model_object_equals_saved_file(tmp_path):
    import importlib.util

    if importlib.util.find_spec("keras") is None:  # not imported here: it needs its backend
        pytest.skip("keras not installed")
    r = subprocess.run([sys.executable, "-c", _KERAS, str(tmp_path), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": SRC, "KERAS_BACKEND": "torch"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name, d in out.items():
        live, saved = d["live"], d["file"]
        assert live["layers"] and live["layers"] == saved["layers"], name
        assert live["summary"] == saved["summary"], name
        li, fi = d["live_inspect"], d["file_inspect"]
        assert li["layers"] == fi["layers"] and li["depth_source"] == fi["depth_source"]
        assert li["format"] == "keras_model" and fi["format"] == "keras"
    names = [l["name"] for l in out["mixed"]["live"]["layers"]]
    assert "block/inner_dw" in names and "sep/depthwise" in names
    assert any(n.startswith("blk/") for n in (l["name"] for l in out["custom"]["live"]["layers"]))
    assert out["mixed"]["live_inspect"]["depth_source"] == "graph"
    assert all(math.isfinite(l["variance_entropy"]) for l in out["mixed"]["live"]["layers"]
               if l["kernel"] != "1x1")


def test_check_options(three_models):
    p = three_models / "good_a.onnx"
    base = filterdb.check(p)
    strict = filterdb.check(p, sparse_S=0.0, low_diversity_H=5.0)  # every layer sparse + low
    assert base.label == "good start" and strict.label == "poor start"
    assert strict.summary["thresholds"]["sparse_S"] == 0.0
    no_orth = filterdb.check(p, orthogonality=False)
    assert no_orth.layers["orthogonality"].isna().all()
    assert no_orth.layers["variance_entropy"].tolist() == base.layers["variance_entropy"].tolist()
    with pytest.raises(TypeError, match="unknown option"):
        filterdb.check(p, sparsity=0.1)
    with pytest.raises(filterdb.FilterDBError, match="cannot read"):
        filterdb.check(object())
