"""Regression tests for the silent wrong results of issue 16 in the existing readers, each on
a file the real framework (torch, Keras 3, onnx) writes in a temporary folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from filterdb import read_model
from filterdb.cli import main

torch = pytest.importorskip("torch")
nn = torch.nn


def _small_state_dict(path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    torch.save(net.state_dict(), path)
    return net


# ---- inspect A B C -----------------------------------------------------------------------

def test_inspect_reports_every_file_and_fails(tmp_path, capsys):
    good1, good2 = tmp_path / "a.pt", tmp_path / "c.pt"
    _small_state_dict(good1)
    _small_state_dict(good2)
    bad = tmp_path / "b.pt"
    bad.write_bytes(b"not a model at all")
    assert main(["inspect", str(good1), str(bad), str(good2)]) == 2
    cap = capsys.readouterr()
    # both good files reported, one line each (paths shortened to the table's width)
    assert good1.name in cap.out and good2.name in cap.out
    assert str(bad) in cap.err and "1 of 3 models failed" in cap.err
    assert main(["inspect", "--json", str(good1), str(bad), str(good2)]) == 2
    d = json.loads(capsys.readouterr().out)
    assert [x["path"] for x in d] == [str(good1), str(bad), str(good2)]
    assert len(d[0]["layers"]) == len(d[2]["layers"]) == 2 and "error" in d[1]
    assert main(["inspect", str(good1), str(good2)]) == 0


# ---- check --no-orthogonality --------------------------------------------------------------

def test_check_no_orthogonality_is_honoured(tmp_path, capsys, monkeypatch):
    p = tmp_path / "m.pt"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    torch.save(net.state_dict(), p)
    from filterdb.kernels import health as K

    calls = []
    real = K.orthogonality
    monkeypatch.setattr(K, "orthogonality", lambda w: calls.append(w.shape) or real(w))
    assert main(["check", "--json", str(p)]) == 0
    full = json.loads(capsys.readouterr().out)
    assert len(calls) == 2 and all(l["orthogonality"] is not None for l in full["layers"])
    calls.clear()
    assert main(["check", "--json", "--no-orthogonality", str(p)]) == 0
    skip = json.loads(capsys.readouterr().out)
    assert calls == []  # the costly metric was not computed
    assert all(l["orthogonality"] is None for l in skip["layers"])
    for a, b in zip(full["layers"], skip["layers"]):  # everything else unchanged
        assert a["sparsity"] == b["sparsity"] and a["flags"] == b["flags"]
        assert a["variance_entropy"] == b["variance_entropy"]
    assert full["summary"]["verdict"] == skip["summary"]["verdict"]
    assert main(["check", "--no-orthogonality", "--baseline", str(p)]) == 0
    assert calls == []


# ---- optimizer states are not weights ----------------------------------------------------

def _trained_sgd(steps=2):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                        nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(2, 3, 12, 12)).square().mean().backward()
        opt.step()
    return net, opt


def test_optimizer_only_file_is_refused(tmp_path, capsys):
    _, opt = _trained_sgd()
    p = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), p)
    # the real file holds 4 momentum buffers shaped like conv weights
    assert sum(v["momentum_buffer"].ndim == 4 for v in opt.state_dict()["state"].values()) == 4
    from filterdb.errors import ReadError

    with pytest.raises(ReadError, match="no model weights here"):
        read_model(p)
    assert main(["inspect", str(p)]) == 2
    assert "no model weights here" in capsys.readouterr().err
    # a checkpoint with only its optimizer part: refused too, not "0 conv layers", exit 0
    torch.save({"epoch": 2, "optimizer": opt.state_dict()}, p)
    with pytest.raises(ReadError, match="no model weights here"):
        read_model(p)


@pytest.mark.parametrize("model_key,opt_key", [("my_net", "opt"), ("weights_v2", "sgd_state")])
def test_checkpoint_optimizer_part_is_never_weights(tmp_path, model_key, opt_key):
    net, opt = _trained_sgd()
    p = tmp_path / "ckpt.pt"
    torch.save({"epoch": 2, opt_key: opt.state_dict(), model_key: net.state_dict()}, p)
    m = read_model(p)
    convs = [(k, v) for k, v in net.state_dict().items() if v.ndim == 4]
    assert len(m.layers) == len(convs) == 4
    for l, (k, v) in zip(m.layers, convs):
        assert l.name == f"{model_key}.{k[:-len('.weight')]}"
        np.testing.assert_array_equal(l.weight, v.numpy())


# ---- TorchScript: scripted DenseNet (list appends), traced groups, quantized convs ----------


F = nn.functional


class _DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    """torchvision's DenseNet pattern: a features list grown with append, joined by cat."""

    def __init__(self, n, cin, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth))

    def forward(self, init):
        features = [init]
        for _, layer in self.items():
            new = layer(features)
            features.append(new)
        return torch.cat(features, 1)


