"""A synthetic database in the shape of the published one (benchmarks, tests).

647 models with the published task and visual category counts (docs/method.md,
section 6), 21,436 3x3 conv layers, ``n_filters`` filters in all, written through the
streaming bulk path (:class:`filterdb.store.bulk.BulkWriter`) in bounded memory.

Shapes: layers per model vary (log-normal, 1..400); a layer's filter count grows with its
depth (channel widths double every quarter of the depth) and with a per-model scale; counts
are ``c_out x c_in/groups`` with a few depthwise layers; parallel branches share a
``conv_depth`` now and then.

Widths (``widths="real"``, the default): the per-model scale is log-normal with sigma 0.5 and
a layer's share is capped at 1,048,576 filters (1024 x 1024, the widest 3x3 conv of Wide
ResNet-50-2; what the cap removes goes to the other layers in proportion; a layer may take a
few filters more when its neighbour's remainder carries over). At the published
size (1,464,797,156 filters) the filter-weighted mean ``c_out`` is 469 and the largest 2,046:
common architectures give 408 (ResNet-50: 64..512 channels), about 480 (VGG-16) and 32
(DenseNet-121's 128 -> 32 convs). ``widths="legacy"`` is the generator before that (sigma
1.2, no cap: mean 748 and up to 7,001 channels at the published size; mean 202 at 100 M), kept
so that earlier benchmark databases can be rebuilt.

Filters: like trained 3x3 filters, low rank and smooth. Each filter is ``z @ M`` with ``z``
standard normal (rows of a reused pool, read at a random offset) and ``M = diag(s) Q B``:
``B`` the 3x3 DCT basis (constant/centre, edges, second order, ...), ``s`` a decaying
spectrum, ``Q`` a small random near-orthogonal mix, with a per (task, visual category) spectrum tilt
and a deeper-is-different tilt in the last tenth of the depth, so drift is non-trivial;
plus a per-layer mean. About 3% of the layers are random (white, He-scaled: untrained-like)
and 5% sparse (30-80% of their filters near zero).
"""
from __future__ import annotations

import hashlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .store import DEFAULT_SEGMENT_ROWS, init_database, is_database, open_database
from .store.bulk import BulkWriter, LayerSpec, ModelSpec
from .store.segments import aligned_empty
from .utils import progress

TASK_COUNTS = {"Classification": 555, "Segmentation": 28, "GAN-Generator": 24,
               "Object Detection": 16, "GAN-Discriminator": 7, "Style Transfer": 5,
               "Super Resolution": 4, "Face Detection": 4, "Depth Estimation": 2,
               "Face Recognition": 1, "Auto-Encoder": 1}
VISUAL_CATEGORY_COUNTS = {"natural": 557, "handwriting": 36, "faces": 16, "medical xray": 9,
                          "art": 5, "medical ct": 4, "seismic": 4, "medical mri": 3, "depth": 2,
                          "map": 2, "astronomy": 2, "fractals": 2, "textures": 2, "thermal": 1,
                          "cars": 1, "plants": 1}
N_MODELS = 647
N_LAYERS = 21_436
# plausible pairings first (style transfer on art, depth estimation on depth maps, ...)
_PAIRS = [("Style Transfer", "art", 5), ("Depth Estimation", "depth", 2),
          ("Face Detection", "faces", 4), ("Face Recognition", "faces", 1),
          ("GAN-Generator", "faces", 6), ("GAN-Discriminator", "faces", 2),
          ("GAN-Generator", "handwriting", 4), ("Auto-Encoder", "handwriting", 1),
          ("Segmentation", "medical ct", 4), ("Segmentation", "medical mri", 3),
          ("Segmentation", "medical xray", 3), ("Segmentation", "seismic", 2)]
_ARCHS = ("resnet", "vgg", "mobilenet", "densenet", "unet", "efficientnet", "custom")
POOL_ROWS = 1 << 20
# widths: (per-model scale sigma, most filters in one layer, smallest c_in of an exact last
# layer as a share of its square root)
WIDTHS = {"real": (0.5, 1 << 20, 2), "legacy": (1.2, None, 8)}


