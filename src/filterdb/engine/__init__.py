"""The execution layer: one map-reduce over row windows of a filter source, run by the
same kernels on local threads or on Dask workers.

- A *source* holds the ``(N, 9)`` float32 filters. It has ``read(start, count, out)``
  returning the ``(count, 9)`` rows: a view of ``out`` (a preallocated, 64-byte-aligned
  buffer of at least ``count + read_slack`` rows, where a source may declare
  ``read_slack``: the store reads past the page cache into the buffer a little in from its
  start) or of memory of its own (the store maps large windows of its files), must be
  safe to call from several threads, and must pickle cheaply (a path, not an open
  handle) so a Dask worker can rebuild it.
- A *plan* (:mod:`.plan`) cuts the selected layer ranges ``(starts, counts, layer_ids)``
  into tasks of about ``target_rows`` buffer rows (or of whole layers). A task reads a few
  contiguous windows into the buffer and carries run-length layer ids; the per-row ids are
  filled per task into a reused buffer (never one global per-filter array). Unselected
  rows in the buffer (small gaps read through, alignment padding) get layer id -1 and are
  skipped.
- A *kernel* is ``kernel(filters, layer_ids, **params) -> {name: ndarray}``; results of
  all tasks are combined per key by ``sum`` (default), ``min``, ``max`` or ``top`` (the
  most extreme rows: :func:`filterdb.kernels.extremes.merge_top`; a kernel may declare
  ``kernel.reduce = {key: op}``), in plan order, so results are reproducible. A result
  may be a :class:`~filterdb.kernels.fused.SparseRows` (rows of a sum).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import FilterDBError
from ..kernels import _numba
from ..kernels.extremes import merge_top
from ..kernels.fused import SparseRows
from ..utils import aligned_empty
from .plan import Plan, Task, layer_groups, make_plan, plan_ranges, reversed_plan, sample_plan


@runtime_checkable
class Source(Protocol):
    n_rows: int

    def read(self, start: int, count: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start:start + count`` as a ``(count, 9)`` float32 array."""


@dataclass
class ArraySource:
    """An in-memory ``(N, 9)`` float32 array as a source (tests, small selections)."""

    array: np.ndarray

    def __post_init__(self):
        a = np.asarray(self.array)
        if a.ndim != 2 or a.shape[1] != 9:
            raise FilterDBError(f"filters must be an (n, 9) array, got shape {a.shape}")
        self.array = np.ascontiguousarray(a, dtype=np.float32)

    @property
    def n_rows(self) -> int:
        return len(self.array)

    def read(self, start, count, out):
        return self.array[start:start + count]  # a view: no copy needed


# the store's filters as a source (defined there: the store serves the protocol without
# importing the engine)
from ..store.segments import RowReaderSource  # noqa: E402

# ---- running one task (the same code on a local thread and on a Dask worker) ----

_buffers = threading.local()


def _task_buffers(rows: int):
    """This thread's filter and layer-id buffers, allocated once (and grown if needed)."""
    b = getattr(_buffers, "b", None)
    if b is None or len(b[1]) < rows:
        b = (aligned_empty((rows, 9), np.float32), aligned_empty((rows,), np.int64))
        _buffers.b = b
    return b


def read_slack(source) -> int:
    """Rows of room ``source`` wants in a buffer beyond the rows it reads."""
    return max(int(getattr(source, "read_slack", 0) or 0), 0)


def read_task(source, task: Task, buf: np.ndarray, ids: np.ndarray):
    """Read a task's windows into ``buf`` (at least ``task.span`` plus
    :func:`read_slack` rows; its layer ids into ``ids``); returns the ``(span, 9)``
    filters (normally a view of ``buf``) and the ``(span,)`` ids."""
    if len(buf) < task.span + read_slack(source):
        raise ValueError(f"buffer of {len(buf)} rows for a task of {task.span} rows")
    if len(task.reads) == 1 and task.reads[0, 2] == 0:
        start, count, _ = task.reads[0].tolist()
        x = _checked(source.read(start, count, buf), count, start)
        span = count
    else:  # in order: a read may use the buffer past its window, never before it
        for start, count, off in task.reads.tolist():
            part = _checked(source.read(start, count, buf[off:]), count, start)
            if part.ctypes.data != buf[off:].ctypes.data:
                buf[off:off + count] = part  # numpy copies overlapping memory safely
        x, span = buf[:task.span], task.span
    _numba.fill_runs(ids, span, task.runs)
    return x, ids[:span]


