"""Start-up time of the CLI (issue 18): ``filterdb --help``, ``inspect x.onnx``, ``check x.onnx``
and ``check x.pt``; median wall time of N fresh processes each, which heavy modules each loads,
and the top offenders of ``python -X importtime`` (cumulative microseconds).

The ONNX model is written here with onnx.helper (3 convs, 16-32 channels); the .pt is the same
weights as a torch state dict (for contrast: it needs ``import torch``). The baseline is
``python -c pass`` in the same run.

Usage: python benchmarks/startup.py [--runs 7] [--top 12] [--src DIR]
(``--src``: another source tree, e.g. an earlier commit's ``git archive``, for a before/after)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "matplotlib", "pandas", "scipy", "numba", "onnx", "h5py", "keras")
SRC = str(Path(__file__).resolve().parents[1] / "src")
PROBE = ("import sys, runpy\nsys.argv = ['filterdb'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('filterdb.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         f"sys.stderr.write('\\nLOADED ' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))\n")


def write_models(d: Path) -> tuple[Path, Path | None]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shapes = [(16, 3), (32, 16), (32, 32)]
    ws = [rng.standard_normal((o, i, 3, 3)).astype(np.float32) for o, i in shapes]
    nodes, inits, x = [], [], "x"
    for k, w in enumerate(ws):
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"y{k}"], name=f"conv{k}"))
        x = f"y{k}"
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                    str(d / "x.onnx"))
    try:
        import torch
    except ImportError:
        return d / "x.onnx", None
    torch.save({f"conv{k}.weight": torch.from_numpy(w) for k, w in enumerate(ws)}, d / "x.pt")
    return d / "x.onnx", d / "x.pt"


def run(cmd: list[str], env) -> tuple[float, str, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    return dt, r.stdout, r.stderr


def importtime(args: list[str], env, top: int) -> list[tuple[int, str]]:
    _, _, err = run([sys.executable, "-X", "importtime", "-c", PROBE, *args], env)
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:"):].split("|")
        rows.append((int(cum_us), name.rstrip()))
    tops = sorted(rows, reverse=True)
    # only top-level packages and filterdb's own modules: the children repeat their parent
    out = [(c, n) for c, n in tops if not n.startswith("    ") or "filterdb" in n]
    return out[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--src", default=SRC, help="the filterdb source tree to time (default: ours)")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": a.src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as d:
        onnx_file, pt_file = write_models(Path(d))
        cases = [("python -c pass", None), ("filterdb --help", ["--help"]),
                 ("filterdb inspect x.onnx", ["inspect", str(onnx_file)]),
                 ("filterdb check x.onnx", ["check", str(onnx_file)])]
        if pt_file:
            cases.append(("filterdb check x.pt", ["check", str(pt_file)]))
        print(f"median of {a.runs} fresh processes ({sys.executable}, {os.cpu_count()} cpus, "
              f"source {a.src})\n")
        print(f"{'command':28s} {'median s':>9s} {'min s':>7s}  heavy modules loaded")
        for label, args in cases:
            cmd = [sys.executable, "-c", "pass"] if args is None else \
                [sys.executable, "-c", PROBE, *args]
            run(cmd, env)  # warm the page cache
            times, loaded = [], ""
            for _ in range(a.runs):
                dt, _, err = run(cmd, env)
                times.append(dt)
                if "LOADED" in err:
                    loaded = err.rsplit("LOADED", 1)[1].strip()
            print(f"{label:28s} {statistics.median(times):9.3f} {min(times):7.3f}  "
                  f"{loaded or '-'}")
        for label, args in cases[1:4]:
            print(f"\npython -X importtime, {label}: top {a.top} (cumulative ms)")
            for cum, name in importtime(args, env, a.top):
                print(f"  {cum / 1000:8.1f}  {name.strip()}")


if __name__ == "__main__":
    main()
