"""Helpers shared by the CLI modules: the option vocabulary, CSV, and (from
:mod:`filterdb.utils`) JSON output and progress bars."""
from __future__ import annotations

from ..utils import _clean, json_default, print_json, progress  # noqa: F401 - re-exported


# -- one vocabulary of options (issue 19): output format, output file, engine, jobs ---------
# (self-contained: each function imports what it uses; print_json, _clean and json_default are
# this module's JSON helpers)
def add_output_options(p, csv_help: str = "print CSV: the rows and columns of --json",
                       tables: dict | None = None, default_table: str | None = None,
                       json_help: str = "print JSON"):
    """``--json`` / ``--csv``, mutually exclusive; with ``tables`` ({name: what a row is}) also
    ``--table NAME``: which of the JSON's tables ``--csv`` prints (default ``default_table``)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--csv", action="store_true", help=csv_help)
    if tables:
        default_table = default_table or next(iter(tables))
        p.add_argument("--table", choices=list(tables), default=default_table,
                       help="the table --csv prints: " + "; ".join(
                           f"{k}: {v}" for k, v in tables.items()) + f" (default {default_table})")
    return g


def add_json_option(p, help: str = "print JSON") -> None:
    """``--json`` alone: commands that print a result, not a table."""
    p.add_argument("--json", action="store_true", help=help)


def add_output_file_option(p, metavar: str = "FILE", default=None, help: str | None = None):
    """``-o/--output FILE``: every file a command writes."""
    p.add_argument("-o", "--output", metavar=metavar, default=default,
                   help=help or "output file" + (f" (default {default})" if default else ""))


def output_path(args, positional: str | None = None, option: str = "output") -> str | None:
    """The output file from ``-o/--output`` or a (kept) positional; both given and
    different is an error."""
    from ..errors import FilterDBError  # lazy: start-up time (filterdb --help stays fast)

    a = getattr(args, option, None)
    b = getattr(args, positional, None) if positional else None
    if a and b and a != b:
        raise FilterDBError(f"two output files given ({b} and -o {a}): give one")
    return a or b


def add_jobs_option(p, default: int | None = 1, what: str = "read files in N processes") -> None:
    """``-j/--jobs N``: worker processes (``add``, ``zoo ingest``, ``zoo train``)."""
    p.add_argument("-j", "--jobs", type=int, default=default, metavar="N",
                   help=what + (f" (default {default})" if default is not None else
                                " (default: the number of CPUs)"))


# what add_engine_options gives every command that runs the engine (tests/test_cli_engine.py)
ENGINE_OPTIONS = ("--engine", "--scheduler", "--workers", "--quiet")


def add_engine_options(p, cache: bool = True, what: str = "the passes") -> None:
    """The one engine option set of every command that runs passes over a database:
    ``--engine {local,dask}``, ``--scheduler tcp://HOST:PORT`` (a Dask scheduler; implies
    ``--engine dask``), ``--workers N``, ``--quiet`` (no progress bars); with ``cache`` also
    ``--recompute`` (one meaning everywhere: do not use results cached in the database;
    ``--no-cache``, its old name in drift and pca, is a hidden alias that still works).
    Read them back with :func:`engine_kwargs` and :func:`show_progress`."""
    import argparse

    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "dask"), default=None,
                   help=f"run {what} on local threads (default) or on a Dask cluster")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="address of a running Dask scheduler (implies --engine dask; "
                        "default with --engine dask: a local cluster)")
    g.add_argument("--workers", type=int, default=2, metavar="N",
                   help="local threads, or the workers of the local Dask cluster (default 2)")
    g.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    if cache:
        g.add_argument("--recompute", action="store_true",
                       help="compute again instead of using results cached in the database")
        g.add_argument("--no-cache", dest="recompute", action="store_true",
                       help=argparse.SUPPRESS)  # the old name in drift and pca


def show_progress(args) -> bool:
    """Progress bars on stderr unless ``--quiet``, ``--json`` or ``--csv``."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False)
                or getattr(args, "csv", None))


def engine_kwargs(args) -> dict:
    """``dict(engine=, scheduler=, workers=)`` from :func:`add_engine_options`, checked."""
    import re

    from ..errors import FilterDBError  # lazy: start-up time (filterdb --help stays fast)

    engine, scheduler, workers = args.engine, args.scheduler, args.workers
    if scheduler is not None:
        if engine == "local":
            raise FilterDBError("--scheduler is a Dask scheduler: it needs --engine dask")
        if not re.fullmatch(r"([a-z][a-z0-9+.-]*://)?(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}",
                            scheduler):
            raise FilterDBError(f"--scheduler {scheduler!r}: expected a Dask scheduler "
                                "address, tcp://HOST:PORT")
        engine = "dask"
    if workers is None or workers < 1:
        raise FilterDBError(f"--workers must be >= 1, got {workers}")
    return dict(engine=engine or "local", scheduler=scheduler, workers=int(workers))


# -- CSV ---------------------------------------------------------------------------------------
def _cell(v):
    import json
    import math

    import numpy as np  # lazy: start-up time (filterdb --help stays fast)

    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""  # JSON null
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest round trip
    if isinstance(v, (list, tuple)):
        return ";".join(str(_cell(x)) for x in v)
    if isinstance(v, dict):
        return json.dumps(_clean(v), default=json_default)
    return v


def write_csv(rows, columns=None, file=None) -> None:
    """CSV of ``rows`` (a DataFrame or a list of dicts) on stdout: null and NaN empty, booleans
    true/false, floats in full precision, lists joined by ';', dicts as JSON."""
    import csv
    import sys

    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a DataFrame
        columns = list(rows.columns) if columns is None else columns
        rows = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.writer(file or sys.stdout, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])


def emit(args, obj, rows=None, columns=None) -> bool:
    """Print ``obj`` as JSON with ``--json``, or ``rows`` as CSV with ``--csv`` (``rows``:
    a DataFrame, a list of dicts, or a callable returning one: called only then, with the
    ``--table`` name when the command has one). Returns False when neither was asked for
    (the caller prints its table)."""
    if getattr(args, "json", False):
        print_json(obj() if callable(obj) else obj)
        return True
    if getattr(args, "csv", False):
        if callable(rows):
            rows = rows(args.table) if hasattr(args, "table") else rows()
        write_csv(obj if rows is None else rows, columns)
        return True
    return False
