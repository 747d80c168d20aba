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
    assert str(good1) in cap.out and str(good2) in cap.out  # both good files reported
    assert str(bad) in cap.err and "1 of 3 files failed" in cap.err
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
