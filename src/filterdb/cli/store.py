"""``filterdb init|add|ls|info|rm|verify``: build and query a filter database.

``add`` metadata: ``--meta key=value`` (for every file) and ``--manifest file.csv`` (a
``path`` column, relative to the manifest's directory, plus metadata columns; a manifest
value wins over ``--meta``). Column names follow :mod:`filterdb.store.vocab`: published
names are accepted, unknown ones refused unless prefixed ``x_`` (free columns).
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from .._table import format_table
from ..errors import DiskFullError, FilterDBError
from ._common import (
    add_jobs_option,
    add_json_option,
    add_output_options,
    emit,
    print_json,
    progress,
)

ADD_CSV = "print CSV: one row per file (the list of --json)"


def register(sub) -> None:
    p = sub.add_parser("init", help="create an empty filter database (a directory)")
    p.add_argument("db", metavar="DB")
    p.add_argument("--segment-rows", type=int, default=None,
                   help="filters per segment file (default 16,777,216 = 604 MB)")
    add_json_option(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("add", help="add model files to a database (created if missing)")
    p.add_argument("db", metavar="DB")
    p.add_argument("files", nargs="*", metavar="PATH",
                   help="model files or folders (read recursively)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata for every file (e.g. task=Classification); repeatable")
    p.add_argument("--manifest", metavar="CSV",
                   help="CSV with a 'path' column plus metadata columns")
    p.add_argument("--replace", action="store_true",
                   help="replace a model already present (same file or same model id)")
    add_jobs_option(p)
    p.add_argument("--strict", action="store_true",
                   help="refuse a new task or visual category close to a known one (a typo); "
                        "without it, a warning")
    add_output_options(p, ADD_CSV)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("ls", help="list the models (or layers) of a database")
    p.add_argument("db", metavar="DB")
    p.add_argument("--where", help="SQL expression over the columns, e.g. \"task = 'Segmentation'\" "
                   "or \"x_seed = 3\" (free columns are typed); --columns lists them")
    p.add_argument("--layers", action="store_true", help="list layers (with model columns)")
    p.add_argument("--columns", action="store_true",
                   help="list the queryable columns with their types, and stop")
    add_output_options(p, "print CSV: one row per model (per layer with --layers; per column "
                       "with --columns), all columns, as --json",
                       json_help="print JSON (all columns)")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("info", help="counts by task, visual category and format; sizes")
    p.add_argument("db", metavar="DB")
    add_output_options(p, "print CSV: one row per value of --json (columns table, key, value): "
                       "table 'database' for the counts and sizes, 'by_task', "
                       "'by_visual_category', 'by_format' for the models per label")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("rm", help="remove models (their filter ids become free ranges)")
    p.add_argument("db", metavar="DB")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model id, numeric id or sha256")
    add_json_option(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("verify", help="check the catalog against the filter files")
    p.add_argument("db", metavar="DB")
    p.add_argument("--quick", action="store_true", help="skip the per-layer checksums")
    add_json_option(p)
    p.set_defaults(func=cmd_verify)


def register_zoo_ingest(zsub) -> None:
    """``filterdb zoo ingest DB``: called by cli/zoo.py."""
    p = zsub.add_parser("ingest", help="fetch the zoo and add every model to a database")
    p.add_argument("db", metavar="DB")
    p.add_argument("models", nargs="*", help="zoo model ids (default: every readable model)")
    p.add_argument("--distinct", action="store_true",
                   help="leave out entries that are another entry's weights in a second "
                   "container (the built-in reference's selection)")
    p.add_argument("--cache", help="cache directory (default: $FILTERDB_CACHE or ~/.cache/filterdb)")
    p.add_argument("--replace", action="store_true", help="re-add models already present")
    add_jobs_option(p)
    add_output_options(p, "print CSV: one row per zoo model (the list of --json)")
    p.set_defaults(func=cmd_zoo_ingest)


# -- helpers ------------------------------------------------------------------------------
def _records(df) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def read_manifest(path) -> list[tuple[str, dict]]:
    """``[(file path, metadata)]`` from a manifest CSV, every column checked first."""
    from ..store.vocab import (  # lazy: start-up time (filterdb --help stays fast)
        EXTRA_PREFIX,
        column_name,
        normalize_meta,
        parse_value,
    )

    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FilterDBError(f"{p}: cannot read the manifest ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise FilterDBError(f"{p}: empty manifest (expected a header with a 'path' column)")
    header = [h.strip() for h in rows[0]]
    if "path" not in header:
        raise FilterDBError(f"{p}: the manifest has no 'path' column (columns: {', '.join(header)})")
    if len(set(header)) != len(header) or "" in header:
        raise FilterDBError(f"{p}: empty or repeated column names in the manifest header")
    for h in header:
        if h != "path":
            try:
                column_name(h)
            except FilterDBError as e:
                raise FilterDBError(f"{p}: {e}") from None
    out = []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise FilterDBError(f"{p}: line {i} has {len(r)} fields, the header has {len(header)}")
        d = {k: parse_value(v) if k.startswith(EXTRA_PREFIX) else v for k, v in zip(header, r)}
        file = d.pop("path").strip()
        if not file:
            raise FilterDBError(f"{p}: line {i} has an empty path")
        try:
            normalize_meta(d)
        except FilterDBError as e:
            raise FilterDBError(f"{p}: line {i}: {e}") from None
        out.append((str(p.parent / file) if not os.path.isabs(file) else file, d))
    return out


def _read_worker(path: str):
    """Read one model in a worker process; errors come back as text (picklable)."""
    from ..readers import read_model  # lazy: start-up time (filterdb --help stays fast)

    try:
        return read_model(path), None
    except FilterDBError as e:
        return None, str(e)
    except Exception as e:  # pragma: no cover - reader bug
        return None, f"{path}: {type(e).__name__}: {e}"


def _jobs_from_args(args) -> list[tuple[str, dict]]:
    from ..store.vocab import (  # lazy: start-up time (filterdb --help stays fast)
        normalize_meta,
        parse_meta_args,
    )

    meta = parse_meta_args(args.meta)
    normalize_meta(meta)  # refuse bad columns before anything is read or written
    jobs = [(f, dict(meta)) for f in _expand_files(args.files)]
    if args.manifest:
        jobs += [(f, {**meta, **m}) for f, m in read_manifest(args.manifest)]
    if not jobs:
        raise FilterDBError("nothing to add: give model files and/or --manifest")
    if "model" in {k.strip().lower() for k in meta} and len(jobs) > 1:
        raise FilterDBError("--meta model=... names one model; it cannot apply to several files")
    return jobs


def _expand_files(paths) -> list[str]:
    """Files as given, folders as their model files, recursively
    (:func:`filterdb.readers.find_models`); an empty folder is named as such."""
    from ..readers.find import find_models  # lazy: start-up time (filterdb --help stays fast)

    out = []
    for p in paths:
        found = find_models(p)
        if not found:
            raise FilterDBError(f"{p}: no model files in this folder")
        out += found
    return out


def check_labels(db, jobs, strict: bool = False) -> list[str]:
    """Warnings for new task / visual category values close to known ones (typos), one per
    value; with ``strict`` they are an error, before anything is written."""
    from ..store.vocab import (  # lazy: start-up time (filterdb --help stays fast)
        label_warnings,
        normalize_meta,
    )

    known = db.known_labels()
    out = []
    for _path, meta in jobs:
        for w in label_warnings(normalize_meta(meta), known):
            if w not in out:
                out.append(w)
    if strict and out:
        raise FilterDBError(f"{out[0]} (--strict: nothing added; fix the label, or drop "
                            "--strict to add it as a new group)")
    return out


def add_files(db, jobs, replace=False, n_jobs=1, show_progress=True):
    """Add ``[(path, meta)]``; returns ``[(path, AddResult or error text)]``. Files are
    read in ``n_jobs`` processes and written one after another by this process."""
    from ..readers import read_model  # lazy: start-up time (filterdb --help stays fast)
    from ..readers.base import files_sha256  # lazy: start-up time (filterdb --help stays fast)
    from ..readers.folders import model_files  # lazy: start-up time (filterdb --help stays fast)
    from ..store.ingest import AddResult  # lazy: start-up time (filterdb --help stays fast)

    results: list = [None] * len(jobs)
    todo = []
    for i, (path, _meta) in enumerate(jobs):
        try:
            if not os.path.exists(path):
                raise FilterDBError(f"{path}: no such file")
            sha = files_sha256(model_files(path))  # a model of several files: all of them
        except (OSError, FilterDBError) as e:
            results[i] = str(e)
            continue
        existing = None if replace else db.has_sha256(sha)
        if existing:
            r = db.models(f"sha256 = '{sha}'").iloc[0]
            results[i] = AddResult("exists", int(r.model_id), int(r.n_layers),
                                   int(r.filters_3x3), existing)
        else:
            todo.append(i)

    bar = progress(total=len(todo), desc="adding", unit="model",
                   disable=None if show_progress else True)

    def write(i, model):
        path, meta = jobs[i]
        try:
            results[i] = db.add_model(model, meta, replace=replace)
        except DiskFullError:
            raise  # the whole command stops: one line, exit 2
        except FilterDBError as e:
            results[i] = f"{path}: {e}"
        bar.update(1)

    try:
        if n_jobs <= 1 or len(todo) <= 1:
            for i in todo:
                try:
                    model = read_model(jobs[i][0])
                except FilterDBError as e:
                    results[i] = str(e)
                    bar.update(1)
                    continue
                write(i, model)
        else:
            from concurrent.futures import ProcessPoolExecutor

            window = 2 * n_jobs  # bound the models held in memory
            with ProcessPoolExecutor(n_jobs) as ex:
                futures = {}
                nxt = 0
                for k, i in enumerate(todo):
                    while nxt < len(todo) and nxt < k + window:
                        futures[todo[nxt]] = ex.submit(_read_worker, jobs[todo[nxt]][0])
                        nxt += 1
                    model, err = futures.pop(i).result()
                    if err:
                        results[i] = err
                        bar.update(1)
                    else:
                        write(i, model)
    finally:
        bar.close()
    return list(zip([j[0] for j in jobs], results))


def _result_rows(key, results) -> list[dict]:
    """The ``--json`` list (and ``--csv`` rows) of ``add`` and ``zoo ingest``."""
    return [{key: p, **(r.to_dict() if not isinstance(r, str) else
                        {"status": "failed", "reason": r})} for p, r in results]


def _summary(results) -> str:
    rows = []
    for path, r in results:
        if isinstance(r, str):
            rows.append((path, "FAILED", "", None, None, r))
        else:
            rows.append((path, r.status, r.model, r.n_layers, r.n_filters, ""))
    return format_table(rows, ["file", "status", "model", "layers", "3x3 filters", "reason"])


# -- commands -------------------------------------------------------------------------------
def cmd_init(args) -> int:
    from ..store import (  # lazy: start-up time (filterdb --help stays fast)
        DEFAULT_SEGMENT_ROWS,
        init_database,
    )

    db = init_database(args.db, segment_rows=args.segment_rows or DEFAULT_SEGMENT_ROWS)
    db.close()
    if args.json:
        print_json({"path": str(db.path), "segment_rows": db.segment_rows, "created": True})
    else:
        print(f"created {args.db}")
    return 0


def cmd_add(args) -> int:
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)

    jobs = _jobs_from_args(args)
    with open_database(args.db, mode="w", create=True) as db:
        for w in check_labels(db, jobs, strict=args.strict):
            print(f"filterdb: warning: {w}", file=sys.stderr)
        results = add_files(db, jobs, replace=args.replace, n_jobs=max(1, args.jobs))
    failed = [r for _, r in results if isinstance(r, str)]
    if not emit(args, _result_rows("file", results)):
        print(_summary(results))
        added = sum(1 for _, r in results if not isinstance(r, str) and r.status != "exists")
        print(f"\n{added} added or replaced, "
              f"{sum(1 for _, r in results if not isinstance(r, str) and r.status == 'exists')} "
              f"already present, {len(failed)} failed")
    for r in failed:
        print(f"filterdb: {r}", file=sys.stderr)
    return 2 if failed else 0  # as check and inspect: a bad file fails alone, exit 2


def cmd_ls(args) -> int:
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)

    with open_database(args.db) as db:
        if args.columns:
            cols = db.columns("layers" if args.layers else "models")
            if not emit(args, cols):
                print(format_table([(c["name"], c["type"], c["about"]) for c in cols],
                                   ["column", "type", "about"]))
            return 0
        df = db.layers(args.where) if args.layers else db.models(args.where)
    if emit(args, lambda: _records(df), df):
        return 0
    if args.layers:
        cols = ["layer_id", "model", "name", "op", "c_out", "c_in", "kh", "kw", "groups",
                "conv_depth", "conv_depth_norm", "filter_start", "filter_count"]
    else:
        cols = ["model_id", "model", "format", "task", "visual_category", "architecture",
                "n_layers", "filters_3x3", "total_filters"]
    cols += [c for c in df.columns if c.startswith("x_")]  # the typed free columns
    rows = [[r[c] for c in cols] for r in _records(df[cols])]
    print(format_table(rows, cols))
    return 0


def cmd_info(args) -> int:
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)

    with open_database(args.db) as db:
        info = db.info()
    if emit(args, info, lambda: info_rows(info)):
        return 0
    print(f"{info['path']}: {info['models']:,} models, {info['layers']:,} layers, "
          f"{info['filters']:,} 3x3 filters")
    print(f"  {info['size_bytes'] / 1e6:,.1f} MB on disk ({info['segments']} segment files of "
          f"up to {info['segment_rows']:,} filters); data version {info['data_version']}")
    if info["free_filters"]:
        print(f"  {info['free_filters']:,} filter ids freed by removed models")
    for key, title in (("by_task", "task"), ("by_visual_category", "visual category"),
                       ("by_format", "format")):
        if info[key]:
            print()
            print(format_table(list(info[key].items()), [title, "models"]))
    return 0


def info_rows(info: dict) -> list[dict]:
    """``info --csv``: the dict of ``info --json`` as (table, key, value) rows."""
    rows = []
    for k, v in info.items():
        if isinstance(v, dict):
            rows += [{"table": k, "key": kk, "value": vv} for kk, vv in v.items()]
        else:
            rows.append({"table": "database", "key": k, "value": v})
    return rows


def cmd_rm(args) -> int:
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)

    out = []
    with open_database(args.db, mode="w") as db:
        for m in args.models:
            freed = db.remove_model(m)
            out.append({"model": m, "filters_freed": int(freed)})
            if not args.json:
                print(f"removed {m} ({freed:,} filters freed)")
    if args.json:
        print_json(out)
    return 0


def cmd_verify(args) -> int:
    import sqlite3

    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)
    from ..store.catalog import (  # lazy: start-up time (filterdb --help stays fast)
        CATALOG,
        connect,
        integrity_problems,
    )

    notes = []
    try:
        with open_database(args.db) as db:
            problems = db.verify(checksums=not args.quick)
            n = db.n_filters
            if not any(p.startswith("catalog:") for p in problems):
                notes = db.check_cache(drop=True)
    except (FilterDBError, sqlite3.DatabaseError) as e:  # a catalog that cannot be opened
        path = os.path.join(args.db, CATALOG)
        if not os.path.isfile(path):
            raise
        try:
            con = connect(path, readonly=True)
            try:
                problems = integrity_problems(con)
            finally:
                con.close()
        except (FilterDBError, sqlite3.DatabaseError):
            problems = []
        problems = problems or [f"catalog: {e}"]
        n = 0
    if args.json:
        extra = {"notes": notes} if notes else {}
        print_json({"ok": not problems, "problems": problems, **extra})
        return 1 if problems else 0
    if problems:
        print(f"{args.db}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
    else:
        print(f"OK ({n:,} committed filters{', checksums not checked' if args.quick else ''})")
    for note in notes:
        print(f"  {note}")
    return 1 if problems else 0


def cmd_zoo_ingest(args) -> int:
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)
    from ..zoo import find  # lazy: start-up time (filterdb --help stays fast)
    from ..zoo.ingest import ingest_zoo  # lazy: start-up time (filterdb --help stays fast)

    models = [find(i) for i in args.models] if args.models else None
    log = lambda m: print(m, file=sys.stderr)
    with open_database(args.db, mode="w", create=True) as db:
        if args.jobs is not None and args.jobs > 1:  # read in N processes, as add --jobs
            from ..zoo import fetch, readable  # lazy: start-up time (filterdb --help stays fast)
            from ..zoo.catalog import (
                distinct as distinct_models,  # lazy: start-up time (filterdb --help stays fast)
            )

            if models is None:
                models = readable(distinct_models()) if args.distinct else readable()
            models = list(models)
            paths = fetch(models, cache=args.cache, log=log)
            done = add_files(db, [(str(paths[m.id]), m.metadata()) for m in models],
                             replace=args.replace, n_jobs=args.jobs)
            results = [(m.id, r) for m, (_, r) in zip(models, done)]
        else:
            results = ingest_zoo(db, models, cache=args.cache, replace=args.replace, log=log,
                                 distinct=args.distinct)
    failed = [r for _, r in results if isinstance(r, str)]
    if not emit(args, _result_rows("id", results)):
        print(_summary(results))
    return 2 if failed else 0
