"""Local engine: a small thread pool on this machine (numba kernels and reads release
the GIL). Each thread reuses its own aligned buffers across tasks and passes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from . import combine, run_task


class LocalEngine:
    """Runs tasks on ``workers`` threads; results are combined in plan order."""

    def __init__(self, workers: int = 2):
        self.workers = max(1, int(workers))
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map_reduce(self, source, plan, kernel, params, reduce, progress=None):
        if self.workers == 1:
            results = (run_task(source, t, kernel, params) for t in plan.tasks)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="filterdb")
            # a bounded window of tasks in flight keeps the memory of pending results small
            results = _windowed(self._pool, plan.tasks, 2 * self.workers,
                                lambda t: run_task(source, t, kernel, params))
        acc = None
        for task, res in zip(plan.tasks, results):
            acc = combine(acc, res, reduce)
            if progress is not None:
                progress(task.n_rows)
        return acc


def _windowed(pool, items, window, fn):
    """Results of ``fn`` over ``items`` in order, at most ``window`` submitted ahead."""
    pending = []
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            break
    try:
        while pending:
            fut = pending.pop(0)
            res = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield res
    finally:
        for f in pending:
            f.cancel()