def labels(rng) -> list[tuple[str, str]]:
    """``(task, visual category)`` of each model: the published marginal counts exactly."""
    tasks, vcs = dict(TASK_COUNTS), dict(VISUAL_CATEGORY_COUNTS)
    out = []
    for t, v, n in _PAIRS:
        out += [(t, v)] * n
        tasks[t] -= n
        vcs[v] -= n
    rest_t = [t for t, n in tasks.items() for _ in range(n)]
    rest_v = [v for v, n in vcs.items() for _ in range(n)]
    rng.shuffle(rest_v)
    out += list(zip(rest_t, rest_v))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def split_exact(weights: np.ndarray, total: int, minimum: int = 0) -> np.ndarray:
    """Integers proportional to ``weights``, each ``>= minimum``, summing to ``total``."""
    w = np.asarray(weights, np.float64)
    free = total - minimum * len(w)
    if free < 0:
        raise ValueError(f"{total} cannot give {len(w)} parts of at least {minimum}")
    x = w / w.sum() * free
    n = np.floor(x).astype(np.int64)
    rem = free - int(n.sum())
    n[np.argsort(-(x - n), kind="stable")[:rem]] += 1
    return n + minimum


def layer_counts(rng, n_models: int = N_MODELS, n_layers: int = N_LAYERS) -> np.ndarray:
    """Layers per model: log-normal (median about 20), summing to ``n_layers``."""
    w = np.clip(rng.lognormal(np.log(20), 0.9, n_models), 1, 400)
    return split_exact(w, n_layers, minimum=1)


def conv_depths(rng, n: int) -> np.ndarray:
    """``conv_depth`` of ``n`` layers in order: sequential, parallel branches now and then."""
    step = (rng.random(n) > 0.1).astype(np.int64)
    step[0] = 0
    return np.cumsum(step)


MAX_DEPTHWISE = 2048  # widest depthwise layer (channels), as in real networks


