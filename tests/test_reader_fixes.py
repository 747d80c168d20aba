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
