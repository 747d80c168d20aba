"""PyTorch state dicts / checkpoints and TorchScript archives (readers/torch.py)."""
from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
import torch
from torch import nn

from filterdb.errors import MissingExtraError, ReadError
from filterdb.readers import read_model

# zoo id -> 3x3 filters given by the zoo catalog (filterdb.zoo.catalog)
KNOWN_3X3 = {"mtcnn-pnet": 702, "mtcnn-rnet": 1428, "mtcnn-onet": 6240, "digit-recognizer": 10272}


def _independent(path):
    """Conv weights of a state dict, walked with torch.load directly: {layer: array}."""
    sd = torch.load(path, weights_only=True, map_location="cpu")
    return {k[: -len(".weight")]: v.numpy() for k, v in sd.items()
            if k.endswith(".weight") and v.ndim == 4}


@pytest.mark.zoo
@pytest.mark.parametrize("model_id", sorted(KNOWN_3X3))
def test_zoo_state_dicts(zoo_path, model_id):
    path = zoo_path(model_id)
    ref = _independent(path)
    m = read_model(path)
    assert m.format == "torch" and m.depth_source == "order"
    assert [l.name for l in m.layers] == list(ref)
    n3 = sum(w.shape[0] * w.shape[1] for w in ref.values() if w.shape[2:] == (3, 3))
    assert m.n_filters_3x3 == n3 == KNOWN_3X3[model_id]
    for i, l in enumerate(m.layers):
        np.testing.assert_array_equal(l.weight, ref[l.name])
        assert l.groups == 1 and l.conv_depth == i
    assert m.layers[-1].conv_depth_norm == 1.0
    assert m.skipped == []
    assert "Linear" in m.op_counts or model_id == "mtcnn-pnet"


@pytest.mark.zoo
def test_zoo_onet_2x2_and_digit_shapes(zoo_path):
    onet = read_model(zoo_path("mtcnn-onet"))
    assert onet.kernel_counts["2x2"] == 128 * 64
    digits = read_model(zoo_path("digit-recognizer"))
    assert [l.shape[:2] for l in digits.layers] == [(32, 1), (64, 32), (128, 64)]
    assert digits.op_counts == {"Conv2d": 3, "Linear": 2}


def test_refuses_code_execution(tmp_path, monkeypatch):
    sentinel = tmp_path / "SENTINEL"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    p = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3), "payload": Evil()}, p)
    assert not sentinel.exists()
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert "refusing to unpickle: the file needs arbitrary code" in str(e.value)
    assert "system" in str(e.value) and str(p) in str(e.value)
    assert not sentinel.exists()


def test_checkpoint_nesting_prefix_and_legacy(tmp_path):
    g = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(4, 3, 3, 3, generator=g), torch.randn(6, 4, 5, 5, generator=g)
    ckpt = {
        "epoch": 7,
        "optimizer": {"state": {0: {"exp_avg": torch.randn(4, 3, 3, 3)}}},
        "model_state_dict": {"module.conv1.weight": w1, "module.conv1.bias": torch.zeros(4),
                             "module.head.weight": w2, "module.fc.weight": torch.ones(2, 6)},
    }
    for legacy in (False, True):
        p = tmp_path / f"ckpt{int(legacy)}.pth"
        torch.save(ckpt, p, _use_new_zipfile_serialization=not legacy)
        m = read_model(p)
        assert [l.name for l in m.layers] == ["conv1", "head"]
        np.testing.assert_array_equal(m.layers[0].weight, w1.numpy())
        np.testing.assert_array_equal(m.layers[1].weight, w2.numpy())
        assert m.n_filters_3x3 == 12 and m.kernel_counts == {"5x5": 24, "3x3": 12}
        assert m.op_counts == {"Conv2d": 2, "Linear": 1}
        assert any("model_state_dict" in w for w in m.warnings)