class _DenseNet(nn.Module):
    def __init__(self, blocks=(6, 12, 24, 16), growth=4):  # DenseNet-121's blocks
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        c, layers = 8, []
        for i, n in enumerate(blocks):
            layers.append(_DenseBlock(n, c, growth))
            c += n * growth
            if i < len(blocks) - 1:
                layers += [nn.Conv2d(c, c // 2, 1), nn.AvgPool2d(2)]
                c //= 2
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(self.conv0(x))


def test_scripted_densenet_follows_list_appends(tmp_path):
    torch.manual_seed(0)
    net = _DenseNet().eval()
    x = torch.randn(1, 3, 32, 32)
    scripted, traced = tmp_path / "dn_script.pt", tmp_path / "dn_trace.pt"
    torch.jit.script(net).save(scripted)
    torch.jit.trace(net, x, check_trace=False).save(traced)
    ms, mt = read_model(scripted), read_model(traced)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert n_convs == 1 + 2 * 58 + 3 == 120  # DenseNet-121's convs
    # by construction every conv feeds the next (dense connections): a chain of 120 depths
    assert ms.depth_source == "graph" and not ms.warnings
    assert len(ms.layers) == ms.n_conv_depths == n_convs
    assert [l.conv_depth for l in ms.layers] == list(range(n_convs))
    # the trace (lists unrolled into cat inputs) gives the same conv depths
    assert mt.depth_source == "graph"
    assert [l.conv_depth for l in mt.layers] == [l.conv_depth for l in ms.layers]


def test_inplace_list_writes_inside_a_branch_are_followed(tmp_path):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.c = nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x, flag: bool):
            feats = [self.a(x)]
            if flag:
                feats.append(self.b(feats[0]))
            else:
                feats.append(F.relu(self.b(feats[0])))
            return self.c(torch.cat(feats, 1))

    p = tmp_path / "branchy.pt"
    torch.jit.script(Branchy()).save(p)
    m = read_model(p)
    assert [l.name for l in m.layers] == ["a", "b", "c"]
    assert [l.conv_depth for l in m.layers] == [0, 1, 2]  # c reads b's output via the list


def _grouped_net():
    return nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.Conv2d(8, 16, 1),
                         nn.Conv2d(16, 16, 3, groups=4))


def test_traced_groups(tmp_path):
    net = _grouped_net().eval()
    p = tmp_path / "traced.pt"
    torch.jit.trace(net, torch.randn(1, 4, 16, 16)).save(p)
    m = read_model(p)
    assert m.format == "torchscript"
    truth = [(str(i), c.groups) for i, c in enumerate(net) if isinstance(c, nn.Conv2d)]
    assert [(l.name, l.groups) for l in m.layers] == truth == [
        ("0", 2), ("2", 8), ("3", 1), ("4", 4)]
    for l, (i, _) in zip(m.layers, truth):
        np.testing.assert_array_equal(l.weight, net[int(i)].weight.detach().numpy())


class _QNet(nn.Module):
    def __init__(self):
        super().__init__()
        tq = torch.ao.quantization
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.r = nn.ReLU()
        self.c2 = nn.Conv2d(8, 8, 3, groups=8)
        self.c3 = nn.Conv2d(8, 16, 3)
        self.c4 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.dequant(self.c4(self.c3(self.c2(self.r(self.c1(self.quant(x)))))))