def _factor(s: int, thin: int = 8) -> tuple[int, int] | None:
    """``(c_out, c_in)`` with ``c_out * c_in == s`` and ``c_in`` the largest divisor of ``s``
    up to its square root, when that divisor is at least 8 and ``1/thin`` of the root (a
    plausible conv, not a thin and very wide one); else None."""
    root = int(np.sqrt(s))
    for cin in range(root, max(7, root // thin), -1):
        if s % cin == 0:
            return s // cin, cin
    return None


def split_capped(weights: np.ndarray, total: int, cap: int | None,
                 minimum: int = 1) -> np.ndarray:
    """:func:`split_exact`, then no part above ``cap``: the excess goes to the parts below it
    in proportion to their weights, until none is above (water filling)."""
    n = split_exact(weights, total, minimum)
    if cap is None:
        return n
    if total > cap * len(n):
        raise ValueError(f"{total} cannot give {len(n)} parts of at most {cap}")
    w = np.asarray(weights, np.float64)
    while (over := n > cap).any():
        excess = int((n[over] - cap).sum())
        n[over] = cap
        free = n < cap
        n[free] += split_exact(w[free], excess)
    return n


def layer_shapes(sizes: np.ndarray, rng, thin: int = 8):
    """``(c_out, c_in/groups, groups)`` per layer with ``c_out * c_in/groups`` summing to
    ``sizes.sum()`` exactly. A layer's remainder carries to the next one; a few layers of at
    most :data:`MAX_DEPTHWISE` filters are depthwise; the last layer is shaped exactly (the
    one before it gives up a few filters until the last one factorises as a real conv)."""
    sizes = np.asarray(sizes, np.int64)
    n = len(sizes)
    out = np.empty((n, 3), np.int64)
    carry = 0
    depthwise = rng.random(n) < 0.04
    ratio = rng.choice([0.5, 1.0, 1.0, 2.0], n)
    for i, s in enumerate(sizes.tolist()):
        s += carry
        carry = 0
        if (depthwise[i] and s <= MAX_DEPTHWISE and i < n - 2) or s < 64:
            out[i] = (s, 1, s)
            continue
        cin = int(min(s, max(1, round(np.sqrt(s / ratio[i])))))
        if i == n - 1:
            f = _factor(s, thin)
            if f is not None:
                out[i] = (*f, 1)
                continue
        cout = s // cin
        if i == n - 2:  # leave the last layer a total that factorises
            while cout > 1 and _factor(int(sizes[-1]) + s - cout * cin, thin) is None \
                    and int(sizes[-1]) + s - cout * cin >= 64:
                cout -= 1
        carry = s - cout * cin
        out[i] = (cout, cin, 1)
    if carry:  # the last layer does not factorise: one output channel keeps the total exact
        out[-1] = (1, out[-1][0] * out[-1][1] + carry, 1)
    return out


def dct_basis() -> np.ndarray:
    """The 9 orthonormal 3x3 DCT-II patterns as rows (smooth first)."""
    k = np.arange(3)
    c = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 6) * np.sqrt(2 / 3)
    c[0] /= np.sqrt(2)
    b = np.einsum("ui,vj->uvij", c, c).reshape(9, 9)
    order = np.argsort([u + v + 0.1 * abs(u - v) for u in range(3) for v in range(3)],
                       kind="stable")
    return b[order]


_SPECTRUM = np.array([0.40, 0.18, 0.12, 0.10, 0.066, 0.055, 0.03, 0.028, 0.024]) ** 0.4 * \
    np.array([1.6, 1, 1, 1, 1, 1, 1, 1, 1])  # layer spectra flatter than the pooled one


def model_layers(rng, basis, group_tilt, counts, depths, pool, buf, random_p=0.03,
                 sparse_p=0.05, thin: int = 8):
    """:class:`LayerSpec` of one model; filters generated chunk by chunk into ``buf``."""
    shapes = layer_shapes(counts, rng, thin)
    L = len(counts)
    last = max(int(depths[-1]), 1)
    norm = depths / last if depths[-1] > 0 else np.zeros(L)
    he = np.sqrt(2.0 / (9 * shapes[:, 1]))
    # every layer's parameters at once: spectrum, a near-orthogonal mix, mean, sparsity
    tilt = group_tilt[None, :] * (1.0 + np.where(norm > 0.9, 1.5 * (norm - 0.9), 0.0))[:, None]
    spec = _SPECTRUM * np.exp(tilt + 0.1 * rng.standard_normal((L, 9)))
    mix = np.eye(9) + 0.15 * rng.standard_normal((L, 9, 9))
    mats = np.einsum("li,lij,jk->lik", spec, mix, basis) * (3 * he)[:, None, None]
    means = (-0.1 + 0.05 * rng.standard_normal((L, 9))) * he[:, None]
    kind = rng.random(L)
    rand = kind < random_p
    mats[rand] = np.eye(9) * he[rand, None, None]
    means[rand] = 0.0
    sparse = np.where(kind > 1 - sparse_p, rng.uniform(0.3, 0.8, L), 0.0)
    offs = rng.integers(len(pool), size=L)
    mats, means = mats.astype(np.float32), means.astype(np.float32)
    for i, (cout, cin_g, groups) in enumerate(shapes.tolist()):
        n = cout * cin_g
        yield LayerSpec(n_filters=n, kh=3, kw=3, name=f"conv{i}", op="Conv", c_out=cout,
                        c_in=cin_g * groups, groups=groups, graph_depth=int(depths[i]),
                        conv_depth=int(depths[i]), conv_depth_norm=float(norm[i]),
                        chunks=_chunks(n, pool, int(offs[i]), mats[i], means[i],
                                       float(sparse[i]), rng, buf))


def _chunks(n, pool, off, m, mean, sparse, rng, buf):
    rows, p = buf.shape[0], 0
    while p < n:
        k = min(rows, n - p, len(pool) - off)
        out = buf[:k]
        np.matmul(pool[off:off + k], m, out=out)
        out += mean
        if sparse:
            out[rng.random(k) < sparse] *= np.float32(1e-4)
        yield out
        p += k
        off = (off + k) % len(pool)


def plan(n_filters: int, seed: int = 0, widths: str = "real"):
    """The database's shape without its filters: ``(labels, layers per model, conv depths
    per model, filters per layer)`` (the last over all layers, model after model)."""
    if widths not in WIDTHS:
        raise ValueError(f"widths must be one of {sorted(WIDTHS)}, not {widths!r}")
    sigma, cap, _ = WIDTHS[widths]
    n_filters = int(n_filters)
    if n_filters < N_LAYERS:
        raise ValueError(f"n_filters must be at least {N_LAYERS} (one per layer)")
    rng = np.random.default_rng(seed)
    labs = labels(rng)
    counts = layer_counts(rng)
    scale = rng.lognormal(0, sigma, N_MODELS)
    depths, weights = [], []
    for i in range(N_MODELS):
        mrng = np.random.default_rng([seed, i])
        d = conv_depths(mrng, int(counts[i]))
        stage = np.minimum((4 * d / max(int(d[-1]), 1)).astype(np.int64), 3)
        depths.append(d)
        weights.append(scale[i] * 4.0 ** stage * mrng.lognormal(0, 0.3, len(d)))
    sizes = split_capped(np.concatenate(weights), n_filters, cap, minimum=1)
    return labs, counts, depths, sizes


def shapes(n_filters: int, seed: int = 0, widths: str = "real") -> np.ndarray:
    """``(c_out, c_in/groups, groups)`` of every layer, as :func:`build_synthetic` makes them."""
    _, counts, _, sizes = plan(n_filters, seed, widths)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    thin = WIDTHS[widths][2]
    return np.concatenate([layer_shapes(sizes[bounds[i]:bounds[i + 1]],
                                        np.random.default_rng([seed, i, 1]), thin)
                           for i in range(N_MODELS)])


def width_stats(n_filters: int, seed: int = 0, widths: str = "real") -> dict:
    """The widths a database of this size gets: filter-weighted mean, median and largest
    ``c_out`` (the orthogonality's cost is about ``4.5 c_out`` multiply-adds per filter)."""
    sh = shapes(n_filters, seed, widths)
    n = sh[:, 0] * sh[:, 1]
    return {"filters": int(n.sum()), "weighted_mean_c_out": float(np.sum(sh[:, 0] * n) / n.sum()),
            "median_c_out": float(np.median(sh[:, 0])), "max_c_out": int(sh[:, 0].max()),
            "max_layer_filters": int(n.max())}


def build_synthetic(db_path, n_filters: int, seed: int = 0, chunk_rows: int = 1 << 20,
                    commit_rows: int = 1 << 24, segment_rows: int | None = None,
                    show_progress: bool = False, widths: str = "real") -> dict:
    """Create (or complete) the synthetic database at ``db_path``; returns counts and the
    time taken. Models are committed in batches of ``commit_rows`` filters; a re-run after
    a kill skips the models present (their sha256 is derived from seed, size, widths and
    index)."""
    n_filters = int(n_filters)
    limit = threadpool_limits(1, user_api="blas")  # 2 BLAS threads: 20x slower here
    t0 = time.perf_counter()
    labs, counts, depths, sizes = plan(n_filters, seed, widths)
    thin = WIDTHS[widths][2]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    tilts = {}
    for t, v in sorted(set(labs)):
        trng = np.random.default_rng([seed, len(tilts), 7])
        tilts[(t, v)] = 0.25 * trng.standard_normal(9)
    pool = np.random.default_rng([seed, 1]).standard_normal((POOL_ROWS, 9), dtype=np.float32)

    buf = aligned_empty(min(chunk_rows, POOL_ROWS))
    basis = dct_basis()
    if not is_database(db_path):
        init_database(db_path, segment_rows=segment_rows or DEFAULT_SEGMENT_ROWS).close()

    bar = progress(total=n_filters, desc="synthesising", unit="filter",
                   disable=not show_progress)
    added = 0
    with limit, open_database(db_path, mode="w") as db, BulkWriter(db, commit_rows) as bw:
        for i in range(N_MODELS):
            d = depths[i]
            mrng = np.random.default_rng([seed, i, 1])
            task, vc = labs[i]
            n_i = sizes[bounds[i]:bounds[i + 1]]
            key = f"synthetic:{seed}:{n_filters}:{i}" + ("" if widths == "legacy" else f":{widths}")
            sha = hashlib.sha256(key.encode()).hexdigest()
            arch = _ARCHS[i % len(_ARCHS)]
            meta = {"model": f"synth-{i:03d}", "name": f"{arch}-{i}", "task": task,
                    "visual_category": vc, "architecture": arch, "producer": "synthetic",
                    "training_dataset": f"{vc}-set-{i % 5}", "source": "filterdb.synth"}
            spec = ModelSpec(sha256=sha, format="synthetic", name=meta["model"],
                             depth_source="graph", producer="synthetic",
                             op_counts={"Conv": len(d), "Relu": len(d)})
            r = bw.add(spec, model_layers(mrng, basis, tilts[(task, vc)], n_i, d, pool, buf,
                                          thin=thin), meta)
            added += r.status != "exists"
            bar.update(int(n_i.sum()))
    bar.close()
    return {"path": str(db_path), "models": N_MODELS, "layers": N_LAYERS, "widths": widths,
            "filters": n_filters, "added": added, "seconds": time.perf_counter() - t0}
