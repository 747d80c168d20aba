"""Float32-product orthogonality against the float64 definition: error and speed.

For every 3x3 layer of the cached zoo models whose orthogonality goes to BLAS (more than
32 output channels and rows of 32 values or more) and for synthetic wide layers, prints
the absolute error of :func:`filterdb.kernels.fused.orthogonality_f32` and of the float64
path (:func:`filterdb.kernels.layer_stats.orthogonality_blas`) against the definition in
float64 numpy (rows normalised as ``torch.nn.functional.normalize``), and both times (one
BLAS thread, as in the passes; median of ``--repeat``), interleaved.

Usage: python benchmarks/orthogonality_f32.py [--repeat 5] [--no-zoo]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def definition(R) -> float:
    R = np.asarray(R, np.float64)
    R = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-12)
    c = len(R)
    return 1.0 - np.abs(R @ R.T - np.eye(c)).sum() / (c * (c - 1))


def zoo_layers():
    from filterdb.readers import read_model
    from filterdb.zoo import fetch

    for name, path in fetch().items():
        try:
            m = read_model(path)
        except Exception as e:  # a model this reader cannot open: skip it
            print(f"# {name}: skipped ({e})")
            continue
        for layer in m.layers:
            if layer.kernel != (3, 3):
                continue
            w = np.asarray(layer.weight, np.float32)
            c = w.shape[0]
            k = w[0].size
            if c > 32 and k >= 32:
                yield f"{name}/{layer.name}", w.reshape(c, k)


def synthetic_layers(seed=0):
    rng = np.random.default_rng(seed)
    for c, cin in ((256, 256), (512, 512), (1024, 256), (2048, 512), (3500, 128), (7001, 64)):
        W = (rng.standard_normal((c, cin * 9)) * 0.05
             + rng.standard_normal((1, cin * 9)) * 0.02).astype(np.float32)
        yield f"synthetic {c}x{cin}x3x3", W


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-zoo", action="store_true")
    a = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from filterdb.kernels.fused import orthogonality_f32
    from filterdb.kernels.layer_stats import orthogonality_blas

    layers = ([] if a.no_zoo else list(zoo_layers())) + list(synthetic_layers())
    worst = {"zoo": 0.0, "synthetic": 0.0}
    t64s, t32s = [], []
    print(f"{'layer':60s} {'c_out':>6s} {'k':>6s} {'err f32':>9s} {'err f64':>9s} "
          f"{'ms f64':>8s} {'ms f32':>8s} {'x':>5s}")
    with threadpool_limits(1, user_api="blas"):
        for name, R in layers:
            c, k = R.shape
            rows = np.ascontiguousarray(R).reshape(-1, 9)
            ref = definition(R)
            e32 = abs(orthogonality_f32(rows, c) - ref)
            e64 = abs(orthogonality_blas(rows, c) - ref)
            a64, a32 = [], []
            for _ in range(a.repeat):  # interleaved A/B
                t = time.perf_counter()
                orthogonality_blas(rows, c)
                a64.append(time.perf_counter() - t)
                t = time.perf_counter()
                orthogonality_f32(rows, c)
                a32.append(time.perf_counter() - t)
            m64, m32 = statistics.median(a64), statistics.median(a32)
            t64s.append(m64)
            t32s.append(m32)
            kind = "synthetic" if name.startswith("synthetic") else "zoo"
            worst[kind] = max(worst[kind], e32)
            print(f"{name[:60]:60s} {c:6d} {k:6d} {e32:9.2e} {e64:9.2e} {m64 * 1e3:8.2f} "
                  f"{m32 * 1e3:8.2f} {m64 / m32:5.2f}")
    print(f"max |error| of float32 products: zoo {worst['zoo']:.2e}, synthetic "
          f"{worst['synthetic']:.2e}; total time float64 {sum(t64s):.3f} s, float32 "
          f"{sum(t32s):.3f} s ({sum(t64s) / sum(t32s):.2f}x)")


if __name__ == "__main__":
    main()