def _quantized(mode):
    import warnings

    tq = torch.ao.quantization
    torch.manual_seed(0)
    net = _QNet().eval()
    x = torch.randn(4, 3, 16, 16)
    engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "eager":
            net.qconfig = tq.get_default_qconfig(engine)
            tq.fuse_modules(net, [["c1", "r"]], inplace=True)
            prepared = tq.prepare(net)
            prepared(x)
            q = tq.convert(prepared)
        else:
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            qmap = tq.get_default_qconfig_mapping(engine)
            prepared = prepare_fx(_QNet().eval(), qmap, (x,))
            prepared.load_state_dict(net.state_dict(), strict=False)
            prepared(x)
            q = convert_fx(prepared)
    return q, x


def _dequant_by_hand(qw):
    """(int8 - zero_point) * scale, per output channel or per tensor, with numpy."""
    iw = qw.int_repr().numpy().astype(np.float64)
    if qw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        s = qw.q_per_channel_scales().numpy()[:, None, None, None]
        z = qw.q_per_channel_zero_points().numpy()[:, None, None, None]
    else:
        s, z = qw.q_scale(), qw.q_zero_point()
    return ((iw - z) * s).astype(np.float32)


@pytest.mark.parametrize("mode", ["eager", "fx"])
@pytest.mark.parametrize("how", ["script", "trace"])
def test_quantized_torchscript(tmp_path, mode, how):
    import warnings

    q, x = _quantized(mode)
    p = tmp_path / "q.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (torch.jit.script(q) if how == "script" else torch.jit.trace(q, x)).save(p)
    m = read_model(p)
    qconvs = {n: mod for n, mod in q.named_modules() if hasattr(mod, "_weight_bias")
              and "Conv" in type(mod).__name__}
    assert len(qconvs) == 4
    assert [l.name for l in m.layers] == list(qconvs)
    for l, mod in zip(m.layers, qconvs.values()):
        qw = mod.weight()
        assert qw.is_quantized and qw.dtype == torch.qint8
        np.testing.assert_array_equal(l.weight, _dequant_by_hand(qw))
        assert l.groups == mod.groups
    assert [l.groups for l in m.layers] == [1, 8, 1, 1]
    assert m.depth_source == "graph" and [l.conv_depth for l in m.layers] == [0, 1, 2, 3]
    assert any("quantized" in w for w in m.warnings)
    # the state dict of the same quantized model gives the same filters
    sd = tmp_path / "q_sd.pt"
    torch.save(q.state_dict(), sd)
    ms = read_model(sd)
    assert [l.shape for l in ms.layers] == [l.shape for l in m.layers]
    for a, b in zip(ms.layers, m.layers):
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6, atol=1e-8)


# ---- Keras 3 .keras: operations in the config take no weights group ------------------------

_KERAS_MNV3 = r'''
import json, os, sys
os.environ["KERAS_BACKEND"] = "torch"
import keras, numpy as np
keras.utils.set_random_seed(0)
m = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), weights=None)
out = sys.argv[1]
m.save(os.path.join(out, "mnv3.keras"))
m.save(os.path.join(out, "mnv3.h5"))
convs = [l for l in m.layers if type(l).__name__ in ("Conv2D", "DepthwiseConv2D")]
np.savez(os.path.join(out, "mnv3.npz"), **{l.name: np.asarray(l.get_weights()[0]) for l in convs})
json.dump({"names": [l.name for l in convs], "classes": [type(l).__name__ for l in convs],
           "groups": [getattr(l, "groups", 1) for l in convs]},
          open(os.path.join(out, "mnv3.json"), "w"))
'''