def test_groups_heuristic_and_skips(tmp_path):
    sd = {
        "stem.weight": torch.randn(8, 1, 3, 3),  # c_in 1 but no previous conv: groups 1
        "dw.weight": torch.randn(8, 1, 3, 3),  # previous conv has 8 outputs: depthwise
        "pw.weight": torch.randn(16, 8, 1, 1),
        "dw2.weight": torch.randn(32, 1, 3, 3),  # previous has 16 outputs: groups 1
        "audio.weight": torch.randn(4, 2, 3),
        "vol.weight": torch.randn(4, 2, 3, 3, 3),
        "half.weight": torch.randn(2, 2, 3, 3).half(),
        "bn.running_mean": torch.zeros(8),
    }
    p = tmp_path / "sd.pt"
    torch.save(sd, p)
    m = read_model(p)
    assert [(l.name, l.groups) for l in m.layers] == [("stem", 1), ("dw", 8), ("pw", 1),
                                                     ("dw2", 1), ("half", 1)]
    assert any(w.startswith("groups inferred: 1 weight") for w in m.warnings)
    assert [(s.name, s.op) for s in m.skipped] == [("audio", "Conv1d"), ("vol", "Conv3d")]
    np.testing.assert_array_equal(m.layers[4].weight, sd["half.weight"].float().numpy())
    assert m.n_filters_3x3 == 8 + 8 + 32 + 4
    assert [l.conv_depth for l in m.layers] == [0, 1, 2, 3, 4]


def test_truncated_and_missing_torch(tmp_path, monkeypatch):
    p = tmp_path / "sd.pt"
    torch.save({"c.weight": torch.randn(64, 32, 3, 3)}, p)
    data = p.read_bytes()
    t = tmp_path / "trunc.pt"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError) as e:
        read_model(t, format="torch")
    assert str(t) in str(e.value) and "\n" not in str(e.value)

    real_import = builtins.__import__

    def no_torch(name, *a, **k):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    for fmt in ("torch", "torchscript"):
        with pytest.raises(MissingExtraError) as e:
            read_model(p, format=fmt)
        assert "filterdb[torch]" in str(e.value)


# ---- TorchScript -----------------------------------------------------------------------


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.conv_c = nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.audio = nn.Conv1d(2, 2, 3)

    def forward(self, x):
        a = self.conv_a(x)
        b = self.conv_b(torch.relu(a))  # graph depth: a 1, relu 2, b 3
        c = self.conv_c(a)  # 2
        return self.up(self.head(b + c))  # add 4, head.0 5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_graph_depth(tmp_path):
    torch.manual_seed(0)
    net = Branchy().eval()
    p = tmp_path / "branchy.pt"
    torch.jit.script(net).save(str(p))
    m = read_model(p)
    assert m.format == "torchscript"
    names = [l.name for l in m.layers]
    assert names == ["conv_a", "conv_b", "conv_c", "head.0"]
    mods = dict(net.named_modules())
    for l in m.layers:
        np.testing.assert_array_equal(l.weight, mods[l.name].weight.detach().numpy())
        assert l.groups == mods[l.name].groups
    # graph depths 1, 3, 2, 5 -> conv depths by rank; module order would give 0, 1, 2, 3
    assert m.depth_source == "graph"
    assert {l.name: l.conv_depth for l in m.layers} == {"conv_a": 0, "conv_b": 2, "conv_c": 1,
                                                        "head.0": 3}
    assert {(s.name, s.op) for s in m.skipped} == {("up", "ConvTranspose2d"), ("audio", "Conv1d")}
    assert m.n_filters_3x3 == 8 * 3 + 8 * 2 + 4 * 8


@pytest.mark.zoo
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_silero_jit_has_no_2d_convs(zoo_path):
    path = zoo_path("silero-vad-jit")
    jit = torch.jit.load(str(path), map_location="cpu")
    n_1d = sum(1 for n, p in jit.named_parameters() if n.endswith("weight") and p.ndim == 3)
    m = read_model(path)
    assert m.format == "torchscript" and m.layers == [] and m.n_filters_3x3 == 0
    assert len(m.skipped) == n_1d == 10
    assert all(s.op == "Conv1d" for s in m.skipped)
    assert "no 2-D convolution layers found" in m.warnings
