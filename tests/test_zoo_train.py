"""``filterdb zoo train``: trained populations of small CNNs (tiny configs, one thread)."""
from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")
pytest.importorskip("skimage")

# imported after the importorskip calls above, on purpose
import _oracles as O  # noqa: E402
from filterdb.errors import FilterDBError, MissingExtraError  # noqa: E402
from filterdb.zoo.train import (  # noqa: E402
    MANIFEST_COLUMNS,
    Config,
    population,
    preset_configs,
    read_manifest,
    run,
)

REQUIRED = ["path", "model", "name", "task", "visual_category", "training_dataset",
            "architecture", "x_seed", "x_width", "x_depth", "x_trained", "x_twin_of",
            "x_heldout_metric", "x_heldout_value", "x_epochs"]

MNIST = Config("classification", "mnist", "plain", 8, 2, 0, 3)
CONFIGS = [
    MNIST,
    Config("classification", "lfw", "resnet", 4, 7, 0, 3),
    Config("classification", "lfw", "vgg", 4, 3, 0, 3),
    Config("denoising", "natural", "plain", 8, 3, 0, 2),
    Config("super-resolution", "textures", "resnet", 4, 4, 0, 1),
]
# 3x3 filters counted by hand from the architecture definitions in nets.py
EXPECTED_3X3 = {
    MNIST.id: 1 * 8 + 8 * 16,                                # conv 1->8, conv 8->16
    CONFIGS[1].id: 4 + (16 + 16) + (32 + 64) + (128 + 256),  # stem, 1 block per stage
    CONFIGS[2].id: 1 * 4 + 4 * 8 + 8 * 16,                   # one conv per stage
    CONFIGS[3].id: 1 * 8 + 8 * 8 + 8 * 1,                    # 1->8, 8->8, 8->1
    CONFIGS[4].id: 4 + (16 + 16) + 4,                        # stem, one block, out conv
}
EXPECTED_1X1 = {CONFIGS[1].id: 4 * 8 + 8 * 16}  # the two projection shortcuts


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def population_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo-train")
    torch.set_num_threads(1)
    trained = run(out, configs=CONFIGS, jobs=1)
    return out, trained


def _variance_entropy(w: np.ndarray) -> float:
    """method.md section 5: H of the spectrum of the centred n x 9 filter matrix, log10."""
    return O.variance_entropy(w.reshape(-1, 9))


_threshold = O.randomness_threshold


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_manifest_columns_and_twins(population_dir):
    out, trained = population_dir
    with open(out / "manifest.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == list(MANIFEST_COLUMNS)
    assert all(c in header for c in REQUIRED)
    assert all(c in REQUIRED[:7] or c.startswith("x_") for c in header)
    rows = {r["model"]: r for r in read_manifest(out)}
    assert len(rows) == 2 * len(CONFIGS)
    assert sorted(r["model"] for r in trained) == sorted(c.id for c in CONFIGS)
    for c in CONFIGS:
        t, u = rows[c.id], rows[c.id + "-init"]
        assert (t["x_trained"], u["x_trained"]) == ("true", "false")
        assert (t["x_twin_of"], u["x_twin_of"]) == ("", c.id)
        assert int(t["x_epochs"]) == c.epochs and int(u["x_epochs"]) == 0
        for r in (t, u):
            assert not os.path.isabs(r["path"]) and (out / r["path"]).is_file()
            assert (int(r["x_seed"]), int(r["x_width"]), int(r["x_depth"])) == (
                c.seed, c.width, c.depth)
            assert r["architecture"] and r["visual_category"] and r["training_dataset"]
        # same architecture: same tensor names and shapes
        a, b = _state(out / t["path"]), _state(out / u["path"])
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert rows[MNIST.id]["visual_category"] == "handwriting"
    assert rows[CONFIGS[1].id]["visual_category"] == "faces"
    assert rows[CONFIGS[3].id]["task"] == "Auto-Encoder"
    assert rows[CONFIGS[4].id]["task"] == "Super Resolution"


def test_mnist_classifier_beats_chance(population_dir):
    """Held-out accuracy recomputed by hand from the saved weights and the raw digits."""
    from filterdb.zoo.train import data, nets

    out, _ = population_dir
    row = {r["model"]: r for r in read_manifest(out)}[MNIST.id]
    ds = data.load("mnist", 0)
    x = ds.x_test.astype(np.float64)
    x = (x - x.mean(axis=(2, 3), keepdims=True)) / x.std(axis=(2, 3), keepdims=True)
    net = nets.build("plain", 8, 2, "classify", 10)
    net.load_state_dict(_state(out / row["path"]))
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(x.astype(np.float32))).numpy().argmax(1)
    acc = float(np.mean(pred == ds.y_test))
    chance = 1.0 / len(np.unique(ds.y_test))
    assert chance == pytest.approx(0.1)
    assert acc > 0.8 and acc > 5 * chance
    assert float(row["x_heldout_value"]) == pytest.approx(acc, abs=2e-3)
    twin = {r["model"]: r for r in read_manifest(out)}[MNIST.id + "-init"]
    assert float(twin["x_heldout_value"]) < 0.3  # untrained: near chance


def test_held_out_split_is_disjoint():
    from filterdb.zoo.train import data

    ds = data.load("mnist", 0)
    tr = {a.tobytes() for a in ds.x_train}
    assert not any(a.tobytes() in tr for a in ds.x_test)
    assert len(ds.x_train) + len(ds.x_test) == 5000


