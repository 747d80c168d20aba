"""`filterdb inspect`: the table and the JSON agree with the reader."""
from __future__ import annotations

import json

import pytest

from filterdb import read_model
from filterdb.cli import main
from filterdb.zoo import CATALOG, readable


@pytest.mark.parametrize("model_id", [m.id for m in readable()])
def test_inspect_json_every_zoo_model(zoo_path, capsys, model_id):
    path = zoo_path(model_id)
    assert main(["inspect", "--json", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    m = read_model(path)
    assert d["format"] == m.format == next(z.format for z in CATALOG if z.id == model_id)
    z = next(z for z in CATALOG if z.id == model_id)
    if not z.companions:
        assert d["sha256"] == z.sha256
    else:  # a multi-file model: the sha256 of all its files, the catalog's two hashes' bytes
        import hashlib

        from filterdb.zoo.fetch import companion_paths
        h = hashlib.sha256(path.read_bytes())
        for c in companion_paths(z):
            h.update(c.read_bytes())
        assert d["sha256"] == h.hexdigest()
    assert [l["name"] for l in d["layers"]] == [l.name for l in m.layers]
    for jl, l in zip(d["layers"], m.layers):
        assert jl["shape"] == list(l.weight.shape)
        assert jl["groups"] == l.groups
        assert jl["conv_depth"] == l.conv_depth
        assert jl["conv_depth_norm"] == pytest.approx(l.conv_depth_norm)
    # kernel counts add up from the layer shapes, independently of Model.kernel_counts
    counts = {}
    for jl in d["layers"]:
        c_out, c_in, kh, kw = jl["shape"]
        counts[f"{kh}x{kw}"] = counts.get(f"{kh}x{kw}", 0) + c_out * c_in
    assert d["kernel_counts"] == counts
    assert d["total_filters"] == sum(v for k, v in counts.items() if k != "1x1")
    assert isinstance(d["skipped"], list)


def test_inspect_table(zoo_path, capsys):
    path = zoo_path("digit-recognizer")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3x3: 10,272" in out
    assert "conv_depth_norm" in out and "depth from order" in out


def test_shorten_keeps_both_ends():
    from filterdb._table import shorten

    name = "model_1/model/batch_normalization_1/FusedBatchNormV3;model_1/model/conv2d_1/Conv2D1"
    s = shorten(name, 40)
    assert len(s) == 40 and s.startswith(name[:12]) and s.endswith(name[-25:]) and "..." in s
    assert shorten("conv1", 40) == "conv1"
