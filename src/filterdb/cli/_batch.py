"""Many inputs for ``check`` and ``inspect``: files and folders (read recursively), one result
per model, a bad file failing alone (reported; exit 2 at the end)."""
from __future__ import annotations

import os
import sys

from .._table import format_table, shorten
from ..errors import FilterDBError
from ._common import print_json, write_csv


def is_batch(paths, csv: bool = False) -> bool:
    """Several inputs, a folder, or CSV output: the batch form (one line per model)."""
    from ..readers.folders import folder_kind  # lazy: start-up time: on first use

    return csv or len(paths) != 1 or (os.path.isdir(paths[0]) and not folder_kind(paths[0]))


def run(paths, fn, format=None):
    """``fn(model)`` for every model file of the inputs (:func:`filterdb.readers.expand_inputs`);
    a file that cannot be read or assessed becomes a :class:`~filterdb.api.Failed`."""
    from ..api import Failed, Results  # lazy: start-up time: on first use
    from ..readers import read_model  # lazy: start-up time: on first use
    from ..readers.find import expand_inputs  # lazy: start-up time: on first use

    out = []
    for p, err in expand_inputs(paths):
        if err:
            out.append(Failed(p, f"{p}: {err}"))
            continue
        try:
            out.append(fn(read_model(p, format)))
        except FilterDBError as e:
            out.append(Failed(p, str(e)))
        except Exception as e:  # one file's bug must not stop the others
            out.append(Failed(p, f"{p}: {type(e).__name__}: {e}"))
    return Results(out)


def _csv(df) -> None:
    write_csv(df)  # the one CSV writer of the CLI (lists joined by ';')


def report(results, args, columns, headers, details) -> int:
    """Print ``results`` as ``--json`` (a list), ``--csv`` (models, or layers with
    ``--layers``) or a table of one line per model (``--layers``: ``details(result)`` first);
    failures go to stderr too. Returns the exit code: 2 when any input failed."""
    import pandas as pd  # lazy: start-up time: on first use

    from ..api import Failed  # lazy: start-up time: on first use

    if args.json:
        print_json(results.to_dict())
    elif args.csv:
        if args.layers:
            frames = [r.layers.assign(model=r.path)[["model", *r.layers.columns]]
                      for r in results.ok if len(r.layers)]
            _csv(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
        else:
            _csv(results.frame())
    else:
        out = []
        if args.layers:
            out += [details(r) + "\n" for r in results.ok]
        rows = []
        for r in results:
            row = r.row()
            if isinstance(r, Failed):
                rows.append([shorten(row["name"])] + [None] * (len(columns) - 2)
                            + ["FAILED"])
            else:
                rows.append([shorten(row["name"])] + [row[c] for c in columns[1:]])
        out.append(format_table(rows, headers))
        print("\n".join(out))
    failed = results.failed
    for f in failed:
        print(f"filterdb: error: {f.error}", file=sys.stderr)
    if failed and len(results) > 1:
        print(f"filterdb: {len(failed)} of {len(results)} models failed", file=sys.stderr)
    return 2 if failed else 0
