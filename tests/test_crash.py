"""Crash safety: SIGKILL ``filterdb add`` at random moments; the database must stay
consistent, each model wholly present or wholly absent, and a re-run must complete."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import filterdb
from filterdb.store import init_database

PY = sys.executable
SLOW = os.path.join(os.path.dirname(__file__), "_slow_write.py")
N_RUNS = 22


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def write_big(path, seed, n_layers=8):
    """An npz of n_layers (512, 512, 3, 3) convs: 262,144 filters each (2.1 M, 75 MB)."""
    rng = np.random.default_rng(seed)
    arrays = {f"conv{i}.weight": rng.standard_normal((512, 512, 3, 3)).astype(np.float32)
              for i in range(n_layers)}
    np.savez(path, **arrays)
    return np.concatenate([a.reshape(-1, 9) for a in arrays.values()])


def stream_model(db, model):
    parts = [c.filters.copy() for c in db.filters(f"model = '{model}'", chunk_rows=1 << 20)]
    return np.concatenate(parts) if parts else np.empty((0, 9), np.float32)


@pytest.mark.slow
def test_sigkill_during_add(tmp_path):
    db_path = tmp_path / "db"
    small = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    np.savez(small, **{"conv.weight": w})
    expected = {"small": w.reshape(-1, 9),
                "big0": write_big(tmp_path / "big0.npz", 1),
                "big1": write_big(tmp_path / "big1.npz", 2)}
    init_database(db_path, segment_rows=1 << 20).close()  # 2.1 M filters cross 2-3 segments
    env = dict(os.environ)
    slow = [PY, SLOW, "0.05"]  # filterdb with slow segment writes
    r = subprocess.run([*slow, "add", str(db_path), str(small)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr

    # how long one add takes here, to spread the kills over its whole duration
    t0 = time.monotonic()
    r = subprocess.run([*slow, "add", str(db_path),
                        str(tmp_path / "big0.npz"), "--replace"],
                       capture_output=True, text=True, env=env)
    duration = time.monotonic() - t0
    assert r.returncode == 0, r.stderr

    kill_rng = np.random.default_rng(42)
    outcomes = {"killed": 0, "finished": 0}
    for run in range(N_RUNS):
        target = f"big{run % 2}"
        p = subprocess.Popen([*slow, "add", str(db_path),
                              str(tmp_path / f"{target}.npz"), "--replace"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        time.sleep(kill_rng.uniform(0.1, 1.05 * duration))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            outcomes["killed"] += 1
        else:
            outcomes["finished"] += 1
        p.wait()
        assert p.returncode in (0, -signal.SIGKILL), p.stderr.read().decode()
        p.stderr.close()

        with filterdb.open(db_path) as db:
            assert db.verify() == [], f"run {run}"
            present = set(db.models().model)
            assert "small" in present and present <= set(expected)
            for name in present:  # wholly there
                assert np.array_equal(bits(stream_model(db, name)), bits(expected[name])), name
            layers = db.layers()
            assert set(layers.model) == present
            for name in present:
                assert (layers.model == name).sum() == (1 if name == "small" else 8)
    assert outcomes["killed"] >= N_RUNS // 3, outcomes

    # a clean re-run completes, and the result is whole
    for target in ("big0", "big1"):
        r = subprocess.run([*slow, "add", str(db_path),
                            str(tmp_path / f"{target}.npz"), "--replace"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    with filterdb.open(db_path) as db:
        assert set(db.models().model) == {"small", "big0", "big1"}
        assert db.verify() == []
        for name, want in expected.items():
            assert np.array_equal(bits(stream_model(db, name)), bits(want)), name
    shutil.rmtree(db_path)  # about 1 GB of segments
