"""benchmarks/floor.py: timing each part of a pass on its own changes no result, and every
part of both ``analyze`` configurations is timed."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filterdb.analysis import analyze
from filterdb.synth import build_synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "floor.py"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("floor") / "db"
    build_synthetic(path, 150_000, seed=5)
    return path


@pytest.fixture(scope="module")
def floor():
    spec = importlib.util.spec_from_file_location("floor_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("kw", [{}, {"range": (-3.0, 3.0)}])
def test_part_clock_times_every_part_and_changes_no_result(db, floor, kw):
    plain = analyze(db, cache=False, **kw)
    with floor.PartClock() as clock:
        timed = analyze(db, cache=False, **kw)
    from filterdb.kernels import fused

    assert fused.fused_task is clock.orig  # restored on exit
    parts = {"health", "hist", "orthogonality"} | ({"moments"} if not kw else set())
    assert parts <= set(clock.cpu)
    assert all(v > 0 for v in clock.cpu.values())
    # the same up to the order of the PCA moments' float64 sums over the tasks
    np.testing.assert_allclose(timed.pca.components, plain.pca.components, rtol=0, atol=1e-12)
    np.testing.assert_allclose(timed.range, plain.range, rtol=1e-12)
    assert set(timed.summary.results) == set(plain.summary.results) != set()
    for c, r in plain.summary.results.items():
        np.testing.assert_array_equal(timed.summary.results[c].counts, r.counts)
        pd.testing.assert_frame_equal(timed.summary.results[c].matrix, r.matrix,
                                      check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(timed.health, plain.health)
    assert plain.health["orthogonality"].notna().sum() > 100


def test_floor_script_prints_the_kernels_of_both_configurations(db):
    out = subprocess.run([sys.executable, str(SCRIPT), str(db), "--every", "2", "--read", "1",
                          "--repeat", "1"], capture_output=True, text=True, timeout=600,
                         cwd=SCRIPT.parent)
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stdout.splitlines() if " kernels: " in x]
    assert [x.split()[0] for x in lines] == ["analyze", "analyze-range"]
    for x in lines:
        assert "orthogonality" in x and "hist" in x and "health" in x
