"""Several task kernels in one pass, and orthogonality for a chosen subset of layers
(method.md, sections 3-5; the driver is :mod:`filterdb.analysis.analyze`).

- :func:`fused_task` runs ``parts`` (``(prefix, kernel, params)``) on the same block of
  filters and returns their results under ``prefix + "/" + key``; :func:`fused_reduce`
  gives the matching reductions for :func:`filterdb.engine.map_reduce`.
- :func:`orthogonality_task` computes the orthogonality of the layers it is given (whole
  layers per block: a layer-cut plan, :func:`filterdb.engine.make_plan` with ``whole_layers``), so
  the costly metric can be spread over several passes.
- :func:`orthogonality_f32`: float32 products (BLAS ``sgemm`` over blocks of
  :data:`COL_BLOCK` columns) accumulated in float64, Gram rows in blocks (bounded memory
  for wide layers). Against the float64 definition
  (:func:`filterdb.kernels.health.orthogonality`) its error measured at most 1.7e-8 (the zoo's layers)
  (``benchmarks/orthogonality_f32.py``; ``tests/test_analyzer.py`` bounds it by 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from . import _numba
from . import layer_stats as LS
from .pca import task_filters

_OPTS = {"cache": True, "nogil": True, "boundscheck": False, "error_model": "numpy"}
COL_BLOCK = LS.COL_BLOCK  # the float32 orthogonality lives with the other layer kernels
orthogonality_f32 = LS.orthogonality_f32


def fused_task(filters, layer_ids, parts=(), ortho=None) -> dict:
    """Each ``(prefix, kernel, params)`` of ``parts`` on the same block; ``ortho``
    (``{"index", "c_out", "float32"}``) adds :func:`orthogonality_task` under ``"orth/"``."""
    out = {}
    for prefix, kernel, params in parts:
        for k, v in kernel(filters, layer_ids, **params).items():
            out[f"{prefix}/{k}"] = v
    if ortho is not None:
        for k, v in orthogonality_task(filters, layer_ids, **ortho).items():
            out[f"orth/{k}"] = v
    return out


def fused_reduce(parts) -> dict:
    """The ``reduce`` of :func:`filterdb.engine.map_reduce` for :func:`fused_task`."""
    red = {}
    for prefix, kernel, _ in parts:
        for k, op in getattr(kernel, "reduce", {}).items():
            red[f"{prefix}/{k}"] = op
    return red


def split(result: dict, prefix: str) -> dict:
    """The results of one part of a fused pass, without the prefix."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in result.items() if k.startswith(p)}


def hist_cells_task(filters, layer_ids, lookup, n_groups, mean, components, edges,
                    precision="float32", hist2d=None) -> dict:
    """:func:`filterdb.kernels.hist.hist_task` (the same counts) for many groups: only the
    groups of the block's layers are counted (a small array), then placed in the
    ``(n_groups, 9, bins)`` result (a :class:`SparseRows`).

    ``hist2d`` (``{"a", "b", "edges_a", "edges_b"}``) adds ``counts2d``, the counts of
    :func:`filterdb.kernels.hist.hist2d_task` (every kept row, whatever its group), from
    the same projection of each block.
    """
    nb = len(edges) - 1
    res = {"counts": SparseRows((int(n_groups), 9, nb), np.zeros(0, np.int64),
                                np.zeros((0, 9, nb), np.int64))}
    if hist2d is not None:
        e_a, e_b = hist2d["edges_a"], hist2d["edges_b"]
        res["counts2d"] = np.zeros((len(e_a) - 1, len(e_b) - 1), np.int64)
    ids = np.ascontiguousarray(layer_ids, dtype=np.int64)
    _, _, lids = LS.layer_runs(ids)
    g = lookup[lids]
    u = np.unique(g[g >= 0])
    if len(lids) == 0 or (len(u) == 0 and hist2d is None):
        return res
    local = np.full(len(lookup), -1, np.int64)
    local[lids] = np.where(g >= 0, np.searchsorted(u, g), -1)
    counts = np.zeros((max(len(u), 1), 9, nb), np.int64)
    x = task_filters(filters, layer_ids, precision)
    if hist2d is None:
        _numba.hist(x, ids, local, mean, components, edges, counts)
    else:
        _numba.hist_and_2d(x, ids, local, mean, components, edges, counts,
                           int(hist2d["a"]), int(hist2d["b"]), e_a, e_b, res["counts2d"])
    if len(u):
        res["counts"] = SparseRows((int(n_groups), 9, nb), u, counts[:len(u)])
    return res


@dataclass
class SparseRows:
    """A task result that is zero but in rows ``index`` (distinct) of an array of
    ``shape``: the engine's :func:`~filterdb.engine.combine` adds ``values`` into the
    dense total in place (a dense ``(cells, 9, bins)`` result per task would cost more to
    touch and add than the histogram costs to count)."""

    shape: tuple
    index: np.ndarray
    values: np.ndarray

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, self.values.dtype)
        out[self.index] = self.values
        return out

    def add_to(self, total: np.ndarray) -> None:
        total[self.index] += self.values


@njit(**_OPTS)
def _all_finite(x, a, b):
    for r in range(a, b):
        for j in range(9):
            if not np.isfinite(x[r, j]):
                return False
    return True


def orthogonality_task(x, ids, index, c_out, float32=False) -> dict:
    """Orthogonality of the whole layers of the block that ``index[layer_id] >= 0`` selects.

    Same conventions as :func:`filterdb.kernels.layer_stats.health_task` (NaN for
    ``c_out < 2``, a ``c_out`` not dividing the filter count, or non-finite filters) and,
    with ``float32=False``, the same functions and values. Returns ``orth`` ``(L,)`` (0 for
    layers not in the block) and ``count`` ``(L,)`` (runs seen).
    """
    L = len(c_out)
    orth = np.zeros(L, np.float64)
    count = np.zeros(L, np.int64)
    starts, ends, lids = LS.layer_runs(np.ascontiguousarray(ids, dtype=np.int64))
    rows = index[lids] if len(lids) else np.empty(0, np.int64)
    keep = rows >= 0
    starts, ends, rows = starts[keep], ends[keep], rows[keep]
    if len(rows) == 0:
        return {"orth": orth, "count": count}
    n = ends - starts
    co = c_out[rows]
    ok = (co >= 2) & (n % np.maximum(co, 1) == 0)
    o = np.full(len(rows), np.nan)
    small = ok & LS.use_loops(co, n * 9 // np.maximum(co, 1))
    # finite weights only (orthogonality_f32 checks that in its own pass over the rows)
    check = small if float32 else np.ones(len(rows), np.bool_)
    ok[check] &= np.array([_all_finite(x, a, b) for a, b in
                           zip(starts[check].tolist(), ends[check].tolist())], np.bool_)
    small &= ok
    if small.any():
        v = np.empty(int(small.sum()))
        LS.orthogonality_runs(x, starts[small], ends[small], co[small], v)
        o[small] = v
    for q in np.flatnonzero(ok & ~small).tolist():
        rws = x[starts[q]:ends[q]]
        o[q] = LS.orthogonality_f32(rws, int(co[q])) if float32 else \
            LS.orthogonality_blas(rws, int(co[q]))
    orth[rows] = o
    np.add.at(count, rows, 1)
    return {"orth": orth, "count": count}


__all__ = [
    "COL_BLOCK",
    "SparseRows",
    "fused_reduce",
    "fused_task",
    "hist_cells_task",
    "orthogonality_f32",
    "orthogonality_task",
    "split",
]
