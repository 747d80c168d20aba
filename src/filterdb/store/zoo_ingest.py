"""Add the curated zoo (filterdb.zoo) to a database, with each model's catalog metadata."""
from __future__ import annotations

from typing import Callable, Iterable

from ..errors import DiskFullError, FilterDBError


def ingest_zoo(db, models: Iterable | None = None, cache=None, replace: bool = False,
               log: Callable[[str], None] | None = None):
    """Fetch the zoo models (once) and add each; returns ``[(zoo id, AddResult or error
    message)]``. A model that fails to read fails alone."""
    from ..readers import read_model
    from ..readers.base import file_sha256
    from ..zoo import CATALOG, fetch
    from .ingest import AddResult

    models = list(CATALOG if models is None else models)
    paths = fetch(models, cache=cache, log=log)
    out = []
    for m in models:
        path = paths[m.id]
        try:
            if not replace:
                sha = file_sha256(path)
                existing = db.has_sha256(sha)
                if existing:
                    r = db.models(f"sha256 = '{sha}'").iloc[0]
                    out.append((m.id, AddResult("exists", int(r.model_id), int(r.n_layers),
                                                int(r.filters_3x3), existing)))
                    continue
            out.append((m.id, db.add_model(read_model(path), m.metadata(), replace=replace)))
        except DiskFullError:
            raise  # no use going on: one line, exit 2
        except FilterDBError as e:
            out.append((m.id, str(e)))
        if log:
            log(f"{m.id}: {out[-1][1] if isinstance(out[-1][1], str) else out[-1][1].status}")
    return out
