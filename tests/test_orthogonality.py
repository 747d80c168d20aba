"""Orthogonality of layers with numerically-zero rows (method.md section 5) against
torchconvquality (the paper authors' library) and torch.nn.functional.normalize's
convention, ``x / max(||x||, 1e-12)``, on every implementation: the direct function, the
BLAS path and the numba loops of the health pass, and ``model_health``."""
from __future__ import annotations

import numpy as np
import pytest

from filterdb.kernels import health as K
from filterdb.kernels import layer_stats as LS

torch = pytest.importorskip("torch")
tcq = pytest.importorskip("torchconvquality")


def f_normalize_orth(w):
    """The definition with torch's own normalize, in float64."""
    import torch.nn.functional as F

    R = F.normalize(torch.from_numpy(np.asarray(w, np.float64).reshape(len(w), -1)), dim=1)
    c = len(R)
    return 1.0 - float((R @ R.T - torch.eye(c, dtype=torch.float64)).abs().sum()) / (c * (c - 1))


def unit_rows_orth(w):
    """The old convention: every nonzero row scaled to norm 1 (what the fix changes)."""
    R = np.asarray(w, np.float64).reshape(len(w), -1)
    n = np.linalg.norm(R, axis=1)
    R = R / np.where(n > 0, n, 1.0)[:, None]
    c = len(R)
    return 1.0 - np.abs(R @ R.T - np.eye(c)).sum() / (c * (c - 1))


def all_paths(w):
    """Orthogonality of ``w`` (c_out, c_in, 3, 3) by every implementation."""
    c = len(w)
    x = np.ascontiguousarray(w, np.float32).reshape(-1, 9)
    out = np.empty(1)
    LS.orthogonality_runs(x, np.array([0]), np.array([len(x)]), np.array([c]), out)
    ids = np.zeros(len(x), np.int64)
    task = LS.health_task(x, ids, np.array([0]), np.array([c]))
    col = LS.VALUES.index("orthogonality")
    return {"direct": K.orthogonality(w), "blas": LS.orthogonality_blas(x, c),
            "loops": float(out[0]), "health_task": float(task["values"][0, col])}


@pytest.mark.parametrize("c_out, c_in", [(8, 1), (40, 1), (48, 8), (64, 32)])
def test_rows_of_norm_1e34_stay_near_zero(c_out, c_in):
    rng = np.random.default_rng(c_out)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) + 0.1).astype(np.float32)
    w[0] *= np.float32(1e-34) / np.linalg.norm(w[0])  # norm 1e-34 (float32 keeps it)
    w[3] *= np.float32(3e-34) / np.linalg.norm(w[3])
    w[5] = 0.0
    assert 0 < np.linalg.norm(w[0].astype(np.float64)) < 1e-33
    ref = f_normalize_orth(w)
    theirs = tcq.orthogonality(torch.from_numpy(w))  # float32 torch
    assert ref == pytest.approx(theirs, abs=2e-6)
    for name, v in all_paths(w).items():
        assert v == pytest.approx(ref, abs=1e-12), name
    # the old convention differs by far more than rounding: the test cannot pass with it
    assert abs(unit_rows_orth(w) - ref) > 1e-3


@pytest.mark.zoo
def test_fer_conv2d_1_equals_torchconvquality(zoo_path):
    """A real Keras emotion model whose first conv holds two filters of norm ~4e-34."""
    import h5py

    from filterdb import read_model
    from filterdb.health import model_health

    path = zoo_path("fer-mini-xception")
    with h5py.File(path, "r") as f:
        k = f["model_weights/conv2d_1/conv2d_1_1/kernel:0"][...]  # HWIO (3, 3, 1, 8)
    w = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # OIHW, as torch holds it
    norms = np.sort(np.linalg.norm(w.reshape(len(w), -1).astype(np.float64), axis=1))
    assert norms[1] < 1e-30 < 1e-3 < norms[2]  # two numerically-zero rows
    theirs = tcq.orthogonality(torch.from_numpy(w))
    ref = f_normalize_orth(w)
    assert theirs == pytest.approx(0.7433, abs=1e-4)
    assert ref == pytest.approx(theirs, abs=1e-6)
    assert unit_rows_orth(w) == pytest.approx(0.668, abs=1e-3)  # the old value
    for name, v in all_paths(w).items():
        assert v == pytest.approx(ref, abs=1e-12), name
    # the model-level table read through filterdb's Keras reader
    df, _ = model_health(read_model(path))
    row = df[df["name"] == "conv2d_1"].iloc[0]
    assert row["orthogonality"] == pytest.approx(ref, abs=1e-12)
