"""Add the curated zoo (filterdb.zoo) to a database, with each model's catalog metadata
(the zoo's layer: it uses the store, the store does not know the zoo)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from .. import zoo  # the package's fetch / readable, looked up at call time (patchable)
from ..errors import DiskFullError, FilterDBError
from ..readers.base import files_sha256
from ..readers.folders import model_files
from ..store.ingest import AddResult


def ingest_zoo(db, models: Iterable | None = None, cache=None, replace: bool = False,
               log: Callable[[str], None] | None = None, distinct: bool = False):
    """Fetch the zoo models (once) and add each; returns ``[(zoo id, AddResult or error
    message)]``. A model that fails to read fails alone. ``models`` defaults to the catalog
    models this installation can read; ``distinct`` leaves out the entries that are another
    entry's weights in a second container (the reference population's selection)."""
    models = list(zoo.readable() if models is None else models)
    if distinct:
        models = [m for m in models if not m.same_weights_as]
    paths = zoo.fetch(models, cache=cache, log=log)
    out = []
    for m in models:
        path = paths[m.id]
        try:
            if not replace:
                sha = files_sha256(model_files(path))  # all files of a multi-file model
                existing = db.has_sha256(sha)
                if existing:
                    r = db.models(f"sha256 = '{sha}'").iloc[0]
                    out.append((m.id, AddResult("exists", int(r.model_id), int(r.n_layers),
                                                int(r.filters_3x3), existing)))
                    continue
            out.append((m.id, db.add_model(m.read(path), m.metadata(), replace=replace)))
        except DiskFullError:
            raise  # no use going on: one line, exit 2
        except FilterDBError as e:
            out.append((m.id, str(e)))
        if log:
            log(f"{m.id}: {out[-1][1] if isinstance(out[-1][1], str) else out[-1][1].status}")
    return out