def test_keras3_mobilenet_v3_small_keeps_every_conv(tmp_path):
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed")
    env = dict(os.environ, KERAS_BACKEND="torch", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", _KERAS_MNV3, str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=600)
    meta = json.loads((tmp_path / "mnv3.json").read_text())
    assert len(meta["names"]) == 54  # 43 Conv2D + 11 DepthwiseConv2D in model.layers
    # the config holds operations (x + 3.0: keras.src.ops.numpy Add / Multiply) beside the
    # Add / Multiply layers of the same class names
    with __import__("zipfile").ZipFile(tmp_path / "mnv3.keras") as z:
        cfg = json.loads(z.read("config.json"))
    assert any(str(lc.get("module", "")).startswith("keras.src.ops")
               for lc in cfg["config"]["layers"])
    k, h = read_model(tmp_path / "mnv3.keras"), read_model(tmp_path / "mnv3.h5")
    with np.load(tmp_path / "mnv3.npz") as ref:
        for m in (k, h):
            assert [l.name for l in m.layers] == meta["names"], m.format
            assert not m.warnings and m.depth_source == "graph"
            for l, cls in zip(m.layers, meta["classes"]):
                kern = ref[l.name]
                want = (np.transpose(kern, (2, 3, 0, 1)).reshape(-1, 1, *kern.shape[:2])
                        if cls == "DepthwiseConv2D" else np.transpose(kern, (3, 2, 0, 1)))
                np.testing.assert_array_equal(l.weight, want)
                assert l.groups == (kern.shape[2] if cls == "DepthwiseConv2D" else 1)
    assert [l.conv_depth for l in k.layers] == [l.conv_depth for l in h.layers]
    assert k.n_filters_3x3 == h.n_filters_3x3


# ---- ONNX: ops unknown to ONNX (left unconverted) are warned about --------------------------


class _ForeignConv(torch.autograd.Function):
    """Exported as ``tf::Conv2D``: an op ONNX does not define, as tf2onnx leaves
    unconverted TensorFlow ops."""

    @staticmethod
    def forward(ctx, x, w):
        return F.conv2d(x, w, padding=1)

    @staticmethod
    def symbolic(g, x, w):
        return g.op("tf::Conv2D", x, w)


class _HalfForeign(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(8, 8, 3, 3)) for _ in range(18)])
        self.tail = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])

    def forward(self, x):
        x = self.stem(x)
        for w in self.ws:
            x = _ForeignConv.apply(x, w)
        return self.tail(x)


def test_onnx_unknown_ops_and_domains_are_warned(tmp_path, capsys):
    pytest.importorskip("onnx")
    import warnings

    net = _HalfForeign().eval()
    p = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(p), dynamo=False)
    import onnx

    nodes = onnx.load(str(p)).graph.node
    assert sum(n.op_type == "Conv2D" and n.domain == "tf" for n in nodes) == 18
    m = read_model(p)
    assert len(m.layers) == 4  # the 4 ONNX Conv nodes; the 18 foreign ones cannot be read
    assert [s.op for s in m.skipped] == ["tf::Conv2D"] * 18
    w = [x for x in m.warnings if "unknown to ONNX" in x]
    assert len(w) == 1 and "tf::Conv2D x18" in w[0] and "domain(s) tf" in w[0]
    assert main(["inspect", str(p)]) == 0
    assert "tf::Conv2D x18" in capsys.readouterr().out
    assert main(["check", str(p)]) == 0
    assert "tf::Conv2D x18" in capsys.readouterr().out
    assert main(["check", "--json", str(p)]) == 0
    assert any("tf::Conv2D x18" in x for x in json.loads(capsys.readouterr().out)["warnings"])


