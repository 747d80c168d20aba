"""``filterdb check``: the JSON equals model_health's table, the text report, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from filterdb import read_model
from filterdb.cli import main
from filterdb.health import HealthThresholds, model_health, random_baseline
from filterdb.health.check import FLAGS

LAYER_KEYS = {"name", "conv_depth_norm", "n", "sparsity", "variance_entropy",
              "variance_entropy_norm", "variance_entropy_clean", "orthogonality", "flags"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "filterdb.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def check_json(capsys, *args):
    assert main(["check", "--json", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def equal(json_value, value):
    if isinstance(value, float) and math.isnan(value):
        return json_value is None
    if isinstance(value, float):
        return json_value == pytest.approx(value, rel=1e-12, abs=1e-15)
    return json_value == value


def assert_json_matches(d, df, summary):
    assert len(d["layers"]) == len(df)
    for j, (_, r) in zip(d["layers"], df.iterrows()):
        assert set(j) >= LAYER_KEYS
        for k in LAYER_KEYS - {"flags", "n"}:
            assert equal(j[k], r[k] if isinstance(r[k], str) else float(r[k])), k
        assert j["n"] == int(r["n"])
        assert j["flags"] == [f for f in FLAGS if r[f]]
    for k in ("n_layers", "n_assessed", "n_degenerated", "verdict"):
        assert d["summary"][k] == summary[k]
    assert equal(d["summary"]["share_degenerated"], summary["share_degenerated"])
    assert [w["name"] for w in d["summary"]["worst_layers"]] == \
        [w["name"] for w in summary["worst_layers"]]


@pytest.fixture
def npz_model(tmp_path):
    rng = np.random.default_rng(0)
    w = {
        "conv1.weight": (rng.standard_normal((16, 3, 3, 3)) * 0.8 ** np.arange(9).reshape(3, 3)),
        "conv2.weight": np.zeros((8, 16, 3, 3)),                       # sparse + low diversity
        "conv3.weight": rng.standard_normal((64, 64, 3, 3)),            # random
        "conv4.weight": rng.standard_normal((32, 64, 1, 1)),            # 1x1: not assessed
        "conv5.weight": rng.standard_normal((16, 32, 5, 5)) * 0.1,      # 5x5, random
    }
    p = tmp_path / "model.npz"
    np.savez(p, **{k: v.astype(np.float32) for k, v in w.items()})
    return p


def test_json_equals_model_health(npz_model, capsys):
    d = check_json(capsys, npz_model)
    df, summary = model_health(read_model(npz_model))
    assert_json_matches(d, df, summary)
    by = {l["name"]: l for l in d["layers"]}
    assert by["conv2"]["flags"] == ["low_diversity", "sparse", "degenerated"]
    assert by["conv2"]["sparsity"] == 1.0 and by["conv2"]["variance_entropy"] == 0
    assert "random" in by["conv3"]["flags"] and "random" in by["conv5"]["flags"]
    assert by["conv4"]["variance_entropy"] is None and by["conv4"]["flags"] == []
    assert d["summary"]["n_assessed"] == 4 and d["summary"]["n_degenerated"] == 3
    assert d["summary"]["verdict"].startswith("poor start: 3 of 4 assessed layers (75%")
    assert d["summary"]["verdict_class"] == "poor start"
    assert by["conv4"]["not_assessed"] == "1x1 kernel"
    assert by["conv3"]["random_paper"] and by["conv3"]["p_random"] >= 0.05
    assert by["conv3"]["reason"].startswith("random-like: H ")
    assert "baseline" not in d


def test_thresholds_from_options(npz_model, capsys):
    d = check_json(capsys, npz_model, "--sparse-s", "0", "--random-margin", "0.5",
                   "--eps", "0.02", "--low-diversity-h", "0.1")
    t = HealthThresholds(sparsity_eps=0.02, random_margin=0.5, low_diversity_H=0.1, sparse_S=0.0)
    df, summary = model_health(read_model(npz_model), t)
    assert_json_matches(d, df, summary)
    assert all("sparse" in l["flags"] for l in d["layers"] if l["name"] != "conv4")
    assert d["summary"]["thresholds"]["sparse_S"] == 0.0


def test_baseline(npz_model, capsys):
    d = check_json(capsys, npz_model, "--baseline", "--inits", "kaiming_uniform,normal",
                   "--seed", "4")
    base = random_baseline(read_model(npz_model), inits=("kaiming_uniform", "normal"), seed=4)
    assert len(d["baseline"]) == len(base)
    for j, (_, r) in zip(d["baseline"], base.iterrows()):
        assert j["name"] == r["name"] and j["init"] == r["init"]
        assert equal(j["variance_entropy_norm"], float(r["variance_entropy_norm"]))
    assert main(["check", "--baseline", str(npz_model)]) == 0
    out = capsys.readouterr().out
    assert "H/TH kaiming_uniform" in out and "H/TH kaiming_normal" in out


@pytest.mark.zoo
def test_real_model_text_and_json(zoo_path, capsys):
    p = zoo_path("ppocr-mobile-v2-cls")
    d = check_json(capsys, p)
    df, summary = model_health(read_model(p))
    assert_json_matches(d, df, summary)
    assert main(["check", str(p)]) == 0
    out = capsys.readouterr().out
    assert f"verdict: {summary['verdict']}" in out
    from filterdb._table import shorten

    first = {line.split()[0] for line in out.splitlines() if line.strip()}  # table rows
    assert all(shorten(name) in first for name in df.loc[df["assessed"], "name"])
    assert not any(shorten(name) in first for name in df.loc[~df["assessed"], "name"])
    assert "legend: " in out and "rule calibrated" in out


def test_bad_file_one_line_error(tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"not a model at all\n" * 5)
    r = run_cli("check", p)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in r.stderr
    r = run_cli("check", tmp_path / "missing.pt")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_db_option_needs_a_database(npz_model, capsys):
    assert main(["check", "--db", "x.filterdb", str(npz_model)]) == 2
    assert "x.filterdb: not a filterdb database" in capsys.readouterr().err


def test_bad_threshold_option(npz_model, capsys):
    assert main(["check", "--eps", "-1", str(npz_model)]) == 2
    assert "--eps" in capsys.readouterr().err


def test_text_shows_legend_rule_reasons_and_not_assessed(npz_model, capsys):
    assert main(["check", str(npz_model)]) == 0
    out = capsys.readouterr().out
    df, summary = model_health(read_model(npz_model))
    assert "not assessed: 1 layer (1x1 kernel 1)" in out
    assert "conv4" not in out  # the 1x1 layer is not a row
    assert "nan" not in out.split("not assessed")[0]
    for _, r in df[df["assessed"]].iterrows():  # H random = mean +- sd, p per row
        assert f"{r['random_mean']:.3f}+-" in out and f"{r['p_random']:.3f}" in out
    for _, r in df[df["degenerated"]].iterrows():  # one reason per flagged layer
        assert r["reason"] and r["reason"] in out
    assert "random-like (rule calibrated): p >= 0.05" in out
    assert "sparse: S >= 0.14" in out and "low diversity: H < 0.5" in out
    assert "degenerated = random-like, or low-diversity and sparse" in out
    assert "caution up to 20%" in out
    assert f"verdict: {summary['verdict']}" in out
    assert main(["check", "--rule", "paper", str(npz_model)]) == 0
    out = capsys.readouterr().out
    assert "random-like (rule paper): H >= TH(n) - 0.02" in out
    assert "random-like (paper rule): H " in out


def test_rule_paper_is_the_published_flag(npz_model, capsys):
    d = check_json(capsys, npz_model, "--rule", "paper")
    for l in d["layers"]:
        if l["assessed"]:
            assert ("random" in l["flags"]) == (l["variance_entropy"] >= l["threshold"] - 0.02)
            assert l["random_paper"] == ("random" in l["flags"])


def test_fail_on_exit_codes(npz_model, tmp_path, capsys):
    # npz_model is a poor start: --fail-on poor and caution both fail with exit 3
    assert main(["check", "--fail-on", "poor", str(npz_model)]) == 3
    assert main(["check", "--fail-on", "caution", "--json", str(npz_model)]) == 3
    capsys.readouterr()
    rng = np.random.default_rng(3)
    # a structured layer (strongly graded filters) and one zero (sparse, low-diversity)
    # layer in five: 1 of 5 degenerated is "caution"
    good = [(rng.standard_normal((16, 8, 3, 3)) * 0.5 ** np.arange(9).reshape(3, 3))
            for _ in range(4)]
    p = tmp_path / "caution.npz"
    np.savez(p, **{f"c{i}.weight": w.astype(np.float32)
                   for i, w in enumerate(good + [np.zeros((16, 8, 3, 3))])})
    s = model_health(read_model(p))[1]
    assert s["verdict_class"] == "caution"
    assert main(["check", "--fail-on", "poor", str(p)]) == 0
    assert main(["check", "--fail-on", "caution", str(p)]) == 3
    assert main(["check", str(p)]) == 0
    p2 = tmp_path / "good.npz"
    np.savez(p2, **{f"c{i}.weight": w.astype(np.float32) for i, w in enumerate(good)})
    assert main(["check", "--fail-on", "caution", str(p2)]) == 0
    capsys.readouterr()
    r = run_cli("check", "--fail-on", "poor", npz_model)  # the real process exit status
    assert r.returncode == 3 and "verdict: poor start" in r.stdout
    r = run_cli("check", "--fail-on", "bad", npz_model)
    assert r.returncode == 2