def run_task(source, task: Task, kernel, params: dict | None = None) -> dict:
    """Read a task's windows into this thread's buffer and run ``kernel`` on them."""
    buf, ids = _task_buffers(task.span + read_slack(source))
    x, ids = read_task(source, task, buf, ids)
    return compute_task(source, task, x, ids, kernel, params)


def compute_task(source, task: Task, x, ids, kernel, params: dict | None = None) -> dict:
    """Check the task's rows if the source verifies what it serves (see
    :class:`RowReaderSource`), then run ``kernel`` on them."""
    checks = getattr(source, "checks", None)
    part = checks.check_task(task, x) if hasattr(checks, "check_task") else {}
    res = kernel(x, ids, **(params or {}))
    return {**res, **part} if part else res


def _checked(x, count, start):
    if x.shape != (count, 9) or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise FilterDBError(f"source returned {x.dtype} {x.shape} for rows {start}:"
                            f"{start + count} (expected C-contiguous float32 ({count}, 9))")
    return x


_OPS = {"sum": np.add, "min": np.minimum, "max": np.maximum, "top": merge_top}


def combine(acc: dict | None, res: dict, reduce: dict) -> dict:
    """Fold one task's result into the accumulator (key-wise sum / min / max)."""
    if acc is None:
        return {k: v.dense() if isinstance(v, SparseRows) else np.array(v, copy=True)
                for k, v in res.items()}
    for k, v in res.items():
        a = acc[k]
        if isinstance(v, SparseRows):  # rows of a sum
            v.add_to(a)
            continue
        op = _OPS[reduce.get(k, "sum")]
        if isinstance(a, np.ndarray) and a.ndim and np.shape(v) == a.shape and \
                np.result_type(a, v) == a.dtype:
            op(a, v, out=a)  # in place: a fresh array per task is slow to touch (large results)
        else:
            acc[k] = op(a, v)
    return acc


# ---- the one entry point ----

def single_blas(fn):
    """``fn()`` with one BLAS thread: the engine already runs one task per core."""
    try:  # optional dependency: without it BLAS keeps its own thread count
        from threadpoolctl import threadpool_limits  # lazy: optional dependency
    except ImportError:  # pragma: no cover
        return fn()
    with threadpool_limits(1, user_api="blas"):
        return fn()


def get_engine(engine="local", scheduler=None, workers: int = 2):
    """An engine object: ``"local"`` (threads) or ``"dask"`` (a Dask cluster), or pass one."""
    if not isinstance(engine, str):
        return engine
    if engine == "local":
        from .local import LocalEngine  # lazy: start-up time (a back end loads when chosen)

        return LocalEngine(workers=workers)
    if engine == "dask":
        from .dask import DaskEngine  # lazy: optional heavy dependency (dask extra)

        return DaskEngine(scheduler=scheduler, workers=workers)
    raise FilterDBError(f"unknown engine {engine!r}: use 'local' or 'dask'")


def map_reduce(source, plan: Plan, kernel, params: dict | None = None, *, engine="local",
               scheduler=None, workers: int = 2, reduce: dict | None = None,
               progress: Callable[[int], None] | None = None) -> dict:
    """Run ``kernel`` on every task of ``plan`` and combine the results.

    ``engine`` is ``"local"``, ``"dask"`` or an engine object (kept open by the caller);
    ``progress(n_rows)`` is called after each task with the selected rows it covered.
    """
    reduce = dict(getattr(kernel, "reduce", {}), **(reduce or {}))
    bad = set(reduce.values()) - set(_OPS)
    if bad:
        raise FilterDBError(f"unknown reduction(s) {sorted(bad)}: use sum, min, max or top")
    if not plan.tasks:
        raise FilterDBError("empty selection: no filters to analyse")
    if hasattr(source, "for_plan"):
        source = source.for_plan(plan)
    checks = getattr(source, "checks", None)
    eng = get_engine(engine, scheduler, workers)
    try:
        acc = eng.map_reduce(source, plan, kernel, params or {}, reduce, progress)
    finally:
        if eng is not engine:
            eng.close()
    if hasattr(checks, "finish"):
        checks.finish(acc.pop(checks.key, None))
    return acc


__all__ = ["Source", "ArraySource", "RowReaderSource", "aligned_empty", "Task", "Plan",
           "make_plan", "sample_plan", "layer_groups", "single_blas", "read_task", "run_task",
           "combine", "reversed_plan", "plan_ranges", "get_engine", "map_reduce"]
