"""Dask engine: the same tasks and kernels on a ``distributed`` cluster. Without a
scheduler address it starts a LocalCluster of worker processes on 127.0.0.1."""
from __future__ import annotations

from ..errors import FilterDBError, MissingExtraError
from . import combine, run_task


class DaskEngine:
    """Runs tasks on Dask workers; the source and the parameters are broadcast once."""

    def __init__(self, scheduler: str | None = None, workers: int = 2,
                 threads_per_worker: int = 1):
        try:
            from distributed import (  # lazy: optional heavy dependency (dask extra)
                Client,
                LocalCluster,
            )
        except ImportError:
            raise MissingExtraError("distributed", "dask", "run on Dask") from None
        self._cluster = None
        try:
            if scheduler is None:
                self._cluster = LocalCluster(n_workers=int(workers),
                                             threads_per_worker=int(threads_per_worker),
                                             processes=True, host="127.0.0.1",
                                             dashboard_address=None)
                self.client = Client(self._cluster)
            else:
                self.client = Client(scheduler, timeout="20s")
        except OSError as e:
            self.close()
            raise FilterDBError(f"cannot reach the Dask scheduler {scheduler}: {e}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def map_reduce(self, source, plan, kernel, params, reduce, progress=None):
        c = self.client
        # a list of one item each: scatter would split a dict into one future per key
        src, par = c.scatter([source, params], broadcast=True, hash=False)
        futures = [c.submit(run_task, src, task, kernel, par, pure=False)
                   for task in plan.tasks]
        acc = None
        try:
            for task, fut in zip(plan.tasks, futures):
                acc = combine(acc, fut.result(), reduce)
                fut.release()
                if progress is not None:
                    progress(task.n_rows)
        finally:
            c.cancel(futures)
            src.release()
            par.release()
        return acc