def test_dense_tasks_beat_their_baseline(population_dir):
    out, _ = population_dir
    rows = {r["model"]: r for r in read_manifest(out)}
    dae = rows[CONFIGS[3].id]
    assert dae["x_heldout_metric"] == "psnr_db"
    # denoising: the noisy input has PSNR 20 log10(1 / 0.15) = 16.5 dB; training beats it
    assert float(dae["x_heldout_baseline"]) == pytest.approx(-20 * np.log10(0.15), abs=0.2)
    assert float(dae["x_heldout_value"]) > float(dae["x_heldout_baseline"]) + 2


def test_read_model_counts_3x3_filters(population_dir):
    from filterdb import read_model

    out, _ = population_dir
    rows = read_manifest(out)
    for r in rows:
        model_id = r["model"].removesuffix("-init")
        m = read_model(out / r["path"])
        assert m.format == "torch"
        assert m.n_filters_3x3 == EXPECTED_3X3[model_id], r["model"]
        assert m.kernel_counts.get("1x1", 0) == EXPECTED_1X1.get(model_id, 0)
        # and the weights are the saved ones, in the same order
        sd = _state(out / r["path"])
        w3 = [v.numpy().reshape(-1, 9) for k, v in sd.items()
              if v.ndim == 4 and tuple(v.shape[2:]) == (3, 3)]
        np.testing.assert_array_equal(m.filters_3x3(), np.concatenate(w3))


def test_same_seed_same_weights(population_dir, tmp_path):
    """Retrain two configs (in worker processes this time): bit-identical weights."""
    out, _ = population_dir
    again = run(tmp_path, configs=CONFIGS[:2], jobs=2)
    assert len(again) == 2
    for c in CONFIGS[:2]:
        a = _state(out / "models" / f"{c.id}.pt")
        b = _state(tmp_path / "models" / f"{c.id}.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (c.id, k)
    other = Config("classification", "lfw", "resnet", 4, 7, 1, 3)
    run(tmp_path, configs=[other], jobs=1)
    a = _state(out / "models" / f"{CONFIGS[1].id}.pt")
    b = _state(tmp_path / "models" / f"{other.id}.pt")
    assert not torch.equal(a["features.0.weight"], b["features.0.weight"])


def test_resume_skips_finished(population_dir, tmp_path):
    out, _ = population_dir
    files = sorted(out.rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert run(out, configs=CONFIGS, jobs=1) == []
    assert {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*"))} == before
    # an interrupted run: the files of one config exist but its rows were never written
    extra = Config("classification", "lfw", "plain", 4, 2, 0, 1)
    first = run(tmp_path, configs=[extra], jobs=1)
    assert [r["model"] for r in first] == [extra.id]
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    (tmp_path / "manifest.csv").write_text(lines[0] + "\n")
    redo = run(tmp_path, configs=[extra], jobs=1)
    assert [r["model"] for r in redo] == [extra.id]
    assert len(read_manifest(tmp_path)) == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_trained_first_layer_less_random_than_twin(population_dir):
    """Variance entropy of the first conv layer, by hand: trained H/TH < untrained H/TH."""
    out, _ = population_dir
    a = _state(out / "models" / f"{MNIST.id}.pt")
    b = _state(out / "models" / f"{MNIST.id}-init.pt")
    first = next(k for k, v in a.items() if v.ndim == 4)
    wa, wb = a[first].numpy(), b[first].numpy()
    n = wa.shape[0] * wa.shape[1]
    assert n == 8
    h_trained = _variance_entropy(wa) / _threshold(n)
    h_twin = _variance_entropy(wb) / _threshold(n)
    assert h_twin > 1.0  # an initialisation looks random
    assert h_trained < h_twin - 0.05


def test_presets():
    small = preset_configs("small")
    ids = [c.id for c in small]
    assert len(ids) == len(set(ids)) and 12 <= len(ids) <= 20
    from filterdb.zoo.train import data

    cats = {data.SOURCES[c.dataset].visual_category for c in small}
    assert {"handwriting", "faces", "textures", "natural", "fractals", "noise"} <= cats
    assert {c.task for c in small} == {"classification", "denoising", "super-resolution"}
    assert {c.family for c in small} == {"plain", "vgg", "resnet"}
    assert [c.seed for c in preset_configs("small", seed=5)][:2] == [5, 6]
    full = preset_configs("full")
    assert len({c.id for c in full}) == len(full) > len(small)
    # one meta-parameter at a time: within a (task, data, family) group every config
    # differs from the group's most common width/depth in at most one of them
    groups = {}
    for c in full:
        groups.setdefault((c.task, c.dataset, c.family), []).append(c)
    for cs in groups.values():
        widths = [c.width for c in cs]
        depths = [c.depth for c in cs]
        w0 = max(set(widths), key=widths.count)
        d0 = max(set(depths), key=depths.count)
        assert all((c.width != w0) + (c.depth != d0) <= 1 for c in cs)
        assert len({c.seed for c in cs}) >= 3
    with pytest.raises(FilterDBError, match="preset"):
        preset_configs("huge")


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
    from filterdb.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"filterdb\[train\]"):
        run(tmp_path, configs=[MNIST])
    assert main(["zoo", "train", str(tmp_path)]) == 2
    assert not (tmp_path / "manifest.csv").exists()


def test_cli_train(monkeypatch, tmp_path, capsys):
    from filterdb.cli import main

    tiny = [Config("classification", "lfw", "plain", 4, 2, 3, 1)]
    monkeypatch.setattr(population, "preset_configs", lambda preset, seed: tiny)
    assert main(["zoo", "train", str(tmp_path / "z"), "--jobs", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [tiny[0].id]
    assert len(read_manifest(tmp_path / "z")) == 2
    assert main(["zoo", "train", str(tmp_path / "z"), "--jobs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