def test_onnx_unknown_default_domain_op_is_warned(tmp_path):
    """tf2onnx may keep a TensorFlow op (HWIO filter) under its TF name in the default
    domain; onnx.defs does not know it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 3, 4, 4)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["y"], name="conv1"),
         helper.make_node("Conv2D", ["y", "w2"], ["z"], name="tf_conv", data_format="NCHW")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w1, w2])
    model = helper.make_model(g, producer_name="tf2onnx", opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / "tf.onnx"
    onnx.save(model, str(p))
    m = read_model(p)
    assert [l.name for l in m.layers] == ["conv1"]
    assert [(s.name, s.op) for s in m.skipped] == [("tf_conv", "Conv2D")]
    assert any("Conv2D x1" in x and "(default)" in x for x in m.warnings)


# ---- TFLite: short layer names, the fused tensor name kept as full_name --------------------

FIXTURES = __import__("pathlib").Path(__file__).with_name("fixtures")


def _tflite_conv_tensor_names(path):
    """(op, output tensor name) of every conv op, parsed with the tflite package."""
    import tflite

    buf = path.read_bytes()
    m = tflite.Model.GetRootAsModel(buf, 0)
    codes = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    g = m.Subgraphs(0)
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = codes[m.OperatorCodes(op.OpcodeIndex()).BuiltinCode()]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            out.append((name, g.Tensors(op.Outputs(0)).Name().decode()))
    return out


def test_tflite_fused_names_shortened(capsys):
    import re

    p = FIXTURES / "tflite_names" / "fused_names.tflite"
    ref = json.loads((FIXTURES / "tflite_names" / "fused_names.json").read_text())
    m = read_model(p)
    tensors = _tflite_conv_tensor_names(p)
    assert [l.full_name for l in m.layers] == [n for _, n in tensors]
    assert max(len(n) for _, n in tensors) > 250  # the converter's fused names
    # each short name is the Keras layer (TF appends _1 to scopes); separable: its two parts
    want = []
    for k in ref["keras_conv_layers"]:
        want += [rf"{k}(_\d+)?/depthwise", rf"{k}(_\d+)?/pointwise"] if k == "sep" \
            else [rf"{k}(_\d+)?"]
    assert len(m.layers) == len(want) == 10
    for l, w in zip(m.layers, want):
        assert re.fullmatch(w, l.name), (l.name, w)
        assert len(l.name) <= 20
    assert len({l.name for l in m.layers}) == len(m.layers)
    assert main(["inspect", "--json", str(p)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [x["full_name"] for x in d["layers"]] == [n for _, n in tensors]
    assert [x["name"] for x in d["layers"]] == [l.name for l in m.layers]


def test_short_layer_names_rules():
    from filterdb.readers.tflite import short_layer_names

    p = "model_1/model/"
    got = short_layer_names([
        # fused: the last segment whose op fits the TFLite op names the conv
        ("CONV_2D", (f"{p}re_lu/Relu6;{p}batch_normalization/FusedBatchNormV3;"
                     f"{p}depthwise_conv2d/depthwise;{p}conv2d_5/Conv2D;{p}conv2d/Conv2D"), ""),
        ("DEPTHWISE_CONV_2D", (f"{p}re_lu_1/Relu6;{p}depthwise_conv2d/depthwise;"
                               f"{p}conv2d_5/Conv2D"), ""),
        ("CONV_2D", f"{p}conv2d_47/BiasAdd;{p}conv2d_52/Conv2D;{p}conv2d_47/Conv2D1", ""),
        # a graph output: the weight's name
        ("CONV_2D", "Identity:0", f"{p}head/Conv2D_dequantize"),
        ("CONV_2D", f"{p}conv2d/Conv2D1", ""),  # the same layer again: deduplicated
        ("CONV_2D", "plain_name", ""),
    ])
    assert got == ["conv2d", "depthwise_conv2d", "conv2d_47", "head", "conv2d#2", "plain_name"]


@pytest.mark.zoo
def test_tflite_zoo_names_are_short(zoo_path):
    p = zoo_path("mp-pose-landmark-full")
    m = read_model(p)
    tensors = [n for _, n in _tflite_conv_tensor_names(p)]
    assert [l.full_name for l in m.layers] == tensors
    assert max(len(l.full_name) for l in m.layers) == 301
    assert max(len(l.name) for l in m.layers) <= 24
    assert len({l.name for l in m.layers}) == len(m.layers)
    for l in (l for l in m.layers if ";" in l.full_name):  # not graph outputs (Identity_2)
        assert f"/{l.name.split('#')[0]}/" in l.full_name  # the short name is a scope in it


def test_torchscript_conv_call_with_unread_weight_is_warned(tmp_path):
    class Computed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.w = nn.Parameter(torch.randn(4, 4, 3, 3))

        def forward(self, x):
            return F.conv2d(self.c(x), self.w * 2)  # a weight computed in forward

    p = tmp_path / "computed.pt"
    torch.jit.script(Computed()).save(p)
    m = read_model(p)
    assert [l.name for l in m.layers] == ["c"]
    assert any("1 2-D conv call(s)" in w and "computed weight" in w for w in m.warnings)
